"""Recipe of :class:`~invariance.geometry.TinvNN`: TinvNN-PointNet on procedural shapes, trained on
aligned shapes and tested on Haar-SO(3)-rotated ones, against PointNet with rotation augmentation
(baseline) and the plain PointNet (arm)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from invariance.core import CheckResult, Recipe, ReproduceResult, register
from invariance.core.groups import E3, Permutation
from invariance.core.testing import check_invariant, check_not_invariant

from ..tinvnn import TinvNN
from ._common import (
    ShapeClsConfig,
    cls_step,
    cosine,
    generic_check_clouds,
    plain_pointnet,
    shape_split,
)
from .frame_averaging import QUICK, rotated_classification

__all__ = ["TinvNNConfig", "TinvNNRecipe"]


@dataclass
class TinvNNConfig(ShapeClsConfig):
    """Shape classification with TinvNN-PointNet. ``method``: "pca" or "mds"."""

    method: str = "pca"

    choices: ClassVar[dict] = {"method": ("pca", "mds")}


@register(
    "tinvnn",
    domain="geometry",
    paper="Revisiting Transformation Invariant Geometric Deep Learning: Are Initial Representations All You Need?",  # noqa: E501
    authors="Zhang, Wang, Zhang, Cui, Zhu",
    year=2021,
    arxiv="2112.12345",
    code_url="",
    symmetry="E(3)-invariant on generic clouds (distinct eigenvalues), point-permutation-invariant",
    baseline="PointNet + SO(3) augmentation (plain PointNet as an arm)",
    tags=("point-cloud", "classification", "canonicalisation"),
)
class TinvNNRecipe(Recipe):
    """TinvNN-PointNet on procedural shapes: train aligned, test on SO(3)-rotated shapes."""

    Config = TinvNNConfig
    presets = {"tiny": {}, "full": {"n_per_class": 40, "n_points": 256, "steps": 600}}

    def make_data(self, cfg: TinvNNConfig, split: str):
        return shape_split(cfg, split)

    def build(self, cfg: TinvNNConfig) -> TinvNN:
        return TinvNN(plain_pointnet(cfg), method=cfg.method, on_degenerate="ignore")

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return cls_step(model, batch)

    def scheduler(self, cfg: TinvNNConfig, optimizer: Any) -> Any:
        return cosine(cfg, optimizer)

    def check(self, model: nn.Module, cfg: TinvNNConfig) -> list[CheckResult]:
        pos = generic_check_clouds(cfg)[0]
        model = model.eval()
        unsigned = TinvNN(model.backbone, method=model.method, sign="none", on_degenerate="ignore")
        return [
            check_invariant(
                "E(3) invariance of TinvNN-PointNet logits",
                model, (pos,), E3(), ("points",), tol=1e-8,
            ),
            check_invariant(
                "point permutation invariance",
                model, (pos,), Permutation(dim=1), ("nodes",), tol=1e-8,
            ),
            check_not_invariant(
                "negative control: the bare PointNet backbone",
                model.backbone, (pos,), E3(), ("points",),
            ),
            check_not_invariant(
                "negative control: MDS without sign disambiguation",
                unsigned, (pos,), E3(), ("points",),
            ),
        ]  # fmt: skip

    def reproduce(self, cfg: TinvNNConfig, run: Any, *, quick: bool) -> ReproduceResult:
        if quick:
            cfg = dataclasses.replace(cfg, **QUICK)
        return rotated_classification(
            cfg, run, method="tinvnn_pointnet", method_name="TinvNN-PointNet", build=self.build
        )
