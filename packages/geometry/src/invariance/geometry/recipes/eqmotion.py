"""Recipe of :class:`~invariance.geometry.EqMotion`: charged n-body trajectory prediction (past 10
-> future 10 frames) against the strongest same-budget equivariant baseline available (EGNN from
``egnn-pytorch`` when installed, else the message-passing GNN), with the non-equivariant MLP, GNN
and constant velocity as further arms."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from invariance.core import CheckResult, Recipe, ReproduceResult, TrainConfig, register
from invariance.core.groups import E3, Permutation, haar_so3
from invariance.core.recipe import ConfigError
from invariance.core.testing import (
    as_float64,
    check_equivariant,
    check_invariant,
    check_not_invariant,
    equivariance_error,
)

from ..data.nbody import NBodyDataset, make_nbody
from ..eqmotion import EqMotion, ade_fde, eqmotion_loss
from ..nn.baselines import EGNNTrajectory, TrajectoryGNN, TrajectoryMLP, constant_velocity
from ._common import Arm, cosine, plot_arms, run_arms, seeds_of, train_model

__all__ = ["EqMotionConfig", "EqMotionRecipe", "nbody_split", "eval_traj", "train_traj"]

HAS_EGNN = importlib.util.find_spec("egnn_pytorch") is not None


@dataclass
class EqMotionConfig(TrainConfig):
    """Tiny preset: seconds on CPU. Fields beyond TrainConfig:

    Args:
        n_train / n_test: simulated systems. past / future: frames. n_balls: particles.
        sample_freq: simulator steps between frames. hidden / channels / layers: model size.
        n_seeds: seeds of the reproduce experiment.
    """

    steps: int = 60
    batch_size: int = 32
    lr: float = 5e-3
    n_train: int = 200
    n_test: int = 100
    past: int = 10
    future: int = 10
    n_balls: int = 5
    sample_freq: int = 100
    hidden: int = 16
    channels: int = 8
    layers: int = 1
    n_seeds: int = 3

    ranges: ClassVar[dict] = {
        "lr": (0.0, 1.0),
        "n_train": (1, None),
        "n_test": (1, None),
        "past": (2, None),
        "future": (1, None),
        "n_balls": (2, None),
        "sample_freq": (1, None),
        "hidden": (2, None),
        "channels": (1, None),
        "layers": (1, None),
        "n_seeds": (1, 50),
    }

    def validate(self) -> None:
        super().validate()
        if self.hidden % 2:
            raise ConfigError(f"EqMotionConfig.hidden must be even, got {self.hidden}")


#: quick preset: the tiny model (width 16, 1 layer) on 160 simulated systems, 240 steps, 3 seeds.
#: Each arm trains at its own learning rate, picked from {5e-3, 1e-2, 2e-2} on seed 0 (EqMotion:
#: ADE 0.27 / 0.16 / 0.14, EGNN 0.17 / 0.17 / 0.25 after 240 steps): EqMotion 2e-2, EGNN 1e-2
#: (the GNN fallback, used when egnn-pytorch is absent, was not tuned).
QUICK = {"n_train": 160, "n_test": 100, "steps": 240, "hidden": 16, "channels": 8, "layers": 1}
QUICK_LR = {"eqmotion": 2e-2, "egnn": 1e-2, "gnn": 1e-2}


def nbody_split(cfg: EqMotionConfig, split: str) -> NBodyDataset:
    n = cfg.n_train if split == "train" else cfg.n_test
    offset = {"train": 0, "val": 1, "test": 2}[split]
    return make_nbody(
        n,
        past=cfg.past,
        future=cfg.future,
        n_balls=cfg.n_balls,
        sample_freq=cfg.sample_freq,
        seed=1000 * cfg.seed + offset,
    )


def traj_step(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return eqmotion_loss(model(batch["loc"], batch["vel"]), batch["target"])


def train_traj(model: nn.Module, ds: NBodyDataset, cfg: EqMotionConfig, *, seed: int) -> nn.Module:
    """``cfg.optimizer`` + cosine schedule through core's ``fit`` on the ADE loss."""
    return train_model(model, ds, cfg, traj_step, seed=seed)


@torch.no_grad()
def eval_traj(fn: Any, ds: NBodyDataset) -> dict[str, float]:
    ade, fde = ade_fde(fn(ds.loc, ds.vel), ds.target)
    return {"ade": float(ade), "fde": float(fde)}


def rotated_nbody(ds: NBodyDataset, seed: int) -> NBodyDataset:
    """A copy with one Haar SO(3) rotation per system."""
    R = haar_so3(len(ds), generator=torch.Generator().manual_seed(seed)).to(ds.loc.dtype)
    Rt = R.transpose(1, 2).unsqueeze(1)
    return NBodyDataset(ds.loc @ Rt, ds.target @ Rt, ds.charges)


class ConstantVelocity(nn.Module):
    """The physics-free baseline as a parameter-free module ``(loc, vel) -> future``."""

    def __init__(self, future: int) -> None:
        super().__init__()
        self.future = future

    def forward(self, loc: Tensor, vel: Tensor | None = None) -> Tensor:
        return constant_velocity(loc, self.future)


def _eqmotion(cfg: EqMotionConfig, nonlinearity: str = "vn") -> EqMotion:
    return EqMotion(
        past=cfg.past,
        future=cfg.future,
        hidden=cfg.hidden,
        channels=cfg.channels,
        layers=cfg.layers,
        nonlinearity=nonlinearity,
    )


@register(
    "eqmotion",
    domain="geometry",
    paper="EqMotion: Equivariant Multi-agent Motion Prediction with Invariant Interaction Reasoning",  # noqa: E501
    authors="Xu, Tan, Tan, Chen, Wang, Wang, Wang",
    year=2023,
    arxiv="2303.10876",
    code_url="https://github.com/MediaBrain-SJTU/EqMotion",
    symmetry="E(3)-equivariant trajectories, agent-permutation-equivariant, E(3)-invariant relations",  # noqa: E501
    baseline="EGNN (egnn-pytorch layers; the GNN when it is not installed); MLP, GNN, constant velocity as arms",  # noqa: E501
    tags=("trajectory", "n-body", "equivariant"),
)
class EqMotionRecipe(Recipe):
    """Charged n-body trajectory prediction (past 10 -> future 10 frames)."""

    Config = EqMotionConfig
    presets = {
        "tiny": {},
        "full": {
            "n_train": 500,
            "n_test": 200,
            "steps": 1500,
            "hidden": 32,
            "channels": 16,
            "layers": 2,
            "lr": 5e-3,
        },
    }

    def make_data(self, cfg: EqMotionConfig, split: str) -> NBodyDataset:
        return nbody_split(cfg, split)

    def build(self, cfg: EqMotionConfig) -> EqMotion:
        return _eqmotion(cfg)

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return traj_step(model, batch)

    def scheduler(self, cfg: EqMotionConfig, optimizer: Any) -> Any:
        return cosine(cfg, optimizer)

    def check(self, model: nn.Module, cfg: EqMotionConfig) -> list[CheckResult]:
        ds = make_nbody(
            4,
            past=cfg.past,
            future=cfg.future,
            n_balls=cfg.n_balls,
            sample_freq=cfg.sample_freq,
            seed=1000 * cfg.seed + 1,
        )
        inp = {"loc": ds.loc, "vel": ds.vel}
        act = {"loc": "points", "vel": "vector"}
        model = model.eval()
        broken = _eqmotion(cfg, "relu")
        broken.load_state_dict(model.state_dict())
        m64 = as_float64(model)
        cat = lambda loc, vel: m64(loc, vel, return_category=True)[1]  # noqa: E731
        return [
            check_equivariant(
                "E(3) equivariance of predictions", model, inp, E3(), act, "points", tol=1e-9
            ),
            check_equivariant(
                "agent permutation equivariance",
                model, inp, Permutation(dim=1), "nodes", "nodes", tol=1e-9,
            ),
            check_not_invariant(
                "negative control: coordinate-wise ReLU instead of VN non-linearity",
                broken.eval(), inp, E3(), act, "points",
            ),
            check_invariant(
                "E(3) invariance of relation categories", cat, inp, E3(), act, tol=1e-9
            ),
        ]  # fmt: skip

    def reproduce(self, cfg: EqMotionConfig, run: Any, *, quick: bool) -> ReproduceResult:
        if quick:
            cfg = dataclasses.replace(cfg, **QUICK)
        arms = {"eqmotion": Arm(_eqmotion, traj_step)}
        if HAS_EGNN:
            arms["egnn"] = Arm(
                lambda c: EGNNTrajectory(
                    past=c.past, future=c.future, hidden=2 * c.hidden, layers=c.layers + 1
                ),
                traj_step,
            )
        arms["gnn"] = Arm(
            lambda c: TrajectoryGNN(past=c.past, future=c.future, hidden=2 * c.hidden), traj_step
        )
        arms["mlp"] = Arm(
            lambda c: TrajectoryMLP(past=c.past, future=c.future, hidden=4 * c.hidden), traj_step
        )
        arms["constant_velocity"] = Arm(lambda c: ConstantVelocity(c.future), traj_step)
        baseline = "egnn" if HAS_EGNN else "gnn"
        if quick:  # the method and its baseline only (plus the free arm), each at its tuned lr
            for name, lr in QUICK_LR.items():
                if name in arms:
                    arms[name].overrides["lr"] = lr
            arms = {
                k: v for k, v in arms.items() if k in ("eqmotion", baseline, "constant_velocity")
            }
        tests: dict[int, tuple] = {}

        def evaluate(name: str, model: nn.Module, c: Any) -> dict[str, float]:
            if c.seed not in tests:
                test = nbody_split(c, "test")
                tests[c.seed] = (test, rotated_nbody(test, seed=c.seed + 99))
            test, rot = tests[c.seed]
            return {**eval_traj(model, test), "rotated_ade": eval_traj(model, rot)["ade"]}

        res, trained = run_arms(
            cfg, arms, make_train=lambda c: nbody_split(c, "train"), evaluate=evaluate, run=run,
            keep="eqmotion",
        )  # fmt: skip
        assert trained is not None
        test = tests[cfg.seed][0]
        inv_err = equivariance_error(
            trained,
            {"loc": test.loc[:16], "vel": test.vel[:16]},
            E3(),
            {"loc": "points", "vel": "vector"},
            "points",
        ).max_error
        vals = {a: [r["ade"] for r in rows] for a, rows in res.items()}
        plots = plot_arms(
            run, vals, metric="test ADE (lower is better)", title="EqMotion n-body",
            name="eqmotion_ade",
        )  # fmt: skip
        return ReproduceResult.from_arms(
            res,
            method="eqmotion",
            baseline=baseline,
            key="ade",
            task=f"charged n-body ({cfg.n_balls} particles), past {cfg.past} -> future "
            f"{cfg.future} frames",
            metric="test ADE",
            method_name="EqMotion",
            baseline_name="EGNN (egnn-pytorch layers)" if HAS_EGNN else "GNN",
            higher_is_better=False,
            seeds=seeds_of(cfg),
            invariance_error=inv_err,
            plots=plots,
            details={
                "fde": {a: [r["fde"] for r in rows] for a, rows in res.items()},
                "rotated_ade": {a: [r["rotated_ade"] for r in rows] for a, rows in res.items()},
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "steps": cfg.steps,
                "lr": {a: arm.overrides.get("lr", cfg.lr) for a, arm in arms.items()},
                "egnn": "egnn-pytorch installed" if HAS_EGNN else "egnn-pytorch not installed",
            },
        )
