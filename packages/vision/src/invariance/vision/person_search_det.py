"""Detection and search evaluation for SSL-style person search (Wang et al., arXiv:2302.12986).

The paper's main branch detects the persons of a scene and extracts their re-id features in one
network (one-step person search), trained with **box annotations only**. Here the detector is a
single-level, anchor-free head (FCOS-style: a per-location person score and the distances to the
box's four sides, in units of the stride) on the same stride-4 backbone as the re-id head of
:class:`~invariance.vision.person_search.PersonSearchNet`; its losses are torchvision's
``sigmoid_focal_loss`` and ``generalized_box_iou_loss``, decoding uses torchvision's
``batched_nms``. The paper uses a two-stage (Faster R-CNN-style) detector on a ResNet-50;
ours is the CPU-sized deviation.

* :func:`detection_targets`: location ``(i, j)`` (centre ``((j + .5) s, (i + .5) s)``) is
  positive for a box when it lies in the box's central region (half its width and height, at
  least the cell holding the box centre); overlaps go to the smaller box. Targets are the
  distances to the four sides divided by the stride.
* :func:`detection_loss`: focal loss (alpha 0.25, gamma 2) summed over locations / number of
  positives + GIoU loss averaged over positives.
* :func:`decode_detections`: scores >= threshold, boxes clipped to the image, NMS, top ``k``.
* :func:`search_map_topk`: the person-search protocol of the PRW / CUHK-SYSU code bases
  (SeqNet's ``eval_search_prw`` with every other scene as gallery; equal to it to 1e-12 on the
  golden cases of the tests): for every query box, all gallery scenes' detections are
  ranked by cosine similarity; in a scene holding the query's identity, the most similar
  detection with IoU >= ``min(0.5, wh / ((w + 10)(h + 10)))`` to that person's ground-truth
  box is the one true positive. AP is scikit-learn's ``average_precision_score`` of the ranked
  list times the recall of the detector (found / present ground truths); top-k is whether a
  true positive is among the ``k`` most similar detections.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "detection_targets",
    "detection_loss",
    "decode_boxes",
    "decode_detections",
    "search_map_topk",
    "average_precision",
]


def _locations(h: int, w: int, stride: int, device=None) -> tuple[Tensor, Tensor]:
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx, yy


def detection_targets(
    boxes: list[Tensor], feat_hw: tuple[int, int], stride: int
) -> tuple[Tensor, Tensor]:
    """Per image: positive mask (N, H, W) and side distances (N, 4, H, W) in strides (l, t, r, b).

    A location is positive for a box if its centre lies within the central half of the box
    (``|x - cx| <= w / 4`` and ``|y - cy| <= h / 4``) or it is the cell holding the box centre;
    locations claimed by several boxes take the smallest box."""
    if not isinstance(boxes, (list, tuple)):
        raise TypeError("boxes must be a list with one (k, 4) tensor per image")
    h, w = feat_hw
    check_int(stride, "stride")
    xx, yy = _locations(h, w, stride)
    pos = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    reg = torch.zeros(len(boxes), 4, h, w)
    for n, b in enumerate(boxes):
        check_tensor(b, f"boxes[{n}]", dims=2, nonempty=False)
        best = torch.full((h, w), float("inf"))
        for x1, y1, x2, y2 in b.tolist():
            cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            m = ((xx - cx).abs() <= bw / 4) & ((yy - cy).abs() <= bh / 4)
            ci = min(h - 1, max(0, int(cy // stride)))
            cj = min(w - 1, max(0, int(cx // stride)))
            m[ci, cj] = True
            area = bw * bh
            m = m & (area < best)
            best = torch.where(m, torch.full_like(best, area), best)
            pos[n] |= m
            side = torch.stack([xx - x1, yy - y1, x2 - xx, y2 - yy]) / stride
            reg[n] = torch.where(m[None], side, reg[n])
    return pos, reg


def decode_boxes(reg: Tensor, stride: int) -> Tensor:
    """(N, 4, H, W) predicted side distances (in strides, >= 0) -> (N, H, W, 4) xyxy boxes."""
    _, _, h, w = reg.shape
    xx, yy = _locations(h, w, stride, reg.device)
    l, t, r, b = (reg[:, i] * stride for i in range(4))
    return torch.stack([xx - l, yy - t, xx + r, yy + b], dim=-1)


def detection_loss(
    cls_logits: Tensor, reg: Tensor, boxes: list[Tensor], stride: int
) -> dict[str, Tensor]:
    """Focal loss on the person score map (N, 1, H, W) and GIoU loss of the decoded boxes of
    the positive locations (``reg``: (N, 4, H, W) non-negative side distances in strides)."""
    check_tensor(cls_logits, "cls_logits", dims=4)
    check_tensor(reg, "reg", dims=4)
    check_int(stride, "stride")
    pos, tgt = detection_targets(boxes, tuple(cls_logits.shape[-2:]), stride)
    pos, tgt = pos.to(cls_logits.device), tgt.to(cls_logits.device)
    n_pos = max(1, int(pos.sum()))
    l_cls = sigmoid_focal_loss(cls_logits[:, 0], pos.float(), reduction="sum") / n_pos
    if not bool(pos.any()):
        return {"cls": l_cls, "box": reg.sum() * 0.0}
    pred = decode_boxes(reg, stride)[pos]
    true = decode_boxes(tgt, stride)[pos]
    l_box = generalized_box_iou_loss(pred, true, reduction="mean")
    return {"cls": l_cls, "box": l_box}


def decode_detections(
    cls_logits: Tensor,
    reg: Tensor,
    stride: int,
    image_size: tuple[int, int],
    *,
    score_thresh: float = 0.3,
    nms_iou: float = 0.4,
    max_det: int = 10,
) -> list[dict[str, Tensor]]:
    """Per image ``{"boxes": (k, 4), "scores": (k,)}`` after thresholding, clipping and NMS."""
    check_tensor(cls_logits, "cls_logits", dims=4)
    check_tensor(reg, "reg", dims=4)
    check_int(stride, "stride")
    check_number(score_thresh, "score_thresh", lo=0.0, hi=1.0)
    check_number(nms_iou, "nms_iou", lo=0.0, hi=1.0)
    check_int(max_det, "max_det")
    scores = cls_logits[:, 0].sigmoid().flatten(1)
    boxes = decode_boxes(reg, stride).flatten(1, 2)
    hh, ww = image_size
    out = []
    for s, b in zip(scores, boxes):
        keep = s >= score_thresh
        s, b = s[keep], b[keep]
        lim = b.new_tensor([ww, hh, ww, hh])
        b = torch.minimum(b.clamp(min=0), lim)
        ok = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
        s, b = s[ok], b[ok]
        keep = batched_nms(b, s, torch.zeros_like(s, dtype=torch.long), nms_iou)[:max_det]
        out.append({"boxes": b[keep].detach(), "scores": s[keep].detach()})
    return out


def average_precision(y_true: Tensor, y_score: Tensor) -> float:
    """Non-interpolated AP of a ranked list (scikit-learn's ``average_precision_score``: ties
    in ``y_score`` are one threshold); 0 when there is no positive."""
    y_true, y_score = y_true.double().flatten(), y_score.double().flatten()
    if y_true.numel() == 0 or float(y_true.sum()) == 0:
        return 0.0
    order = torch.argsort(y_score, descending=True, stable=True)
    y, s = y_true[order], y_score[order]
    tp = y.cumsum(0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last index of every run of equal scores
    tp, rank = tp[last], torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    prec, rec = tp / rank, tp / tp[-1]
    drec = torch.diff(rec, prepend=torch.zeros(1, dtype=torch.float64))
    return float((drec * prec).sum())


def search_map_topk(
    query_emb: Tensor,
    query_pid: Tensor,
    query_scene: Tensor,
    gallery: list[dict[str, Tensor]],
    gt_boxes: list[Tensor],
    gt_pids: list[Tensor],
    *,
    topk: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """Person-search mAP and top-k (CUHK-SYSU protocol; module docstring).

    Args:
        query_emb: (Q, d) unit query embeddings; query_pid / query_scene: (Q,) identity and the
            scene the query comes from (excluded from its gallery).
        gallery: per scene ``{"boxes": (k, 4), "emb": (k, d)}`` (detections and embeddings).
        gt_boxes / gt_pids: per scene ground-truth boxes (m, 4) and identities (m,).
    Returns ``map``, ``top{k}`` for each ``k`` and ``det_recall`` (queries' matches found).
    """
    check_tensor(query_emb, "query_emb", dims=2)
    nq = query_emb.shape[0]
    for v, nm in ((query_pid, "query_pid"), (query_scene, "query_scene")):
        if not isinstance(v, Tensor) or v.shape != (nq,):
            raise ValueError(f"{nm} must be a tensor of shape ({nq},)")
    if not isinstance(gallery, (list, tuple)) or not gallery:
        raise TypeError("gallery must be a non-empty list of dicts (one per scene)")
    if not (len(gt_boxes) == len(gt_pids) == len(gallery)):
        raise ValueError("gallery, gt_boxes and gt_pids must have one entry per scene")
    aps, hits, found, total = [], {k: [] for k in topk}, 0, 0
    for q in range(nq):
        ys, ss = [], []
        n_gt = n_found = 0
        for g, (det, gb, gp) in enumerate(zip(gallery, gt_boxes, gt_pids)):
            if g == int(query_scene[q]):
                continue
            sim = det["emb"] @ query_emb[q] if det["boxes"].numel() else torch.zeros(0)
            y = torch.zeros_like(sim)
            where = (gp == query_pid[q]).nonzero().flatten()
            if where.numel():
                n_gt += 1
                tb = gb[where[0]]
                bw, bh = float(tb[2] - tb[0]), float(tb[3] - tb[1])
                thr = min(0.5, bw * bh / ((bw + 10) * (bh + 10)))
                if sim.numel():
                    iou = box_iou(det["boxes"].double(), tb[None].double())[:, 0]
                    for i in torch.argsort(sim, descending=True, stable=True).tolist():
                        if float(iou[i]) >= thr:
                            y[i] = 1
                            n_found += 1
                            break
            ys.append(y)
            ss.append(sim)
        if n_gt == 0:
            continue
        y, s = torch.cat(ys), torch.cat(ss)
        aps.append(average_precision(y, s) * n_found / n_gt)
        order = torch.argsort(s, descending=True, stable=True)
        for k in topk:
            hits[k].append(float(y[order[:k]].sum() > 0))
        found, total = found + n_found, total + n_gt
    if not aps:
        raise ValueError("no query has its identity in another gallery scene")
    out = {"map": sum(aps) / len(aps)}
    out.update({f"top{k}": sum(v) / len(v) for k, v in hits.items()})
    out["det_recall"] = found / max(1, total)
    return out
