"""The recipe protocol: how a registered method exposes data, model, loss, metrics, checks and its
reproduce experiment to the shared training loop, the CLI and the generic tests.

A method module defines a ``<Method>Config`` dataclass (subclassing :class:`TrainConfig`; its
defaults are the *tiny* preset, seconds on a CPU) and a :class:`Recipe` subclass registered with
:func:`invariance.core.registry.register`. The recipe never parses arguments, never prints and never
touches ``torch.distributed``: :func:`invariance.core.train.fit` and the CLI drive it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

if TYPE_CHECKING:
    from invariance.core.io import RunDir

__all__ = [
    "ConfigError",
    "VERDICT_RULE",
    "TrainConfig",
    "Recipe",
    "CheckResult",
    "ReproduceResult",
    "make_config",
]


class ConfigError(ValueError):
    """A config field holds a value outside its valid range (the CLI exits 2 with a usage line)."""


#: integer-valued count fields (by name) that may not be negative
_COUNT_NAME = re.compile(
    r"^(steps|epochs|seeds|batch_size|width|depth|layers|heads|hidden.*|n_.*|num_.*|.*_every|"
    r".*_size|.*_dim|.*_steps|.*_epochs|.*_layers|.*_heads)$"
)


@dataclass
class TrainConfig:
    """Fields every method config has. Subclass it as ``<Method>Config``.

    Args:
        seed: seed of everything (data, init, shuffling) (default: ``0``).
        steps: optimisation steps (default: ``100``).
        batch_size: global batch size (default: ``32``).
        lr: learning rate (default: ``1e-3``).
        weight_decay: decoupled weight decay (default: ``0.0``).
        ckpt_every: checkpoint every N steps; ``0`` only at the end (default: ``0``).
        log_every: write metrics every N steps (default: ``10``).
        optimizer: optimizer name for :func:`invariance.optim.create_optimizer` (``adamw``,
            ``adam``, ``sgd``, ``adamp``, ``sgdp``, ...) (default: ``"adamw"``).

    Validation: ``__post_init__`` calls :meth:`validate`, which checks that numeric fields are
    finite, that count-like fields (``steps``, ``*_size``, ``n_*``, ...) are not negative, and the
    class's declared ``ranges`` (``{field: (lo, hi)}``, inclusive, ``None`` = open) and
    ``choices`` (``{field: (allowed, ...)}``). Subclasses override :meth:`validate` for
    cross-field rules and call ``super().validate()`` first.
    """

    seed: int = 0
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    ckpt_every: int = 0
    log_every: int = 10
    optimizer: str = "adamw"

    ranges: ClassVar[dict[str, tuple[Any, Any]]] = {}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    _base_ranges: ClassVar[dict[str, tuple[Any, Any]]] = {
        "batch_size": (1, None),
        "lr": (0.0, None),
        "weight_decay": (0.0, None),
    }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        name = type(self).__name__
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{name}.{f.name} must be finite, got {v}")
            if _COUNT_NAME.match(f.name) and v < 0:
                raise ConfigError(f"{name}.{f.name} must be >= 0, got {v}")
        ranges = {**TrainConfig._base_ranges, **type(self).ranges}
        for field_name, (lo, hi) in ranges.items():
            if not hasattr(self, field_name):
                raise ConfigError(f"{name}.ranges names an unknown field {field_name!r}")
            v = getattr(self, field_name)
            if v is None:
                continue
            if isinstance(v, (list, tuple)):
                vals = list(v)
            else:
                vals = [v]
            for x in vals:
                if not isinstance(x, (int, float)) or isinstance(x, bool):
                    raise ConfigError(f"{name}.{field_name} must be a number, got {x!r}")
                if (lo is not None and x < lo) or (hi is not None and x > hi):
                    lo_s = "-inf" if lo is None else lo
                    hi_s = "inf" if hi is None else hi
                    raise ConfigError(f"{name}.{field_name} must be in [{lo_s}, {hi_s}], got {x!r}")
        for field_name, allowed in type(self).choices.items():
            v = getattr(self, field_name)
            if v not in allowed:
                raise ConfigError(f"{name}.{field_name} must be one of {list(allowed)}, got {v!r}")
        if not isinstance(self.optimizer, str) or not self.optimizer:
            raise ConfigError(f"{name}.optimizer must be an optimizer name, got {self.optimizer!r}")


@dataclass
class CheckResult:
    """One symmetry check. A negative control *passes* when its error is large (the broken variant
    really breaks the symmetry). ``variation`` is the relative spread of the reference outputs
    (a check whose outputs barely vary is vacuous)."""

    name: str
    error: float
    tol: float
    passed: bool
    negative_control: bool = False
    detail: str = ""
    variation: float | None = None


#: the stated rule behind every verdict
VERDICT_RULE = (
    "wins/loses: each arm has n >= 3 seeds and the difference of means (in the better direction) "
    "is beyond 2 standard errors, se = sqrt(sd_m^2/n_m + sd_b^2/n_b) with sample sd; "
    "within noise otherwise; with n < 3 the row says 'ahead/behind (n=k)' (no noise estimate)"
)
MIN_SEEDS = 3


def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd, n


def _as_values(v: Any, what: str) -> list[float]:
    if v is None:
        return []
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [float(v)]
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.detach().flatten()]
    try:
        out = [float(x) for x in v]
    except TypeError:
        raise TypeError(
            f"{what} must be a number or a list of per-seed numbers, got {v!r}"
        ) from None
    return out


class ReproduceResult:
    """What a reproduce experiment reports: method and baseline on one metric, **per seed**.

    Args:
        task, metric: what was measured.
        method, baseline: display names of the two arms compared.
        method_values, baseline_values: the metric per seed (a single number = one seed).
        higher_is_better: direction of the metric (default: ``True``).
        invariance_error: the declared symmetry's error measured on the trained method model.
        seconds: wall time of the experiment.
        details: extra facts shown in the report.
        plots: paths of the plots written (PNG).
        seeds: the seeds, aligned with the values.
        arms: further arms ``{name: per-seed values}`` (strawmen, ablations), shown in report/plot.
        not_showable: non-empty when the claim cannot show at this size; the reason.

    The verdict is computed by :data:`VERDICT_RULE`; ``method_value`` / ``baseline_value`` are the
    means. ``method_value=`` / ``baseline_value=`` are accepted as one-seed shorthands.
    """

    def __init__(
        self,
        task: str,
        metric: str,
        method: str,
        baseline: str,
        method_values: Any = None,
        baseline_values: Any = None,
        higher_is_better: bool = True,
        invariance_error: float | None = None,
        seconds: float = 0.0,
        details: dict[str, Any] | None = None,
        plots: list[str] | None = None,
        *,
        seeds: list[int] | None = None,
        arms: dict[str, Any] | None = None,
        not_showable: str = "",
        method_value: float | None = None,
        baseline_value: float | None = None,
    ) -> None:
        if method_values is None:
            method_values = method_value
        if baseline_values is None:
            baseline_values = baseline_value
        self.task, self.metric, self.method, self.baseline = task, metric, method, baseline
        self.method_values = _as_values(method_values, "method_values")
        self.baseline_values = _as_values(baseline_values, "baseline_values")
        if not self.method_values:
            raise ValueError("ReproduceResult needs method_values (one number per seed)")
        if not self.baseline_values:
            raise ValueError("ReproduceResult needs baseline_values (one number per seed)")
        self.higher_is_better = bool(higher_is_better)
        self.invariance_error = None if invariance_error is None else float(invariance_error)
        self.seconds = float(seconds)
        self.details = dict(details or {})
        self.plots = list(plots or [])
        self.seeds = list(seeds) if seeds is not None else None
        self.arms = {k: _as_values(v, f"arms[{k!r}]") for k, v in (arms or {}).items()}
        self.not_showable = str(not_showable or "")

    @classmethod
    def from_arms(
        cls,
        results: dict[str, list[dict[str, Any]]],
        *,
        method: str,
        baseline: str,
        key: str,
        task: str,
        metric: str | None = None,
        method_name: str | None = None,
        baseline_name: str | None = None,
        higher_is_better: bool = True,
        seeds: list[int] | None = None,
        **kw: Any,
    ) -> ReproduceResult:
        """From ``{arm: [metrics per seed]}`` (what :func:`~invariance.core.train.train_arms`
        returns): ``method``/``baseline`` name the arms, ``key`` the metric; every other arm goes
        into ``arms``."""
        for a in (method, baseline):
            if a not in results:
                raise KeyError(f"no arm {a!r}; have {sorted(results)}")
        vals = {a: [float(r[key]) for r in rows] for a, rows in results.items()}
        others = {a: v for a, v in vals.items() if a not in (method, baseline)}
        others.update(kw.pop("arms", {}) or {})
        secs = sum(float(r.get("seconds", 0.0)) for rows in results.values() for r in rows)
        kw.setdefault("seconds", secs)
        return cls(
            task,
            metric or key,
            method_name or method,
            baseline_name or baseline,
            vals[method],
            vals[baseline],
            higher_is_better,
            seeds=seeds,
            arms=others,
            **kw,
        )

    # ------------------------------------------------------------------ statistics
    @property
    def method_value(self) -> float:
        return _stats(self.method_values)[0]

    @property
    def baseline_value(self) -> float:
        return _stats(self.baseline_values)[0]

    @property
    def method_sd(self) -> float:
        return _stats(self.method_values)[1]

    @property
    def baseline_sd(self) -> float:
        return _stats(self.baseline_values)[1]

    @property
    def n(self) -> int:
        """Seeds of the smaller arm."""
        return min(len(self.method_values), len(self.baseline_values))

    @property
    def improvement(self) -> float:
        """Mean difference in the better direction (positive = the method is better)."""
        d = self.method_value - self.baseline_value
        return d if self.higher_is_better else -d

    @property
    def stderr(self) -> float:
        _, sm, nm = _stats(self.method_values)
        _, sb, nb = _stats(self.baseline_values)
        if nm < 2 or nb < 2:
            return float("nan")
        return math.sqrt(sm**2 / nm + sb**2 / nb)

    @property
    def verdict(self) -> str:
        """``wins`` / ``within noise`` / ``loses`` by :data:`VERDICT_RULE`; ``ahead (n=1)`` /
        ``behind (n=1)`` below 3 seeds; ``not shown at this size`` when ``not_showable``."""
        if self.not_showable:
            return "not shown at this size"
        d = self.improvement
        if self.n < MIN_SEEDS:
            word = "ahead" if d > 0 else "behind" if d < 0 else "tie"
            return f"{word} (n={self.n})"
        se = self.stderr
        if d > 2 * se:
            return "wins"
        if d < -2 * se:
            return "loses"
        return "within noise"

    @property
    def method_wins(self) -> bool:
        """``True`` only for a ``wins`` verdict."""
        return self.verdict == "wins"

    def summary(self, which: str) -> str:
        """``mean ± sd (n)`` of ``"method"`` or ``"baseline"``."""
        vals = self.method_values if which == "method" else self.baseline_values
        return _mean_sd(vals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "method": self.method,
            "baseline": self.baseline,
            "method_values": self.method_values,
            "baseline_values": self.baseline_values,
            "method_value": self.method_value,
            "baseline_value": self.baseline_value,
            "method_sd": self.method_sd,
            "baseline_sd": self.baseline_sd,
            "n": self.n,
            "improvement": self.improvement,
            "stderr": self.stderr,
            "verdict": self.verdict,
            "verdict_rule": VERDICT_RULE,
            "higher_is_better": self.higher_is_better,
            "invariance_error": self.invariance_error,
            "seconds": self.seconds,
            "seeds": self.seeds,
            "arms": self.arms,
            "not_showable": self.not_showable,
            "details": self.details,
            "plots": self.plots,
            "method_wins": self.method_wins,
        }

    def __repr__(self) -> str:
        return (
            f"ReproduceResult({self.metric}: {self.baseline} {self.summary('baseline')} -> "
            f"{self.method} {self.summary('method')}, {self.verdict})"
        )


def _mean_sd(vals: list[float]) -> str:
    from invariance.core._table import fmt

    mean, sd, n = _stats(vals)
    if n == 1:
        return f"{fmt(mean)} (n=1)"
    return f"{fmt(mean)} ± {fmt(sd)} (n={n})"


class MissingMethodError(NotImplementedError):
    """A recipe was asked for a part it does not define."""


class Recipe:
    """Base class of a registered method's recipe. Override what differs from the defaults."""

    Config: ClassVar[type] = TrainConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {}}
    collate_fn: ClassVar[Any] = None
    #: parameter-name prefixes allowed to receive no gradient in the contract test
    unused_parameters: ClassVar[tuple[str, ...]] = ()

    def collate(self, items: list) -> Any:
        fn = type(self).collate_fn
        return (fn or default_collate)(items)

    def make_data(self, cfg: Any, split: str) -> Dataset:
        raise MissingMethodError(f"{type(self).__name__} must define make_data(cfg, split)")

    def build(self, cfg: Any) -> nn.Module:
        raise MissingMethodError(f"{type(self).__name__} must define build(cfg)")

    def step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        raise MissingMethodError(f"{type(self).__name__} must define step(model, batch)")

    def train_step(
        self, model: nn.Module, batch: Any, optimizer: Any, step: int
    ) -> dict[str, torch.Tensor]:
        """Manual optimisation (override only for schedules that are not one loss and one
        optimiser step: min-max games, alternating phases). Do the ``zero_grad``/``backward``/
        optimiser steps here and return the scalars to log, with ``"loss"``. ``optimizer`` is what
        :meth:`optimizer` returned (e.g. a :class:`~invariance.core.train.NamedOptimizers`);
        ``step`` counts the steps already taken. When not overridden, ``train`` backpropagates
        ``step(model, batch)["loss"]`` through one optimiser. ``step`` stays the evaluation loss."""
        raise MissingMethodError(f"{type(self).__name__} does not define train_step")

    def optimizer(self, cfg: Any, model: nn.Module) -> Any:
        """Default: ``cfg.optimizer`` (``adamw`` unless set) with the config's ``lr`` and
        ``weight_decay``, built by :func:`invariance.optim.create_optimizer` (see
        :func:`invariance.core.train.build_optimizer`). Return a
        :class:`~invariance.core.train.NamedOptimizers` together with :meth:`train_step` for
        schedules with several optimisers."""
        from invariance.core.train import build_optimizer

        return build_optimizer(
            model,
            getattr(cfg, "optimizer", "adamw"),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )

    def scheduler(self, cfg: Any, optimizer: torch.optim.Optimizer) -> Any:
        """Default: no learning-rate schedule."""
        return None

    def metrics(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        """Default: mean of every scalar that ``step`` returns, over the dataset in batches."""
        sums: dict[str, float] = {}
        n = 0
        bs = 256
        for i in range(0, len(dataset), bs):
            batch = self.collate([dataset[j] for j in range(i, min(len(dataset), i + bs))])
            out = self.step(model, batch)
            k = min(len(dataset), i + bs) - i
            for name, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    sums[name] = sums.get(name, 0.0) + float(v) * k
            n += k
        return {k: v / max(n, 1) for k, v in sums.items()}

    def check(self, model: nn.Module, cfg: Any) -> list[CheckResult]:
        """Symmetry checks (via :mod:`invariance.core.testing`), negative controls included."""
        return []

    def reproduce(self, cfg: Any, run: RunDir, *, quick: bool) -> ReproduceResult:
        raise MissingMethodError(f"{type(self).__name__} has no reproduce experiment")


def make_config(recipe: Recipe | type[Recipe], size: str = "tiny", **overrides: Any) -> Any:
    """The recipe's config for a preset (``tiny`` = dataclass defaults), then ``overrides``."""
    presets = recipe.presets
    if size not in presets and size != "tiny":
        raise ValueError(f"unknown size {size!r}; this method has presets {sorted(presets)}")
    values = dict(presets.get(size, {}))
    values.update(overrides)
    cls = recipe.Config
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no field(s) {sorted(unknown)}; fields: {sorted(names)}"
        )
    return cls(**values)
