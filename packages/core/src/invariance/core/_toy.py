"""A tiny recipe used by core's own tests and the root integration tests (registered only on demand,
under the domain ``coretoy``): regress ``|x|`` from ``x`` in R^3 through the rotation-invariant
feature ``|x|``, with a dropout layer so that exact resume must restore the RNG."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import TensorDataset

from invariance.core import groups as G
from invariance.core.recipe import Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import as_float64, check_invariant, check_not_invariant


@dataclasses.dataclass
class ToyConfig(TrainConfig):
    n: int = 256
    hidden: int = 16
    steps: int = 40
    lr: float = 1e-2
    dropout: float = 0.1

    ranges: ClassVar[dict] = {"dropout": (0.0, 1.0), "n": (8, None), "hidden": (1, None)}


class ToyNormRegression(Recipe):
    Config = ToyConfig
    presets = {"tiny": {}, "full": {"steps": 200, "n": 1024}}

    def make_data(self, cfg, split):
        g = torch.Generator().manual_seed(cfg.seed * 10 + {"train": 0, "val": 1, "test": 2}[split])
        x = torch.randn(cfg.n, 3, generator=g)
        return TensorDataset(x, x.norm(dim=-1, keepdim=True))

    def build(self, cfg):
        return nn.Sequential(
            nn.Linear(1, cfg.hidden), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1)
        )

    def step(self, model, batch):
        x, y = batch
        return {"loss": ((model(x.norm(dim=-1, keepdim=True)) - y) ** 2).mean()}

    def check(self, model, cfg):
        m = as_float64(model).eval()
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(cfg.seed))
        return [
            check_invariant(
                "SO(3) invariance",
                lambda v: m(v.norm(dim=-1, keepdim=True)),
                (x,),
                G.SO3(),
                ("vector",),
            ),
            check_not_invariant(
                "first coordinate only (negative control)",
                lambda v: m(v[:, :1]),
                (x,),
                G.SO3(),
                ("vector",),
            ),
        ]

    def reproduce(self, cfg, run, *, quick):
        from invariance.core.train import evaluate, fit_recipe

        seeds = [0, 1, 2]
        mses, bases = [], []
        for seed in seeds:
            c = dataclasses.replace(cfg, seed=seed)
            model, _ = fit_recipe(self, c, progress=False)
            mses.append(evaluate(self, model, c)["loss"])
            y = self.make_data(c, "test").tensors[1]
            bases.append(float(((y - y.mean()) ** 2).mean()))
        return ReproduceResult(
            "|x| regression",
            "test MSE",
            "toy MLP",
            "predict the mean",
            mses,
            bases,
            higher_is_better=False,
            seeds=seeds,
        )


def register_toy() -> type:
    """Register :class:`ToyNormRegression` as ``toy_norm`` in domain ``coretoy`` (idempotent)."""
    return register(
        "toy_norm",
        domain="coretoy",
        paper="Toy norm regression",
        year=2026,
        symmetry="SO(3)-invariant",
        baseline="mean",
    )(ToyNormRegression)
