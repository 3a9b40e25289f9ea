"""Procedural sequence tasks with exact ground truth (seeded, offline).

* :func:`make_delay_task`: white noise in, the same noise delayed by ``delay`` steps out (the
  long-range memory task of the SSM literature; the answer is known exactly).
* :func:`make_noisy_translation`: a toy "translation" (a fixed word dictionary plus swapping of
  adjacent pairs) whose *training* targets are corrupted by the EISL paper's noises
  (insertion, deletion, local shuffle, repetition, blank); the clean target is returned alongside.
* :func:`corpus_bleu`: corpus-level 4-gram BLEU (Papineni et al. 2002, brevity penalty, no
  smoothing) on token-id lists.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from invariance.sequence._checks import check_float, check_int

__all__ = [
    "make_delay_task",
    "make_noisy_translation",
    "corrupt",
    "corpus_bleu",
    "NOISES",
    "PAD",
    "BOS",
    "EOS",
    "BLANK",
    "MASK",
    "N_SPECIAL",
]

PAD, BOS, EOS, BLANK, MASK = 0, 1, 2, 3, 4
N_SPECIAL = 5
NOISES = ("none", "insert", "delete", "shuffle", "repeat", "blank", "multiple")


def make_delay_task(
    n: int, *, length: int = 256, delay: int = 128, seed: int = 0, channels: int = 1
) -> dict[str, Tensor]:
    """``n`` white-noise sequences ``x`` (n, length, channels) ~ N(0, 1) and targets
    ``y = delay(x, delay)`` (zeros for the first ``delay`` steps). Ground truth: ``y`` exactly."""
    check_int("n", n, 1)
    check_int("length", length, 1)
    check_int("channels", channels, 1)
    check_int("delay", delay, 0)
    check_int("seed", seed, 0)
    if not (0 <= delay < length):
        raise ValueError(f"delay must be in [0, length), got delay={delay}, length={length}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, channels, generator=g)
    y = torch.zeros_like(x)
    y[:, delay:] = x[:, : length - delay]
    return {"x": x, "y": y}


def _translate(src: list[int], dictionary: Tensor) -> list[int]:
    out = [int(dictionary[t]) for t in src]
    for i in range(0, len(out) - 1, 2):  # local reordering: swap adjacent pairs
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def corrupt(
    tokens: list[int], noise: str, rate: float, *, vocab: int, g: torch.Generator, window: int = 3
) -> list[int]:
    """Apply one of the EISL paper's target noises to a token list (ids >= N_SPECIAL).

    ``insert``: with prob. ``rate`` insert a random token at a random position (everything after it
    shifts); ``delete``: with prob. ``rate`` drop a random token; ``shuffle``: each token with
    prob. ``rate`` is displaced within a window of ``window``; ``repeat``: each token repeated with
    prob. ``rate``; ``blank``: each token replaced by BLANK with prob. ``rate``; ``multiple``: one
    of
    the previous, drawn per sequence.
    """
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    check_float("rate", rate, 0.0, 1.0)
    check_int("vocab", vocab, 1)
    check_int("window", window, 1)
    t = list(tokens)
    r = lambda: float(torch.rand((), generator=g))  # noqa: E731
    if noise == "multiple":
        noise = ("insert", "delete", "shuffle", "repeat", "blank")[
            int(torch.randint(5, (), generator=g))
        ]
    if noise == "none" or not t:
        return t
    if noise == "insert":
        if r() < rate:
            pos = int(torch.randint(len(t) + 1, (), generator=g))
            t.insert(pos, N_SPECIAL + int(torch.randint(vocab, (), generator=g)))
    elif noise == "delete":
        if r() < rate and len(t) > 1:
            t.pop(int(torch.randint(len(t), (), generator=g)))
    elif noise == "shuffle":
        keys = [i + (r() * window if r() < rate else 0.0) for i in range(len(t))]
        t = [t[i] for i in sorted(range(len(t)), key=lambda i: keys[i])]
    elif noise == "repeat":
        out = []
        for tok in t:
            out.append(tok)
            if r() < rate:
                out.append(tok)
        t = out
    elif noise == "blank":
        t = [BLANK if r() < rate else tok for tok in t]
    return t


def make_noisy_translation(
    n: int,
    *,
    vocab: int = 24,
    min_len: int = 6,
    max_len: int = 10,
    noise: str = "insert",
    rate: float = 0.5,
    seed: int = 0,
    dict_seed: int = 1234,
) -> dict[str, Tensor]:
    """Toy translation pairs with noisy training targets.

    Source: ``n`` random strings of ids in ``[N_SPECIAL, N_SPECIAL + vocab)`` with lengths in
    ``[min_len, max_len]``. Clean target: each word mapped by a fixed random dictionary
    (``dict_seed``), then adjacent pairs swapped. Noisy target: :func:`corrupt` of the clean one.
    All padded with PAD to ``max_len + 2``. The sources and clean targets depend on ``seed``
    only (not on the noise), so runs with different noises see the same pairs.

    Returns:
        dict with ``src``, ``tgt`` (clean), ``noisy`` (LongTensors (n, max_len + 2)), ``src_len``,
        ``tgt_len``, ``noisy_len``.
    """
    check_int("n", n, 1)
    check_int("vocab", vocab, 2)
    check_int("min_len", min_len, 1)
    check_int("max_len", max_len, 1)
    check_int("seed", seed, 0)
    check_int("dict_seed", dict_seed, 0)
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    check_float("rate", rate, 0.0, 1.0)
    if min_len > max_len:
        raise ValueError(f"need min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    gd = torch.Generator().manual_seed(dict_seed)
    dictionary = torch.zeros(N_SPECIAL + vocab, dtype=torch.long)
    dictionary[N_SPECIAL:] = N_SPECIAL + torch.randperm(vocab, generator=gd)
    g = torch.Generator().manual_seed(seed)
    # the noise draws use their own stream, so the sources do not depend on the noise
    gn = torch.Generator().manual_seed(seed + 7_777_777)
    width = max_len + 2
    src = torch.full((n, width), PAD, dtype=torch.long)
    tgt = torch.full((n, width), PAD, dtype=torch.long)
    noisy = torch.full((n, width), PAD, dtype=torch.long)
    lens = torch.zeros(n, 3, dtype=torch.long)
    for i in range(n):
        L = int(torch.randint(min_len, max_len + 1, (), generator=g))
        s = (N_SPECIAL + torch.randint(vocab, (L,), generator=g)).tolist()
        t = _translate(s, dictionary)
        z = corrupt(t, noise, rate, vocab=vocab, g=gn)[:width]
        src[i, :L] = torch.tensor(s)
        tgt[i, :L] = torch.tensor(t)
        noisy[i, : len(z)] = torch.tensor(z)
        lens[i] = torch.tensor([L, L, len(z)])
    return {
        "src": src,
        "tgt": tgt,
        "noisy": noisy,
        "src_len": lens[:, 0],
        "tgt_len": lens[:, 1],
        "noisy_len": lens[:, 2],
    }


def _ngrams(seq: Sequence[int], n: int) -> Counter:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def corpus_bleu(
    hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], max_n: int = 4
) -> float:
    """Corpus BLEU in [0, 100] (uniform 1..max_n weights, brevity penalty, no smoothing)."""
    check_int("max_n", max_n, 1)
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hyps and {len(refs)} refs; need one refs per hyps")
    match = [0] * max_n
    total = [0] * max_n
    hl = rl = 0
    for h, r in zip(hyps, refs):
        h, r = list(h), list(r)
        hl += len(h)
        rl += len(r)
        for n in range(1, max_n + 1):
            hn, rn = _ngrams(h, n), _ngrams(r, n)
            match[n - 1] += sum(min(c, rn[g]) for g, c in hn.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / max_n
    bp = 1.0 if hl > rl else math.exp(1 - rl / max(hl, 1))
    return 100.0 * bp * math.exp(log_p)
