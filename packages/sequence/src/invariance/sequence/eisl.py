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

Deviations: (1) padding: the official EISL.py does no masking and the MT criterion zeroes padded
target columns (``pad_mode="zero"``, kept for parity); the default ``pad_mode="exclude"`` instead
leaves n-grams that touch padding out of the mean (and out of the alignment). (2) the n-gram
convolution is written as a sum of n shifted slices (equal to ``conv2d`` with an identity kernel).
(3) The reproduce recipe trains a *non-autoregressive* BART built from a config (decoder fed
[MASK] tokens, teacher-forcing ratio 0 as in the official NAT-style stage) from scratch with the
mixture loss, instead of fine-tuning BART-base in two stages on Multi30k (offline, CPU).
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
        "full": {
            "model": "bart",
            "d_model": 64,
            "n_train": 4000,
            "n_test": 500,
            "steps": 1500,
            "vocab": 24,
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
        model.eisl_cfg = {
            "loss": cfg.loss,
            "ngram": cfg.ngram,
            "ce_factor": cfg.ce_factor,  # type: ignore[assignment]
            "ngram_factor": cfg.ngram_factor,
        }
        return model

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        c = getattr(
            model,
            "eisl_cfg",
            {"loss": "eisl", "ngram": "1,2,3", "ce_factor": 0.5, "ngram_factor": 1.0},
        )
        logits = model(batch["src"])
        y = batch["noisy"]
        if c["loss"] == "ce":
            ce = nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=PAD)
            return {"loss": ce, "ce": ce.detach()}
        out = eisl_loss(
            logits,
            y,
            ngram=c["ngram"],
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


def _train_eval(recipe: EISLRecipe, cfg: EISLConfig) -> dict[str, float]:
    from invariance.core import evaluate, fit_recipe

    model, _ = fit_recipe(recipe, cfg, progress=False)
    return evaluate(recipe, model, cfg, split="test")


def _reproduce(recipe: EISLRecipe, cfg: EISLConfig, run: Any, *, quick: bool) -> ReproduceResult:
    """A BART encoder-decoder built from a config (no hub), non-autoregressive, trained on toy
    translation with noisy targets: EISL+CE vs CE, 3 seeds per noise type, BLEU / exact match."""
    from invariance.core import make_config

    t0 = time.time()
    seeds = [0, 1, 2]
    if quick:
        base = dict(
            model="bart", d_model=32, steps=150, n_train=1000, n_test=200, vocab=16, lr=3e-3
        )
        noises = [("insert", 0.8)]
    else:
        base = dict(
            model="bart", d_model=64, steps=600, n_train=3000, n_test=300, vocab=16, lr=2e-3
        )
        noises = [("insert", 0.8), ("delete", 0.8), ("shuffle", 0.3), ("none", 0.0)]
    table: dict[str, dict[str, Any]] = {}
    for noise, rate in noises:
        for loss in ("eisl", "ce"):
            rows = []
            for s in seeds:
                c = make_config(
                    recipe,
                    "tiny",
                    **base,
                    noise=noise,
                    rate=rate,
                    loss=loss,
                    seed=s,
                    ngram=cfg.ngram,
                    ce_factor=cfg.ce_factor,
                    ngram_factor=cfg.ngram_factor,
                )
                rows.append(_train_eval(recipe, c))
            table[f"{noise}{rate:g}/{loss}"] = {
                k: sum(r[k] for r in rows) / len(rows) for k in ("bleu", "exact_match", "token_acc")
            } | {"bleu_per_seed": [r["bleu"] for r in rows]}
    first = f"{noises[0][0]}{noises[0][1]:g}"
    plots = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        names = [f"{n}{r:g}" for n, r in noises]
        for off, loss in ((-0.2, "ce"), (0.2, "eisl")):
            ax.bar(
                [i + off for i in range(len(names))],
                [table[f"{n}/{loss}"]["bleu"] for n in names],
                0.4,
                label=loss,
            )
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("clean-test BLEU (mean of 3 seeds)")
        ax.legend()
        fig.tight_layout()
        plots.append(str(run.savefig(fig, "eisl_noise.png")))
        plt.close(fig)
    except Exception:  # pragma: no cover
        plots = []
    return ReproduceResult(
        task=f"toy translation, non-autoregressive BART from config, target noise {noises}",
        metric="BLEU (clean test)",
        method=f"EISL(ngram={cfg.ngram}) + {cfg.ce_factor} CE",
        baseline="CE",
        method_value=table[f"{first}/eisl"]["bleu"],
        baseline_value=table[f"{first}/ce"]["bleu"],
        higher_is_better=True,
        seconds=time.time() - t0,
        details={"table": table, "setup": base, "seeds": seeds},
        plots=plots,
    )
