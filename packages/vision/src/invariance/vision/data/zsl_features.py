"""Procedural zero-shot features (``SynthZSL``): classes described by binary attributes, image
features generated from them, a seen/unseen class split, ground truth known.

Stand-in for the ResNet-101 features + class attributes of AWA/CUB/SUN (Xian et al.'s xlsa17),
which cannot be downloaded here. ``n_classes`` classes get attribute vectors
``a_c ~ Bernoulli(p_attr)`` (redrawn until all pairs differ in at least 3 attributes and no class
is empty). Each class has ``n_modes`` latent sub-types ``mu_{c,m} = a_c + 0.3 u_{c,m}``; a
feature is ``x = relu(W2 tanh(W1 mu + 0.25 eps))`` with fixed random ``W1``, ``W2`` and
Gaussian ``eps``, then min-max scaled to [0, 1] with the statistics of the seen training
features (f-CLSWGAN's preprocessing). The last ``n_unseen`` classes are unseen: their attribute
vectors are new combinations of attributes that seen classes carry, so zero-shot transfer is
possible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number

__all__ = ["make_synth_zsl"]


def make_synth_zsl(
    *,
    seed: int = 0,
    n_classes: int = 40,
    n_unseen: int = 10,
    n_attributes: int = 24,
    feat_dim: int = 128,
    n_per_class: int = 300,
    n_modes: int = 3,
    p_attr: float = 0.35,
    test_frac: float = 0.2,
) -> dict[str, Tensor]:
    """Generate a SynthZSL set.

    Returns:
        dict with ``attributes`` (C, A) float {0, 1}; ``seen`` / ``unseen`` class ids;
        ``train_x`` / ``train_y`` (seen classes, ``1 - test_frac`` of their samples);
        ``test_seen_x`` / ``test_seen_y`` (the rest of the seen samples);
        ``test_unseen_x`` / ``test_unseen_y`` (all samples of unseen classes); ``mode`` of every
        training sample (the latent sub-type). Labels are global class ids.
    """
    check_int(seed, "seed", lo=0)
    check_int(n_classes, "n_classes", lo=3)
    check_int(n_unseen, "n_unseen")
    check_int(n_attributes, "n_attributes", lo=4)
    check_int(feat_dim, "feat_dim")
    check_int(n_per_class, "n_per_class", lo=5)
    check_int(n_modes, "n_modes")
    check_number(p_attr, "p_attr", lo=0.05, hi=0.95)
    check_number(test_frac, "test_frac", lo=0.05, hi=0.95)
    if n_unseen >= n_classes - 1:
        raise ValueError(f"n_unseen must leave at least 2 seen classes, got {n_unseen}")
    if 2**n_attributes < 4 * n_classes:
        raise ValueError("n_attributes is too small for that many distinct classes")
    g = torch.Generator().manual_seed(int(seed) * 7907 + 5)
    for _ in range(10000):
        att = (torch.rand(n_classes, n_attributes, generator=g) < p_attr).float()
        ham = torch.cdist(att, att, p=1) + 1e9 * torch.eye(n_classes)
        if bool((att.sum(1) > 0).all()) and float(ham.min()) >= 3:
            break
    else:  # pragma: no cover - only for extreme settings
        raise ValueError("could not draw distinct attribute vectors; lower n_classes")
    w1 = torch.randn(n_attributes, 64, generator=g) / n_attributes**0.5
    w2 = torch.randn(64, feat_dim, generator=g) / 8.0
    u = torch.randn(n_classes, n_modes, n_attributes, generator=g)
    mu = att[:, None] + 0.3 * u  # (C, M, A)
    label = torch.arange(n_classes).repeat_interleave(n_per_class)
    mode = torch.randint(0, n_modes, (len(label),), generator=g)
    h = torch.tanh(mu[label, mode] @ w1 + 0.25 * torch.randn(len(label), 64, generator=g))
    x = torch.relu(h @ w2)
    seen = torch.arange(n_classes - n_unseen)
    unseen = torch.arange(n_classes - n_unseen, n_classes)
    is_seen = label < n_classes - n_unseen
    is_test = torch.rand(len(label), generator=g) < test_frac
    tr = is_seen & ~is_test
    lo, hi = x[tr].min(0).values, x[tr].max(0).values
    x = (x - lo) / (hi - lo).clamp_min(1e-6)
    ts, tu = is_seen & is_test, ~is_seen
    return {
        "attributes": att,
        "seen": seen,
        "unseen": unseen,
        "train_x": x[tr],
        "train_y": label[tr],
        "mode": mode[tr],
        "test_seen_x": x[ts],
        "test_seen_y": label[ts],
        "test_unseen_x": x[tu],
        "test_unseen_y": label[tu],
    }
