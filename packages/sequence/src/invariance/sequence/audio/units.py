"""Frame features, k-means units, deduplication, the unit edit distance and content metrics.

* :func:`log_mel` / :func:`mfcc`: torchaudio mel filterbank + DCT (``create_dct``) with per-
  utterance mean and variance normalisation (CMVN), optional deltas (``compute_deltas``); 10 ms
  hop. The log floor is relative (100 dB below the loudest bin) and CMVN removes the log-gain
  offset, so the features are invariant to the waveform's scale.
* :class:`KMeans`: k-means++ then Lloyd iterations in torch (seeded, deterministic).
* :func:`dedup`: collapse consecutive repeats (``[1,1,2,2,2,3] -> [1,2,3]``).
* :func:`unit_edit_distance`: UED = mean over utterances of
  ``Lev(dedup u(x), dedup u(g(x))) / |dedup u(x)|`` (``torchaudio.functional.edit_distance``).
* :func:`word_accuracy`: accuracy of a linear classifier on bag-of-units (unigram + bigram
  histograms of the deduplicated units), trained on one split and tested on another: constant or
  random units score at chance, so collapsed units cannot look good.
* :func:`unit_perplexity`: ``exp(entropy)`` of the unit histogram (codebook use).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor

from invariance.sequence._checks import check_float, check_int, check_tensor

__all__ = [
    "SAMPLE_RATE",
    "HOP",
    "log_mel",
    "mfcc",
    "KMeans",
    "dedup",
    "unit_edit_distance",
    "ued_pairs",
    "bag_of_units",
    "word_accuracy",
    "unit_perplexity",
]

#: sample rate of every feature extractor here (Hz)
SAMPLE_RATE = 16000
#: frame hop (10 ms at 16 kHz)
HOP = 160
_MEL: dict[tuple, AT.MelSpectrogram] = {}


def _check_wave(x: Tensor, sample_rate: int) -> Tensor:
    check_tensor("x", x, ndim=1, floating=True)
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {SAMPLE_RATE} (resample first), got {sample_rate}")
    if x.shape[0] < 400:
        raise ValueError(f"x must hold at least 400 samples (25 ms), got {x.shape[0]}")
    if float(x.abs().max()) == 0.0:
        raise ValueError("x is silent (all zeros)")
    return x


def _cmvn(f: Tensor) -> Tensor:
    return (f - f.mean(0)) / f.std(0, unbiased=False).clamp_min(1e-5)


def log_mel(
    x: Tensor, sample_rate: int = SAMPLE_RATE, *, n_mels: int = 40, cmvn: bool = True
) -> Tensor:
    """Log-mel features ``(T, n_mels)`` of a mono waveform (25 ms window, 10 ms hop)."""
    _check_wave(x, sample_rate)
    check_int("n_mels", n_mels, 4, 128)
    key = (n_mels, x.dtype)
    if key not in _MEL:
        _MEL[key] = AT.MelSpectrogram(
            SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=n_mels, power=2.0
        ).to(x.dtype)
    p = _MEL[key](x)
    m = p.clamp_min(float(p.max()) * 1e-10 + 1e-30).log().T  # relative floor: gain-invariant
    return _cmvn(m) if cmvn else m


def mfcc(
    x: Tensor,
    sample_rate: int = SAMPLE_RATE,
    *,
    n_mfcc: int = 13,
    n_mels: int = 40,
    deltas: bool = True,
    cmvn: bool = True,
) -> Tensor:
    """MFCC (+ delta + delta-delta) features ``(T, 3 n_mfcc)`` (or ``(T, n_mfcc)``), CMVN'd."""
    check_int("n_mels", n_mels, 4, 128)
    check_int("n_mfcc", n_mfcc, 1, n_mels)
    lm = log_mel(x, sample_rate, n_mels=n_mels, cmvn=False)
    dct = AF.create_dct(n_mfcc, n_mels, "ortho").to(lm.dtype)
    c = lm @ dct
    if deltas:
        d1 = AF.compute_deltas(c.T.unsqueeze(0)).squeeze(0).T
        d2 = AF.compute_deltas(d1.T.unsqueeze(0)).squeeze(0).T
        c = torch.cat([c, d1, d2], 1)
    return _cmvn(c) if cmvn else c


class KMeans:
    """k-means (k-means++ init, Lloyd) in torch; ``fit`` on ``(N, D)`` frames, ``predict`` ids.

    Args:
        k: number of clusters (units).
        iters: Lloyd iterations (default: 30).
        seed: seed of the initialisation (default: 0).
    """

    def __init__(self, k: int, *, iters: int = 30, seed: int = 0) -> None:
        self.k = check_int("k", k, 2)
        self.iters = check_int("iters", iters, 1)
        self.seed = check_int("seed", seed, 0)
        self.centers: Tensor | None = None

    def fit(self, x: Tensor) -> KMeans:
        check_tensor("x", x, ndim=2, floating=True)
        if x.shape[0] < self.k:
            raise ValueError(f"x must have at least k={self.k} rows, got {x.shape[0]}")
        x = x.detach().float()
        g = torch.Generator().manual_seed(self.seed)
        c = x[torch.randint(x.shape[0], (1,), generator=g)]
        d2 = torch.cdist(x, c).squeeze(1) ** 2
        for _ in range(1, self.k):
            p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / len(d2))
            i = torch.multinomial(p, 1, generator=g)
            c = torch.cat([c, x[i]])
            d2 = torch.minimum(d2, (torch.cdist(x, x[i]).squeeze(1)) ** 2)
        for _ in range(self.iters):
            a = torch.cdist(x, c).argmin(1)
            s = torch.zeros_like(c).index_add_(0, a, x)
            n = torch.bincount(a, minlength=self.k).float()
            empty = n == 0
            c = torch.where(empty[:, None], c, s / n.clamp_min(1)[:, None])
        self.centers = c
        return self

    def predict(self, x: Tensor) -> Tensor:
        """Unit ids ``(N,)`` of the rows of ``x``."""
        if self.centers is None:
            raise RuntimeError("KMeans.predict before fit")
        check_tensor("x", x, ndim=2, floating=True)
        if x.shape[1] != self.centers.shape[1]:
            raise ValueError(f"x must have {self.centers.shape[1]} columns, got {x.shape[1]}")
        return torch.cdist(x.detach().float(), self.centers).argmin(1)

    def __repr__(self) -> str:
        return f"KMeans(k={self.k}, fitted={self.centers is not None})"


def dedup(units: Tensor | Sequence[int]) -> list[int]:
    """Collapse consecutive repeats of a unit sequence: ``[1,1,2,2,2,3] -> [1,2,3]``."""
    if isinstance(units, Tensor):
        if units.dim() != 1:
            raise ValueError(f"units must be 1-D, got shape {tuple(units.shape)}")
        if units.is_floating_point():
            raise TypeError(f"units must hold integer ids, got dtype {units.dtype}")
        units = units.tolist()
    elif not isinstance(units, (list, tuple)):
        raise TypeError(f"units must be a 1-D tensor or a list of ints, got {type(units).__name__}")
    if len(units) == 0:
        raise ValueError("units must not be empty")
    out: list[int] = []
    for u in units:
        if not out or out[-1] != u:
            out.append(int(u))
    return out


def ued_pairs(clean: Sequence, augmented: Sequence) -> list[float]:
    """Per-utterance ``Lev(dedup c, dedup a) / |dedup c|`` for aligned lists of unit sequences."""
    if not isinstance(clean, (list, tuple)) or not isinstance(augmented, (list, tuple)):
        raise TypeError("clean and augmented must be lists of unit sequences")
    if len(clean) == 0:
        raise ValueError("clean must not be empty")
    if len(clean) != len(augmented):
        raise ValueError(
            f"augmented must have as many sequences as clean ({len(clean)}), got {len(augmented)}"
        )
    out = []
    for i, (c, a) in enumerate(zip(clean, augmented)):
        if len(c) == 0:
            raise ValueError(f"clean[{i}] is empty")
        c, a = dedup(c), (dedup(a) if len(a) else [])
        out.append(AF.edit_distance(c, a) / len(c))
    return out


def unit_edit_distance(clean: Sequence, augmented: Sequence) -> float:
    """UED (a fraction; the paper reports it x100): the mean of :func:`ued_pairs`."""
    v = ued_pairs(clean, augmented)
    return sum(v) / len(v)


def bag_of_units(seqs: Sequence, k: int, *, bigrams: bool = True) -> Tensor:
    """``(N, k [+ k^2])`` L2-normalised unigram (+ bigram) counts of the deduplicated units."""
    check_int("k", k, 2)
    if not isinstance(seqs, (list, tuple)) or len(seqs) == 0:
        raise ValueError("seqs must be a non-empty list of unit sequences")
    dim = k + (k * k if bigrams else 0)
    out = torch.zeros(len(seqs), dim)
    for i, s in enumerate(seqs):
        s = dedup(s)
        if any(u < 0 or u >= k for u in s):
            raise ValueError(f"seqs[{i}] holds a unit id outside [0, {k})")
        for u in s:
            out[i, u] += 1
        if bigrams:
            for a, b in zip(s[:-1], s[1:]):
                out[i, k + a * k + b] += 1
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-8)


def word_accuracy(
    train_units: Sequence,
    train_labels: Tensor,
    test_units: Sequence,
    test_labels: Tensor,
    k: int,
    *,
    steps: int = 300,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Word accuracy from units: a multinomial logistic regression on :func:`bag_of_units` fitted
    on the training utterances (full-batch Adam), accuracy on the test utterances."""
    check_tensor("train_labels", train_labels, ndim=1, integer=True)
    check_tensor("test_labels", test_labels, ndim=1, integer=True)
    check_int("steps", steps, 1)
    check_float("weight_decay", weight_decay, 0.0)
    xa, xb = bag_of_units(train_units, k), bag_of_units(test_units, k)
    if len(xa) != len(train_labels) or len(xb) != len(test_labels):
        raise ValueError("train_labels/test_labels must have one label per unit sequence")
    n_cls = int(max(train_labels.max(), test_labels.max())) + 1
    g = torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # also inside an evaluation's no_grad
        w = (torch.randn(xa.shape[1], n_cls, generator=g) * 0.01).requires_grad_()
        b = torch.zeros(n_cls, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xa @ w + b, train_labels)
            loss = loss + weight_decay * (w**2).sum()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((xb @ w + b).argmax(1) == test_labels).float().mean())


def unit_perplexity(seqs: Sequence, k: int) -> float:
    """``exp(H)`` of the pooled histogram of deduplicated units (1 = one unit used, k = all
    used equally)."""
    check_int("k", k, 2)
    if not isinstance(seqs, (list, tuple)) or len(seqs) == 0:
        raise ValueError("seqs must be a non-empty list of unit sequences")
    counts = torch.zeros(k)
    for s in seqs:
        for u in dedup(s):
            counts[u] += 1
    p = counts / counts.sum().clamp_min(1)
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(math.exp(float(h)))
