"""Recipe of :class:`~invariance.geometry.RISurConvNet` (CPU-sized "lite" network with exact
normals): train on aligned procedural shapes, test on Haar-SO(3)-rotated ones, against PointNet
with rotation augmentation (baseline) and the plain PointNet (arm)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from invariance.core import CheckResult, Recipe, ReproduceResult, register
from invariance.core.groups import SE3, Permutation
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_invariant, check_not_invariant

from ..risurconv import RISurConvNet
from ._common import ShapeClsConfig, cls_step, cosine, generic_check_clouds, shape_split
from .frame_averaging import rotated_classification

__all__ = ["RISurConvConfig", "RISurConvRecipe", "build_risurconv"]


@dataclass
class RISurConvConfig(ShapeClsConfig):
    """RISurConv-lite on procedural shapes (tiny preset = defaults)."""

    steps: int = 20
    width: int = 16  # channels of the first stage; later stages double
    nsample: int = 16
    embed: int = 16  # first embedding width (official 32; the second is twice this)

    ranges: ClassVar[dict] = {
        **ShapeClsConfig.ranges,
        "n_points": (16, None),
        "width": (1, None),
        "nsample": (3, None),
        "embed": (4, None),
    }

    def validate(self) -> None:
        super().validate()
        if self.nsample > self.n_points // 4:
            raise ConfigError(
                f"RISurConvConfig.nsample={self.nsample} must be <= n_points // 4 = "
                f"{self.n_points // 4} (the first stage's centres)"
            )


#: quick preset: 6 classes, 64 points and a narrow network so that 3 seeds take seconds
QUICK = {
    "n_classes": 6,
    "n_per_class": 12,
    "n_test_per_class": 20,
    "n_points": 64,
    "hidden": 24,
    "steps": 40,
    "lr": 5e-3,
    "width": 8,
    "embed": 8,
    "nsample": 8,
}


def build_risurconv(cfg: RISurConvConfig, **kw: Any) -> RISurConvNet:
    n, w, k = cfg.n_points, cfg.width, cfg.nsample
    return RISurConvNet(
        num_classes=cfg.n_classes,
        npoints=(n // 4, n // 8, n // 16),
        nsamples=(k, k, min(k, n // 8)),
        channels=(w, 2 * w, 4 * w),
        global_channels=8 * w,
        embed_channels=(cfg.embed, 2 * cfg.embed),
        **kw,
    )


@register(
    "risurconv",
    domain="geometry",
    paper="RISurConv: Rotation Invariant Surface Attention-Augmented Convolutions for 3D Point Cloud Classification and Segmentation",  # noqa: E501
    authors="Zhang, Yang, Xiang",
    year=2024,
    arxiv="2408.06110",
    code_url="https://github.com/cszyzhang/RISurConv",
    symmetry="SE(3)-invariant (rotations of points and normals, translations), point-permutation-invariant",  # noqa: E501
    baseline="PointNet + SO(3) augmentation (plain PointNet as an arm)",
    tags=("point-cloud", "classification", "rotation-invariant"),
)
class RISurConvRecipe(Recipe):
    """RISurConv-lite with exact normals: train aligned, test on SO(3)-rotated shapes."""

    Config = RISurConvConfig
    presets = {
        "tiny": {},
        "full": {"n_per_class": 24, "n_points": 256, "steps": 200, "width": 32, "embed": 32},
    }

    def make_data(self, cfg: RISurConvConfig, split: str):
        return shape_split(cfg, split)

    def build(self, cfg: RISurConvConfig) -> RISurConvNet:
        return build_risurconv(cfg)

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return cls_step(model, batch, uses_normals=True)

    def scheduler(self, cfg: RISurConvConfig, optimizer: Any) -> Any:
        return cosine(cfg, optimizer)

    def check(self, model: nn.Module, cfg: RISurConvConfig) -> list[CheckResult]:
        pos, normal = generic_check_clouds(cfg, 2)
        model = model.eval()
        official = build_risurconv(cfg, lra_sign="official")
        official.load_state_dict(model.state_dict())
        inp = (pos, normal)
        act = ("points", "vector")
        return [
            check_invariant("SE(3) invariance of logits", model, inp, SE3(), act, tol=1e-8),
            check_invariant(
                "point permutation invariance",
                model, inp, Permutation(dim=1), ("nodes", "nodes"), tol=1e-8,
            ),
            check_not_invariant(
                "negative control: official ambiguous LRA sign",
                official.eval(), inp, SE3(), act, min_error=1e-6, trials=6,
            ),
        ]  # fmt: skip

    def reproduce(self, cfg: RISurConvConfig, run: Any, *, quick: bool) -> ReproduceResult:
        if quick:
            cfg = dataclasses.replace(cfg, **QUICK)
        return rotated_classification(
            cfg,
            run,
            method="risurconv",
            method_name="RISurConv-lite",
            build=self.build,
            uses_normals=True,
            group=SE3(),
            act=("points", "vector"),
        )
