"""invariance.core: the small shared kernel of the invariance toolkit.

* :mod:`~invariance.core.groups`: Haar samplers and group actions (row vectors: ``X @ R.T + t``);
* :mod:`~invariance.core.testing`: ``equivariance_error`` and the asserts, negative controls,
  registry contract tests (public API: audit your own model with it);
* :mod:`~invariance.core.registry` and :mod:`~invariance.core.recipe`: methods, their metadata and
  the recipe protocol the loop, CLI and tests drive;
* :mod:`~invariance.core.train`, :mod:`~invariance.core.dist`, :mod:`~invariance.core.checkpoint`,
  :mod:`~invariance.core.io`: a plain loop with safetensors checkpoints and exact resume, a torchrun
  runtime, run directories;
* :mod:`~invariance.core.cli`: ``build_cli(domain)`` and the umbrella ``invariance`` command.

Importing this package loads torch, numpy, safetensors and PyYAML only.
"""

from invariance.core import checks, groups, testing
from invariance.core.bench import compare, register_bench, time_fn
from invariance.core.cache import ResultCache
from invariance.core.checkpoint import load_checkpoint, save_checkpoint
from invariance.core.dist import Runtime
from invariance.core.io import RunDir, make_run_dir
from invariance.core.recipe import (
    VERDICT_RULE,
    CheckResult,
    ConfigError,
    Recipe,
    ReproduceResult,
    TrainConfig,
    make_config,
)
from invariance.core.registry import MethodInfo, get_method, list_methods, load_plugins, register
from invariance.core.seed import make_generator, seed_everything
from invariance.core.testing import (
    assert_equivariant,
    assert_invariant,
    assert_not_equivariant,
    assert_not_invariant,
    equivariance_error,
)
from invariance.core.train import (
    NamedOptimizers,
    build_optimizer,
    evaluate,
    fit,
    fit_recipe,
    train_arms,
)

__version__ = "0.1.0"

__all__ = [
    "checks",
    "groups",
    "testing",
    "equivariance_error",
    "assert_invariant",
    "assert_equivariant",
    "assert_not_invariant",
    "assert_not_equivariant",
    "MethodInfo",
    "register",
    "get_method",
    "list_methods",
    "load_plugins",
    "Recipe",
    "NamedOptimizers",
    "TrainConfig",
    "CheckResult",
    "ReproduceResult",
    "make_config",
    "fit",
    "fit_recipe",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "Runtime",
    "RunDir",
    "make_run_dir",
    "seed_everything",
    "make_generator",
    "register_bench",
    "time_fn",
    "compare",
    "ResultCache",
    "ConfigError",
    "VERDICT_RULE",
    "build_optimizer",
    "train_arms",
]
