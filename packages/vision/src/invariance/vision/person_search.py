"""Self-similarity driven scale-invariant learning for weakly supervised person search (SSL-style).

Paper: Wang, Yang, Wu, Qi, Lei, *Self-similarity Driven Scale-invariant Learning for Weakly
Supervised Person Search*, ICCV 2023, arXiv:2302.12986. Official repository
``github.com/Wangbenzhi/SSL`` holds only a README ("code is coming soon"; read at commit
623c325): no code, no licence; nothing here is derived from code. The pieces below are a
**reconstruction** from the paper (marked choices are ours).

Setting: person search (detect the persons of gallery scenes, then match a query person) trained
with **boxes only** (no identity labels). Mechanism:

* one-step network (:class:`PersonSearchNet`): scene -> shared backbone (stride 4) ->
  (a) a detection head (person score + box sides per location, trained on the boxes:
  :mod:`invariance.vision.person_search_det`) and (b) RoIAlign on the boxes -> re-id head ->
  L2-normalised instance features ``f_i``. Training reads the re-id features on the annotated
  boxes; :meth:`PersonSearchNet.search` detects and embeds the detections of a scene;
* **multi-scale exemplar branch**: every person is cropped from the scene
  (:func:`crop_boxes`) and resampled at several scales (:func:`scale_pyramid`: down-sampled by
  1, 1/2, 1/4 and resized back, imitating far, small persons); the crops go through the *shared*
  backbone and head -> exemplar features ``e_i^s``. Cropping to the box keeps the foreground,
  the paper's self-similarity prior (the same person at different scales is the same person);
* **scale-invariant loss** with hard exemplar mining (:func:`scale_invariant_loss`): for instance
  ``i`` the hardest positive is its least similar exemplar, the hardest negative the most
  similar exemplar of another person; a triplet on cosine distance with margin 0.3 [our form];
  the crop pass normalises with its own batch statistics but leaves the backbone's BatchNorm
  running statistics (the detector's test-time statistics) to the scenes [our choice: blurred
  crops are not the scenes' image distribution]; the recipe can also keep the loss off the
  shared backbone for the first steps or ramp its weight up (options, off by default);
* **dynamic multi-label learning** (:func:`multilabel_targets`, :func:`multilabel_loss`): an
  instance memory (:class:`InstanceMemory`, momentum 0.2, unit rows) holds one slot per training
  box; instance ``i``'s pseudo-labels are the slots whose cosine to ``m_i`` reaches a threshold
  ``t`` that decreases during training (0.8 -> 0.6, "dynamic", our schedule) among its mutual
  ``k`` nearest neighbours, plus ``i`` itself; a binary cross-entropy over the memory
  similarities with hard-negative selection (MMCL-style) trains the features;
* **clustering stage** (the paper's "clustering algorithm", which the multi-label prediction
  compensates): every epoch the instance memory is clustered by DBSCAN (scikit-learn) on a
  rank-based k-reciprocal Jaccard distance (:func:`jaccard_distance`,
  :func:`cluster_pseudo_labels`), the cluster centroids form a cluster memory
  (:func:`cluster_centroids`, momentum-updated) and a cluster-contrast cross-entropy
  (:func:`cluster_contrast_loss`, temperature 0.05; outliers skipped) trains the features.

Evaluation: person search (:func:`~invariance.vision.person_search_det.search_map_topk`: the
CUHK-SYSU protocol over the detections of the gallery scenes, mAP x detection recall, top-k);
re-id on ground-truth boxes (:func:`reid_map_cmc`, the torchreid / Market-1501 protocol);
cross-scale self-retrieval (:func:`self_retrieval`).

Tested properties (``tests/test_person_search.py``): the scale pyramid returns equally shaped
tensors and is the identity at scale 1; hard mining picks the argmin / argmax on hand-built
similarities; multi-label targets have ``y_ii = 1``, are symmetric and monotone in ``t``; memory
rows stay unit-norm; DBSCAN recovers well-separated groups, marks a lone row as outlier and is
invariant to the order of the memory rows; the crop pass leaves the BatchNorm running statistics
unchanged (negative control: without the option it moves them) and, detached, sends no gradient into
the backbone; box embeddings are invariant to translating the scene and its boxes by multiples of
the backbone stride and the person score map is equivariant to them (circular padding), negative
controls: 2-pixel shifts; detection targets decode to their boxes; ``reid_map_cmc`` equals
torchreid's ``evaluate_rank`` (golden values) and the search AP equals scikit-learn's
``average_precision_score``; learning: the scale-invariant terms make a held-out person's scene
embedding find its own 1/4-scale exemplar more often than the same network trained without them.

Deviations: a single-level anchor-free detection head (FCOS-style) on a 3-stage CPU backbone
instead of the paper's two-stage detector on ResNet-50; the re-id features of training read the
annotated boxes (not proposals); the Jaccard distance omits the k-reciprocal query expansion
and Gaussian weighting of the usual re-ranking code; one DBSCAN setting (eps 0.5, k 4,
min_samples 2) sized for ~10 boxes per identity; procedural persons
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
    "jaccard_distance",
    "cluster_pseudo_labels",
    "cluster_centroids",
    "cluster_contrast_loss",
    "self_retrieval",
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
        # detection head on the shared stride-4 map: person score + 4 side distances (strides)
        self.det_tower = nn.Sequential(*block(4 * w, 4 * w, 1))
        self.det_cls = nn.Conv2d(4 * w, 1, 3, 1, 1, padding_mode=pm)
        self.det_reg = nn.Conv2d(4 * w, 4, 3, 1, 1, padding_mode=pm)
        nn.init.constant_(self.det_cls.bias, -4.6)  # prior 0.01 (focal-loss init)
        nn.init.constant_(self.det_reg.bias, 1.0)

    def _embed(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.proj(self.head(pooled).mean((2, 3))), dim=1)

    STRIDE = 4

    def detect_maps(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        """Person logits (N, 1, H/4, W/4) and non-negative side distances (N, 4, H/4, W/4) in
        strides, from the backbone map ``feat``."""
        t = self.det_tower(feat)
        return self.det_cls(t), F.softplus(self.det_reg(t))

    def embed_rois(self, feat: Tensor, boxes: list[Tensor]) -> Tensor:
        """Embeddings of ``boxes`` read from the backbone map ``feat`` (RoIAlign, stride 4)."""
        rois = roi_align(feat, [b.to(feat.dtype) for b in boxes], self.roi_size, 0.25, 2, True)
        return self._embed(rois)

    def embed_boxes(self, images: Tensor, boxes: list[Tensor]) -> Tensor:
        """Embeddings (N, d) of every box of every image (boxes in pixels, x1y1x2y2)."""
        check_tensor(images, "images", dims=4)
        boxes = _check_boxes(images, boxes)
        return self.embed_rois(self.backbone(images), boxes)

    def search(
        self, images: Tensor, *, score_thresh: float = 0.3, nms_iou: float = 0.4, max_det: int = 10
    ) -> list[dict[str, Tensor]]:
        """One-step person search on scenes: per image the detected ``boxes`` (k, 4), their
        ``scores`` (k,) and re-id embeddings ``emb`` (k, d) (RoIAlign on the same map)."""
        from invariance.vision.person_search_det import decode_detections

        check_tensor(images, "images", dims=4)
        feat = self.backbone(images)
        cls, reg = self.detect_maps(feat)
        dets = decode_detections(
            cls, reg, self.STRIDE, tuple(images.shape[-2:]),
            score_thresh=score_thresh, nms_iou=nms_iou, max_det=max_det,
        )  # fmt: skip
        boxes = [d["boxes"] for d in dets]
        if sum(len(b) for b in boxes):
            emb = self.embed_rois(feat, boxes).split([len(b) for b in boxes])
        else:
            emb = [feat.new_zeros(0, self.proj.out_features) for _ in boxes]
        for d, e in zip(dets, emb):
            d["emb"] = e
        return dets

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


def jaccard_distance(bank: Tensor, *, k: int = 6) -> Tensor:
    """Rank-based (k-reciprocal) Jaccard distance of the memory rows, the distance that
    cluster-contrast re-id code feeds to DBSCAN: ``R(i)`` is ``i`` plus its k-reciprocal
    neighbours (``j`` among ``i``'s ``k`` nearest by cosine and ``i`` among ``j``'s), and
    ``d_ij = 1 - |R(i) & R(j)| / |R(i) | R(j)|``. Unlike the cosine distance it does not depend
    on how concentrated the features are (only on neighbour ranks). [Simplified: no
    query-expansion of ``R`` and no Gaussian weighting of the neighbours.]"""
    check_tensor(bank, "bank", dims=2)
    check_int(k, "k")
    b = F.normalize(bank.detach().double(), dim=1)
    n = b.shape[0]
    sim = b @ b.T
    sim.fill_diagonal_(-3.0)
    kk = min(k, n - 1)
    knn = torch.zeros(n, n, dtype=torch.bool)
    if kk > 0:
        knn.scatter_(1, sim.topk(kk, dim=1).indices, True)
    rec = (knn & knn.T) | torch.eye(n, dtype=torch.bool)
    r = rec.double()
    inter = r @ r.T
    union = r.sum(1)[:, None] + r.sum(1)[None, :] - inter
    return 1 - inter / union


def cluster_pseudo_labels(
    bank: Tensor, *, eps: float = 0.6, min_samples: int = 2, k: int = 6
) -> Tensor:
    """DBSCAN (scikit-learn, ``metric="precomputed"``) on the :func:`jaccard_distance` of the
    memory rows: (n,) int64 cluster labels, ``-1`` for outliers (un-clustered)."""
    check_tensor(bank, "bank", dims=2)
    check_number(eps, "eps", lo=0.0, lo_open=True)
    check_int(min_samples, "min_samples")
    from sklearn.cluster import DBSCAN

    dist = jaccard_distance(bank, k=k).clamp(min=0).numpy()
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
    return torch.as_tensor(labels, dtype=torch.int64)


def cluster_centroids(bank: Tensor, labels: Tensor) -> Tensor:
    """Unit mean memory row of every cluster (n_clusters, d); outliers (``-1``) are left out."""
    check_tensor(bank, "bank", dims=2)
    if not isinstance(labels, Tensor) or labels.shape != (bank.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({bank.shape[0]},)")
    k = int(labels.max()) + 1 if labels.numel() else 0
    if k <= 0:
        return bank.new_zeros(0, bank.shape[1])
    keep = labels >= 0
    c = bank.new_zeros(k, bank.shape[1]).index_add_(0, labels[keep], bank[keep])
    return F.normalize(c, dim=1)


def cluster_contrast_loss(
    f: Tensor, centroids: Tensor, labels: Tensor, *, temperature: float = 0.05
) -> Tensor:
    """Cross-entropy of ``cos(f_i, c_k) / temperature`` over the cluster memory with the
    DBSCAN label as target; instances labelled ``-1`` (outliers) are skipped (0 if all are)."""
    check_tensor(f, "f", dims=2)
    check_tensor(centroids, "centroids", dims=2)
    if not isinstance(labels, Tensor) or labels.shape != (f.shape[0],):
        raise ValueError(f"labels must be a tensor of shape ({f.shape[0]},)")
    check_number(temperature, "temperature", lo=0.0, lo_open=True)
    keep = labels >= 0
    if not bool(keep.any()) or centroids.shape[0] == 0:
        return f.sum() * 0.0
    logits = F.normalize(f[keep], dim=1) @ centroids.T / temperature
    return F.cross_entropy(logits, labels[keep])


def self_retrieval(
    net: PersonSearchNet, images: Tensor, boxes: list[Tensor], scale: float
) -> float:
    """Cross-scale self-retrieval: the share of boxes whose scene embedding is closer to the
    exemplar of the *same* person down-sampled by ``scale`` (:func:`scale_pyramid`) than to
    the down-sampled exemplar of every other person of the set (top-1 accuracy)."""
    check_tensor(images, "images", dims=4)
    boxes = _check_boxes(images, boxes)
    check_number(scale, "scale", lo=0.0, hi=1.0, lo_open=True)
    with torch.no_grad():
        f = net.embed_boxes(images, boxes)
        e = net.embed_crops(scale_pyramid(crop_boxes(images, boxes), (scale,))[0])
    hit = (f @ e.T).argmax(1) == torch.arange(f.shape[0])
    return float(hit.double().mean())


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
    d = distmat.double()
    match = g_pids[None, :] == q_pids[:, None]
    keep = ~(match & (g_camids[None, :] == q_camids[:, None]))
    hit = match & keep
    npos = hit.sum(1)
    valid = npos > 0
    if not bool(valid.any()):
        raise ValueError("no query has a valid gallery match (q_pids / g_pids)")
    # Only the ranks of the true matches enter AP and CMC, so instead of sorting every gallery row
    # the matches' distances are sorted (top-k, k = most matches of a query) and every other kept
    # entry is bucketed among them: about 2x faster than a full row sort on the CPU.
    k = int(npos.max())
    dp = torch.where(hit, d, torch.full_like(d, float("inf"))).topk(k, 1, largest=False).values
    other = keep & ~hit
    bucket = torch.searchsorted(dp, d.contiguous())  # matches strictly closer than the entry
    tie = other & (dp.gather(1, bucket.clamp(max=k - 1)) == d)
    if bool(tie.any()):  # a distractor ties a match: the stable sort decides (gallery order)
        return _reid_sorted(d, g_pids, g_camids, q_pids, q_camids, valid, max_rank)
    cnt = torch.zeros(d.shape[0], k + 1, dtype=torch.float64, device=d.device)
    cnt.scatter_add_(1, bucket, other.double())
    i = torch.arange(1, k + 1, dtype=torch.float64, device=d.device)
    rank = i + cnt.cumsum(1)[:, :k]  # 1-based rank of the i-th match among the kept entries
    ap = ((i / rank) * (i <= npos[:, None])).sum(1)[valid] / npos[valid]
    return float(ap.mean()), _cmc(rank[:, 0][valid], max_rank)


def _cmc(first: Tensor, max_rank: int) -> list[float]:
    ranks = torch.arange(1, max_rank + 1, dtype=torch.float64, device=first.device)
    return (first[:, None] <= ranks[None, :]).double().mean(0).tolist()


def _reid_sorted(d, g_pids, g_camids, q_pids, q_camids, valid, max_rank):
    """:func:`reid_map_cmc` by a stable full sort of every gallery row (used on ties)."""
    order = d.argsort(dim=1, stable=True)
    gp, gc = g_pids[order], g_camids[order]  # (n_q, n_g), gallery sorted per query
    match = gp == q_pids[:, None]
    keep = ~(match & (gc == q_camids[:, None]))
    hit = (match & keep).double()
    pos = keep.double().cumsum(1)  # 1-based rank among the kept entries
    prec = hit.cumsum(1) / pos.clamp(min=1)
    ap = (prec * hit).sum(1)[valid] / hit.sum(1)[valid]
    first = torch.where(hit.bool(), pos, torch.full_like(pos, float("inf"))).min(1).values[valid]
    return float(ap.mean()), _cmc(first, max_rank)
