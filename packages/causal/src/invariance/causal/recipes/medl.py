"""Recipe ``medl``: scMEDAL's FE + RE autoencoders and the mixed-effects classifier on simulated
counts, trained by core's ``fit`` with the official alternating adversarial step.

``reproduce`` trains, per seed and through :func:`invariance.core.train.train_arms`, MEDL and the
same network without the adversarial generator term (the plain autoencoder of the same capacity,
the baseline) and scores the batch information left in the 2-D FE latent of held-out cells
(cross-validated logistic-regression probe; lower = more batch-invariant). The full size adds the
single-step ("joint") schedule as a further arm and the PBMC68k pseudo-batch set (when scanpy's
file is installed). The invariance error is the RE path's equivariance to batch relabelling
(:func:`~invariance.causal.medl.re_relabel_report`) on each trained MEDL model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from torch import Tensor

from invariance.causal._checks import (
    check_choice,
    check_float_tensor,
    check_int,
    check_number,
    check_seed,
    check_tensor,
)
from invariance.causal._threads import single_thread
from invariance.causal.data.scrna import load_pbmc68k_reduced, make_scrna_counts, pbmc68k_path
from invariance.causal.medl import MEDL, medl_alternating_step, medl_loss, re_relabel_report
from invariance.core import groups as G
from invariance.core.io import plt as _plt
from invariance.core.plots import plot_seeds
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import as_float64, check_invariant, check_not_invariant
from invariance.core.train import NamedOptimizers, build_optimizer, train_arms

__all__ = ["MEDLConfig", "MEDLRecipe", "batch_silhouette", "fit_medl", "probe_accuracy"]


def fit_medl(
    model: MEDL,
    x: Tensor,
    batch: Tensor,
    labels: Tensor | None = None,
    *,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_adversary: float | None = None,
    schedule: str = "alternating",
    seed: int = 0,
    **loss_kw,
) -> MEDL:
    """Minibatch Adam on :func:`medl_loss` (the helper the tests and ``reproduce`` use).

    ``schedule="alternating"`` (default) is the official scMEDAL-FE step
    (``DomainAdversarialAE.train_step``): per minibatch, (1) the adversary takes an Adam step (its
    own optimiser, learning rate ``lr_adversary``, default ``lr``) on the batch CE of the encoder
    activations, with no gradient to the encoder; (2) a fresh forward pass, and every other
    parameter takes a step of a second Adam on the autoencoder losses, the generator term using
    the *updated* adversary.
    ``schedule="joint"`` takes both in one optimiser step on the pre-update adversary (the
    single-step variant this package used first; also what ``recipe.step`` / ``train`` does).
    """
    model._check_x(x)
    model._onehot(batch, x.shape[0])
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_number("lr", lr, strict=True)
    if lr_adversary is not None:
        check_number("lr_adversary", lr_adversary, strict=True)
    check_choice("schedule", schedule, ("alternating", "joint"))
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    adv_params = list(model.fe.adversary.parameters())
    adv_ids = {id(p) for p in adv_params}
    if schedule == "joint":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.Adam([p for p in model.parameters() if id(p) not in adv_ids], lr=lr)
        opt_adv = torch.optim.Adam(adv_params, lr=lr if lr_adversary is None else lr_adversary)
    model.train()
    n = x.shape[0]
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        xb, bb = x[idx], batch[idx]
        lb = None if labels is None else labels[idx]
        if schedule == "alternating":
            medl_alternating_step(model, xb, bb, lb, opt, opt_adv, **loss_kw)
        else:
            opt.zero_grad()
            medl_loss(model, xb, bb, lb, **loss_kw)["loss"].backward()
            opt.step()
    model.eval()
    return model


def _check_z_labels(z: Tensor, labels: Tensor, name: str) -> None:
    """``z`` ``(N, k)`` finite floating latents, ``labels`` ``(N,)`` integer labels."""
    check_float_tensor("z", z, dims=(2,))
    check_tensor(name, labels, ndim=1, integer=True)
    if labels.shape[0] != z.shape[0]:
        raise ValueError(f"{name} must have shape ({z.shape[0]},), got {tuple(labels.shape)}")


def probe_accuracy(z: Tensor, y: Tensor, *, seed: int = 0, folds: int = 3) -> float:
    """Cross-validated logistic-regression accuracy of predicting ``y`` from ``z`` (sklearn)."""
    _check_z_labels(z, y, "y")
    check_int("folds", folds, 2)
    check_int("seed", seed, 0, 2**32 - 1)  # sklearn's random_state range
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(
        cross_val_score(
            LogisticRegression(max_iter=300), z.double().numpy(), y.numpy(), cv=cv
        ).mean()
    )


def batch_silhouette(z: Tensor, batch: Tensor) -> float:
    """Silhouette score of the batch labels in latent space (lower = better mixed)."""
    _check_z_labels(z, batch, "batch")
    return float(silhouette_score(z.double().numpy(), batch.numpy()))


@dataclass
class MEDLConfig(TrainConfig):
    """Simulated counts and a small MEDL (defaults: the tiny preset).

    ``lambda_rec`` defaults to 1 (the AML config uses 4000 with Adam 1e-4 and hundreds of
    epochs; at a few hundred steps that ratio leaves the adversary without effect).

    Args:
        n_cells, n_genes, n_batches, n_types: simulated data (defaults: 300, 30, 3, 3).
        hidden: encoder widths (default: ``(32, 16)``).
        latent: size of each latent (default: ``2``).
        lambda_rec, lambda_gen, lambda_cls: FE loss weights (defaults: 1, 1, 1).
        use_labels: train the FE label classifier and the MEC on cell types (default: False).
        adversarial: keep the adversarial generator term (``False``: the plain autoencoder
            baseline) (default: True).
        schedule: ``"alternating"`` (official) or ``"joint"`` (default: ``"alternating"``).
        lr_adversary: the adversary's learning rate (default: ``lr``).
        seeds: seeds of the reproduce experiment (default: ``3``).
    """

    n_cells: int = 300
    n_genes: int = 30
    n_batches: int = 3
    n_types: int = 3
    hidden: tuple[int, ...] = (32, 16)
    latent: int = 2
    lambda_rec: float = 1.0
    lambda_gen: float = 1.0
    lambda_cls: float = 1.0
    use_labels: bool = False
    adversarial: bool = True
    schedule: str = "alternating"
    lr_adversary: float | None = None
    seeds: int = 3
    steps: int = 100
    batch_size: int = 128
    lr: float = 6e-3

    ranges: ClassVar[dict] = {
        "n_cells": (20, None),
        "n_genes": (1, None),
        "n_batches": (2, None),
        "n_types": (1, None),
        "hidden": (1, None),
        "latent": (1, None),
        "lambda_rec": (0.0, None),
        "lambda_gen": (0.0, None),
        "lambda_cls": (0.0, None),
        "lr_adversary": (0.0, None),
        "seeds": (1, None),
        "steps": (1, None),
        "lr": (0.0, None),
    }
    choices: ClassVar[dict] = {"schedule": ("alternating", "joint")}


@register(
    "medl",
    domain="causal",
    paper="Mixed Effects Deep Learning for the interpretable analysis of single cell RNA "
    "sequencing data by quantifying and visualizing batch effects",
    authors="Andrade, Nguyen, Montillo",
    year=2024,
    arxiv="2411.06635",
    code_url="https://github.com/DeepLearningForPrecisionHealthLab/scMEDAL_for_scRNAseq",
    symmetry="RE path equivariant to batch relabelling; FE latent batch-invariant (adversarial)",
    baseline="plain autoencoder (no adversary)",
    tags=("single-cell", "mixed-effects", "adversarial"),
)
class MEDLRecipe(Recipe):
    """scMEDAL FE + RE autoencoders and the mixed-effects classifier on simulated counts."""

    Config = MEDLConfig
    presets = {
        "tiny": {},
        "full": {
            "n_cells": 2000,
            "n_genes": 200,
            "n_batches": 6,
            "n_types": 5,
            "hidden": (512, 132),
            "latent": 2,
            "steps": 3000,
            "batch_size": 512,
            "lr": 1e-3,
            "use_labels": True,
        },
    }
    #: the full reproduce (narrow widths: the paper widths do not fit a CPU budget)
    full_reproduce: ClassVar[dict] = {
        "n_cells": 2000,
        "n_genes": 200,
        "n_batches": 6,
        "n_types": 5,
        "steps": 600,
        "lr": 3e-3,
        "seeds": 5,
    }

    def _data(self, cfg, split):
        # one simulated population; splits are disjoint cell subsets (60/20/20)
        d = make_scrna_counts(
            cfg.n_cells, cfg.n_genes, n_batches=cfg.n_batches, n_types=cfg.n_types, seed=cfg.seed
        )
        n = cfg.n_cells
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 7))
        a, b = int(0.6 * n), int(0.8 * n)
        idx = {"train": perm[:a], "val": perm[a:b], "test": perm[b:], "heldout": perm[a:]}[split]
        return d["x"][idx], d["batch"][idx], d["cell_type"][idx]

    def make_data(self, cfg, split):
        x, b, c = self._data(cfg, split)
        return torch.utils.data.TensorDataset(x, b, c)

    def build(self, cfg):
        self._loss_kw = {
            "lambda_rec": cfg.lambda_rec,
            "lambda_gen": cfg.lambda_gen,
            "lambda_cls": cfg.lambda_cls,
            "adversarial": cfg.adversarial,
        }
        self._use_labels = cfg.use_labels
        return MEDL(
            n_genes=cfg.n_genes,
            n_batches=cfg.n_batches,
            n_classes=cfg.n_types if cfg.use_labels else 0,
            hidden=tuple(cfg.hidden),
            latent=cfg.latent,
        )

    def step(self, model, batch):
        x, b, c = batch
        labels = c if getattr(self, "_use_labels", False) else None
        return medl_loss(model, x, b, labels, **getattr(self, "_loss_kw", {}))

    def optimizer(self, cfg, model):
        if cfg.schedule == "joint":
            return super().optimizer(cfg, model)
        adv = list(model.fe.adversary.parameters())
        ids = {id(p) for p in adv}
        rest = [p for p in model.parameters() if id(p) not in ids]
        lr_adv = cfg.lr if cfg.lr_adversary is None else cfg.lr_adversary
        return NamedOptimizers(
            main=build_optimizer(rest, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay),
            adversary=build_optimizer(adv, cfg.optimizer, lr=lr_adv, weight_decay=cfg.weight_decay),
        )

    def train_step(self, model, batch, optimizer, step):
        if not hasattr(optimizer, "items"):  # joint schedule: one optimiser, one loss
            optimizer.zero_grad(set_to_none=True)
            out = self.step(model, batch)
            out["loss"].backward()
            optimizer.step()
            return {k: v.detach() for k, v in out.items()}
        x, b, c = batch
        labels = c if getattr(self, "_use_labels", False) else None
        return medl_alternating_step(
            model,
            x,
            b,
            labels,
            optimizer["main"],
            optimizer["adversary"],
            **getattr(self, "_loss_kw", {}),
        )

    def metrics(self, model, dataset):
        x, b, c = dataset.tensors
        zf, zr = model.embed(x, b)
        return {
            "fe_batch_probe": probe_accuracy(zf, b),
            "re_batch_probe": probe_accuracy(zr, b),
            "fe_type_probe": probe_accuracy(zf, c),
            "mec_type_probe": probe_accuracy(torch.cat([zf, zr], 1), c),
            "fe_batch_silhouette": batch_silhouette(zf, b),
            "re_relabel_error": re_relabel_report(model, x[:64], b[:64]).relative_error,
        }

    def check(self, model, cfg):
        m = as_float64(model).eval()
        blk = m.re.enc_re[0]
        g = torch.Generator().manual_seed(cfg.seed)
        h = torch.randn(16, blk.features, generator=g, dtype=torch.float64)
        z = torch.nn.functional.one_hot(
            torch.randint(0, blk.n_batches, (16,), generator=g), blk.n_batches
        ).double()
        wg, wb = blk.gamma_loc.detach(), blk.beta_loc.detach()

        def re_fn(h, z, wg, wb):
            return blk.bn(h) * (1 + z @ wg) + z @ wb

        def relabel_cols(p, t):
            return t[:, p]

        def relabel_rows(p, t):
            return t[p]

        def shuffle_cells(p, t):  # re-assign batch one-hots: a different batch per cell
            return t.roll(1, dims=1)

        zero = torch.zeros_like(wg)
        x = torch.rand(16, cfg.n_genes, generator=g, dtype=torch.float64)
        bl = z.argmax(1)
        rep = re_relabel_report(model, x, bl, seed=cfg.seed)
        return [
            check_invariant(
                "RE block: batch relabelling (Z columns with W rows)",
                re_fn,
                (h, z, wg, wb),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, relabel_cols, relabel_rows, relabel_rows),
            ),
            check_invariant(
                "RE block with zero posterior: invariant to the batch one-hot",
                re_fn,
                (h, z, zero, zero),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, shuffle_cells, None, None),
            ),
            check_not_invariant(
                "RE block with its posterior: changes with the batch (negative control)",
                re_fn,
                (h, z, wg + 0.1, wb + 0.1),
                G.Permutation(dim=0, n=blk.n_batches),
                (None, shuffle_cells, None, None),
            ),
            _report_check("whole RE path: batch relabelling (labels with RE weight rows)", rep),
            check_invariant(
                "FE latent does not read the batch",
                lambda x, b: m(x, b)["z_fe"],
                (x, bl),
                G.Permutation(dim=0),
                (None, "nodes"),
            ),
            check_not_invariant(
                "RE latent reads the batch (negative control)",
                lambda x, b: m(x, b)["z_re"],
                (x, bl),
                G.Permutation(dim=0),
                (None, lambda p, t: (t + 1) % blk.n_batches),
            ),
        ]

    def reproduce(self, cfg, run, *, quick):
        with single_thread():
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg, run, *, quick):
        t0 = time.perf_counter()
        if not quick:  # the full experiment: 2000 cells x 200 genes, 6 batches, 600 steps
            cfg = dataclasses.replace(cfg, **self.full_reproduce)
        seeds = [cfg.seed + k for k in range(max(3, cfg.seeds))]
        arms = {"medl": {"adversarial": True}, "ae": {"adversarial": False}}
        if not quick:
            arms["medl_joint"] = {"adversarial": True, "schedule": "joint"}
        results = train_arms(self, cfg, arms, seeds, run=run, split="heldout")
        details: dict = {
            arm: {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            for arm, rows in results.items()
        }
        if not quick and pbmc68k_path() is not None:
            details["pbmc68k_pseudobatch"] = self._pbmc(cfg)
        res = ReproduceResult.from_arms(
            results,
            method="medl",
            baseline="ae",
            key="fe_batch_probe",
            task=f"batch removal in the 2-D FE latent, simulated {cfg.n_cells} cells x "
            f"{cfg.n_genes} genes, {cfg.n_batches} batches, {cfg.steps} steps, held-out 40 %",
            metric="batch probe accuracy on the FE latent (lower = more batch-invariant)",
            method_name="MEDL fixed-effects latent (alternating schedule)",
            baseline_name="same network without the adversary (plain AE)",
            higher_is_better=False,
            seeds=seeds,
            invariance_error=max(r["re_relabel_error"] for r in results["medl"]),
            details=details,
        )
        res.seconds = time.perf_counter() - t0
        if getattr(run, "enabled", True):
            res.plots.append(str(plot_seeds(res, run.path / "batch_probe_per_seed.png")))
            if not quick:  # one more fit, for the picture only
                res.plots.append(self._plot_latents(cfg, run))
        return res

    def _pbmc(self, cfg) -> dict:
        """PBMC68k with 3 pseudo-batches, 200 most variable genes: MEDL vs AE, one split."""
        p = load_pbmc68k_reduced(3, seed=cfg.seed)
        x, b, c = p["x"], p["batch"], p["cell_type"]
        x = x[:, x.var(0).argsort(descending=True)[:200].sort().values]
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(cfg.seed))
        tr, te = perm[: int(0.6 * len(perm))], perm[int(0.6 * len(perm)) :]
        out = {}
        for key, adversarial in (("medl", True), ("ae", False)):
            torch.manual_seed(cfg.seed)
            model = MEDL(n_genes=x.shape[1], n_batches=3, hidden=tuple(cfg.hidden), latent=2)
            fit_medl(
                model,
                x[tr],
                b[tr],
                steps=cfg.steps,
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                adversarial=adversarial,
                lambda_rec=cfg.lambda_rec,
                lambda_gen=cfg.lambda_gen,
            )
            zf, _ = model.embed(x[te], b[te])
            out[f"{key}_batch_probe"] = probe_accuracy(zf, b[te])
            out[f"{key}_type_probe"] = probe_accuracy(zf, c[te])
        return out

    def _plot_latents(self, cfg, run) -> str:
        """FE and RE latents of one MEDL model (seed ``cfg.seed``) on the held-out cells."""
        torch.manual_seed(cfg.seed)
        x, b, c = self._data(cfg, "train")
        model = self.build(cfg)
        fit_medl(
            model,
            x,
            b,
            steps=cfg.steps,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            lambda_rec=cfg.lambda_rec,
            lambda_gen=cfg.lambda_gen,
        )
        xh, bh, ch = self._data(cfg, "heldout")
        zf, zr = model.embed(xh, bh)
        plt = _plt()
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        axes[0].scatter(zf[:, 0], zf[:, 1], c=bh, s=6, cmap="tab10")
        axes[0].set_title("FE latent, colour = batch")
        axes[1].scatter(zf[:, 0], zf[:, 1], c=ch, s=6, cmap="tab10")
        axes[1].set_title("FE latent, colour = cell type")
        axes[2].scatter(zr[:, 0], zr[:, 1], c=bh, s=6, cmap="tab10")
        axes[2].set_title("RE latent, colour = batch")
        return run.savefig(fig, "latents_simulated")


def _report_check(name: str, rep) -> CheckResult:
    """A :class:`~invariance.core.recipe.CheckResult` from a measured symmetry report."""
    tol = 1e-9
    ok = rep.relative_error <= tol and rep.variation >= 1e-3
    return CheckResult(name, rep.relative_error, tol, ok, False, str(rep), rep.variation)
