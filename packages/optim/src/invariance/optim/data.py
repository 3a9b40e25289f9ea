"""Offline data for the optim recipes: sklearn's bundled digits, procedural tasks with ground truth.

* :func:`digits_split`: the 1,797 8x8 digits shipped inside scikit-learn (no download).
* :func:`make_extreme_classification`: a random linear teacher over ``D`` classes with Zipf priors;
  the Bayes-optimal label of every input is known.
* :func:`make_zipf_language`: a Zipf bigram "language" with a low-rank context effect; the
  Bayes rank of every next token is known (top-k ground truth).
* :func:`make_gamma_sine`: γ-conditioned regression ``y = sin((1 + 4γ) x)`` for hypernetworks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.optim._checks import check_float, check_int

__all__ = [
    "digits_split",
    "make_extreme_classification",
    "make_gamma_sine",
    "make_zipf_language",
]


def digits_split(
    *, seed: int = 0, test_fraction: float = 0.25, image: bool = False
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Standardised digits, split by a seeded permutation: ``(x_train, y_train, x_test, y_test)``.

    ``x`` is ``(N, 64)`` float32, or ``(N, 1, 8, 8)`` with ``image=True``; ``y`` is ``(N,)`` long.
    """
    check_int("seed", seed)
    if not 0.0 < check_float("test_fraction", test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits  # the data ships inside the scikit-learn wheel

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3) if not image else (x - 0.5) / 0.5
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    n_test = int(round(test_fraction * len(y)))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def make_extreme_classification(
    n: int,
    *,
    num_classes: int = 1000,
    dim: int = 32,
    zipf: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    teacher_seed: int | None = None,
) -> dict[str, Tensor]:
    """Procedural extreme classification with a known teacher.

    Class ``c`` has a unit prototype ``T_c`` and a Zipf prior ``p_c ∝ (c+1)^-zipf``. A sample draws
    ``c ~ p``, then ``x = 3 T_c + noise * ε``. Returns ``{"x": (n, dim), "y": (n,), "bayes": (n,)}``
    where ``bayes`` is the teacher's MAP label (ground truth of what is learnable).
    """
    check_int("n", n, 1)
    check_int("num_classes", num_classes, 2)
    check_int("dim", dim, 1)
    check_float("zipf", zipf, 0.0)
    check_float("noise", noise, 0.0, lo_open=True)
    check_int("seed", seed)
    if teacher_seed is not None:
        check_int("teacher_seed", teacher_seed)
    gt = torch.Generator().manual_seed(seed if teacher_seed is None else teacher_seed)
    T = torch.randn(num_classes, dim, generator=gt)
    T = T / T.norm(dim=1, keepdim=True)
    prior = (torch.arange(num_classes, dtype=torch.float64) + 1) ** (-zipf)
    prior = prior / prior.sum()
    g = torch.Generator().manual_seed(seed + 7919)
    y = torch.multinomial(prior, n, replacement=True, generator=g)
    x = 3.0 * T[y] + noise * torch.randn(n, dim, generator=g)
    # Bayes (MAP) label: argmax_c log p_c - ||x - 3 T_c||^2 / (2 noise^2)
    logp = prior.log().float()
    bayes = torch.empty(n, dtype=torch.long)
    for i in range(0, n, 4096):
        xb = x[i : i + 4096]
        score = logp + (3.0 * xb @ T.T) / noise**2  # ||T_c|| = 1, so only the cross term differs
        bayes[i : i + 4096] = score.argmax(1)
    return {"x": x, "y": y, "bayes": bayes}


def make_zipf_language(
    n: int,
    *,
    vocab: int = 2000,
    rank: int = 16,
    zipf: float = 1.0,
    temp: float = 2.0,
    seed: int = 0,
    lang_seed: int = 0,
) -> dict[str, Tensor]:
    r"""Next-token pairs from a Zipf bigram language with a known conditional.

    The language (fixed by ``lang_seed``) has unigram prior :math:`p_j \propto (j+1)^{-zipf}` and
    next-token logits :math:`\ell_{ij} = \log p_j + temp\,\langle A_i, B_j\rangle` with
    :math:`A, B \in \mathbb R^{V\times r}` Gaussian (:math:`A` scaled by :math:`1/\sqrt r`). A
    sample draws the context :math:`i \sim p` and the next token :math:`j \sim
    \mathrm{softmax}(\ell_{i\cdot})`. Returns ``{"context": (n,), "y": (n,), "bayes_rank": (n,)}``;
    ``bayes_rank`` is the rank of ``y`` under the true conditional (0 = its mode), so
    ``(bayes_rank < k).mean()`` is the Bayes-optimal top-k accuracy.
    """
    check_int("n", n, 1)
    check_int("vocab", vocab, 2)
    check_int("rank", rank, 1)
    check_float("zipf", zipf, 0.0)
    check_float("temp", temp, 0.0)
    check_int("seed", seed)
    check_int("lang_seed", lang_seed)
    gl = torch.Generator().manual_seed(lang_seed)
    A = torch.randn(vocab, rank, generator=gl) / math.sqrt(rank)
    B = torch.randn(vocab, rank, generator=gl)
    logp = -zipf * torch.log(torch.arange(vocab, dtype=torch.float32) + 1)
    logp = logp - torch.logsumexp(logp, 0)
    g = torch.Generator().manual_seed(seed + 7919)
    ctx = torch.multinomial(logp.exp(), n, replacement=True, generator=g)
    y = torch.empty(n, dtype=torch.long)
    brank = torch.empty(n, dtype=torch.long)
    for i in range(0, n, 2048):
        logits = logp + temp * A[ctx[i : i + 2048]] @ B.T
        yi = torch.multinomial(torch.softmax(logits, 1), 1, generator=g)[:, 0]
        y[i : i + 2048] = yi
        brank[i : i + 2048] = (logits > logits.gather(1, yi[:, None])).sum(1)
    return {"context": ctx, "y": y, "bayes_rank": brank}


def make_gamma_sine(
    n_gamma: int, n_x: int, *, cond_dim: int = 1, seed: int = 0
) -> dict[str, Tensor]:
    """γ-conditioned regression ``y = sin((1 + 4 mean(γ)) x)``, ``γ ~ U[0,1]^k``, ``x ~ U[-2, 2]``.

    Returns ``{"gamma": (n_gamma, k), "x": (n_gamma, n_x, 1), "y": (n_gamma, n_x, 1)}``.
    """
    check_int("n_gamma", n_gamma, 1)
    check_int("n_x", n_x, 1)
    check_int("cond_dim", cond_dim, 1)
    check_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    gamma = torch.rand(n_gamma, cond_dim, generator=g)
    x = torch.rand(n_gamma, n_x, 1, generator=g) * 4 - 2
    freq = 1 + 4 * gamma.mean(1)
    y = torch.sin(freq[:, None, None] * x)
    return {"gamma": gamma, "x": x, "y": y}
