"""Recipe of EISL: config, the registered ``eisl`` recipe, the official two-stage schedule
(``two_stage_arms``) and the reproduce on toy translation with noisy targets. The loss and its
mechanism are in :mod:`invariance.sequence.eisl`."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    evaluate,
    fit,
    fit_recipe,
    make_config,
    register,
    seed_everything,
)
from invariance.core.groups import Permutation
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_invariant, check_not_invariant, equivariance_error
from invariance.sequence.data.synthetic import (
    N_SPECIAL,
    NOISES,
    PAD,
    corpus_bleu,
    make_noisy_translation,
)
from invariance.sequence.eisl import BartNAT, ConvNAT
from invariance.sequence.nn.eisl_loss import _parse_spec, eisl_loss

__all__ = ["EISLConfig", "EISLRecipe", "two_stage_arms", "OFFICIAL_STAGE2"]


class _Pairs(Dataset):
    def __init__(self, d: dict[str, Tensor]) -> None:
        self.d = d

    def __len__(self) -> int:
        return self.d["src"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"src": self.d["src"][i], "noisy": self.d["noisy"][i], "tgt": self.d["tgt"][i]}


@dataclass
class EISLConfig(TrainConfig):
    """Toy translation with noisy training targets (defaults = tiny preset).

    Args:
        loss: ``"eisl"`` (ngram_factor * EISL + ce_factor * CE) or ``"ce"`` (the baseline).
        ngram / ce_factor / ngram_factor: EISL settings (default: ``"1,2,3"`` / 0.5 / 1.0).
        weights: comma list of n-gram weights aligned with ``ngram``, e.g. ``"0.8,0.2"`` for
            ``"1,2"`` as the official MT criterion (default: ``""`` = uniform).
        pretrain_steps: cross-entropy steps *before* the ``loss`` stage (the official two-stage
            schedule: fine-tune with CE, then continue with the n-gram loss); ``steps`` counts
            both stages (default: 0 = one stage).
        finetune_lr: learning rate of the second stage (default: 0 = ``lr``).
        noise / rate: training-target noise and its rate (default: ``"insert"`` / 0.8).
        vocab / min_len / max_len: task size (default: 16 / 6 / 10).
        n_train / n_test: pairs (default: 600 / 200).
        model: ``"conv"`` (:class:`ConvNAT`) or ``"bart"`` (:class:`BartNAT`) (default: ``"conv"``).
        d_model: width (default: 32).
        pad_mode: EISL's padding rule, ``"exclude"`` (target n-grams touching padding left out)
            or ``"zero"`` (the official MT criterion's masking) (default: ``"exclude"``).
    """

    steps: int = 120
    batch_size: int = 64
    lr: float = 3e-3
    loss: str = "eisl"
    ngram: str = "1,2,3"
    ce_factor: float = 0.5
    ngram_factor: float = 1.0
    noise: str = "insert"
    rate: float = 0.8
    vocab: int = 16
    min_len: int = 6
    max_len: int = 10
    n_train: int = 600
    n_test: int = 200
    model: str = "conv"
    d_model: int = 32
    weights: str = ""
    pretrain_steps: int = 0
    finetune_lr: float = 0.0
    pad_mode: str = "exclude"

    ranges: ClassVar[dict] = {
        "steps": (0, None),
        "ce_factor": (0.0, None),
        "ngram_factor": (0.0, None),
        "rate": (0.0, 1.0),
        "vocab": (2, None),
        "min_len": (1, None),
        "max_len": (1, None),
        "n_train": (1, None),
        "n_test": (1, None),
        "d_model": (1, None),
        "pretrain_steps": (0, None),
        "finetune_lr": (0.0, None),
    }
    choices: ClassVar[dict] = {
        "loss": ("eisl", "ce"),
        "noise": NOISES,
        "model": ("conv", "bart"),
        "pad_mode": ("exclude", "zero"),
    }

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.min_len > self.max_len:
            raise ConfigError(f"{name}.min_len must be <= max_len={self.max_len}")
        if self.pretrain_steps > self.steps:
            raise ConfigError(f"{name}.pretrain_steps must be <= steps={self.steps}")
        try:
            spec = _parse_spec(self.ngram)
            w = _weights(self.weights)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name}.ngram/weights: {e}") from None
        if not spec:
            raise ConfigError(f"{name}.ngram must name at least one n-gram order")
        if w is not None and (len(w) != len(spec) or any(x < 0 for x in w)):
            raise ConfigError(
                f"{name}.weights must hold {len(spec)} non-negative numbers, got {self.weights!r}"
            )


def _weights(spec: str) -> list[float] | None:
    return [float(w) for w in spec.split(",") if w.strip()] or None


def _loss_cfg(cfg: EISLConfig) -> dict[str, Any]:
    return {
        "loss": cfg.loss,
        "ngram": cfg.ngram,
        "weights": _weights(cfg.weights),
        "ce_factor": cfg.ce_factor,
        "ngram_factor": cfg.ngram_factor,
        "pretrain_steps": cfg.pretrain_steps,
        "pad_mode": cfg.pad_mode,
    }


@register(
    "eisl",
    domain="sequence",
    paper="Don't Take It Literally: An Edit-Invariant Sequence Loss for Text Generation",
    authors="Liu, Yang, Tao, Liang, Bao, Li, He, Cui, Hu",
    year=2022,
    arxiv="2106.15078",
    code_url="https://github.com/guangyliu/EISL",
    symmetry="unigram EISL invariant to target permutations; robust to target edits",
    baseline="cross-entropy",
    tags=("loss", "text", "noisy-labels"),
)
class EISLRecipe(Recipe):
    """EISL (+ CE) vs CE on a toy translation task whose training targets carry edit noise."""

    Config = EISLConfig
    presets = {
        "tiny": {},
        # the reproduce's EISL arm: BART NAT, CE for 250 steps, then the official stage-2 loss
        "full": {
            "model": "bart",
            "d_model": 32,
            "n_train": 1000,
            "n_test": 200,
            "vocab": 16,
            "lr": 3e-3,
            "finetune_lr": 1e-3,
            "pretrain_steps": 250,
            "steps": 375,
            "ngram": "1,2",
            "weights": "0.8,0.2",
            "ce_factor": 0.0,
        },
    }

    def make_data(self, cfg: EISLConfig, split: str) -> Dataset:
        if split == "train":
            d = make_noisy_translation(
                cfg.n_train,
                vocab=cfg.vocab,
                min_len=cfg.min_len,
                max_len=cfg.max_len,
                noise=cfg.noise,
                rate=cfg.rate,
                seed=cfg.seed,
            )
        else:
            d = make_noisy_translation(
                cfg.n_test,
                vocab=cfg.vocab,
                min_len=cfg.min_len,
                max_len=cfg.max_len,
                noise="none",
                rate=0.0,
                seed=cfg.seed + (1000 if split == "test" else 2000),
            )
        return _Pairs(d)

    def build(self, cfg: EISLConfig) -> nn.Module:
        V = N_SPECIAL + cfg.vocab
        torch.manual_seed(cfg.seed)
        model: nn.Module
        if cfg.model == "conv":
            model = ConvNAT(V, d_model=cfg.d_model, max_len=cfg.max_len + 2)
        elif cfg.model == "bart":
            model = BartNAT(V, d_model=cfg.d_model, max_len=cfg.max_len + 4)
        else:  # pragma: no cover - guarded by EISLConfig.choices
            raise ConfigError(f"EISLConfig.model must be 'conv' or 'bart', got {cfg.model!r}")
        model.eisl_cfg = _loss_cfg(cfg)  # type: ignore[assignment]
        model.eisl_calls = 0  # type: ignore[assignment]  # training steps taken (stage switch)
        return model

    def scheduler(self, cfg: EISLConfig, optimizer: torch.optim.Optimizer) -> Any:
        """Two-stage runs: the learning rate becomes ``finetune_lr`` after ``pretrain_steps``."""
        if cfg.pretrain_steps <= 0 or cfg.finetune_lr <= 0:
            return None
        ratio, k = cfg.finetune_lr / cfg.lr, cfg.pretrain_steps
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if s < k else ratio)

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        c = getattr(model, "eisl_cfg", None) or _loss_cfg(EISLConfig())
        calls = int(getattr(model, "eisl_calls", 0))
        if model.training:
            model.eisl_calls = calls + 1  # type: ignore[assignment]
        logits = model(batch["src"])
        y = batch["noisy"]
        if c["loss"] == "ce" or calls < c.get("pretrain_steps", 0):
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=PAD)
            return {"loss": ce, "ce": ce.detach()}
        out = eisl_loss(
            logits,
            y,
            ngram=c["ngram"],
            weights=c.get("weights"),
            ignore_index=PAD,
            ce_factor=c["ce_factor"],
            ngram_factor=c["ngram_factor"],
            pad_mode=c.get("pad_mode", "exclude"),
        )
        return {k: (v if k == "loss" else v.detach()) for k, v in out.items()}

    def metrics(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        d = dataset.d  # type: ignore[attr-defined]
        pred = model(d["src"]).argmax(-1)
        tgt = d["tgt"]
        valid = tgt != PAD
        acc = float(((pred == tgt) & valid).sum() / valid.sum())
        em = float(((pred == tgt) | ~valid).all(1).float().mean())
        hyps = [p[v].tolist() for p, v in zip(pred, valid)]
        refs = [t[v].tolist() for t, v in zip(tgt, valid)]
        return {"token_acc": acc, "exact_match": em, "bleu": corpus_bleu(hyps, refs)}

    def check(self, model: nn.Module, cfg: EISLConfig) -> list[CheckResult]:
        """Unigram EISL (deterministic softmax) on this model's logits is invariant to permuting the
        target; per-sample CE is the negative control. Both return one loss per sample, so the
        checked outputs vary across the batch."""
        logits, tgt = _check_inputs(model, self, cfg)
        grp = Permutation(dim=1)

        def ce(t: Tensor) -> Tensor:
            return nn.functional.cross_entropy(logits.transpose(1, 2), t, reduction="none").mean(1)

        return [
            check_invariant(
                "unigram_eisl_target_permutation", _unigram(logits), tgt, grp, "nodes", dtype=None
            ),
            check_not_invariant("ce_target_permutation", ce, tgt, grp, "nodes", dtype=None),
        ]

    def reproduce(self, cfg: EISLConfig, run: Any, *, quick: bool) -> ReproduceResult:
        return _reproduce(self, cfg, run, quick=quick)


def two_stage_arms(
    recipe: EISLRecipe,
    cfg: EISLConfig,
    arms: dict[str, dict[str, Any]],
    *,
    models: dict[str, nn.Module] | None = None,
) -> dict[str, dict[str, float]]:
    """The official two-stage schedule with a shared first stage: train ``cfg.pretrain_steps``
    steps with CE, then continue a copy of that model for ``cfg.steps - cfg.pretrain_steps`` steps
    per arm (field overrides of ``cfg``, e.g. ``{"loss": "ce"}`` or ``{"loss": "eisl", "ngram":
    "1,2"}``) with a fresh ``cfg.optimizer`` at ``finetune_lr`` (or ``lr``). Every arm continues
    from the same weights with the same data order and RNG state. Returns test metrics per arm and
    for ``"stage1"``; ``models`` (a dict), when given, receives the trained model of each arm."""
    c1 = dataclasses.replace(cfg, loss="ce", steps=cfg.pretrain_steps, pretrain_steps=0)
    model, _ = fit_recipe(recipe, c1, progress=False)
    out = {"stage1": evaluate(recipe, model, c1, split="test")}
    data = recipe.make_data(cfg, "train")
    for arm, over in arms.items():
        c2 = dataclasses.replace(
            cfg,
            steps=cfg.steps - cfg.pretrain_steps,
            pretrain_steps=0,
            lr=cfg.finetune_lr or cfg.lr,
            **over,
        )
        m = copy.deepcopy(model)
        m.eisl_cfg = _loss_cfg(c2)  # type: ignore[assignment]
        m.eisl_calls = 0  # type: ignore[assignment]
        seed_everything(cfg.seed + 1)
        fit(
            m,
            recipe.optimizer(c2, m),
            data,
            recipe.step,
            steps=c2.steps,
            batch_size=c2.batch_size,
            seed=cfg.seed + 1,
            log_every=0,
            progress=False,
        )
        out[arm] = evaluate(recipe, m, c2, split="test")
        if models is not None:
            models[arm] = m
    return out


#: the official MT stage-2 criterion (``ngrambleuloss_nat``): n-grams "1,2" weighted 0.8 / 0.2,
#: no cross-entropy term, the official padding (log-prob 0 at padded target columns), continued
#: from the CE checkpoint.
OFFICIAL_STAGE2 = {
    "loss": "eisl",
    "ngram": "1,2",
    "weights": "0.8,0.2",
    "ce_factor": 0.0,
    "pad_mode": "zero",
}

#: the quick reproduce: the small convolutional NAT, insertion noise, ~15 s for 3 seeds (idle)
QUICK = dict(
    model="conv",
    d_model=32,
    n_train=600,
    n_test=200,
    vocab=16,
    lr=3e-3,
    finetune_lr=3e-3,
    pretrain_steps=60,
    steps=180,
)
#: the full reproduce: a BART NAT built from a config, three noise types
FULL = dict(
    model="bart",
    d_model=32,
    n_train=1000,
    n_test=200,
    vocab=16,
    lr=3e-3,
    finetune_lr=1e-3,
    pretrain_steps=250,
    steps=375,
)


def _check_inputs(model: nn.Module, recipe: EISLRecipe, cfg: EISLConfig) -> tuple[Tensor, Tensor]:
    """The model's float64 logits and clean targets on 8 test pairs, cut to ``min_len``."""
    data = recipe.make_data(cfg, "test")
    src = data.d["src"][:8]  # type: ignore[attr-defined]
    tgt = data.d["tgt"][:8, : cfg.min_len]  # type: ignore[attr-defined]
    with torch.no_grad():
        logits = model(src).double()[:, : cfg.min_len]
    return logits, tgt


def _unigram(logits: Tensor):
    """``t -> `` per-sample unigram EISL (deterministic softmax) of ``logits`` against ``t``."""

    def f(t: Tensor) -> Tensor:
        return torch.stack(
            [
                eisl_loss(
                    logits[i : i + 1], t[i : i + 1], ngram=1, gumbel=False, ignore_index=None
                )["loss"]
                for i in range(t.shape[0])
            ]
        )

    return f


def _unigram_invariance_error(model: nn.Module, recipe: EISLRecipe, cfg: EISLConfig) -> float:
    """Relative target-permutation error of unigram EISL on the trained model's logits (the
    method's declared invariance)."""
    logits, tgt = _check_inputs(model, recipe, cfg)
    rep = equivariance_error(_unigram(logits), tgt, Permutation(dim=1), "nodes", dtype=None)
    return float(rep.relative_error)


def _reproduce(recipe: EISLRecipe, cfg: EISLConfig, run: Any, *, quick: bool) -> ReproduceResult:
    """The official two-stage schedule on toy translation with noisy targets: a model is trained
    with CE (stage 1, shared), then continued either with CE (the baseline: same steps, same data
    order) or with the official MT stage-2 criterion (EISL "1,2" / 0.8-0.2, no CE term, official
    padding), 3 seeds; clean-test BLEU. Quick: the convolutional NAT, insertion noise. Full: a
    BART NAT built from a config, insertion / deletion / local-shuffle noise."""
    t0 = time.time()
    seeds = [0, 1, 2]
    base = QUICK if quick else FULL
    noises = [("insert", 0.8)] if quick else [("insert", 0.8), ("delete", 0.8), ("shuffle", 0.3)]
    arms = {"ce": {"loss": "ce"}, "eisl": OFFICIAL_STAGE2}
    keys = ("bleu", "exact_match", "token_acc")
    per: dict[str, dict[str, list[float]]] = {}
    inv_err = None
    for noise, rate in noises:
        tag = f"{noise}{rate:g}"
        for s in seeds:
            c = make_config(recipe, "tiny", **base, noise=noise, rate=rate, seed=s)
            models: dict[str, nn.Module] = {}
            res = two_stage_arms(recipe, c, arms, models=models)
            if inv_err is None:
                inv_err = _unigram_invariance_error(models["eisl"], recipe, c)
            for a, m in res.items():
                for k in keys:
                    per.setdefault(f"{tag}/{a}", {}).setdefault(k, []).append(float(m[k]))
                if run is not None:
                    run.log_metrics({"noise": tag, "arm": a, "seed": s, **m})
    first = f"{noises[0][0]}{noises[0][1]:g}"
    other_arms = {
        f"{k} ({metric})" if metric != "bleu" else k: v[metric]
        for k, v in per.items()
        for metric in ("bleu",)
        if k not in (f"{first}/eisl", f"{first}/ce")
    }
    plots = _plot(per, noises, run)
    table = {k: {m: sum(v) / len(v) for m, v in d.items()} for k, d in per.items()}
    return ReproduceResult(
        task=f"toy translation ({base['model']} NAT), training-target noise {noises}",
        metric=f"BLEU (clean test, {first})",
        method="CE, then EISL(ngram=1,2; weights 0.8/0.2; official padding)",
        baseline="CE, then CE (same steps)",
        method_values=per[f"{first}/eisl"]["bleu"],
        baseline_values=per[f"{first}/ce"]["bleu"],
        higher_is_better=True,
        invariance_error=inv_err,
        seconds=time.time() - t0,
        seeds=seeds,
        arms=other_arms,
        details={
            "mean_table": table,
            "exact_match": {k: v["exact_match"] for k, v in per.items()},
            "setup": base,
            "stage2_eisl": OFFICIAL_STAGE2,
        },
        plots=plots,
    )


def _plot(per: dict[str, dict[str, list[float]]], noises: list, run: Any) -> list[str]:
    if run is None or not getattr(run, "enabled", False):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [f"{n}{r:g}" for n, r in noises]
    for ax, metric in zip(axes, ("bleu", "exact_match")):
        for off, a, lab in (
            (-0.27, "stage1", "stage 1 (CE)"),
            (0.0, "ce", "CE -> CE"),
            (0.27, "eisl", "CE -> EISL"),
        ):
            for i, n in enumerate(names):
                v = per[f"{n}/{a}"][metric]
                ax.bar(
                    i + off,
                    sum(v) / len(v),
                    0.27,
                    color={"stage1": "C7", "ce": "C1", "eisl": "C0"}[a],
                    label=lab if i == 0 else None,
                )
                ax.plot([i + off] * len(v), v, "k.", ms=4)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel(f"clean-test {metric} (dots: seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return [str(run.savefig(fig, "eisl_two_stage.png"))]
