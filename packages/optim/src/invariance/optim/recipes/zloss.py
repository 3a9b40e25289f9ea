"""Recipe ``zloss``: an MLP on procedural Zipf extreme classification, trained by core's ``fit``.

``reproduce`` compares the Z-loss with the strongest other member of the spherical family (the
losses that admit the exact D-independent update of :class:`FactoredSphericalOutput`), with the
log-softmax cross-entropy as a further arm, and measures the Z-loss's declared invariance (shift
and positive scale of the logits) on the trained model. The full size adds a Zipf bigram language
model experiment (top-k accuracy, (a, b) tuned on a validation split, as in the paper).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.core.groups import PositiveAffine, Scaling
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant, equivariance_error
from invariance.core.train import evaluate, fit_recipe
from invariance.optim._utils import pyplot, threads
from invariance.optim.data import make_extreme_classification, make_zipf_language
from invariance.optim.factory import list_optimizers
from invariance.optim.zloss import spherical_mse_loss, taylor_softmax_loss, z_loss

__all__ = ["ZLossConfig", "ZLossRecipe"]

LOSSES = ("zloss", "softmax_ce", "mse", "taylor")


@dataclass
class ZLossConfig(TrainConfig):
    """Procedural extreme classification (defaults: the tiny preset).

    Args:
        num_classes: ``D`` (default: ``200``).
        dim: input dimension (default: ``32``).
        hidden: hidden width of the MLP (default: ``64``).
        n_train: training samples (default: ``2000``).
        a: Z-loss sharpness (default: ``1.0``).
        b: Z-loss location (default: ``3.0``).
        topk: k of the top-k metric (default: ``5``).
        loss: training loss, one of ``zloss``, ``softmax_ce``, ``mse``, ``taylor``
            (default: ``"zloss"``).
        seeds: seeds of the reproduce experiment (default: ``3``).
        optimizer: optimizer name (default: ``"adam"``).
    """

    steps: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    num_classes: int = 200
    dim: int = 32
    hidden: int = 64
    n_train: int = 2000
    a: float = 1.0
    b: float = 3.0
    topk: int = 5
    loss: str = "zloss"
    seeds: int = 3
    optimizer: str = "adam"

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "lr": (0.0, 10.0),
        "weight_decay": (0.0, 1.0),
        "num_classes": (2, None),
        "dim": (1, None),
        "hidden": (1, None),
        "n_train": (1, None),
        "a": (1e-6, 1e6),
        "b": (-1e3, 1e3),
        "topk": (1, None),
        "seeds": (1, 100),
    }
    choices: ClassVar[dict] = {"loss": LOSSES, "optimizer": tuple(list_optimizers())}


class _MLP(nn.Module):
    """``dim -> hidden -> ReLU -> num_classes``; carries its training loss and (a, b)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_classes: int,
        a: float = 1.0,
        b: float = 0.0,
        loss: str = "zloss",
    ) -> None:
        super().__init__()
        self.a, self.b, self.loss = a, b, loss
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _loss_by_name(name: str, logits: Tensor, y: Tensor, cfg: Any) -> Tensor:
    if name == "zloss":
        return z_loss(logits, y, cfg.a, cfg.b)
    if name == "softmax_ce":
        return F.cross_entropy(logits, y)
    if name == "mse":
        return spherical_mse_loss(logits, y)
    if name == "taylor":
        return taylor_softmax_loss(logits, y)
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")


def _xc_data(cfg: ZLossConfig, split: str) -> torch.utils.data.TensorDataset:
    n = cfg.n_train if split == "train" else max(cfg.n_train // 4, 256)
    off = {"train": 0, "val": 1, "test": 2}[split]
    d = make_extreme_classification(
        n, num_classes=cfg.num_classes, dim=cfg.dim, seed=off, teacher_seed=0
    )
    return torch.utils.data.TensorDataset(d["x"], d["y"], d["bayes"])


def _topk(logits: Tensor, y: Tensor, k: int) -> tuple[float, float]:
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top[:, 0] == y).float().mean()), float((top == y[:, None]).any(1).float().mean())


class _BigramLM(nn.Module):
    """Previous token -> embedding -> hidden ReLU layer -> ``vocab`` output scores."""

    def __init__(self, vocab: int, emb: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.body = nn.Sequential(nn.Linear(emb, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, vocab)

    def forward(self, context: Tensor) -> Tensor:
        return self.head(self.body(self.emb(context)))


_LM_KS = (1, 5, 10, 20)
# (a, b) grids searched on the validation split (b is in units of the logits' std)
_LM_GRID = [(1.0, 0.0), (1.0, 3.0), (1.0, 6.0), (0.3, 6.0), (3.0, 6.0), (1.0, 10.0)]
_LM_GRID_QUICK = [(1.0, 0.0), (1.0, 6.0), (1.0, 10.0)]


def _train_bigram_lm(
    loss: str,
    data: tuple[Tensor, Tensor],
    evals: dict[str, tuple[Tensor, Tensor]],
    *,
    vocab: int,
    steps: int,
    lr: float,
    seed: int,
    a: float = 1.0,
    b: float = 0.0,
    hidden: int = 64,
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Train :class:`_BigramLM` with ``loss`` (``"zloss"`` or ``"softmax_ce"``) by Adam; top-k
    accuracy (k in 1, 5, 10, 20) on each split of ``evals``."""
    ctx, y = data
    torch.manual_seed(seed)
    model = _BigramLM(vocab, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (batch_size,), generator=g)
        out = model(ctx[idx])
        if loss == "zloss":
            value = z_loss(out, y[idx], a, b)
        elif loss == "softmax_ce":
            value = F.cross_entropy(out, y[idx])
        else:
            raise ValueError(f"unknown loss {loss!r}")
        opt.zero_grad()
        value.backward()
        opt.step()
    res = {}
    with torch.no_grad():
        for split, (c, t) in evals.items():
            o = model(c)
            rank = (o > o.gather(1, t[:, None])).sum(1)
            res[split] = {f"top{k}": float((rank < k).float().mean()) for k in _LM_KS}
    return res


def _zipf_lm_experiment(
    *,
    vocab: int,
    n_train: int,
    steps: int,
    lr: float,
    seeds: list[int],
    grid: list[tuple[float, float]],
    hidden: int = 64,
    temp: float = 3.0,
) -> dict[str, Any]:
    """Z-loss vs softmax-CE on the Zipf bigram language: (a, b) picked on a validation split by
    mean top-k (k = 1, 5, 10, 20), then both losses scored on a test split over ``seeds``."""

    def split(n: int, s: int) -> tuple[Tensor, Tensor, Tensor]:
        d = make_zipf_language(n, vocab=vocab, temp=temp, seed=s, lang_seed=0)
        return d["context"], d["y"], d["bayes_rank"]

    ctr, ytr, _ = split(n_train, 0)
    cva, yva, _ = split(max(n_train // 4, 2000), 1)
    cte, yte, rte = split(max(n_train // 4, 2000), 2)
    kw = dict(vocab=vocab, steps=steps, lr=lr, hidden=hidden)
    # tune (a, b) on validation with the first seed, as the paper tunes them per task
    tuning = {}
    for a, b in grid:
        r = _train_bigram_lm(
            "zloss", (ctr, ytr), {"val": (cva, yva)}, seed=seeds[0], a=a, b=b, **kw
        )
        tuning[f"a={a:g},b={b:g}"] = r["val"]
    best = max(grid, key=lambda ab: sum(tuning[f"a={ab[0]:g},b={ab[1]:g}"].values()))
    test: dict[str, list[dict[str, float]]] = {"zloss": [], "softmax_ce": []}
    for s in seeds:
        ev = {"test": (cte, yte)}
        test["zloss"].append(
            _train_bigram_lm("zloss", (ctr, ytr), ev, seed=s, a=best[0], b=best[1], **kw)["test"]
        )
        test["softmax_ce"].append(
            _train_bigram_lm("softmax_ce", (ctr, ytr), ev, seed=s, **kw)["test"]
        )
    mean = {
        n: {f"top{k}": sum(r[f"top{k}"] for r in rs) / len(rs) for k in _LM_KS}
        for n, rs in test.items()
    }
    return {
        "vocab": vocab,
        "n_train": n_train,
        "steps": steps,
        "lr": lr,
        "hidden": hidden,
        "seeds": len(seeds),
        "bayes": {f"top{k}": float((rte < k).float().mean()) for k in _LM_KS},
        "tuning_val": tuning,
        "best_ab": list(best),
        "test_mean": mean,
        "test_per_seed": test,
    }


@register(
    "zloss",
    domain="optim",
    paper="The Z-loss: a shift and scale invariant classification loss belonging to the "
    "Spherical Family",
    authors="de Brébisson, Vincent",
    year=2016,
    arxiv="1604.08859",
    code_url="https://github.com/pascal20100/factored_output_layer",
    baseline="taylor",
    symmetry="loss invariant to shift and positive scale of the logits",
    tags=("loss", "spherical"),
)
class ZLossRecipe(Recipe):
    """Z-loss MLP on procedural Zipf extreme classification.

    ``reproduce``: Z-loss vs the best other spherical loss (Taylor softmax or squared error), with
    softmax-CE as a further arm; the full size adds the Zipf bigram language model (Z-loss with
    (a, b) tuned on validation vs softmax-CE, top-k for k = 1, 5, 10, 20).
    """

    Config: ClassVar[type] = ZLossConfig
    presets: ClassVar[dict] = {
        "tiny": {},
        "full": {"num_classes": 2000, "n_train": 40000, "steps": 1000, "hidden": 128},
    }

    def make_data(self, cfg: ZLossConfig, split: str) -> torch.utils.data.Dataset:
        return _xc_data(cfg, split)

    def build(self, cfg: ZLossConfig) -> nn.Module:
        return _MLP(cfg.dim, cfg.hidden, cfg.num_classes, cfg.a, cfg.b, cfg.loss)

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        x, y, _ = batch
        logits = model(x)
        top1 = (logits.argmax(1) == y).float().mean()
        return {"loss": _loss_by_name(model.loss, logits, y, model), "top1": top1}

    def metrics(self, model: nn.Module, dataset: Any) -> dict[str, float]:
        x, y, bayes = dataset.tensors
        with torch.no_grad():
            t1, t5 = _topk(model(x), y, 5)
        return {"top1": t1, "top5": t5, "bayes_top1": float((bayes == y).float().mean())}

    def check(self, model: nn.Module, cfg: ZLossConfig) -> list[CheckResult]:
        x, y, _ = self.make_data(cfg, "train")[:16]
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            # the model's logits plus a spread, so the per-example losses vary even untrained
            logits = model(x).double() + 2 * torch.randn(16, cfg.num_classes, generator=g).double()
        zl = lambda o: z_loss(o, y, cfg.a, cfg.b, reduction="none")
        ce = lambda o: F.cross_entropy(o, y, reduction="none")
        return [
            check_invariant(
                "z-loss invariant to logit shift+scale",
                zl,
                (logits,),
                PositiveAffine(0.1, 10.0, 3.0),
                ("affine",),
                tol=1e-10,
            ),
            check_not_invariant(
                "negative control: softmax-CE under logit scaling",
                ce,
                (logits,),
                Scaling(0.1, 10.0),
                ("scale",),
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """The paper-analog experiment (single-threaded: the models are tiny)."""
        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: ZLossConfig, run: Any, *, quick: bool) -> ReproduceResult:
        t0 = time.time()
        if quick:
            size = {"num_classes": 200, "n_train": 4000, "steps": 120, "hidden": 64}
            seeds = [0, 1, 2]
        else:
            size = dict(self.presets["full"])
            seeds = list(range(max(cfg.seeds, 3)))
        base = dataclasses.replace(cfg, **size, log_every=0)
        top1: dict[str, list[float]] = {n: [] for n in LOSSES}
        top5: dict[str, list[float]] = {n: [] for n in LOSSES}
        inv_err = []
        for s in seeds:
            for name in LOSSES:
                c = dataclasses.replace(base, seed=s, loss=name)
                model, _ = fit_recipe(self, c, progress=False)
                ev = evaluate(self, model, c, "test")
                top1[name].append(ev["top1"])
                top5[name].append(ev["top5"])
                if name == "zloss":
                    inv_err.append(self._invariance_error(model, c))
                if run is not None:
                    run.log_metrics({"arm": name, "seed": s, "top1": ev["top1"]})
        mean = {n: sum(v) / len(v) for n, v in top1.items()}
        other = max(("mse", "taylor"), key=lambda n: mean[n])
        details: dict[str, Any] = {"size": size, "top5": top5, "a": cfg.a, "b": cfg.b}
        plots = self._plot_xc(run, top1, base)
        if not quick:
            lm = dict(vocab=1000, n_train=60000, steps=1200, seeds=[0, 1, 2], grid=_LM_GRID)
            lm_res = _zipf_lm_experiment(lr=cfg.lr, **lm)
            details["zipf_lm"] = lm_res
            plots += self._plot_lm(run, lm_res, lm)
        return ReproduceResult(
            task=(
                f"Zipf extreme classification D={base.num_classes}, {base.steps} Adam steps; "
                "baseline: best other spherical loss"
            ),
            metric="test top-1",
            method="zloss",
            baseline=f"best other spherical ({other})",
            method_values=top1["zloss"],
            baseline_values=top1[other],
            invariance_error=max(inv_err),
            seconds=time.time() - t0,
            seeds=seeds,
            arms={n: top1[n] for n in LOSSES if n not in ("zloss", other)},
            details=details,
            plots=plots,
        )

    @staticmethod
    def _invariance_error(model: nn.Module, cfg: ZLossConfig) -> float:
        """Relative error of the per-example Z-loss under random positive affine maps of the
        trained model's test logits."""
        x, y, _ = _xc_data(cfg, "test").tensors
        with torch.no_grad():
            logits = model(x[:256]).double()
        fn = lambda o: z_loss(o, y[:256], cfg.a, cfg.b, reduction="none")
        rep = equivariance_error(fn, (logits,), PositiveAffine(0.1, 10.0, 3.0), ("affine",))
        return float(rep.relative_error)

    @staticmethod
    def _plot_xc(run: Any, top1: dict[str, list[float]], cfg: ZLossConfig) -> list[str]:
        plt = None if run is None else pyplot()
        if plt is None:
            return []
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for i, vals in enumerate(top1.values()):
            ax.plot([i] * len(vals), vals, "o")
        ax.set_xticks(range(len(top1)), list(top1))
        ax.set(
            ylabel="test top-1 (per seed)",
            title=f"Zipf extreme classification, D={cfg.num_classes}",
        )
        return [str(run.savefig(fig, "zloss_xc_top1"))]

    @staticmethod
    def _plot_lm(run: Any, lm_res: dict[str, Any], lm: dict[str, Any]) -> list[str]:
        plt = None if run is None else pyplot()
        if plt is None:
            return []
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ks = list(_LM_KS)
        rows = (
            ("Bayes", lm_res["bayes"], ":"),
            ("softmax-CE", lm_res["test_mean"]["softmax_ce"], "--s"),
            ("Z-loss a={:g} b={:g}".format(*lm_res["best_ab"]), lm_res["test_mean"]["zloss"], "-o"),
        )
        for label, vals, st in rows:
            ax.plot(ks, [vals[f"top{k}"] for k in ks], st, label=label)
        ax.set(
            xscale="log",
            xlabel="k",
            ylabel="test top-k accuracy",
            title=f"Zipf bigram LM, V={lm['vocab']}, {len(lm['seeds'])} seed(s)",
        )
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.legend()
        return [str(run.savefig(fig, "zloss_lm_topk"))]
