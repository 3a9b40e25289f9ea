"""Self-similarity driven scale-invariant learning for weakly supervised person search (SSL-style).

Paper: Wang, Yang, Wu, Qi, Lei, *Self-similarity Driven Scale-invariant Learning for Weakly
Supervised Person Search*, ICCV 2023, arXiv:2302.12986. Official repository
``github.com/Wangbenzhi/SSL`` holds only a README ("code is coming soon"): no code, no licence;
nothing here is derived from code. The pieces below are a **reconstruction** from the paper's
abstract and figure (marked choices are ours).

Setting: person search trained with **boxes only** (no identity labels). Mechanism:

* main branch: scene -> backbone (stride 4) -> RoIAlign on the person boxes -> re-id head ->
  L2-normalised instance features ``f_i`` (:class:`PersonSearchNet`);
* **multi-scale exemplar branch**: every person is cropped from the scene
  (:func:`crop_boxes`) and resampled at several scales (:func:`scale_pyramid`: down-sampled by
  1, 1/2, 1/4 and resized back, imitating far, small persons); the crops go through the *shared*
  backbone and head -> exemplar features ``e_i^s``. Cropping to the box keeps the foreground,
  the paper's self-similarity prior (the same person at different scales is the same person);
* **scale-invariant loss** with hard exemplar mining (:func:`scale_invariant_loss`): for instance
  ``i`` the hardest positive is its least similar exemplar, the hardest negative the most
  similar exemplar of another person; a triplet on cosine distance with margin 0.3 [our form];
* **dynamic multi-label learning** (:func:`multilabel_targets`, :func:`multilabel_loss`): an
  instance memory (:class:`InstanceMemory`, momentum 0.2, unit rows) holds one slot per training
  box; instance ``i``'s pseudo-labels are the slots whose cosine to ``m_i`` reaches a threshold
  ``t`` that decreases during training (0.8 -> 0.6, "dynamic", our schedule) among its mutual
  ``k`` nearest neighbours, plus ``i`` itself; a binary cross-entropy over the memory
  similarities with hard-negative selection (MMCL-style) trains the features.

Evaluation: :func:`reid_map_cmc` (mAP and CMC, the torchreid / Market-1501 protocol: gallery
entries with the query's identity *and* camera are dropped).

Tested properties (``tests/test_person_search.py``): the scale pyramid returns equally shaped
tensors and is the identity at scale 1; hard mining picks the argmin / argmax on hand-built
similarities; multi-label targets have ``y_ii = 1``, are symmetric and monotone in ``t``; memory
rows stay unit-norm; box embeddings are invariant to translating the scene and its boxes by
multiples of the backbone stride (circular padding), negative control: 2-pixel shifts;
``reid_map_cmc`` equals torchreid's ``evaluate_rank`` (golden values recorded by running it);
a few SSL steps lower the multi-label loss. Not established at CPU sizes: that SSL beats the
baseline without the scale-invariant terms on mAP or on the cross-scale gap.

Deviations: ground-truth boxes replace the detector (the re-id part of person search; the
one-step detector is not implemented); no DBSCAN / cluster-contrast stage (the dynamic
multi-label loss is the only pseudo-label); small CPU backbone; procedural persons
(:mod:`invariance.vision.data.synth_persons`), not PRW / CUHK-SYSU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "PersonSearchNet",
    "crop_boxes",
    "scale_pyramid",
    "hard_mining",
    "scale_invariant_loss",
    "InstanceMemory",
    "multilabel_targets",
    "multilabel_loss",
    "reid_map_cmc",
]

CROP = (48, 24)


def _check_boxes(images: Tensor, boxes: object) -> list[Tensor]:
    if not isinstance(boxes, (list, tuple)) or len(boxes) != images.shape[0]:
        raise TypeError("boxes must be a list with one (k, 4) tensor per image")
    for i, b in enumerate(boxes):
        check_tensor(b, f"boxes[{i}]", dims=2, nonempty=False)
        if b.shape[-1] != 4:
            raise ValueError(f"boxes[{i}] must have shape (k, 4), got {tuple(b.shape)}")
        if b.numel() and bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
            raise ValueError(f"boxes[{i}] must have x2 > x1 and y2 > y1")
    if sum(b.shape[0] for b in boxes) == 0:
        raise ValueError("boxes must hold at least one box")
    return list(boxes)


def crop_boxes(images: Tensor, boxes: list[Tensor], out_size: tuple[int, int] = CROP) -> Tensor:
    """Crops (N, 3, H, W) of every box, resampled to ``out_size`` (RoIAlign, aligned)."""
    check_tensor(images, "images", dims=4)
    boxes = _check_boxes(images, boxes)
    return roi_align(images, [b.to(images.dtype) for b in boxes], out_size, 1.0, 2, True)


def scale_pyramid(crops: Tensor, scales: tuple[float, ...] = (1.0, 0.5, 0.25)) -> list[Tensor]:
    """The crops down-sampled by each scale (area) and resized back (bilinear): S tensors of the
    input's shape; scale 1 returns the crops unchanged."""
    check_tensor(crops, "crops", dims=4)
    if not isinstance(scales, (tuple, list)) or not scales:
        raise ValueError("scales must be a non-empty tuple of numbers in (0, 1]")
    out = []
    h, w = crops.shape[-2:]
    for s in scales:
        check_number(s, "scales", lo=0.0, hi=1.0, lo_open=True)
        if s == 1.0:
            out.append(crops)
            continue
        small = F.interpolate(crops, size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")
        out.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
    return out


class PersonSearchNet(nn.Module):
    """Backbone (3 conv stages, stride 4) + RoIAlign + re-id head, L2-normalised embeddings.

    Args:
        width: channels of the first stage (default: 16; then 2x, 4x).
        emb_dim: embedding size (default: 64).
        roi_size: RoIAlign output (h, w) on the stride-4 map (default: (12, 6)).
        padding_mode: ``"zeros"`` or ``"circular"``.
    """

    def __init__(
        self,
        width: int = 16,
        emb_dim: int = 64,
        roi_size: tuple[int, int] = (12, 6),
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        check_int(width, "width")
        check_int(emb_dim, "emb_dim")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        w, pm = width, padding_mode

        def block(i, o, s):
            return [nn.Conv2d(i, o, 3, s, 1, padding_mode=pm), nn.BatchNorm2d(o), nn.ReLU()]

        self.backbone = nn.Sequential(*block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2))
        self.head = nn.Sequential(*block(4 * w, 4 * w, 1))
        self.proj = nn.Linear(4 * w, emb_dim)
        self.roi_size = tuple(roi_size)

    def _embed(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.proj(self.head(pooled).mean((2, 3))), dim=1)

    def embed_boxes(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        """Embeddings (N, d) of every box of every image (boxes in pixels, x1y1x2y2)."""
        check_tensor(images, "images", dims=4)
        boxes = _check_boxes(images, boxes)
        feat = self.backbone(images)
        rois = roi_align(feat, [b.to(feat.dtype) for b in boxes], self.roi_size, 0.25, 2, True)
        return self._embed(rois)

    def embed_crops(self, crops: Tensor) -> Tensor:
        """Embeddings (N, d) of person crops (the whole crop is the box)."""
        check_tensor(crops, "crops", dims=4)
        feat = self.backbone(crops)
        return self._embed(F.adaptive_avg_pool2d(feat, self.roi_size))

    def forward(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        return self.embed_boxes(images, boxes)


def hard_mining(sim: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: index of the hardest positive (lowest similarity among ``pos``) and of the hardest
    negative (highest similarity outside ``pos``); -1 where a row has none."""
    check_tensor(sim, "sim", dims=2)
    if not isinstance(pos, Tensor) or pos.dtype != torch.bool or pos.shape != sim.shape:
        raise TypeError("pos must be a bool tensor with the shape of sim")
    big = torch.finfo(sim.dtype).max
    hp = sim.masked_fill(~pos, big).argmin(1)
    hn = sim.masked_fill(pos, -big).argmax(1)
    hp = torch.where(pos.any(1), hp, torch.full_like(hp, -1))
    hn = torch.where((~pos).any(1), hn, torch.full_like(hn, -1))
    return hp, hn


def scale_invariant_loss(f: Tensor, e: Tensor, owner: Tensor, *, margin: float = 0.3) -> Tensor:
    """Triplet loss with hard exemplar mining on cosine distance.

    Args:
        f: (N, d) instance features (normalised here).
        e: (M, d) exemplar features.
        owner: (M,) index in ``0..N-1`` of the instance each exemplar was cropped from.
        margin: triplet margin on ``1 - cos`` (default: 0.3).
    """
    check_tensor(f, "f", dims=2)
    check_tensor(e, "e", dims=2)
    if not isinstance(owner, Tensor) or owner.dtype != torch.int64 or owner.shape != (e.shape[0],):
        raise TypeError(f"owner must be an int64 tensor of shape ({e.shape[0]},)")
    if int(owner.min()) < 0 or int(owner.max()) >= f.shape[0]:
        raise ValueError(f"owner must index the {f.shape[0]} instances")
    check_number(margin, "margin", lo=0.0)
    sim = F.normalize(f, dim=1) @ F.normalize(e, dim=1).T
    pos = owner[None, :] == torch.arange(f.shape[0], device=f.device)[:, None]
    hp, hn = hard_mining(sim, pos)
    ok = (hp >= 0) & (hn >= 0)
    if not bool(ok.any()):
        return f.sum() * 0.0
    r = torch.arange(f.shape[0], device=f.device)[ok]
    d_pos = 1 - sim[r, hp[ok]]
    d_neg = 1 - sim[r, hn[ok]]
    return F.relu(margin + d_pos - d_neg).mean()


class InstanceMemory(nn.Module):
    """One unit-norm slot per training box; ``update(idx, f)`` sets
    ``m_i <- normalise(mu * m_i + (1 - mu) * f_i)`` (the first write copies ``f_i``)."""

    def __init__(self, n: int, dim: int, momentum: float = 0.2) -> None:
        super().__init__()
        check_int(n, "n")
        check_int(dim, "dim")
        self.momentum = check_number(momentum, "momentum", lo=0.0, hi=1.0)
        self.register_buffer("bank", torch.zeros(n, dim))
        self.register_buffer("seen", torch.zeros(n, dtype=torch.bool))

    @torch.no_grad()
    def update(self, idx: Tensor, f: Tensor) -> None:
        if not isinstance(idx, Tensor) or idx.dtype != torch.int64 or idx.dim() != 1:
            raise TypeError("idx must be a 1-D int64 tensor")
        check_tensor(f, "f", dims=2)
        if f.shape != (idx.shape[0], self.bank.shape[1]):
            raise ValueError(f"f must have shape ({idx.shape[0]}, {self.bank.shape[1]})")
        f = F.normalize(f.detach().to(self.bank.dtype), dim=1)
        old = self.bank[idx]
        new = torch.where(self.seen[idx, None], self.momentum * old + (1 - self.momentum) * f, f)
        self.bank[idx] = F.normalize(new, dim=1)
        self.seen[idx] = True


def multilabel_targets(
    bank: Tensor, idx: Tensor, threshold: float, *, k: int = 5, seen: Tensor | None = None
) -> Tensor:
    """Multi-label pseudo-labels (len(idx), n): ``y_ij = 1`` if ``cos(m_i, m_j) >= threshold``
    and ``i`` and ``j`` are among each other's ``k`` nearest slots; ``y_ii = 1``. Symmetric,
    and the label sets grow as ``threshold`` decreases."""
    check_tensor(bank, "bank", dims=2)
    if not isinstance(idx, Tensor) or idx.dtype != torch.int64 or idx.dim() != 1:
        raise TypeError("idx must be a 1-D int64 tensor")
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= bank.shape[0]:
        raise ValueError(f"idx must be non-empty indices into the {bank.shape[0]} memory slots")
    check_number(threshold, "threshold", lo=-1.0, hi=1.0)
    check_int(k, "k")
    n = bank.shape[0]
    sim = bank @ bank.T
    valid = torch.ones(n, dtype=torch.bool, device=bank.device) if seen is None else seen
    sim = sim.masked_fill(~(valid[:, None] & valid[None, :]), -2.0)
    sim.fill_diagonal_(-2.0)
    kk = min(k, n - 1) if n > 1 else 0
    knn = torch.zeros(n, n, dtype=torch.bool, device=bank.device)
    if kk > 0:
        knn.scatter_(1, sim.topk(kk, dim=1).indices, True)
    mutual = knn & knn.T & (sim >= threshold)
    mutual[torch.arange(n), torch.arange(n)] = True
    return mutual[idx].float()


def multilabel_loss(
    f: Tensor,
    bank: Tensor,
    targets: Tensor,
    *,
    temperature: float = 0.1,
    neg_ratio: float = 0.1,
) -> Tensor:
    """Binary cross-entropy of ``sigmoid(cos(f_i, m_j) / temperature)`` against the multi-label
    targets, over all positives and the hardest ``neg_ratio`` of the negatives (MMCL-style)."""
    check_tensor(f, "f", dims=2)
    check_tensor(bank, "bank", dims=2)
    check_tensor(targets, "targets", dims=2)
    if targets.shape != (f.shape[0], bank.shape[0]):
        raise ValueError(f"targets must have shape ({f.shape[0]}, {bank.shape[0]})")
    check_number(temperature, "temperature", lo=0.0, lo_open=True)
    check_number(neg_ratio, "neg_ratio", lo=0.0, hi=1.0, lo_open=True)
    logits = F.normalize(f, dim=1) @ bank.T / temperature
    pos = targets > 0.5
    n_neg = max(1, int(neg_ratio * bank.shape[0]))
    neg_logits = logits.masked_fill(pos, float("-inf")).topk(n_neg, dim=1).values
    lp = F.binary_cross_entropy_with_logits(logits[pos], torch.ones_like(logits[pos]))
    fin = torch.isfinite(neg_logits)
    ln = F.binary_cross_entropy_with_logits(neg_logits[fin], torch.zeros_like(neg_logits[fin]))
    return lp + ln


def reid_map_cmc(
    distmat: Tensor,
    q_pids: Tensor,
    g_pids: Tensor,
    q_camids: Tensor,
    g_camids: Tensor,
    max_rank: int = 10,
) -> tuple[float, list[float]]:
    """mAP and CMC (ranks 1..max_rank) of a (n_q, n_g) distance matrix; gallery entries with the
    query's identity and camera are removed; queries without a remaining match are skipped (the
    torchreid ``evaluate_rank`` / Market-1501 protocol)."""
    check_tensor(distmat, "distmat", dims=2)
    nq, ng = distmat.shape
    for v, nm, n in ((q_pids, "q_pids", nq), (q_camids, "q_camids", nq)):
        if not isinstance(v, Tensor) or v.shape != (n,):
            raise ValueError(f"{nm} must be a tensor of shape ({n},)")
    for v, nm in ((g_pids, "g_pids"), (g_camids, "g_camids")):
        if not isinstance(v, Tensor) or v.shape != (ng,):
            raise ValueError(f"{nm} must be a tensor of shape ({ng},)")
    check_int(max_rank, "max_rank")
    order = distmat.double().argsort(dim=1, stable=True)
    gp, gc = g_pids[order], g_camids[order]  # (n_q, n_g), gallery sorted per query
    match = gp == q_pids[:, None]
    keep = ~(match & (gc == q_camids[:, None]))
    hit = (match & keep).double()
    valid = hit.sum(1) > 0
    if not bool(valid.any()):
        raise ValueError("no query has a valid gallery match (q_pids / g_pids)")
    pos = keep.double().cumsum(1)  # 1-based rank among the kept entries
    prec = hit.cumsum(1) / pos.clamp(min=1)
    ap = (prec * hit).sum(1)[valid] / hit.sum(1)[valid]
    first = torch.where(hit.bool(), pos, torch.full_like(pos, float("inf"))).min(1).values[valid]
    ranks = torch.arange(1, max_rank + 1, dtype=torch.float64)
    cmc = (first[:, None] <= ranks[None, :]).double().mean(0)
    return float(ap.mean()), cmc.tolist()
