"""The recipe protocol: how a registered method exposes data, model, loss, metrics, checks and its
reproduce experiment to the shared training loop, the CLI and the generic tests.

A method module defines a ``<Method>Config`` dataclass (subclassing :class:`TrainConfig`; its
defaults are the *tiny* preset, seconds on a CPU) and a :class:`Recipe` subclass registered with
:func:`invariance.core.registry.register`. The recipe never parses arguments, never prints and never
touches ``torch.distributed``: :func:`invariance.core.train.fit` and the CLI drive it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

if TYPE_CHECKING:
    from invariance.core.io import RunDir

__all__ = [
    "TrainConfig",
    "Recipe",
    "CheckResult",
    "ReproduceResult",
    "make_config",
]


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
    """

    seed: int = 0
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    ckpt_every: int = 0
    log_every: int = 10


@dataclass
class CheckResult:
    """One symmetry check. A negative control *passes* when its error is large (the broken variant
    really breaks the symmetry)."""

    name: str
    error: float
    tol: float
    passed: bool
    negative_control: bool = False
    detail: str = ""


@dataclass
class ReproduceResult:
    """What a reproduce experiment reports: the method and its baseline on one metric."""

    task: str
    metric: str
    method: str
    baseline: str
    method_value: float
    baseline_value: float
    higher_is_better: bool = True
    invariance_error: float | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    @property
    def method_wins(self) -> bool:
        if self.higher_is_better:
            return self.method_value > self.baseline_value
        return self.method_value < self.baseline_value

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_wins"] = self.method_wins
        return d


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
        """Default: AdamW with the config's ``lr`` and ``weight_decay``. Return a
        :class:`~invariance.core.train.NamedOptimizers` together with :meth:`train_step` for
        schedules with several optimisers."""
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

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
