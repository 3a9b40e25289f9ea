r"""EISL: the Edit-Invariant Sequence Loss.

Paper: "Don't Take It Literally: An Edit-Invariant Sequence Loss for Text Generation", Liu, Yang,
Tao, Liang, Bao, Li, He, Cui, Hu, NAACL 2022, arXiv:2106.15078. Official code: https://github.com/guangyliu/EISL
(no licence file; the bundled fairseq fork is MIT). Nothing was copied; the official function
``batch_log_EISL_cnn`` (EISL.py) and the padded MT variant (fairseq/criterions/bleuloss.py) were run
on CPU to record the golden values in ``tests/eisl_golden*.json``.

Mechanism. Cross-entropy scores target token :math:`y_j` only at output position :math:`j`, so one
inserted or deleted target token misaligns everything after it. EISL instead matches each target
n-gram against *every* output n-gram: with :math:`M_{b,i,j} = \log p(y_{b,j}\mid i)`,
:math:`G^n_{b,i,j} = \frac1n\sum_{k<n} M_{b,i+k,j+k}` is a 2-D convolution of :math:`M` with the
n×n identity (a target n-gram used as a kernel); a Gumbel-softmax over output positions
:math:`i` softly picks where each target n-gram is matched, and the loss is the negative mean
matched log-likelihood, averaged over n-gram orders. With n = full length it is CE; with n = 1 it
ignores word order entirely. Used as ``ngram_factor * EISL + ce_factor * CE``.

Tested properties (packages/sequence/tests/test_eisl_loss.py):
- ``test_eisl_full_length_equals_ce``: n = T gives the token-mean CE exactly.
- ``test_eisl_golden_official`` / ``test_eisl_golden_official_padded``: loss and gradients equal the
  official functions' (same Gumbel draws) to 1e-5.
- ``test_eisl_unigram_target_permutation_invariant`` (+ negative control
  ``test_eisl_ce_not_target_permutation_invariant``):
  with n=1 and the deterministic softmax, the loss is invariant to permuting the target.
- ``test_eisl_edit_robust_vs_ce``: inserting / shifting a target token moves CE far more than EISL.
- ``test_eisl_gradcheck``, ``test_eisl_padding``, ``test_eisl_bad_input``.
- ``test_eisl_learns_under_insertion_noise``: a NAT model trained with EISL+CE on targets with
  insertion noise beats CE on clean exact match.
- ``test_eisl_two_stage_schedule``: ``pretrain_steps`` CE steps, then the n-gram loss (no CE
  term) at ``finetune_lr``; :func:`two_stage_arms` continues every arm from one stage-1 model.

Deviations: (1) padding: the official EISL.py does no masking and the MT criterion zeroes padded
target columns (``pad_mode="zero"``, kept for parity); the default ``pad_mode="exclude"`` instead
leaves n-grams that touch padding out of the mean (and out of the alignment). (2) the n-gram
convolution is written as a sum of n shifted slices (equal to ``conv2d`` with an identity kernel).
(3) The reproduce follows the official two-stage schedule (CE first, then the n-gram
criterion ``ngrambleuloss_nat``: n-grams "1,2" weighted 0.8/0.2, no CE term) but trains a small
*non-autoregressive* BART built from a config (decoder fed [MASK] tokens, output length = source
length) from scratch on a toy translation task, instead of fine-tuning pretrained BART-base on
Multi30k with an autoregressive first stage and ``tf_ratio=0`` (free-running decoder) in the
second (offline, CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import CheckResult, Recipe, ReproduceResult, TrainConfig, register
from invariance.core.groups import Permutation
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.sequence.data.synthetic import (
    MASK,
    N_SPECIAL,
    PAD,
    corpus_bleu,
    make_noisy_translation,
)
from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss, resolve_ngrams

__all__ = [
    "eisl_loss",
    "EISLLoss",
    "resolve_ngrams",
    "ConvNAT",
    "BartNAT",
    "EISLConfig",
    "EISLRecipe",
]


class ConvNAT(nn.Module):
    r"""Tiny non-autoregressive "translator": token + position embeddings, a width-3 convolution, a
    ReLU and a linear read-out per position (output length = source length).

    Args:
        vocab_size (int): vocabulary incl. specials. d_model (int, optional): width (default: 32).
        max_len (int, optional): positions (default: 16). hidden (int, optional): conv width
            (default: 64).

    Shapes:
        src (B, T) long -> logits (B, T, vocab_size).
    """

    def __init__(
        self, vocab_size: int, *, d_model: int = 32, max_len: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.emb = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.conv = nn.Conv1d(d_model, hidden, 3, padding=1)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, src: Tensor) -> Tensor:
        if src.dim() != 2 or src.shape[1] > self.max_len:
            raise ValueError(f"src must have shape (B, T<={self.max_len}), got {tuple(src.shape)}")
        h = self.emb(src) + self.pos(torch.arange(src.shape[1], device=src.device))
        return self.out(torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2))


class BartNAT(nn.Module):
    """A ``transformers`` BART encoder-decoder built from a config (random init, no hub), used
    non-autoregressively: the decoder reads [MASK] at every target position and all outputs are
    predicted in parallel (teacher-forcing ratio 0). ``src`` (B, T) -> logits (B, T, V)."""

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 64,
        layers: int = 2,
        heads: int = 4,
        max_len: int = 32,
    ) -> None:
        super().__init__()
        from transformers import BartConfig, BartForConditionalGeneration

        conf = BartConfig(
            vocab_size=vocab_size,
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=2 * d_model,
            decoder_ffn_dim=2 * d_model,
            max_position_embeddings=max_len,
            pad_token_id=PAD,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
            forced_eos_token_id=None,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
        )
        self.bart = BartForConditionalGeneration(conf)

    def forward(self, src: Tensor) -> Tensor:
        dec = torch.full_like(src, MASK)
        out = self.bart(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=dec)
        return out.logits


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
        if cfg.loss not in ("eisl", "ce"):
            raise ValueError(f"loss must be 'eisl' or 'ce', got {cfg.loss!r}")
        V = N_SPECIAL + cfg.vocab
        torch.manual_seed(cfg.seed)
        model: nn.Module
        if cfg.model == "conv":
            model = ConvNAT(V, d_model=cfg.d_model, max_len=cfg.max_len + 2)
        elif cfg.model == "bart":
            model = BartNAT(V, d_model=cfg.d_model, max_len=cfg.max_len + 4)
        else:
            raise ValueError(f"model must be 'conv' or 'bart', got {cfg.model!r}")
        if cfg.pretrain_steps < 0 or cfg.pretrain_steps > cfg.steps:
            raise ValueError(
                f"pretrain_steps must be in [0, steps={cfg.steps}], got {cfg.pretrain_steps}"
            )
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
        target; CE is the negative control."""
        data = self.make_data(cfg, "test")
        src = data.d["src"][:4]  # type: ignore[attr-defined]
        tgt = data.d["tgt"][:4, : cfg.min_len]  # type: ignore[attr-defined]
        with torch.no_grad():
            logits = model(src).double()[:, : cfg.min_len]
        grp = Permutation(dim=1)

        def uni(t: Tensor) -> Tensor:
            return eisl_loss(logits, t, ngram=1, gumbel=False, ignore_index=None)["loss"]

        def ce(t: Tensor) -> Tensor:
            return nn.functional.cross_entropy(logits.transpose(1, 2), t)

        return [
            check_invariant("unigram_eisl_target_permutation", uni, tgt, grp, "nodes", dtype=None),
            check_not_invariant("ce_target_permutation", ce, tgt, grp, "nodes", dtype=None),
        ]

    def reproduce(self, cfg: EISLConfig, run: Any, *, quick: bool) -> ReproduceResult:
        return _reproduce(self, cfg, run, quick=quick)


def two_stage_arms(
    recipe: EISLRecipe, cfg: EISLConfig, arms: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """The official two-stage schedule with a shared first stage: train ``cfg.pretrain_steps``
    steps with CE, then continue a copy of that model for ``cfg.steps - cfg.pretrain_steps`` steps
    per arm (field overrides of ``cfg``, e.g. ``{"loss": "ce"}`` or ``{"loss": "eisl", "ngram":
    "1,2"}``) with a fresh optimiser at ``finetune_lr`` (or ``lr``). Every arm continues from the
    same weights with the same data order and RNG state. Returns test metrics per arm and for
    ``"stage1"``."""
    import copy
    import dataclasses

    from invariance.core import evaluate, fit, fit_recipe, seed_everything

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
    return out


#: the official MT stage-2 criterion (``ngrambleuloss_nat``): n-grams "1,2" weighted 0.8 / 0.2,
#: no cross-entropy term, continued from the CE checkpoint.
OFFICIAL_STAGE2 = {"loss": "eisl", "ngram": "1,2", "weights": "0.8,0.2", "ce_factor": 0.0}


def _reproduce(recipe: EISLRecipe, cfg: EISLConfig, run: Any, *, quick: bool) -> ReproduceResult:
    """The official two-stage schedule on toy translation with noisy targets: a non-autoregressive
    BART built from a config (no hub) is trained with CE (stage 1, shared), then continued either
    with CE or with the n-gram loss of the official MT criterion (stage 2), 3 seeds per noise type;
    clean-test BLEU / exact match. ``quick`` runs the insertion noise only (same settings)."""
    from invariance.core import make_config

    t0 = time.time()
    seeds = [0, 1, 2]
    base = dict(
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
    noises = [("insert", 0.8)] if quick else [("insert", 0.8), ("delete", 0.8), ("shuffle", 0.3)]
    arms = {"ce": {"loss": "ce"}, "eisl": OFFICIAL_STAGE2}
    keys = ("bleu", "exact_match", "token_acc")
    table: dict[str, dict[str, Any]] = {}
    for noise, rate in noises:
        rows: dict[str, list[dict[str, float]]] = {"stage1": [], **{a: [] for a in arms}}
        for s in seeds:
            c = make_config(recipe, "tiny", **base, noise=noise, rate=rate, seed=s)
            res = two_stage_arms(recipe, c, arms)
            for a, m in res.items():
                rows[a].append(m)
                if run is not None:
                    run.log_metrics({"noise": f"{noise}{rate:g}", "arm": a, "seed": s, **m})
        for a, ms in rows.items():
            table[f"{noise}{rate:g}/{a}"] = {k: sum(m[k] for m in ms) / len(ms) for k in keys} | {
                f"{k}_per_seed": [m[k] for m in ms] for k in ("bleu", "exact_match")
            }
    first = f"{noises[0][0]}{noises[0][1]:g}"
    plots = []
    try:
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
                vals = [table[f"{n}/{a}"][metric] for n in names]
                errs = [
                    (max(v) - min(v)) / 2
                    for v in (table[f"{n}/{a}"][f"{metric}_per_seed"] for n in names)
                ]
                ax.bar([i + off for i in range(len(names))], vals, 0.27, yerr=errs, label=lab)
            ax.set_xticks(range(len(names)), names)
            ax.set_ylabel(f"clean-test {metric} (3 seeds)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        plots.append(str(run.savefig(fig, "eisl_two_stage.png")))
        plt.close(fig)
    except Exception:  # pragma: no cover
        plots = []
    return ReproduceResult(
        task=f"toy translation, non-autoregressive BART from config, target noise {noises}",
        metric="BLEU (clean test)",
        method="CE, then EISL(ngram=1,2; weights 0.8/0.2) as the official MT recipe",
        baseline="CE, then CE",
        method_value=table[f"{first}/eisl"]["bleu"],
        baseline_value=table[f"{first}/ce"]["bleu"],
        higher_is_better=True,
        seconds=time.time() - t0,
        details={"table": table, "setup": base, "seeds": seeds, "stage2_eisl": OFFICIAL_STAGE2},
        plots=plots,
    )
