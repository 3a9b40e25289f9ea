"""Shared pieces of the shape-classification recipes (FA, TinvNN, RISurConv): config, data
splits, a small training loop, accuracy, and the aligned-train / rotated-test protocol."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.core import TrainConfig

from .data.shapes import SHAPE_CLASSES, PointCloudDataset, make_shape_classes
from .nn.baselines import PointNet

__all__ = ["ShapeClsConfig", "shape_split", "train_classifier", "accuracy", "rotated_protocol"]


@dataclass
class ShapeClsConfig(TrainConfig):
    """Shape classification config (tiny preset = defaults).

    Args:
        n_classes: how many of the 13 procedural classes (default 13).
        n_per_class: training shapes per class; the test splits use half as many.
        n_points: points per shape. hidden: backbone width.
    """

    steps: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    n_classes: int = 13
    n_per_class: int = 6
    n_points: int = 128
    hidden: int = 64


def shape_split(cfg: ShapeClsConfig, split: str) -> PointCloudDataset:
    """train: aligned; val: aligned held-out; test: held-out with Haar SO(3) rotations."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if not 1 <= cfg.n_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"n_classes must be in [1, {len(SHAPE_CLASSES)}], got {cfg.n_classes}")
    classes = list(SHAPE_CLASSES)[: cfg.n_classes]
    n = cfg.n_per_class if split == "train" else max(1, cfg.n_per_class // 2)
    seed = 1000 * cfg.seed + {"train": 0, "val": 1, "test": 2}[split]
    return make_shape_classes(
        n, cfg.n_points, seed=seed, classes=classes, rotation="so3" if split == "test" else "none"
    )


def _forward(model: nn.Module, pos: Tensor, normal: Tensor, uses_normals: bool) -> Tensor:
    return model(pos, normal) if uses_normals else model(pos)


def cls_step(
    model: nn.Module, batch: dict[str, Tensor], uses_normals: bool = False
) -> dict[str, Tensor]:
    logits = _forward(model, batch["pos"], batch["normal"], uses_normals)
    loss = F.cross_entropy(logits, batch["y"])
    return {"loss": loss, "acc": (logits.argmax(-1) == batch["y"]).float().mean().detach()}


def train_classifier(
    model: nn.Module,
    ds: PointCloudDataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    uses_normals: bool = False,
) -> nn.Module:
    """Adam + cosine schedule on random minibatches (seeded)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(ds), (min(batch_size, len(ds)),), generator=g)
        out = cls_step(
            model, {"pos": ds.pos[idx], "normal": ds.normal[idx], "y": ds.y[idx]}, uses_normals
        )
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(
    model: nn.Module, ds: PointCloudDataset, *, uses_normals: bool = False, bs: int = 64
) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(ds), bs):
        logits = _forward(model, ds.pos[i : i + bs], ds.normal[i : i + bs], uses_normals)
        correct += int((logits.argmax(-1) == ds.y[i : i + bs]).sum())
    return correct / len(ds)


def rotated_protocol(
    cfg: ShapeClsConfig,
    builders: dict[str, Any],
    *,
    uses_normals: dict[str, bool] | None = None,
    steps: dict[str, int] | None = None,
) -> tuple[dict[str, dict[str, float]], float]:
    """Train each model on aligned shapes; accuracy on aligned and SO(3)-rotated test shapes.
    ``steps`` overrides ``cfg.steps`` per model (e.g. to give a cheap baseline more steps)."""
    t0 = time.time()
    uses_normals = uses_normals or {}
    train, val, test = shape_split(cfg, "train"), shape_split(cfg, "val"), shape_split(cfg, "test")
    out = {}
    for name, build in builders.items():
        torch.manual_seed(cfg.seed)
        m = build()
        un = uses_normals.get(name, False)
        n_steps = (steps or {}).get(name, cfg.steps)
        train_classifier(
            m,
            train,
            steps=n_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=cfg.seed,
            uses_normals=un,
        )
        out[name] = {
            "aligned_acc": accuracy(m, val, uses_normals=un),
            "rotated_acc": accuracy(m, test, uses_normals=un),
            "steps": n_steps,
        }
    return out, time.time() - t0


def plain_pointnet(cfg: ShapeClsConfig) -> PointNet:
    return PointNet(num_classes=cfg.n_classes, hidden=cfg.hidden, global_dim=2 * cfg.hidden)


def generic_check_clouds(
    cfg: ShapeClsConfig, k: int = 4, *, min_gap: float = 0.05
) -> tuple[Tensor, Tensor]:
    """Up to k held-out aligned shapes whose covariance eigenvalues are well separated
    (relative gap > ``min_gap``), for exact invariance checks of frame-based models.
    Returns ``(pos, normal)``."""
    ds = shape_split(cfg, "val")
    pos = ds.pos.double()
    c = pos - pos.mean(1, keepdim=True)
    lam = torch.linalg.eigvalsh(c.transpose(1, 2) @ c)
    gap = torch.minimum(lam[:, 1] - lam[:, 0], lam[:, 2] - lam[:, 1]) / lam[:, 2]
    keep = (gap > min_gap).nonzero().flatten()[:k]
    if len(keep) == 0:
        raise RuntimeError("no shape with a well-separated PCA spectrum in the validation split")
    return ds.pos[keep], ds.normal[keep]
