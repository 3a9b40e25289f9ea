"""Augmentation-invariant discrete speech units (iterative pseudo-labelling with CTC).

Paper: Gat, Kreuk, Nguyen, Lee, Copet, Synnaeve, Dupoux, Adi, "Augmentation Invariant Discrete
Representation for Generative Spoken Language Modeling" (IWSLT 2023; arXiv:2209.15483).
Official code: none released (searched); the GSLM unit pipeline it builds on is fairseq
``examples/textless_nlp`` (MIT). This module is written from the paper.

Mechanism:

* A speech encoder ``E(x) = quantize(f(x))``: frame features ``f`` and a k-means codebook; the
  unit sequence is **deduplicated** (consecutive repeats collapsed) before any comparison.
* Robustness metric: the unit edit distance ``UED(E, g) = E_x[Lev(dedup E(x), dedup E(g(x))) /
  |dedup E(x)|]`` for an augmentation ``g`` (time stretch, pitch shift, reverberation, noise);
  alignment-free, so it also covers length-changing ``g``.
* Iterative pseudo-labelling: iteration 0 labels every clean utterance with the deduplicated units
  of k-means on clean frame features; an encoder ``f_theta`` plus a linear head over ``K + 1``
  classes (blank last) is trained with **CTC** to emit the clean utterance's units from an
  augmented copy ``g(x)``; then k-means is refitted on ``f_theta`` features of **clean** audio,
  the clean audio relabelled, and the encoder trained again (2-3 iterations). The final units are
  the refitted k-means on ``f_theta``.
* A content metric beside UED (here: word accuracy of a classifier on bag-of-units, and the
  codebook perplexity), because constant units have UED 0.

Building blocks: :class:`UnitEncoder` (the ``f_theta``), :class:`SpeechUnits` (an encoder with its
codebook: ``units(audio)``, ``ued(...)``), :class:`MFCCUnits` (the iteration-0 / base units),
:func:`ctc_unit_loss`. The training schedule (augmented pools, iterations, refits) is in
:mod:`invariance.sequence.recipes.speech_units` (``train_invariant_units``).

Tested properties (``tests/test_speech_units.py``, ``tests/test_audio.py``): the UED worked
example (``[1,1,2,2,2,3,4,4]`` vs ``[1,2,2,5,3,4]`` -> 1/4); UED is 0 for the identity;
augmentation sanity (stretch length ``1/r``, pitch shift keeps length, SNR within 0.1 dB, unit-norm
RIR keeps energy within 3 dB); the fast pitch shift matches torchaudio's stock ``pitch_shift``
spectrally; the units are exactly invariant to the waveform's gain (CMVN), with a negative control
(features without CMVN); a small run lowers the UED against iteration-0 units while word accuracy
from units stays within a few points, and the same run without augmentation does not lower it as
much (negative control).

Deviations: frame features are MFCC/log-mel of 16 kHz audio at 100 Hz (no HuBERT: no pretrained
speech model ships offline), so ``f_theta`` is a small convolutional encoder on log-mel features
trained from scratch each run rather than HuBERT fine-tuned; the corpus is eSpeak NG speech of
spoken digits (voices, variants, rates, pitches) instead of LibriSpeech; reverberation uses
synthetic exponentially decaying RIRs; the content metric is word accuracy from bag-of-units and
codebook perplexity (no phone alignments, no unit LM / sWUGGY).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from invariance.sequence._checks import check_int, check_tensor
from invariance.sequence.audio.units import (
    SAMPLE_RATE,
    KMeans,
    dedup,
    log_mel,
    mfcc,
    ued_pairs,
)

__all__ = ["UnitEncoder", "SpeechUnits", "MFCCUnits", "ctc_unit_loss", "pad_features"]


def pad_features(feats: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Right-pad ``(T_i, F)`` feature tensors to ``(B, T_max, F)``; returns it and the lengths."""
    if not isinstance(feats, (list, tuple)) or len(feats) == 0:
        raise ValueError("feats must be a non-empty list of (T, F) tensors")
    for i, f in enumerate(feats):
        check_tensor(f"feats[{i}]", f, ndim=2, floating=True)
    dims = {f.shape[1] for f in feats}
    if len(dims) != 1:
        raise ValueError(f"feats must share the feature size, got {sorted(dims)}")
    lens = torch.tensor([f.shape[0] for f in feats])
    out = feats[0].new_zeros(len(feats), int(lens.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lens


class UnitEncoder(nn.Module):
    """``f_theta``: 1-D convolutions over frame features, residual, LayerNorm, GELU; frame rate
    kept. ``forward(x)`` maps ``(B, T, n_in)`` to features ``(B, T, hidden)``; ``logits(x)`` adds
    the CTC head over ``n_units + 1`` classes (blank = the last class).

    Args:
        n_in: input feature size (e.g. 40 log-mel bins).
        n_units: codebook size K of the targets.
        hidden: channels (default: 64).
        layers: convolution layers (default: 3).
        kernel: temporal kernel size, odd (default: 5).
    """

    def __init__(
        self, n_in: int, n_units: int, *, hidden: int = 64, layers: int = 3, kernel: int = 5
    ) -> None:
        super().__init__()
        check_int("n_in", n_in, 1)
        check_int("n_units", n_units, 2)
        check_int("hidden", hidden, 1)
        check_int("layers", layers, 1)
        check_int("kernel", kernel, 1)
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        self.n_in, self.n_units, self.hidden = n_in, n_units, hidden
        self.inp = nn.Conv1d(n_in, hidden, kernel, padding=kernel // 2)
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(layers - 1)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.head = nn.Linear(hidden, n_units + 1)

    def reset_head(self, n_units: int | None = None) -> None:
        """A fresh CTC head (a new codebook after a k-means refit)."""
        k = self.n_units if n_units is None else check_int("n_units", n_units, 2)
        self.n_units = k
        self.head = nn.Linear(self.hidden, k + 1).to(self.inp.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor("x", x, ndim=3, floating=True)
        if x.shape[2] != self.n_in:
            raise ValueError(f"x must have {self.n_in} features in dim 2, got {x.shape[2]}")
        h = self.norms[0](nn.functional.gelu(self.inp(x.transpose(1, 2))).transpose(1, 2))
        for conv, norm in zip(self.convs, self.norms[1:]):
            h = norm(h + nn.functional.gelu(conv(h.transpose(1, 2))).transpose(1, 2))
        return h

    def logits(self, x: Tensor) -> Tensor:
        """CTC logits ``(B, T, n_units + 1)``."""
        return self.head(self(x))


def ctc_unit_loss(
    logits: Tensor, input_lengths: Tensor, targets: Sequence[Sequence[int]]
) -> Tensor:
    """CTC of ``(B, T, K + 1)`` logits (blank = ``K``) against deduplicated unit targets (a list
    of id lists, each non-empty); mean over the batch of the per-target-length-normalised loss;
    infeasible alignments contribute zero (``zero_infinity``)."""
    check_tensor("logits", logits, ndim=3, floating=True)
    check_tensor("input_lengths", input_lengths, ndim=1, integer=True)
    if not isinstance(targets, (list, tuple)) or len(targets) != logits.shape[0]:
        raise ValueError(f"targets must be a list of {logits.shape[0]} unit sequences")
    blank = logits.shape[2] - 1
    flat, lens = [], []
    for i, t in enumerate(targets):
        t = list(t)
        if not t:
            raise ValueError(f"targets[{i}] is empty")
        if min(t) < 0 or max(t) >= blank:
            raise ValueError(f"targets[{i}] holds a unit id outside [0, {blank})")
        flat.extend(t)
        lens.append(len(t))
    lp = logits.log_softmax(-1).transpose(0, 1)
    return nn.functional.ctc_loss(
        lp,
        torch.tensor(flat),
        input_lengths,
        torch.tensor(lens),
        blank=blank,
        reduction="mean",
        zero_infinity=True,
    )


def _check_wave(name: str, a: Tensor) -> None:
    check_tensor(name, a, ndim=1, floating=True)
    if a.shape[0] < 400:
        raise ValueError(f"{name} must hold at least 400 samples, got {a.shape[0]}")
    if float(a.abs().max()) == 0.0:
        raise ValueError(f"{name} is silent (all zeros)")


def _check_audio(
    audio: Sequence[Tensor] | Tensor, sample_rate: int, name: str = "audio"
) -> list[Tensor]:
    """A waveform (checked as ``name``) or a non-empty list of them (``name[i]``), 16 kHz."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise TypeError(f"sample_rate must be an int, got {type(sample_rate).__name__}")
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {SAMPLE_RATE} (resample first), got {sample_rate}")
    if isinstance(audio, Tensor):
        _check_wave(name, audio)
        return [audio]
    if not isinstance(audio, (list, tuple)) or len(audio) == 0:
        raise ValueError(f"{name} must be a 1-D waveform or a non-empty list of them")
    for i, a in enumerate(audio):
        _check_wave(f"{name}[{i}]", a)
    return list(audio)


class MFCCUnits:
    """Base (iteration-0) units: k-means on CMVN'd MFCC+delta+delta-delta frames.

    Args:
        k: codebook size (default: 32).
        seed: k-means seed (default: 0).
    """

    def __init__(self, k: int = 32, *, seed: int = 0) -> None:
        self.k = check_int("k", k, 2)
        self.kmeans = KMeans(k, seed=seed)

    def features(self, x: Tensor) -> Tensor:
        return mfcc(x)

    def fit(self, audio: Sequence[Tensor], sample_rate: int = SAMPLE_RATE) -> MFCCUnits:
        audio = _check_audio(audio, sample_rate)
        self.kmeans.fit(torch.cat([self.features(a) for a in audio]))
        return self

    def frame_units(self, x: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
        _check_audio(x, sample_rate, "x")
        return self.kmeans.predict(self.features(x))

    def units(self, audio: Sequence[Tensor] | Tensor, sample_rate: int = SAMPLE_RATE) -> list:
        """Deduplicated unit lists, one per waveform."""
        return [dedup(self.frame_units(a, sample_rate)) for a in _check_audio(audio, sample_rate)]

    def ued(self, clean: Sequence[Tensor], augmented: Sequence[Tensor]) -> float:
        """UED between the units of aligned clean and augmented waveforms."""
        v = ued_pairs(self.units(list(clean)), self.units(list(augmented)))
        return sum(v) / len(v)


class SpeechUnits(nn.Module):
    """Units from a trained :class:`UnitEncoder` and a k-means codebook fitted on its features of
    clean audio. The encoder reads CMVN'd log-mel frames, so the units do not depend on the
    waveform's gain.

    Args:
        k: codebook size (default: 32).
        n_mels: log-mel bins fed to the encoder (default: 40).
        hidden / layers / kernel: :class:`UnitEncoder` size (default: 64 / 3 / 5).
        cmvn: per-utterance mean/variance normalisation of the log-mel input (default: True;
            ``False`` is the negative control of the gain invariance).
        seed: seed of the encoder's initialisation and of k-means (default: 0).
    """

    def __init__(
        self,
        k: int = 32,
        *,
        n_mels: int = 40,
        hidden: int = 64,
        layers: int = 3,
        kernel: int = 5,
        cmvn: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.k = check_int("k", k, 2)
        self.n_mels = check_int("n_mels", n_mels, 4, 128)
        check_int("seed", seed, 0)
        if not isinstance(cmvn, bool):
            raise TypeError(f"cmvn must be a bool, got {type(cmvn).__name__}")
        self.cmvn, self.seed = cmvn, seed
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.encoder = UnitEncoder(n_mels, k, hidden=hidden, layers=layers, kernel=kernel)
        self.register_buffer("codebook", torch.zeros(k, hidden))

    def input_features(self, x: Tensor) -> Tensor:
        """Log-mel frames ``(T, n_mels)`` of one waveform (the encoder's input)."""
        return log_mel(x, n_mels=self.n_mels, cmvn=self.cmvn)

    def features(self, x: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
        """Encoder features ``(T, hidden)`` of one 16 kHz waveform."""
        _check_audio(x, sample_rate, "x")
        return self.encoder(self.input_features(x).unsqueeze(0).to(self.encoder.inp.weight.dtype))[
            0
        ]

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def fit_codebook(self, audio: Sequence[Tensor], sample_rate: int = SAMPLE_RATE) -> SpeechUnits:
        """Refit k-means on the encoder features of (clean) ``audio``."""
        audio = _check_audio(audio, sample_rate)
        with torch.no_grad():
            km = KMeans(self.k, seed=self.seed).fit(torch.cat([self.features(a) for a in audio]))
        self.codebook.copy_(km.centers)
        return self

    def quantize(self, feats: Tensor) -> Tensor:
        """Nearest codebook entry of each row of ``feats`` ``(T, hidden)``."""
        check_tensor("feats", feats, ndim=2, floating=True)
        return torch.cdist(feats.detach().float(), self.codebook.float()).argmin(1)

    def frame_units(self, x: Tensor, sample_rate: int = SAMPLE_RATE) -> Tensor:
        """Frame-level unit ids ``(T,)`` (not deduplicated) of one waveform."""
        with torch.no_grad():
            return self.quantize(self.features(x, sample_rate))

    def units(self, audio: Sequence[Tensor] | Tensor, sample_rate: int = SAMPLE_RATE) -> list:
        """Deduplicated unit lists, one per waveform."""
        return [dedup(self.frame_units(a, sample_rate)) for a in _check_audio(audio, sample_rate)]

    def ued(self, clean: Sequence[Tensor], augmented: Sequence[Tensor]) -> float:
        """UED between the units of aligned clean and augmented waveforms."""
        v = ued_pairs(self.units(list(clean)), self.units(list(augmented)))
        return sum(v) / len(v)
