"""Optimizer factory in the spirit of timm's ``create_optimizer_v2``.

``create_optimizer(model, "adamp", lr=1e-3, weight_decay=1e-2)`` builds two parameter groups: the
weights with decay and, by default, every 1-D (or 0-D) parameter (biases, norm scales) without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from invariance.optim._checks import check_float
from invariance.optim.adamp import SGDP, AdamP

__all__ = ["OptimInfo", "create_optimizer", "list_optimizers", "param_groups_no_decay_1d"]


@dataclass(frozen=True)
class OptimInfo:
    """Metadata of an optimizer the factory can build."""

    name: str
    cls: type[torch.optim.Optimizer]
    description: str
    has_momentum: bool = True
    has_betas: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)


_OPTIMIZERS: dict[str, OptimInfo] = {
    "adamp": OptimInfo(
        "adamp",
        AdamP,
        "Adam with radial projection (Heo et al., 2021)",
        has_betas=True,
        defaults={"lr": 1e-3},
    ),
    "sgdp": OptimInfo(
        "sgdp",
        SGDP,
        "SGD with radial projection (Heo et al., 2021)",
        defaults={"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
    "adamw": OptimInfo(
        "adamw",
        torch.optim.AdamW,
        "torch AdamW (decoupled decay)",
        has_betas=True,
        defaults={"lr": 1e-3},
    ),
    "adam": OptimInfo(
        "adam", torch.optim.Adam, "torch Adam", has_betas=True, defaults={"lr": 1e-3}
    ),
    "sgd": OptimInfo(
        "sgd",
        torch.optim.SGD,
        "torch SGD (momentum 0.9, Nesterov)",
        defaults={"lr": 0.1, "momentum": 0.9, "nesterov": True},
    ),
}


def list_optimizers() -> list[str]:
    """Names accepted by :func:`create_optimizer`."""
    return sorted(_OPTIMIZERS)


def param_groups_no_decay_1d(
    model: nn.Module, weight_decay: float, *, no_decay: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a ``weight_decay=0`` group.

    The second group holds every parameter with ``ndim <= 1`` and every name in ``no_decay``.
    """
    check_float("weight_decay", weight_decay, 0.0)
    skip = set(no_decay)
    decay, no = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no if p.ndim <= 1 or name in skip else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no:
        groups.append({"params": no, "weight_decay": 0.0})
    return groups


def create_optimizer(
    model_or_params: nn.Module | Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    name: str = "adamp",
    lr: float | torch.Tensor | None = None,
    weight_decay: float = 0.0,
    *,
    decay_1d: bool = False,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` for a model (no weight decay on 1-D parameters by default).

    This is the optimizer factory every invariance package uses (the core's default
    ``Recipe.optimizer`` calls ``create_optimizer(model, cfg.optimizer, lr=cfg.lr,
    weight_decay=cfg.weight_decay)``).

    Args:
        model_or_params: an ``nn.Module`` (two groups are built from its parameters: the >= 2-D
            ones with decay, the 1-D/0-D ones without), or parameters / parameter groups (passed
            through; ``weight_decay`` becomes the default of every group).
        name: one of :func:`list_optimizers`, case-insensitive (default: ``"adamp"``).
        lr: learning rate (a float or a 0-d Tensor for AdamP/SGDP); ``None`` takes the
            optimizer's default from its :class:`OptimInfo`.
        weight_decay: decay of the >= 2-D parameters (default: ``0``).
        decay_1d: also decay biases and norm scales (default: ``False``).
        **kwargs: passed to the optimizer class (e.g. ``betas``, ``delta``, ``wd_ratio``,
            ``foreach``).

    Raises:
        ValueError: ``name`` is not one of :func:`list_optimizers` (the message lists them), or
            ``lr`` / ``weight_decay`` is negative or not finite.
        TypeError: ``name`` is not a string, or ``lr`` / ``weight_decay`` is not a number.
    """
    if not isinstance(name, str):
        raise TypeError(
            f"name must be a str, one of {list_optimizers()}, got {type(name).__name__}"
        )
    key = name.lower()
    if key not in _OPTIMIZERS:
        raise ValueError(f"name must be one of {list_optimizers()} (unknown optimizer {name!r})")
    if lr is not None and not isinstance(lr, torch.Tensor):
        check_float("lr", lr, 0.0)
    check_float("weight_decay", weight_decay, 0.0)
    info = _OPTIMIZERS[key]
    opts = dict(info.defaults)
    opts.update(kwargs)
    if lr is not None:
        opts["lr"] = lr
    opts["weight_decay"] = weight_decay
    if isinstance(model_or_params, nn.Module) and not decay_1d:
        params: Any = param_groups_no_decay_1d(model_or_params, weight_decay)
    elif isinstance(model_or_params, nn.Module):
        params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = list(model_or_params)
    if not params:
        raise ValueError("model_or_params has no trainable parameters")
    return info.cls(params, **opts)
