"""SEPC: Scale-Equalizing Pyramid Convolution for object detection, plugged into torchvision's
RetinaNet.

Paper: X. Wang, S. Zhang, Z. Yu, L. Feng, W. Zhang, "Scale-Equalizing Pyramid Convolution for
Object Detection", CVPR 2020, arXiv:2005.03101. Official code: https://github.com/jshilong/SEPC
(Apache-2.0, mmdetection 1.x + CUDA DCN); re-implemented on torchvision, nothing copied.

Mechanism. A pyramid convolution (:class:`~invariance.vision.nn.sepc.PyramidConv`) is a 3-D
convolution over (scale, space): three 3x3 kernels shared by all FPN levels combine level l with
the stride-2 convolution of level l-1 and the bilinearly upsampled convolution of level l+1.
Integrated BN normalises with statistics of the whole pyramid. Because a feature pyramid is not a
Gaussian pyramid, SEPC equalises scales by turning the shared kernels into deformable
convolutions (zero-initialised offsets) on the high levels only (P4-P7), while P3 keeps plain
convolutions. Four stacked PConvs plus two level-shared head convs (class / box branch) replace
RetinaNet's 4-conv towers; only the final classifier and regressor convs remain.

Tested properties (packages/vision/tests/test_sepc.py):
    * ``test_sepc_level_shift_equivariance``: PConv(x_1..x_L)_l == PConv(x_0..x_{L-1})_{l+1}
      for interior levels (core ``assert_equivariant`` with a level-shift action), with and
      without deformable kernels and with iBN in eval mode; negative controls: the boundary
      level and iBN in train mode.
    * ``test_sepc_zero_offset_equals_plain``: zero offsets give the iBN variant's output exactly.
    * ``test_sepc_ibn_pooled_statistics``: iBN equals BN with statistics pooled over all levels.
    * ``test_sepc_golden``: outputs of the four variants against ``golden_sepc.json``
      (regression values of this implementation; the official mmdet/CUDA code cannot run here).
    * ``test_sepc_retinanet_trains``: torchvision RetinaNet with the SEPC head trains on
      DigitScenes.
    * ``test_sepc_pyramid_conv_learns_cross_scale_target``: the SEPC neck learns a target that
      needs the finer pyramid level far better than per-level convs.
    * ``test_sepc_ap_matches_pycocotools``: ``detection_ap`` equals pycocotools' COCOeval to
      1e-9, including recall values that hit k/100 exactly.
    * ``test_sepc_nan_raises_not_segfaults``: NaN in the pyramid raises (subprocess: the exit is
      not a signal).
    * ``test_sepc_box_loss_is_smooth_l1``: the regression loss is smooth-L1 with beta 0.11.

Deviations. Procedural DigitScenes instead of COCO; a tiny 5-stage CNN backbone, 32 channels,
64 px images, anchors 8-128 px (octave base scale 1 instead of 4, because objects are 6-40 px),
Adam-type optimiser (the config's ``optimizer``) instead of SGD with warm-up, far fewer iterations.
Box loss: smooth-L1 with beta = 0.11 on the box deltas, as the official config
(``sepc/exp/retina/sepc_retinanet.py``: ``SmoothL1Loss(beta=0.11)``), for both heads
(:class:`SmoothL1RegressionHead`; torchvision's RetinaNet default is plain L1); it is normalised
per image by that image's positive anchors and averaged over images (torchvision's convention),
where mmdetection divides the batch sum by the batch's positive anchors.
AP is our own COCO-style implementation (:func:`detection_ap`: 101 recall points, IoU
0.50:0.95, at most 100 detections per image and class, computed in float64 with COCOeval's
thresholds, matching and tie rules); it equals pycocotools' ``COCOeval`` to 1e-9
(``test_sepc_ap_matches_pycocotools``: golden values, and live when pycocotools is installed).
torchvision's CPU ``deform_conv2d`` crashes the process (SIGSEGV) on non-finite input or offsets,
so :class:`~invariance.vision.nn.sepc.SEPCConv` checks both and raises ``ValueError`` first.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead, RetinaNetRegressionHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from invariance.vision._checks import check_int
from invariance.vision.nn.sepc import SEPC, PyramidConv, integrated_bn

__all__ = [
    "SEPC",
    "PyramidConv",
    "SEPCRetinaHead",
    "SmoothL1RegressionHead",
    "TinyFPNBackbone",
    "build_retinanet",
    "detection_ap",
    "coco_detection_ap",
    "level_shift",
    "integrated_bn",
    "SMOOTH_L1_BETA",
]

#: beta of the official config's smooth-L1 box loss (``SmoothL1Loss(beta=0.11)``)
SMOOTH_L1_BETA = 0.11


def level_shift(pyramid, shift: int = 1):
    """Drop the ``shift`` finest levels of a pyramid (the action of a x2^shift zoom-out)."""
    return list(pyramid[shift:])


class TinyFPNBackbone(nn.Module):
    """5-stage CNN (strides 2..32) + torchvision FPN on C3-C5 + P6/P7 (``LastLevelP6P7``).

    Shapes: (N, 3, H, W) -> OrderedDict of 5 maps P3..P7 with ``out_channels`` channels and
    strides 8, 16, 32, 64, 128.
    """

    def __init__(self, *, width: int = 16, out_channels: int = 32) -> None:
        super().__init__()
        for name, v in (("width", width), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        chans = [3, width, width, 2 * width, 4 * width, 4 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
                nn.Conv2d(chans[i + 1], chans[i + 1], 3, padding=1),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            )
            for i in range(5)
        )
        self.fpn = FeaturePyramidNetwork(
            chans[3:], out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict:
        feats = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                feats[f"c{i + 1}"] = x
        return self.fpn(feats)


class SmoothL1RegressionHead(RetinaNetRegressionHead):
    """torchvision's RetinaNet box branch with the official smooth-L1 box loss.

    ``compute_loss``: for each image, ``smooth_l1(delta_pred, delta_target, beta)`` summed over
    the positive anchors and the 4 deltas, divided by that image's positive anchors (at least
    1), then averaged over the images. torchvision's default is plain L1 with the same
    normalisation.

    Args: in_channels, num_anchors, beta (default :data:`SMOOTH_L1_BETA` = 0.11).
    """

    def __init__(self, in_channels: int, num_anchors: int, *, beta: float = SMOOTH_L1_BETA) -> None:
        super().__init__(in_channels, num_anchors)
        if not isinstance(beta, (int, float)) or not beta >= 0 or beta == float("inf"):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self._loss_type = "smooth_l1"
        self.beta = float(beta)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> Tensor:
        losses = []
        for tgt, reg, anc, matched in zip(
            targets, head_outputs["bbox_regression"], anchors, matched_idxs
        ):
            fg = torch.where(matched >= 0)[0]
            delta = self.box_coder.encode_single(tgt["boxes"][matched[fg]], anc[fg])
            loss = torch.nn.functional.smooth_l1_loss(
                reg[fg], delta, reduction="sum", beta=self.beta
            )
            losses.append(loss / max(1, fg.numel()))
        return sum(losses) / max(1, len(targets))


class SEPCRetinaHead(nn.Module):
    """torchvision ``RetinaNetHead`` whose 4-conv towers are replaced by the :class:`SEPC` neck:
    class logits read the ``cconv`` features, box regression the ``lconv`` features
    (``stacked_convs=0`` in the official config). Losses: torchvision's focal loss and the
    official smooth-L1 box loss (:class:`SmoothL1RegressionHead`, beta 0.11); decoding is
    torchvision's.

    Args: in_channels, num_anchors, num_classes, variant (default ``"sepc"``), num_pconv (4),
    beta (smooth-L1 beta, default 0.11).

    Shapes: list of L maps (N, C, H_l, W_l) -> ``cls_logits`` (N, sum_l H_l W_l A, K) and
    ``bbox_regression`` (N, sum_l H_l W_l A, 4).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        *,
        variant: str = "sepc",
        num_pconv: int = 4,
        beta: float = SMOOTH_L1_BETA,
    ) -> None:
        super().__init__()
        self.base = RetinaNetHead(in_channels, num_anchors, num_classes)
        self.base.regression_head = SmoothL1RegressionHead(in_channels, num_anchors, beta=beta)
        self.base.classification_head.conv = nn.Sequential()
        self.base.regression_head.conv = nn.Sequential()
        self.sepc = SEPC(channels=in_channels, num_pconv=num_pconv, variant=variant)

    def compute_loss(self, *args, **kwargs) -> dict[str, Tensor]:
        return self.base.compute_loss(*args, **kwargs)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        cls, loc = self.sepc(x)
        return {
            "cls_logits": self.base.classification_head(cls),
            "bbox_regression": self.base.regression_head(loc),
        }


def build_retinanet(
    *,
    head: str = "sepc",
    num_classes: int = 10,
    image_size: int = 64,
    width: int = 16,
    channels: int = 32,
    num_pconv: int = 4,
    beta: float = SMOOTH_L1_BETA,
) -> nn.Module:
    """torchvision RetinaNet on :class:`TinyFPNBackbone`; ``head`` is ``"retina"`` (4-conv
    towers, baseline) or a SEPC variant (``pconv``, ``ibn``, ``sepc_lite``, ``sepc``). Both use
    the official smooth-L1 box loss with ``beta`` (:class:`SmoothL1RegressionHead`)."""
    if head != "retina" and head not in SEPC.VARIANTS:
        raise ValueError(f"head must be 'retina' or one of {sorted(SEPC.VARIANTS)}, got {head!r}")
    check_int(channels, "channels")
    check_int(width, "width")
    for name, v in (
        ("num_classes", num_classes),
        ("image_size", image_size),
        ("num_pconv", num_pconv),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "num_pconv" else 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    backbone = TinyFPNBackbone(width=width, out_channels=channels)
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (8, 16, 32, 64, 128))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    na = anchors.num_anchors_per_location()[0]
    if head == "retina":
        h = RetinaNetHead(channels, na, num_classes)
        h.regression_head = SmoothL1RegressionHead(channels, na, beta=beta)
    else:
        h = SEPCRetinaHead(channels, na, num_classes, variant=head, num_pconv=num_pconv, beta=beta)
    return RetinaNet(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchors,
        head=h,
        score_thresh=0.05,
        detections_per_img=50,
    )


# ----------------------------------------------------------------------------- COCO-style AP


def _coco_linspace(start: float, stop: float, num: int) -> Tensor:
    """``numpy.linspace(start, stop, num)`` bit for bit (``i * step + start``, last = stop), in
    float64: COCOeval's IoU and recall thresholds."""
    step = (stop - start) / (num - 1)
    y = torch.arange(num, dtype=torch.float64) * step + start
    y[-1] = stop
    return y


#: COCOeval's thresholds (``np.linspace(.5, .95, 10)`` and ``np.linspace(0, 1, 101)``)
COCO_IOU_THRESHOLDS = _coco_linspace(0.5, 0.95, 10)
COCO_RECALL_THRESHOLDS = _coco_linspace(0.0, 1.0, 101)
_AREA_MAX = 1e5**2  # COCOeval's area range "all": [0, 1e10]


def _check_boxes(d: object, i: int, what: str, num_classes: int, scored: bool) -> None:
    if (
        not isinstance(d, dict)
        or "boxes" not in d
        or "labels" not in d
        or (scored and "scores" not in d)
    ):
        keys = "boxes, scores, labels" if scored else "boxes, labels"
        raise TypeError(f"{what}[{i}] must be a dict with {keys}, got {type(d).__name__}")
    b, lab = d["boxes"], d["labels"]
    if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[-1] != 4:
        raise ValueError(
            f"{what}[{i}]['boxes'] must be an (n, 4) tensor, got {tuple(getattr(b, 'shape', ()))}"
        )
    if not b.is_floating_point() or not bool(torch.isfinite(b).all()):
        raise ValueError(f"{what}[{i}]['boxes'] must be finite floating xyxy boxes")
    if not isinstance(lab, Tensor) or lab.shape != b.shape[:1] or lab.is_floating_point():
        raise ValueError(f"{what}[{i}]['labels'] must be an integer ({b.shape[0]},) tensor")
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise ValueError(
            f"{what}[{i}]['labels'] must lie in [0, num_classes={num_classes}), "
            f"got {lab.unique().tolist()}"
        )
    if scored:
        s = d["scores"]
        if not isinstance(s, Tensor) or s.shape != b.shape[:1] or not s.is_floating_point():
            raise ValueError(f"{what}[{i}]['scores'] must be a floating ({b.shape[0]},) tensor")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{what}[{i}]['scores'] must be finite (NaN/inf scores)")
    elif bool(((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any()):
        raise ValueError(f"{what}[{i}]['boxes'] must have x2 >= x1 and y2 >= y1")


def _coco_iou(det: Tensor, gt: Tensor) -> Tensor:
    """IoU of xywh boxes as pycocotools' ``bbIou`` computes it (float64, non-crowd)."""
    dx, dy, dw, dh = det.unbind(-1)
    gx, gy, gw, gh = gt.unbind(-1)
    w = torch.minimum((dw + dx)[:, None], (gw + gx)[None]) - torch.maximum(dx[:, None], gx[None])
    h = torch.minimum((dh + dy)[:, None], (gh + gy)[None]) - torch.maximum(dy[:, None], gy[None])
    inter = w * h
    union = (dw * dh)[:, None] + (gw * gh)[None] - inter
    iou = torch.where((w > 0) & (h > 0), inter / union, torch.zeros((), dtype=torch.float64))
    return iou


def _xywh(b: Tensor) -> Tensor:
    b = b.detach().to("cpu", torch.float64)
    return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=-1)


def detection_ap(
    preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], num_classes: int
) -> dict[str, float]:
    """COCO bbox AP as pycocotools' ``COCOeval`` computes it (area "all", max 100 detections
    per image and class, 101 recall points, IoU 0.50:0.95), in float64.

    Args:
        preds: per image ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,)}``.
        targets: per image ``{"boxes": (m, 4) xyxy, "labels": (m,)}``.
        num_classes: labels must lie in ``[0, num_classes)``.

    Returns ``ap`` (mean over IoU thresholds, recall points and the classes present in the
    targets), ``ap50``, ``ap75``; 0 when no class has ground truth. As COCOeval: detections of
    a class with no ground truth are skipped, an unmatched detection with negative area is
    ignored, a detection matches the unmatched ground-truth box of highest IoU (>= the
    threshold; ties go to the later box), precision is ``tp / (tp + fp + eps)``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(preds, (list, tuple)) or not isinstance(targets, (list, tuple)):
        raise TypeError("preds and targets must be lists of dicts (one per image)")
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} preds for {len(targets)} targets")
    for i, (p, t) in enumerate(zip(preds, targets)):
        _check_boxes(p, i, "preds", num_classes, scored=True)
        _check_boxes(t, i, "targets", num_classes, scored=False)
    thr = COCO_IOU_THRESHOLDS
    eps = torch.finfo(torch.float64).eps  # numpy.spacing(1)
    table = torch.full((len(thr), num_classes), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        n_gt = sum(int((t["labels"] == c).sum()) for t in targets)
        if n_gt == 0:
            continue
        scores, matched, ignored = [], [], []
        for p, t in zip(preds, targets):
            sel = p["labels"] == c
            s = p["scores"][sel].detach().to("cpu", torch.float64)
            order = torch.sort(s, descending=True, stable=True).indices[:100]
            det = _xywh(p["boxes"][sel])[order]
            gt = _xywh(t["boxes"][t["labels"] == c])
            iou = _coco_iou(det, gt)  # (n_det, n_gt)
            dtm = torch.zeros(len(thr), len(order), dtype=torch.bool)
            for ti, th in enumerate(thr.tolist()):
                free = torch.ones(len(gt), dtype=torch.bool)
                floor = min(th, 1 - 1e-10)
                for d in range(len(order)):
                    ok = free & (iou[d] >= floor)
                    if not bool(ok.any()):
                        continue
                    best = iou[d].masked_fill(~ok, -1.0)
                    g = int((best == best.max()).nonzero()[-1])  # ties: the later box
                    free[g] = False
                    dtm[ti, d] = True
            area = det[:, 2] * det[:, 3]
            out_of_range = (area < 0) | (area > _AREA_MAX)
            scores.append(s[order])
            matched.append(dtm)
            ignored.append(~dtm & out_of_range[None])
        s_all = torch.cat(scores)
        if len(s_all) == 0:
            table[:, c] = 0.0
            continue
        order = torch.sort(s_all, descending=True, stable=True).indices
        dtm = torch.cat(matched, dim=1)[:, order]
        ign = torch.cat(ignored, dim=1)[:, order]
        tps = (dtm & ~ign).to(torch.float64).cumsum(1)
        fps = (~dtm & ~ign).to(torch.float64).cumsum(1)
        for ti in range(len(thr)):
            tp, fp = tps[ti], fps[ti]
            rc = tp / n_gt
            pr = tp / (fp + tp + eps)
            pr = torch.flip(torch.cummax(torch.flip(pr, [0]), 0).values, [0])
            idx = torch.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
            q = torch.where(
                idx < len(pr), pr[idx.clamp(max=len(pr) - 1)], torch.zeros((), dtype=torch.float64)
            )
            table[ti, c] = q.mean()
    valid = ~torch.isnan(table[0])
    if not bool(valid.any()):
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    t = table[:, valid]
    return {"ap": float(t.mean()), "ap50": float(t[0].mean()), "ap75": float(t[5].mean())}


def coco_detection_ap(
    preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], num_classes: int
) -> dict[str, float]:
    """The same numbers as :func:`detection_ap`, computed by ``pycocotools.COCOeval`` (bbox,
    maxDets 100, area "all"): ``ap`` (stats[0]), ``ap50`` (stats[1]), ``ap75`` (stats[2]).

    Optional: needs ``pycocotools`` (raises ImportError otherwise). Boxes are xyxy; labels
    ``c`` become COCO category ``c + 1``.
    """
    try:
        coco_mod = importlib.import_module("pycocotools.coco")
        eval_mod = importlib.import_module("pycocotools.cocoeval")
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("coco_detection_ap needs pycocotools (pip install pycocotools)") from e
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} preds for {len(targets)} targets")
    images, anns, res = [], [], []
    for i, (t, p) in enumerate(zip(targets, preds)):
        images.append({"id": i + 1})
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()):
            res.append(
                {
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "score": float(s),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                }
            )
    if not res or not anns:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c + 1} for c in range(num_classes)],
        }
        gt.createIndex()
        ev = eval_mod.COCOeval(gt, gt.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {
        "ap": max(0.0, float(ev.stats[0])),
        "ap50": max(0.0, float(ev.stats[1])),
        "ap75": max(0.0, float(ev.stats[2])),
    }


_MOVED = ("SEPCConfig", "SEPCRecipe")


def __getattr__(name: str) -> object:
    """Recipe names that moved to :mod:`invariance.vision.recipes.sepc` stay importable here."""
    if name in _MOVED:
        return getattr(importlib.import_module("invariance.vision.recipes.sepc"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
