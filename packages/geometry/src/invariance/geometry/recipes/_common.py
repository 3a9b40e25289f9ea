"""Shared pieces of the geometry recipes (private; not auto-imported as a recipe): the
shape-classification config and splits, training through core's ``fit``, rotation augmentation,
evaluation, the per-seed arms loop and the per-seed plot."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.core import TrainConfig
from invariance.core.groups import haar_so3
from invariance.core.train import build_optimizer, fit

from ..data.shapes import SHAPE_CLASSES, PointCloudDataset, make_shape_classes
from ..nn.baselines import PointNet

__all__ = [
    "ShapeClsConfig",
    "Arm",
    "shape_split",
    "cls_step",
    "rotate_batch",
    "train_model",
    "cosine",
    "accuracy",
    "run_arms",
    "seeds_of",
    "plot_arms",
    "plain_pointnet",
    "generic_check_clouds",
    "rotated_protocol",
]


@dataclass
class ShapeClsConfig(TrainConfig):
    """Shape classification config (tiny preset = defaults).

    Args:
        n_classes: how many of the 13 procedural classes (default 13).
        n_per_class: training shapes per class; the test splits use half as many.
        n_points: points per shape. hidden: backbone width.
        n_test_per_class: shapes per class of each held-out split (``0``: half of
            ``n_per_class``).
        n_seeds: seeds of the reproduce experiment (``seed``, ``seed + 1``, ...).
    """

    steps: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    n_classes: int = 13
    n_per_class: int = 6
    n_points: int = 128
    hidden: int = 64
    n_test_per_class: int = 0
    n_seeds: int = 3

    ranges: ClassVar[dict] = {
        "lr": (0.0, 1.0),
        "n_classes": (1, len(SHAPE_CLASSES)),
        "n_per_class": (1, None),
        "n_points": (4, None),
        "hidden": (1, None),
        "n_seeds": (1, 50),
    }


def seeds_of(cfg: Any) -> list[int]:
    """The reproduce seeds: ``cfg.seed``, ``cfg.seed + 1``, ... (``cfg.n_seeds`` of them)."""
    return [cfg.seed + i for i in range(cfg.n_seeds)]


def shape_split(cfg: ShapeClsConfig, split: str) -> PointCloudDataset:
    """train: aligned; val: aligned held-out; test: held-out with Haar SO(3) rotations."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    classes = list(SHAPE_CLASSES)[: cfg.n_classes]
    n_test = cfg.n_test_per_class or max(1, cfg.n_per_class // 2)
    n = cfg.n_per_class if split == "train" else n_test
    seed = 1000 * cfg.seed + {"train": 0, "val": 1, "test": 2}[split]
    return make_shape_classes(
        n, cfg.n_points, seed=seed, classes=classes, rotation="so3" if split == "test" else "none"
    )


def rotate_batch(batch: dict[str, Tensor], keys: Sequence[str] = ("pos", "normal")) -> dict:
    """Rotation augmentation: one Haar SO(3) rotation per item applied to ``keys`` (B, ..., 3)
    (draws from torch's global generator, which ``train_model`` seeds)."""
    first = batch[keys[0]]
    R = haar_so3(first.shape[0], dtype=torch.float64).to(first.dtype)
    out = dict(batch)
    for k in keys:
        if k in batch:
            v = batch[k]
            out[k] = (v.reshape(v.shape[0], -1, 3) @ R.transpose(1, 2)).reshape(v.shape)
    return out


def cls_step(
    model: nn.Module,
    batch: dict[str, Tensor],
    uses_normals: bool = False,
    augment: bool = False,
) -> dict[str, Tensor]:
    """Cross-entropy on a shape batch (optionally rotation-augmented)."""
    if augment and model.training:
        batch = rotate_batch(batch)
    logits = model(batch["pos"], batch["normal"]) if uses_normals else model(batch["pos"])
    loss = F.cross_entropy(logits, batch["y"])
    return {"loss": loss, "acc": (logits.argmax(-1) == batch["y"]).float().mean().detach()}


def cosine(cfg: Any, optimizer: torch.optim.Optimizer, steps: int | None = None) -> Any:
    """The cosine learning-rate schedule every geometry recipe trains with."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps or cfg.steps, 1))


def train_model(
    model: nn.Module,
    ds: Any,
    cfg: Any,
    step_fn: Callable[[nn.Module, Any], dict],
    *,
    seed: int,
    steps: int | None = None,
) -> nn.Module:
    """``cfg.optimizer`` + cosine schedule through core's :func:`~invariance.core.train.fit`
    (seeded); returns the model in eval mode."""
    steps = cfg.steps if steps is None else steps
    torch.manual_seed(seed)
    opt = build_optimizer(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    fit(
        model,
        opt,
        ds,
        step_fn,
        steps=steps,
        batch_size=min(cfg.batch_size, len(ds)),
        scheduler=cosine(cfg, opt, steps),
        seed=seed,
        progress=False,
        log_every=0,
    )
    return model.eval()


@torch.no_grad()
def accuracy(
    model: nn.Module, ds: PointCloudDataset, *, uses_normals: bool = False, bs: int = 64
) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(ds), bs):
        pos, nrm = ds.pos[i : i + bs], ds.normal[i : i + bs]
        logits = model(pos, nrm) if uses_normals else model(pos)
        correct += int((logits.argmax(-1) == ds.y[i : i + bs]).sum())
    return correct / len(ds)


@dataclass
class Arm:
    """One arm of a reproduce: how to build it, its training step, its step budget and config
    overrides for its training (e.g. its own tuned learning rate)."""

    build: Callable[[Any], nn.Module]
    step: Callable[[nn.Module, Any], dict]
    steps: int | None = None
    uses_normals: bool = False
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_arms(
    cfg: Any,
    arms: dict[str, Arm],
    *,
    make_train: Callable[[Any], Any],
    evaluate: Callable[[str, nn.Module, Any], dict[str, float]],
    run: Any = None,
    keep: str | None = None,
) -> tuple[dict[str, list[dict]], nn.Module | None]:
    """For every seed of ``cfg`` and every arm: build (seeded), train on ``make_train(cfg_s)``
    and ``evaluate(arm, model, cfg_s)``; log each finished run to ``run``. Returns ``{arm:
    [metrics per seed]}`` (each with ``seconds``) and the trained ``keep`` model of the first
    seed (for the invariance error of the trained method)."""
    res: dict[str, list[dict]] = {a: [] for a in arms}
    kept = None
    for s in seeds_of(cfg):
        c = dataclasses.replace(cfg, seed=s)
        train = make_train(c)
        for name, arm in arms.items():
            t0 = time.perf_counter()
            ca = dataclasses.replace(c, **arm.overrides) if arm.overrides else c
            torch.manual_seed(s)
            model = arm.build(ca)
            if any(p.requires_grad for p in model.parameters()):
                train_model(model, train, ca, arm.step, seed=s, steps=arm.steps)
            m = dict(evaluate(name, model.eval(), c))
            m["seconds"] = round(time.perf_counter() - t0, 3)
            res[name].append(m)
            if run is not None:
                run.log_metrics({"arm": name, "seed": s, **m})
            if name == keep and kept is None:
                kept = model
    return res, kept


def plot_arms(
    run: Any, values: dict[str, list[float]], *, metric: str, title: str, name: str
) -> list[str]:
    """A per-seed strip plot of every arm (mean as a bar); returns ``[path]`` (``[]`` when the
    run directory writes nothing)."""
    if run is None or not getattr(run, "enabled", False):
        return []
    from invariance.core.io import plt

    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(1.6 + 1.3 * len(values), 3.2))
    for i, vals in enumerate(values.values()):
        ax.bar(i, sum(vals) / len(vals), color="0.85", width=0.6)
        ax.scatter([i] * len(vals), vals, color="C0", zorder=3, s=18)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    return [run.savefig(fig, name)]


def plain_pointnet(cfg: ShapeClsConfig) -> PointNet:
    return PointNet(num_classes=cfg.n_classes, hidden=cfg.hidden, global_dim=2 * cfg.hidden)


def generic_check_clouds(
    cfg: ShapeClsConfig, k: int = 4, *, min_gap: float = 0.05
) -> tuple[Tensor, Tensor]:
    """Up to k held-out aligned shapes of *different* classes whose covariance eigenvalues are
    well separated (relative gap > ``min_gap``), for exact invariance checks of frame-based
    models (different classes, so the outputs vary across the inputs). Returns
    ``(pos, normal)``."""
    ds = shape_split(cfg, "val")
    pos = ds.pos.double()
    c = pos - pos.mean(1, keepdim=True)
    lam = torch.linalg.eigvalsh(c.transpose(1, 2) @ c)
    gap = torch.minimum(lam[:, 1] - lam[:, 0], lam[:, 2] - lam[:, 1]) / lam[:, 2]
    keep: list[int] = []
    seen: set[int] = set()
    for i in (gap > min_gap).nonzero().flatten().tolist():
        if int(ds.y[i]) not in seen:
            keep.append(i)
            seen.add(int(ds.y[i]))
        if len(keep) == k:
            break
    if not keep:
        raise RuntimeError("no shape with a well-separated PCA spectrum in the validation split")
    return ds.pos[keep], ds.normal[keep]


def rotated_protocol(
    cfg: ShapeClsConfig,
    builders: dict[str, Callable[[], nn.Module]],
    *,
    uses_normals: dict[str, bool] | None = None,
    steps: dict[str, int] | None = None,
) -> tuple[dict[str, dict[str, float]], float]:
    """One seed (``cfg.seed``): train each model on aligned shapes; accuracy on aligned and
    SO(3)-rotated held-out shapes. ``steps`` overrides ``cfg.steps`` per model."""
    t0 = time.perf_counter()
    uses_normals = uses_normals or {}
    train, val, test = shape_split(cfg, "train"), shape_split(cfg, "val"), shape_split(cfg, "test")
    out = {}
    for name, build in builders.items():
        torch.manual_seed(cfg.seed)
        m = build()
        un = uses_normals.get(name, False)
        n_steps = (steps or {}).get(name, cfg.steps)
        step = lambda mm, b, un=un: cls_step(mm, b, uses_normals=un)
        train_model(m, train, cfg, step, seed=cfg.seed, steps=n_steps)
        out[name] = {
            "aligned_acc": accuracy(m, val, uses_normals=un),
            "rotated_acc": accuracy(m, test, uses_normals=un),
            "steps": n_steps,
        }
    return out, time.perf_counter() - t0
