"""Recipe of :class:`~invariance.geometry.pare_net.PARENet` (PARE-lite): pairwise registration of
procedural assemblies, trained on pairs aligned up to a yaw and tested on aligned and
Haar-SO(3)-rotated pairs of the normal and low-overlap splits, against the same network with
non-invariant descriptors (the twin) and FPFH + RANSAC (open3d); the feature-based hypothesis
proposer against RANSAC on the same correspondences (hypotheses and seconds)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from invariance.core import CheckResult, Recipe, ReproduceResult, register
from invariance.core.groups import SE3, SO3
from invariance.core.testing import (
    as_float64,
    check_equivariant,
    check_invariant,
    check_not_invariant,
    equivariance_error,
)

from ..pare_net import PARENet, feature_hypotheses
from ..registration import make_pair, ransac, registration_metrics, summarize
from ._registration import (
    PairSet,
    RegConfig,
    collate_pairs,
    eval_matcher,
    heldout_pairs,
    mean_losses,
    run_registration_grid,
    train_pairs,
)
from .roitr import NOT_SHOWABLE, registration_result

__all__ = ["PARENetConfig", "PARENetRecipe", "pare_register"]


@dataclass
class PARENetConfig(RegConfig):
    """PARE-lite registration (tiny preset = defaults; fields of
    :class:`~invariance.geometry.recipes._registration.RegConfig` plus the network's).

    Args:
        channels: vector channels of the three levels (even). out_channels: fine equivariant
            channels (even). k: neighbours per block. coarse_dim / fine_dim: transformer /
            descriptor widths. patch_k: points per patch. num_coarse: superpoint pairs matched.
        num_corr: correspondences kept for pose estimation (each one a proposer hypothesis).
    """

    lr: float = 1e-3
    channels: tuple[int, int, int] = (8, 16, 32)
    out_channels: int = 16
    k: int = 12
    coarse_dim: int = 32
    fine_dim: int = 32
    patch_k: int = 32
    num_coarse: int = 16
    num_corr: int = 128

    ranges: ClassVar[dict] = {
        **RegConfig.ranges,
        "channels": (2, None),  # the last one feeds an invariant head: >= 8 (validate)
        "out_channels": (8, None),
        "k": (2, None),
        "coarse_dim": (4, None),
        "fine_dim": (1, None),
        "patch_k": (2, None),
        "num_coarse": (1, None),
        "num_corr": (3, None),
    }

    def validate(self) -> None:
        super().validate()
        if any(c % 2 for c in self.channels) or self.out_channels % 2:
            raise ValueError(
                f"PARENetConfig.channels and out_channels must be even, got {self.channels}, "
                f"{self.out_channels}"
            )
        if self.channels[-1] < 8:
            raise ValueError(
                f"PARENetConfig.channels[-1] must be >= 8 (invariant head), got {self.channels}"
            )
        if self.coarse_dim % 4:
            raise ValueError(f"PARENetConfig.coarse_dim must be a multiple of 4, got "
                             f"{self.coarse_dim}")  # fmt: skip


#: quick preset: the plumbing of the full experiment on 3 seeds (not the claim)
QUICK = {"steps": 5, "n_train": 4, "n_test": 4, "test_splits": "normal", "fpfh": False}


def build_pare(cfg: PARENetConfig, *, invariant: bool = True) -> PARENet:
    return PARENet(
        channels=tuple(cfg.channels),
        out_channels=cfg.out_channels,
        k=cfg.k,
        coarse_dim=cfg.coarse_dim,
        fine_dim=cfg.fine_dim,
        patch_k=cfg.patch_k,
        num_coarse=cfg.num_coarse,
        invariant=invariant,
    )


def pare_step(cfg: PARENetConfig):
    def step(model: nn.Module, batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        outs = [
            model.loss(b["src"], b["tgt"], b["R"], b["t"], radius=cfg.pos_radius) for b in batch
        ]
        return mean_losses(outs)

    return step


def pare_register(model: PARENet, cfg: PARENetConfig):
    """``pair -> (R, t, src_corr, tgt_corr)`` with PARE's feature-based proposer."""

    def reg(p):
        res, c = model.register(p.src, p.tgt, num=cfg.num_corr, radius=cfg.inlier_radius)
        return res.R, res.t, p.src[c["src_idx"]], p.tgt[c["tgt_idx"]]

    return reg


@torch.no_grad()
def proposer_vs_ransac(model: PARENet, cfg: PARENetConfig, pairs: list) -> dict[str, float]:
    """On the same correspondences: RR, hypotheses and pose-solver seconds of the proposer and of
    RANSAC with ``cfg.ransac_iterations`` hypotheses (the network's forward is not counted)."""
    rows_p, rows_r, sec_p, sec_r, hyp_p = [], [], 0.0, 0.0, 0
    for p in pairs:
        out = model(p.src, p.tgt)
        c = model.correspondences(out, num=cfg.num_corr)
        a, b = out["src"], out["tgt"]
        src_c, tgt_c = p.src[c["src_idx"]], p.tgt[c["tgt_idx"]]
        t0 = time.perf_counter()
        res = feature_hypotheses(
            src_c, tgt_c, a["eq0"][c["src_idx"]], b["eq0"][c["tgt_idx"]],
            p.src[c["voter_src"]], p.tgt[c["voter_tgt"]], radius=cfg.inlier_radius,
        )  # fmt: skip
        sec_p += time.perf_counter() - t0
        hyp_p += res.num_hypotheses
        rows_p.append(registration_metrics(p.src, res.R, res.t, p.R, p.t))
        t1 = time.perf_counter()
        rr = ransac(
            src_c, tgt_c, threshold=cfg.inlier_radius, iterations=cfg.ransac_iterations,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        sec_r += time.perf_counter() - t1
        rows_r.append(registration_metrics(p.src, rr.R, rr.t, p.R, p.t))
    n = len(pairs)
    return {
        "rr_proposer": summarize(rows_p)["rr"],
        "rr_ransac": summarize(rows_r)["rr"],
        "hyp_proposer": hyp_p / n,
        "hyp_ransac": float(cfg.ransac_iterations),
        "s_proposer": sec_p / n,
        "s_ransac": sec_r / n,
    }


@register(
    "pare_net",
    domain="geometry",
    paper="PARE-Net: Position-Aware Rotation-Equivariant Networks for Robust Point Cloud Registration",  # noqa: E501
    authors="Yao et al.",
    year=2024,
    arxiv="2407.10142",
    code_url="https://github.com/yaorz97/PARENet",
    symmetry="SO(3)-equivariant features, SE(3)-invariant descriptors, equivariant pose hypotheses",
    baseline="the same network with non-invariant descriptors (twin); FPFH + RANSAC as an arm",
    tags=("point-cloud", "registration", "vector-neurons"),
)
class PARENetRecipe(Recipe):
    """PARE-lite on procedural assembly pairs: train aligned, test aligned and SO(3)-rotated."""

    Config = PARENetConfig
    presets = {
        "tiny": {},
        "full": {
            "split": "normal",
            "n_train": 24,
            "n_test": 8,
            "steps": 60,
        },
    }
    collate_fn = staticmethod(collate_pairs)
    _cfg: PARENetConfig = PARENetConfig()

    def make_data(self, cfg: PARENetConfig, split: str) -> PairSet:
        if split == "train":
            return PairSet(train_pairs(cfg))
        return PairSet(heldout_pairs(cfg, cfg.seed, cfg.splits()[0], "so3"))

    def build(self, cfg: PARENetConfig) -> PARENet:
        self._cfg = cfg  # step/metrics read the radii and RANSAC settings
        return build_pare(cfg)

    def optimizer(self, cfg: PARENetConfig, model: nn.Module) -> Any:
        self._cfg = cfg
        return super().optimizer(cfg, model)

    def step(self, model: nn.Module, batch: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return pare_step(self._cfg)(model, batch)

    def metrics(self, model: nn.Module, dataset: Any) -> dict[str, float]:
        return eval_matcher(pare_register(model.eval(), self._cfg), dataset.pairs)

    def check(self, model: nn.Module, cfg: PARENetConfig) -> list[CheckResult]:
        m = as_float64(model).eval()
        twin = as_float64(build_pare(cfg, invariant=False)).eval()
        twin.load_state_dict(m.state_dict())
        pos = make_pair(cfg.seed, n_points=cfg.n_points, dtype=torch.float64).src
        desc = lambda p: m.encode(p)["coarse_in"]  # noqa: E731
        fine = lambda p: m.encode(p)["fine"]  # noqa: E731
        eq = lambda p: m.encode(p)["eq0"]  # noqa: E731
        return [
            check_invariant("SE(3) invariance of the superpoint descriptors", desc, (pos,), SE3(),
                            ("points",), tol=1e-8),
            check_invariant("SE(3) invariance of the fine descriptors", fine, (pos,), SE3(),
                            ("points",), tol=1e-8),
            check_equivariant("SO(3) equivariance of the fine vector features", eq, (pos,), SO3(),
                              ("points",), "vector", tol=1e-8),
            check_not_invariant("negative control: the twin's descriptors",
                                lambda p: twin.encode(p)["coarse_in"], (pos,), SO3(), ("points",)),
        ]  # fmt: skip

    def reproduce(self, cfg: PARENetConfig, run: Any, *, quick: bool) -> ReproduceResult:
        if quick:
            cfg = dataclasses.replace(cfg, **QUICK)

        def extra(name, model, c, pairs, test):
            return proposer_vs_ransac(model, c, pairs) if name == "pare" else {}

        arms = {"pare": build_pare, "twin": lambda c: build_pare(c, invariant=False)}
        res, kept = run_registration_grid(
            cfg, run, arms=arms, step_fn=pare_step(cfg), register_fn=pare_register,
            extra_eval=extra,
        )  # fmt: skip
        prop = {
            test: {
                k: round(sum(r[k] for r in rows) / len(rows), 4)
                for k in (
                    "rr_proposer",
                    "rr_ransac",
                    "hyp_proposer",
                    "hyp_ransac",
                    "s_proposer",
                    "s_ransac",
                )
            }  # fmt: skip
            for test, rows in res["pare"].items()
        }
        m64 = as_float64(kept["pare"]).eval()
        pos = make_pair(cfg.seed, n_points=cfg.n_points, dtype=torch.float64).src
        inv = equivariance_error(
            lambda x: m64.encode(x)["fine"], (pos,), SE3(), ("points",)
        ).max_error
        return registration_result(
            cfg, run, res, method="PARE-lite", key="pare", invariance_error=inv,
            not_showable=NOT_SHOWABLE if quick else "",
            extra_details={"proposer vs RANSAC on the same correspondences (mean over seeds; "
                           "hypotheses and pose-solver seconds per pair)": prop},
        )  # fmt: skip
