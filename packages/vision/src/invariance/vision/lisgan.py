"""LisGAN: leveraging the invariant side of generative zero-shot learning.

Paper: Li, Jing, Lu, Ding, Zhu, Huang, "Leveraging the Invariant Side of Generative Zero-Shot
Learning" (CVPR 2019), arXiv 1904.04092. Official code: https://github.com/lijin118/LisGAN (no
licence file: read, not copied; PyTorch 0.3).

Mechanism. A conditional WGAN-GP generates image *features* from class attributes (the f-CLSWGAN
backbone): :class:`FeatureGenerator` ``[z; a] -> LeakyReLU MLP -> ReLU`` and :class:`FeatureCritic`
``[x; a] -> LeakyReLU MLP -> score``, critic loss
``D(fake) - D(real) + lambda_GP E(|grad D| - 1)^2``
(:func:`gradient_penalty`, gradient w.r.t. the feature only), generator loss
``-D(fake) + cls_weight * NLL(C_seen(fake), y)`` with a frozen classifier pre-trained on real seen
features. LisGAN adds the *invariant side*: each seen class's **soul samples** are the
``n_clusters`` k-means centres of its real features (:func:`soul_samples`), and two regularisers
pull generated features towards them:

* ``L_soul-sample`` (:func:`soul_sample_loss`, weight ``proto_param2``): each generated feature's
  squared distance to the nearest soul sample of its own class, averaged over the batch;
* ``L_soul-class`` (:func:`soul_class_loss`, weight ``proto_param1``): the mean of ``loss_syn_num``
  generated features per class, squared distance to its class's nearest soul sample.

Recognition is two-stage: a classifier trained on generated unseen features labels the test set;
the most confident ``ratio`` share is kept with its predicted labels (they act as soul samples of
the unseen classes) and added to the training set, the classifier keeps training and re-labels
the rest (:func:`select_confident` picks them).

Tested properties (``tests/test_lisgan.py``): the gradient penalty of a linear critic equals
``lambda (|w| - 1)^2`` for any interpolation; the soul losses are >= 0, zero when generated
features sit on their own soul samples, invariant to permuting soul samples within a class and to
permuting the batch; per-class accuracy is invariant to test order and to duplicating a class;
``select_confident`` with ``ratio = 0`` selects nothing and otherwise exactly the top share by
confidence; golden values from the official ``pairwise_distances``, soul-loss lines, gradient
penalty and entropy ranking.

Deviations: procedural attribute-conditioned features (``SynthZSL``) instead of xlsa17 ResNet
features; the official cascade ranks by ``scipy.stats.entropy`` applied to *log*-softmax outputs
and keeps the highest such values, which are not the most confident samples - we keep the lowest
Shannon entropy of the softmax (``confidence="entropy"``) and offer ``confidence="official"`` for
comparison; the official code picks the best epoch of the GAN and of the classifiers on the test
set - we train for fixed epoch counts (no test-set selection).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "FeatureGenerator",
    "FeatureCritic",
    "gradient_penalty",
    "pairwise_sq_distances",
    "soul_samples",
    "soul_sample_loss",
    "soul_class_loss",
    "select_confident",
    "per_class_accuracy",
    "harmonic_mean",
]


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)


class FeatureGenerator(nn.Module):
    """``G(z, a) = relu(W2 leaky_relu(W1 [z; a]))``: features from noise and attributes."""

    def __init__(
        self, att_dim: int, feat_dim: int, *, noise_dim: int | None = None, hidden: int = 4096
    ) -> None:
        super().__init__()
        check_int(att_dim, "att_dim")
        check_int(feat_dim, "feat_dim")
        check_int(hidden, "hidden")
        self.att_dim, self.feat_dim = att_dim, feat_dim
        self.noise_dim = att_dim if noise_dim is None else check_int(noise_dim, "noise_dim")
        self.net = nn.Sequential(
            nn.Linear(self.noise_dim + att_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, feat_dim),
            nn.ReLU(),
        )
        self.apply(_init)

    def forward(self, z: Tensor, a: Tensor) -> Tensor:
        check_tensor(z, "z", dims=2, expected="(B, noise_dim) noise")
        check_tensor(a, "a", dims=2, expected="(B, att_dim) attributes")
        if z.shape != (a.shape[0], self.noise_dim) or a.shape[1] != self.att_dim:
            raise ValueError(
                f"z must be (B, {self.noise_dim}) and a (B, {self.att_dim}), got "
                f"{tuple(z.shape)} and {tuple(a.shape)}"
            )
        return self.net(torch.cat([z, a], 1))


class FeatureCritic(nn.Module):
    """``D(x, a) = W2 leaky_relu(W1 [x; a])`` (no sigmoid)."""

    def __init__(self, feat_dim: int, att_dim: int, *, hidden: int = 4096) -> None:
        super().__init__()
        check_int(feat_dim, "feat_dim")
        check_int(att_dim, "att_dim")
        check_int(hidden, "hidden")
        self.feat_dim, self.att_dim = feat_dim, att_dim
        self.net = nn.Sequential(
            nn.Linear(feat_dim + att_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1)
        )
        self.apply(_init)

    def forward(self, x: Tensor, a: Tensor) -> Tensor:
        check_tensor(x, "x", dims=2, expected="(B, feat_dim) features")
        check_tensor(a, "a", dims=2, expected="(B, att_dim) attributes")
        if x.shape[1] != self.feat_dim or a.shape != (x.shape[0], self.att_dim):
            raise ValueError(
                f"x must be (B, {self.feat_dim}) and a (B, {self.att_dim}), got "
                f"{tuple(x.shape)} and {tuple(a.shape)}"
            )
        return self.net(torch.cat([x, a], 1))


def gradient_penalty(
    critic: nn.Module,
    real: Tensor,
    fake: Tensor,
    att: Tensor,
    *,
    lam: float = 10.0,
    alpha: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP: ``lam * mean_i (|grad_x D(x_i, a_i)| - 1)^2`` at ``x = alpha real + (1 - alpha)
    fake`` with ``alpha ~ U(0, 1)`` per sample (or the given ``(B, 1)`` ``alpha``); the gradient
    is taken w.r.t. the feature only and keeps the graph (``create_graph``)."""
    check_tensor(real, "real", dims=2)
    check_tensor(fake, "fake", dims=2)
    check_tensor(att, "att", dims=2)
    if real.shape != fake.shape or att.shape[0] != real.shape[0]:
        raise ValueError("real, fake and att must have the same batch (and real/fake shape)")
    check_number(lam, "lam", lo=0.0)
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, generator=generator).to(real)
    else:
        check_tensor(alpha, "alpha", dims=2)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.enable_grad():
        d = critic(x, att)
        (grad,) = torch.autograd.grad(d.sum(), x, create_graph=True)
    return lam * (grad.norm(2, dim=1) - 1).pow(2).mean()


def pairwise_sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2`` as ``|x|^2 + |y|^2 - 2 x.y``, clamped at 0 (the official formula)."""
    check_tensor(x, "x", dims=2)
    check_tensor(y, "y", dims=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same feature size, got {x.shape[1]} and {y.shape[1]}")
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def soul_samples(
    features: Tensor, labels: Tensor, classes: Tensor, *, n_clusters: int = 3, seed: int = 3
) -> Tensor:
    """The soul samples: per class (in the order of ``classes``), the ``n_clusters`` k-means
    centres of its features (scikit-learn ``KMeans(n_init=10, random_state=seed)``), stacked
    class-major: ``(len(classes) * n_clusters, D)``."""
    from sklearn.cluster import KMeans

    check_tensor(features, "features", dims=2)
    check_tensor(labels, "labels", dims=1, floating=False)
    check_tensor(classes, "classes", dims=1, floating=False)
    check_int(n_clusters, "n_clusters")
    out = []
    for c in classes.tolist():
        f = features[labels == c]
        if f.shape[0] < n_clusters:
            raise ValueError(f"class {c} has {f.shape[0]} features, fewer than n_clusters")
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(f.double().numpy())
        out.append(torch.from_numpy(km.cluster_centers_).to(features.dtype))
    return torch.cat(out)


def _nearest_own(dist: Tensor, label_idx: Tensor, n_clusters: int) -> Tensor:
    """For rows with class index ``label_idx``, the smallest distance among that class's
    ``n_clusters`` columns of ``dist`` (class-major soul samples)."""
    cols = label_idx[:, None] * n_clusters + torch.arange(n_clusters, device=dist.device)
    return dist.gather(1, cols).min(1).values


def soul_sample_loss(fake: Tensor, label_idx: Tensor, souls: Tensor, n_clusters: int = 3) -> Tensor:
    """Mean over generated features of the squared distance to the nearest soul sample of their
    own class (``label_idx`` indexes the classes of ``souls``)."""
    check_tensor(fake, "fake", dims=2, expected="(B, D) generated features")
    check_tensor(label_idx, "label_idx", dims=1, floating=False)
    if label_idx.shape[0] != fake.shape[0]:
        raise ValueError("label_idx must have one entry per generated feature")
    _check_idx(label_idx, souls, n_clusters)
    return _nearest_own(pairwise_sq_distances(fake, souls), label_idx, n_clusters).mean()


def soul_class_loss(class_means: Tensor, souls: Tensor, n_clusters: int = 3) -> Tensor:
    """Mean over classes of the squared distance of the class's mean generated feature (row
    ``k`` of ``class_means`` for class ``k``) to the nearest soul sample of the class."""
    check_tensor(class_means, "class_means", dims=2)
    idx = torch.arange(class_means.shape[0], device=class_means.device)
    _check_idx(idx, souls, n_clusters)
    return _nearest_own(pairwise_sq_distances(class_means, souls), idx, n_clusters).mean()


def _check_idx(idx: Tensor, souls: Tensor, n_clusters: int) -> None:
    check_tensor(souls, "souls", dims=2)
    check_int(n_clusters, "n_clusters")
    if souls.shape[0] % n_clusters:
        raise ValueError(f"souls has {souls.shape[0]} rows, not a multiple of n_clusters")
    n_cls = souls.shape[0] // n_clusters
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_cls):
        raise ValueError(f"label_idx must be in [0, {n_cls})")


def select_confident(
    log_probs: Tensor, ratio: float, *, confidence: str = "entropy"
) -> tuple[Tensor, Tensor]:
    """Split test samples for the cascade: ``(easy, hard)`` index tensors, ``easy`` the
    ``int(ratio * N)`` most confident (``"entropy"``: lowest Shannon entropy of the softmax) or,
    with ``confidence="official"``, the official ranking (highest ``scipy.stats.entropy`` of the
    log-probabilities, which renormalises the negative log-probs)."""
    check_tensor(log_probs, "log_probs", dims=2, expected="(N, C) log-probabilities")
    check_number(ratio, "ratio", lo=0.0, hi=1.0)
    if confidence not in ("entropy", "official"):
        raise ValueError(f"confidence must be 'entropy' or 'official', got {confidence!r}")
    n = log_probs.shape[0]
    k = int(n * ratio)
    lp = log_probs.double()
    if confidence == "entropy":
        score = -torch.special.entr(lp.exp()).sum(1)  # -H: higher = more confident
    else:
        score = torch.special.entr(lp / lp.sum(1, keepdim=True)).sum(1)
    order = torch.sort(-score, stable=True).indices
    return order[:k], order[k:]


def per_class_accuracy(pred: Tensor, true: Tensor, classes: Tensor) -> float:
    """Mean over ``classes`` present in ``true`` of the per-class top-1 accuracy (T1)."""
    check_tensor(pred, "pred", dims=1, floating=False)
    check_tensor(true, "true", dims=1, floating=False)
    check_tensor(classes, "classes", dims=1, floating=False)
    if pred.shape != true.shape:
        raise ValueError("pred and true must have the same shape")
    accs = [
        (pred[true == c] == c).double().mean() for c in classes.tolist() if bool((true == c).any())
    ]
    if not accs:
        raise ValueError("true holds none of the classes")
    return float(torch.stack(accs).mean())


def harmonic_mean(seen: float, unseen: float) -> float:
    """GZSL's H = 2 s u / (s + u) (0 when both are 0)."""
    s = check_number(seen, "seen", lo=0.0, hi=1.0)
    u = check_number(unseen, "unseen", lo=0.0, hi=1.0)
    return 0.0 if s + u == 0 else 2 * s * u / (s + u)
