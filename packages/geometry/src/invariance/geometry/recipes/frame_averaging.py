"""Recipe of :class:`~invariance.geometry.FrameAveraging`: FA-PointNet on procedural shapes, trained
on aligned shapes and tested on Haar-SO(3)-rotated ones, against PointNet with rotation
augmentation (the fair same-capacity baseline) and the plain PointNet (a strawman, shown as an
arm)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from torch import Tensor, nn

from invariance.core import CheckResult, Recipe, ReproduceResult, register
from invariance.core.groups import E3, SE3, Permutation
from invariance.core.testing import check_invariant, check_not_invariant, equivariance_error

from ..frame_averaging import FrameAveraging
from ._common import (
    Arm,
    ShapeClsConfig,
    accuracy,
    cls_step,
    cosine,
    generic_check_clouds,
    plain_pointnet,
    plot_arms,
    run_arms,
    seeds_of,
    shape_split,
)

__all__ = ["FrameAveragingConfig", "FrameAveragingRecipe", "rotated_classification"]


@dataclass
class FrameAveragingConfig(ShapeClsConfig):
    """Shape classification with FA-PointNet. ``group``: "O3" (8 frames) or "SO3" (4 frames)."""

    group: str = "O3"

    choices: ClassVar[dict] = {"group": ("O3", "SO3")}


#: the quick preset (also TinvNN's): 6 classes, 64 points, a width-24 PointNet, 120 steps, 3 seeds;
#: 20 held-out shapes per class so that the accuracy's sampling noise is small
QUICK = {
    "n_classes": 6,
    "n_per_class": 12,
    "n_test_per_class": 20,
    "n_points": 64,
    "hidden": 24,
    "steps": 120,
    "lr": 5e-3,
}


def rotated_classification(
    cfg: ShapeClsConfig,
    run: Any,
    *,
    method: str,
    method_name: str,
    build: Any,
    uses_normals: bool = False,
    group: Any = None,
    act: Any = ("points",),
    baseline_steps: int | None = None,
    not_showable: str = "",
) -> ReproduceResult:
    """The aligned-train / rotated-test protocol shared by FA, TinvNN and RISurConv: the method,
    PointNet + SO(3) augmentation (baseline) and plain PointNet (arm), ``cfg.n_seeds`` seeds."""
    arms = {
        method: Arm(build, partial(cls_step, uses_normals=uses_normals), uses_normals=uses_normals),
        "pointnet_aug": Arm(plain_pointnet, partial(cls_step, augment=True), baseline_steps),
        "pointnet": Arm(plain_pointnet, cls_step, baseline_steps),
    }
    tests: dict[int, dict] = {}

    def evaluate(name: str, model: nn.Module, c: Any) -> dict[str, float]:
        if c.seed not in tests:
            tests[c.seed] = {"aligned": shape_split(c, "val"), "rotated": shape_split(c, "test")}
        un = arms[name].uses_normals
        return {
            "aligned_acc": accuracy(model, tests[c.seed]["aligned"], uses_normals=un),
            "rotated_acc": accuracy(model, tests[c.seed]["rotated"], uses_normals=un),
        }

    res, trained = run_arms(
        cfg, arms, make_train=lambda c: shape_split(c, "train"), evaluate=evaluate, run=run,
        keep=method,
    )  # fmt: skip
    assert trained is not None
    pos, normal = generic_check_clouds(cfg, 4 if not uses_normals else 2)
    inputs = (pos, normal) if uses_normals else (pos,)
    err = equivariance_error(trained, inputs, group or E3(), act).max_error
    vals = {a: [r["rotated_acc"] for r in rows] for a, rows in res.items()}
    plots = plot_arms(
        run, vals, metric="rotated test accuracy", title=method_name, name=f"{method}_rotated_acc"
    )
    return ReproduceResult.from_arms(
        res,
        method=method,
        baseline="pointnet_aug",
        key="rotated_acc",
        task=f"procedural shapes ({cfg.n_classes} classes), train aligned / test SO(3)-rotated",
        metric="rotated test accuracy",
        method_name=method_name,
        baseline_name="PointNet + SO(3) augmentation",
        higher_is_better=True,
        seeds=seeds_of(cfg),
        invariance_error=err,
        plots=plots,
        not_showable=not_showable,
        details={
            "aligned_acc": {a: [r["aligned_acc"] for r in rows] for a, rows in res.items()},
            "n_classes": cfg.n_classes,
            "n_per_class": cfg.n_per_class,
            "n_points": cfg.n_points,
            "steps": cfg.steps,
            "baseline_steps": baseline_steps or cfg.steps,
        },
    )


@register(
    "frame_averaging",
    domain="geometry",
    paper="Frame Averaging for Invariant and Equivariant Network Design",
    authors="Puny, Atzmon, Ben-Hamu, Misra, Grover, Smith, Lipman",
    year=2022,
    arxiv="2110.03336",
    code_url="https://github.com/omri1348/Frame-Averaging",
    symmetry="E(3)-invariant (O3 frames) or SE(3)-invariant (SO3 frames), point-permutation-invariant",  # noqa: E501
    baseline="PointNet + SO(3) augmentation (plain PointNet as an arm)",
    tags=("point-cloud", "classification", "wrapper"),
)
class FrameAveragingRecipe(Recipe):
    """FA-PointNet on procedural shapes: train aligned, test on SO(3)-rotated shapes."""

    Config = FrameAveragingConfig
    presets = {"tiny": {}, "full": {"n_per_class": 40, "n_points": 256, "steps": 600}}

    def make_data(self, cfg: FrameAveragingConfig, split: str):
        return shape_split(cfg, split)

    def build(self, cfg: FrameAveragingConfig) -> FrameAveraging:
        return FrameAveraging(plain_pointnet(cfg), group=cfg.group, on_degenerate="ignore")

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return cls_step(model, batch)

    def scheduler(self, cfg: FrameAveragingConfig, optimizer: Any) -> Any:
        return cosine(cfg, optimizer)

    def check(self, model: nn.Module, cfg: FrameAveragingConfig) -> list[CheckResult]:
        pos = generic_check_clouds(cfg)[0]
        model = model.eval()
        group = E3() if model.group == "O3" else SE3()
        return [
            check_invariant(
                f"{group.name} invariance of FA-PointNet logits",
                model, (pos,), group, ("points",), tol=1e-8,
            ),
            check_invariant(
                "point permutation invariance",
                model, (pos,), Permutation(dim=1), ("nodes",), tol=1e-8,
            ),
            check_not_invariant(
                "negative control: the bare PointNet backbone",
                model.backbone, (pos,), group, ("points",),
            ),
        ]  # fmt: skip

    def reproduce(self, cfg: FrameAveragingConfig, run: Any, *, quick: bool) -> ReproduceResult:
        if quick:
            cfg = dataclasses.replace(cfg, **QUICK)
        return rotated_classification(
            cfg,
            run,
            method="fa_pointnet",
            method_name=f"FA-PointNet ({cfg.group})",
            build=self.build,
            group=E3() if cfg.group == "O3" else SE3(),
        )
