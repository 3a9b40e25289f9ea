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
- ``test_eisl_gradcheck``, ``test_eisl_padding``, ``test_eisl_bad_input`` and the fuzz harness
  ``tests/test_sequence_bad_inputs.py``.
- ``test_eisl_learns_under_insertion_noise``: a NAT model trained with EISL+CE on targets with
  insertion noise beats CE on clean exact match.
- ``test_eisl_two_stage_schedule``: ``pretrain_steps`` CE steps, then the n-gram loss (no CE
  term) at ``finetune_lr``; :func:`two_stage_arms` continues every arm from one stage-1 model.

Deviations: (1) padding: the official EISL.py does no masking and the MT criterion zeroes padded
target columns (``pad_mode="zero"``, kept for parity and used by the reproduce's official stage 2);
the default ``pad_mode="exclude"`` instead leaves the *target* n-grams that touch padding out of
the mean. Output positions are never masked by default (only by an explicit ``output_mask``): a
label that lost its first tokens and was right-padded still matches the outputs where those
tokens are (``test_eisl_exclude_padding_keeps_edit_invariance``). (2) the n-gram
convolution is written as a sum of n shifted slices (equal to ``conv2d`` with an identity kernel).
(3) The reproduce follows the official two-stage schedule (CE first, then the n-gram
criterion ``ngrambleuloss_nat``: n-grams "1,2" weighted 0.8/0.2, no CE term, official padding) but
trains small *non-autoregressive* models from scratch on a toy translation task (quick:
:class:`ConvNAT`; full: a BART built from a config, decoder fed [MASK] tokens; output length =
source length), instead of fine-tuning pretrained BART-base on Multi30k with an autoregressive
first stage and ``tf_ratio=0`` (free-running decoder) in the second (offline, CPU).

The config, the registered recipe, ``two_stage_arms`` and the reproduce live in
:mod:`invariance.sequence.recipes.eisl`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from invariance.sequence._checks import check_int, check_tensor
from invariance.sequence.data.synthetic import MASK, PAD
from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss, resolve_ngrams

__all__ = ["eisl_loss", "EISLLoss", "resolve_ngrams", "ConvNAT", "BartNAT"]

#: names that moved to :mod:`invariance.sequence.recipes.eisl` (still importable from here)
_MOVED = ("EISLConfig", "EISLRecipe", "two_stage_arms", "OFFICIAL_STAGE2")


def _check_src(src: Tensor, vocab: int, max_len: int) -> None:
    check_tensor("src", src, ndim=2, integer=True)
    if src.shape[1] > max_len:
        raise ValueError(f"src must have shape (B, T<={max_len}), got {tuple(src.shape)}")
    if bool(((src < 0) | (src >= vocab)).any()):
        raise ValueError(f"src ids must be in [0, {vocab})")


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
        check_int("vocab_size", vocab_size, 2)
        check_int("d_model", d_model, 1)
        check_int("max_len", max_len, 1)
        check_int("hidden", hidden, 1)
        self.vocab_size, self.max_len = vocab_size, max_len
        self.emb = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.conv = nn.Conv1d(d_model, hidden, 3, padding=1)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, src: Tensor) -> Tensor:
        _check_src(src, self.vocab_size, self.max_len)
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

        check_int("vocab_size", vocab_size, 2)
        check_int("d_model", d_model, 1)
        check_int("layers", layers, 1)
        check_int("heads", heads, 1)
        check_int("max_len", max_len, 1)
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.vocab_size, self.max_len = vocab_size, max_len

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
        _check_src(src, self.vocab_size, self.max_len)
        dec = torch.full_like(src, MASK)
        out = self.bart(input_ids=src, attention_mask=(src != PAD).long(), decoder_input_ids=dec)
        return out.logits


def __getattr__(name: str) -> Any:
    """Backward-compatible access to the recipe names that moved to ``recipes/eisl.py``."""
    if name in _MOVED:
        from invariance.sequence.recipes import eisl as _recipes

        return getattr(_recipes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
