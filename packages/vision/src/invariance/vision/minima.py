r"""MINIMA: Modality Invariant Image Matching (Ren, Jiang, Li, Liang, Zhou, Bai; CVPR 2025).

arXiv 2412.19412. Official code: https://github.com/LSXI7/MINIMA (Apache-2.0); its LoFTR trainer
is LoFTR's (https://github.com/zju3dv/LoFTR, Apache-2.0).

MINIMA's point is that a matcher becomes modality invariant through *data*, not architecture:
an RGB matching set with ground-truth geometry is translated into many modalities by generators
whose outputs stay pixel-aligned, so every match label is inherited, and an ordinary matcher
(LoFTR, LightGlue, RoMa) is trained on pairs whose second image is in a randomly chosen
modality. The data engine is :mod:`invariance.vision.data.minima_pairs` (rendered scenes with
exact correspondences); this module holds the matcher, its supervision and the field's metrics.

* **Matcher** (:class:`MinimaMatcher`): LoFTR (Sun et al. 2021), built from kornia's modules
  (``kornia.feature.LoFTR(pretrained=None, config=...)``, a port of the official code): a
  ResNet-FPN backbone giving 1/8 and 1/2 feature maps, 2-D sine positional encoding, a
  linear-attention transformer of interleaved self/cross layers, dual-softmax coarse matching
  (temperature 0.1, threshold, mutual nearest neighbour, border removal), and fine refinement
  (5 x 5 windows at 1/2 resolution, a self/cross transformer and a spatial soft-argmax). The
  forward keeps LoFTR's intermediate tensors (confidence matrix, fine expectation and its std),
  which kornia's forward drops, so the matcher can be trained. Keypoints are returned in the
  OpenCV pixel frame (pixel ``(c, r)`` centred at ``(c + 0.5, r + 0.5)``).
* **Supervision** (:func:`coarse_supervision`, :func:`fine_supervision`): LoFTR's ground truth
  from exact correspondences: coarse cells whose centres map into each other (mutual nearest
  cell), restricted to covisible points; fine targets = the true position of the image-0 cell
  centre inside the 5 x 5 window of its image-1 cell, in window units.
* **Loss** (:func:`loftr_loss`): LoFTR's focal loss on the dual-softmax confidence matrix
  (alpha 0.25, gamma 2, positive and negative terms averaged separately, weights 1) plus the
  inverse-std-weighted L2 fine loss on targets inside the window.
* **Metrics** (:func:`estimate_relative_pose`, :func:`relative_pose_error`, :func:`pose_auc`,
  :func:`symmetric_epipolar_distance`): the essential matrix from the matches by RANSAC on
  calibrated coordinates (``kornia.geometry.RANSAC("essential")``, 5-point minimal solver, LM
  refinement), the pose by the cheirality test, the pose error ``max(angle(R), angle(t))``
  (translation sign-agnostic), its AUC at 5/10/20 degrees (failed pairs count as infinite error)
  and matching precision by the squared symmetric epipolar distance (LoFTR's definition) and by
  the exact reprojection error.

Tested properties: the data engine's correspondences are exact (the ray of camera 1 through
the predicted pixel hits the same 3-D point to 1e-6) and occluded points are rejected; the
coarse ground truth is a partial permutation and >= 95 % of its matches are also matches of
kornia's port of LoFTR's ``spvs_coarse`` (depth-map warping, occlusion kept); the dual-softmax
coarse matching is pair-swap symmetric (swapping the two feature sets transposes the
confidence matrix, 2e-16; negative control: untransposed); the whole LoFTR is not, because its
cross-attention layer updates image 1 from the already updated image-0 features (official
code); exact matches give zero pose error and AUC 1; :func:`pose_auc`,
:func:`relative_pose_error` and :func:`symmetric_epipolar_distance` equal the official LoFTR
functions on recorded values; a few steps lower the loss; (slow) after training, the match set
of RGB-RGB pairs changes less when image 1 is swapped to a random modality than for the same
LoFTR trained on RGB only.

Deviations:
    * The translators are procedural (:mod:`invariance.vision.modalities`), not StyleBooth,
      Depth-Anything, DSINE, Anime2Sketch and PaintTransformer, and the source images are
      renders, not MegaDepth; what is tested is the recipe (label inheritance + random-modality
      training), not the generators' quality.
    * The matcher is LoFTR at CPU size (recipe default: backbone widths 16/24/32, coarse width
      32, one (self, cross) pair, 64 px images, border removal 1 cell) trained from scratch,
      where MINIMA fine-tunes the pretrained outdoor LoFTR (widths 128/196/256, 4 pairs, 640
      px); no pretrained weights ship offline.
    * Coarse ground truth drops occluded cells (exact ray test); LoFTR's ``spvs_coarse`` skips
      its depth-consistency check and keeps them.
    * Training pairs keep image 0 in RGB and draw image 1's modality per sample (our reading of
      MINIMA's random-modality training; the official data loader was not checked).
    * The RANSAC is kornia's (MSAC + LM) rather than OpenCV's ``findEssentialMat``; the
      threshold is 1 px (LoFTR: 0.5 px at 640 px).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature import LoFTR
from kornia.geometry.epipolar import motion_from_essential_choose_solution
from kornia.geometry.ransac import RANSAC
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "loftr_config",
    "MinimaMatcher",
    "coarse_supervision",
    "fine_supervision",
    "loftr_loss",
    "estimate_relative_pose",
    "relative_pose_error",
    "pose_auc",
    "symmetric_epipolar_distance",
]


def loftr_config(
    *,
    width: int = 64,
    coarse_layers: int = 2,
    heads: int = 4,
    thr: float = 0.2,
    border_rm: int = 1,
    train_pad_num_gt_min: int = 16,
) -> dict[str, Any]:
    """A LoFTR config (kornia's layout) at CPU size: backbone widths ``width/2, 3 width/4,
    width``, coarse transformer of width ``width`` with ``coarse_layers`` (self, cross) pairs,
    fine transformer of width ``width/2``; dual-softmax at temperature 0.1."""
    width = check_int(width, "width", lo=8)
    if width % (2 * heads) or (width // 2) % heads:
        raise ValueError(f"width must be divisible by 2 * heads, got width={width}, heads={heads}")
    coarse_layers = check_int(coarse_layers, "coarse_layers")
    check_number(thr, "thr", lo=0.0, hi=1.0)
    border_rm = check_int(border_rm, "border_rm", lo=0)
    w2, w3 = width // 2, (3 * width) // 4
    return {
        "backbone_type": "ResNetFPN",
        "resolution": (8, 2),
        "fine_window_size": 5,
        "fine_concat_coarse_feat": True,
        "resnetfpn": {"initial_dim": w2, "block_dims": [w2, w3, width]},
        "coarse": {
            "d_model": width,
            "d_ffn": width,
            "nhead": heads,
            "layer_names": ["self", "cross"] * coarse_layers,
            "attention": "linear",
            "temp_bug_fix": True,
        },
        "match_coarse": {
            "thr": float(thr),
            "border_rm": border_rm,
            "match_type": "dual_softmax",
            "dsmax_temperature": 0.1,
            "skh_iters": 3,
            "skh_init_bin_score": 1.0,
            "skh_prefilter": True,
            "train_coarse_percent": 0.4,
            "train_pad_num_gt_min": int(train_pad_num_gt_min),
        },
        "fine": {
            "d_model": w2,
            "d_ffn": w2,
            "nhead": heads,
            "layer_names": ["self", "cross"],
            "attention": "linear",
        },
    }


def _pair(image0: object, image1: object) -> tuple[Tensor, Tensor]:
    image0 = check_tensor(image0, "image0", dims=4, expected="(B, 1, H, W)")
    image1 = check_tensor(image1, "image1", dims=4, expected="(B, 1, H, W)")
    if image0.shape[1] != 1:
        raise ValueError(f"image0 must be gray (B, 1, H, W), got shape {tuple(image0.shape)}")
    if image1.shape != image0.shape:
        raise ValueError(
            f"image1 must have image0's shape {tuple(image0.shape)}, got {tuple(image1.shape)}"
        )
    h, w = image0.shape[-2:]
    if h % 8 or w % 8 or min(h, w) < 32:
        raise ValueError(f"image0 must be at least 32 px with sides divisible by 8, got {(h, w)}")
    return image0, image1


class MinimaMatcher(nn.Module):
    """LoFTR (kornia's modules, random init) with a forward that keeps what training needs.

    ``forward(image0, image1, supervision=None)``: gray ``(B, 1, H, W)`` images in ``[0, 1]``;
    in training mode ``supervision`` (from :func:`coarse_supervision`) supplies the ground-truth
    coarse matches LoFTR pads the fine stage with. Returns ``conf_matrix`` ``(B, L, S)``,
    ``keypoints0`` / ``keypoints1`` ``(M, 2)`` (OpenCV pixel frame), ``confidence`` ``(M,)``,
    ``batch_indexes`` ``(M,)``, the coarse cell ids ``i_ids`` / ``j_ids`` of the matches, and for
    the fine loss ``b_ids``, ``i_ids_all``, ``j_ids_all``, ``expec_f`` ``(M', 3)``."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = copy.deepcopy(config if config is not None else loftr_config())
        self.loftr = LoFTR(pretrained=None, config=self.config)

    def forward(
        self, image0: Tensor, image1: Tensor, supervision: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        image0, image1 = _pair(image0, image1)
        lf = self.loftr
        if self.training and supervision is None:
            raise ValueError("supervision is required in training mode (LoFTR pads with GT)")
        stride_c, stride_f = self.config["resolution"]
        n = image0.shape[0]
        feats = lf.extract_features(torch.cat([image0, image1]))
        fc0, fc1 = feats["coarse"][:n], feats["coarse"][n:]
        ff0, ff1 = feats["fine"][:n], feats["fine"][n:]
        data: dict[str, Any] = {
            "bs": n,
            "stride_c": stride_c,
            "stride_f": stride_f,
            "hw0_c": fc0.shape[2:],
            "hw1_c": fc1.shape[2:],
            "hw0_f": ff0.shape[2:],
            "hw1_f": ff1.shape[2:],
        }
        if supervision is not None and self.training:
            data.update({k: supervision[k] for k in ("spv_b_ids", "spv_i_ids", "spv_j_ids")})
        t0 = fc0.flatten(2).transpose(1, 2).contiguous()
        t1 = fc1.flatten(2).transpose(1, 2).contiguous()
        t0, t1 = lf.loftr_coarse(t0, t1, None, None)
        lf.coarse_matching(t0, t1, data)
        w0, w1 = lf.fine_preprocess(ff0, ff1, t0, t1, data)
        if w0.shape[0] != 0:
            w0, w1 = lf.loftr_fine(w0, w1)
        lf.fine_matching(w0, w1, data)
        keep = data["mconf"].shape[0]
        pred = ~data["gt_mask"]  # the predicted coarse matches (training pads with GT ones)
        return {
            "conf_matrix": data["conf_matrix"],
            "keypoints0": data["mkpts0_f"] + 0.5,
            "keypoints1": data["mkpts1_f"][:keep] + 0.5,
            "confidence": data["mconf"],
            "batch_indexes": data["m_bids"],
            "i_ids": data["i_ids"][pred],
            "j_ids": data["j_ids"][pred],
            "b_ids": data["b_ids"],
            "i_ids_all": data["i_ids"],
            "j_ids_all": data["j_ids"],
            "expec_f": data["expec_f"],
        }


def _cells(pts: Tensor, stride: int, hc: int, wc: int) -> tuple[Tensor, Tensor]:
    """Nearest coarse cell (row-major id) of OpenCV-frame pixel positions, and in-bounds flag."""
    xy = ((pts - 0.5) / stride).round().long()
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < wc) & (xy[..., 1] >= 0) & (xy[..., 1] < hc)
    return (xy[..., 0] + xy[..., 1] * wc).clamp(0, hc * wc - 1), inside


def coarse_supervision(
    w_pt0: Tensor, valid0: Tensor, w_pt1: Tensor, valid1: Tensor, *, size: int, stride: int = 8
) -> dict[str, Tensor]:
    """LoFTR's coarse ground truth from exact correspondences of the coarse grids (``w_pt*``
    ``(B, L, 2)``, covisibility ``valid*`` ``(B, L)``, from
    :func:`invariance.vision.data.minima_pairs.grid_correspondences`): cell ``i`` of image 0 and
    ``j`` of image 1 match when ``i``'s point lands nearest ``j``'s centre and ``j``'s lands
    nearest ``i``'s. Returns ``conf_matrix_gt`` ``(B, L, L)`` and the ids ``spv_b_ids``,
    ``spv_i_ids``, ``spv_j_ids`` of its ones."""
    w_pt0 = check_tensor(w_pt0, "w_pt0", dims=3, expected="(B, L, 2)")
    w_pt1 = check_tensor(w_pt1, "w_pt1", dims=3, expected="(B, L, 2)")
    size, stride = check_int(size, "size"), check_int(stride, "stride")
    hc = size // stride
    b, n = w_pt0.shape[:2]
    if n != hc * hc or w_pt1.shape != w_pt0.shape or w_pt0.shape[-1] != 2:
        raise ValueError(
            f"w_pt0 and w_pt1 must have shape (B, {hc * hc}, 2) for size {size} and stride "
            f"{stride}, got {tuple(w_pt0.shape)} and {tuple(w_pt1.shape)}"
        )
    for name, v in (("valid0", valid0), ("valid1", valid1)):
        if not isinstance(v, Tensor) or v.dtype != torch.bool or tuple(v.shape) != (b, n):
            raise ValueError(f"{name} must be a bool tensor of shape {(b, n)}")
    j, in0 = _cells(w_pt0, stride, hc, hc)
    i_back, in1 = _cells(w_pt1, stride, hc, hc)
    ok0 = valid0 & in0
    ok1 = (valid1 & in1).gather(1, j)
    loop = i_back.gather(1, j)
    correct = ok0 & ok1 & (loop == torch.arange(n)[None])
    gt = torch.zeros(b, n, n, dtype=w_pt0.dtype)
    bi, ii = torch.where(correct)
    ji = j[bi, ii]
    gt[bi, ii, ji] = 1
    if bi.numel() == 0:  # LoFTR's convention: a dummy pad that the fine loss drops
        bi = ii = ji = torch.zeros(1, dtype=torch.long)
    return {"conf_matrix_gt": gt, "spv_b_ids": bi, "spv_i_ids": ii, "spv_j_ids": ji}


def fine_supervision(
    out: dict[str, Tensor], w_pt0: Tensor, *, size: int, stride: int = 8, window: int = 5
) -> Tensor:
    """LoFTR's fine targets ``(M', 2)``: the exact image-1 position of each image-0 cell centre
    (``w_pt0``), relative to the centre of its matched image-1 cell, in units of the half window
    at 1/2 resolution (outside ``[-1, 1]`` = outside the window, dropped by the loss)."""
    hc = size // stride
    b_ids, i_ids, j_ids = out["b_ids"], out["i_ids_all"], out["j_ids_all"]
    pt1 = torch.stack([j_ids % hc, j_ids // hc], -1).to(w_pt0.dtype) * stride + 0.5
    return (w_pt0[b_ids, i_ids] - pt1) / 2 / (window // 2)


def loftr_loss(
    out: dict[str, Tensor],
    conf_matrix_gt: Tensor,
    expec_f_gt: Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    fine_weight: float = 1.0,
    correct_thr: float = 1.0,
) -> dict[str, Tensor]:
    """LoFTR's loss: focal loss on the coarse confidence matrix (positives and negatives averaged
    separately) + ``fine_weight`` x the inverse-std-weighted L2 of the fine expectation on
    targets inside the window. Returns ``loss``, ``coarse``, ``fine``."""
    conf = out["conf_matrix"].clamp(1e-6, 1 - 1e-6)
    pos, neg = conf_matrix_gt == 1, conf_matrix_gt == 0
    loss_c = conf.new_zeros(())
    if bool(pos.any()):
        pc = conf[pos]
        loss_c = loss_c + (-alpha * (1 - pc) ** gamma * pc.log()).mean()
    if bool(neg.any()):
        nc = conf[neg]
        loss_c = loss_c + (-alpha * nc**gamma * (1 - nc).log()).mean()
    expec_f = out["expec_f"]
    correct = expec_f_gt.abs().amax(-1) < correct_thr
    if bool(correct.any()):
        inv_std = 1.0 / expec_f[correct, 2].clamp_min(1e-10)
        w = (inv_std / inv_std.mean()).detach()
        loss_f = (((expec_f_gt[correct] - expec_f[correct, :2]) ** 2).sum(-1) * w).mean()
    else:
        loss_f = expec_f.sum() * 0.0
    return {"loss": loss_c + fine_weight * loss_f, "coarse": loss_c, "fine": loss_f}


def estimate_relative_pose(
    kpts0: Tensor,
    kpts1: Tensor,
    K0: Tensor,
    K1: Tensor,
    *,
    thresh_px: float = 1.0,
    seed: int = 0,
    max_iter: int = 10,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Relative pose ``(R, t, inliers)`` of camera 1 w.r.t. camera 0 from matches (OpenCV pixel
    frame, ``(N, 2)``), by RANSAC on the essential matrix in calibrated coordinates (threshold
    ``thresh_px`` over the mean focal length) and the cheirality test; ``None`` with fewer than
    5 matches or when RANSAC finds no model. ``t`` has unit norm."""
    kpts0 = check_tensor(kpts0, "kpts0", dims=2, nonempty=False, expected="(N, 2)")
    kpts1 = check_tensor(kpts1, "kpts1", dims=2, nonempty=False, expected="(N, 2)")
    if kpts0.shape[-1] != 2 or kpts1.shape != kpts0.shape:
        raise ValueError(
            f"kpts0 and kpts1 must both have shape (N, 2), got {tuple(kpts0.shape)} and "
            f"{tuple(kpts1.shape)}"
        )
    _intrinsics(K0, "K0")
    _intrinsics(K1, "K1")
    check_number(thresh_px, "thresh_px", lo=0.0, lo_open=True)
    if kpts0.shape[0] < 5:
        return None
    dt = torch.float64
    k0, k1 = K0.to(dt), K1.to(dt)
    x0 = (kpts0.to(dt) - k0[:2, 2]) / k0.diagonal()[:2]
    x1 = (kpts1.to(dt) - k1[:2, 2]) / k1.diagonal()[:2]
    f = float((k0[0, 0] + k0[1, 1] + k1[0, 0] + k1[1, 1]) / 4)
    ransac = RANSAC("essential", inl_th=thresh_px / f, max_iter=max_iter, seed=seed)
    e, inl = ransac(x0, x1)
    if not bool(e.abs().sum() > 0) or int(inl.sum()) < 5:
        return None
    eye = torch.eye(3, dtype=dt)
    r, t, _, n_front = motion_from_essential_choose_solution(e, eye, eye, x0[inl], x1[inl])
    if int(n_front) == 0:
        return None
    t = t.reshape(3)
    return r, t / t.norm().clamp_min(1e-12), inl


def _intrinsics(k: object, name: str) -> Tensor:
    k = check_tensor(k, name, dims=2, expected="(3, 3)")
    if tuple(k.shape) != (3, 3) or float(k[0, 0]) <= 0 or float(k[1, 1]) <= 0:
        raise ValueError(f"{name} must be a (3, 3) intrinsics matrix with positive focals")
    return k


def relative_pose_error(T_0to1: Tensor, R: Tensor, t: Tensor) -> tuple[float, float]:
    """LoFTR's ``(t_err, R_err)`` in degrees: the angle between ``t`` and the true translation
    (sign-agnostic, ``min(e, 180 - e)``) and the angle of ``R^T R_gt``."""
    T_0to1 = check_tensor(T_0to1, "T_0to1", dims=2, expected="(4, 4)").to(torch.float64)
    R = check_tensor(R, "R", dims=2, expected="(3, 3)").to(torch.float64)
    t = check_tensor(t, "t", expected="(3,)").to(torch.float64).reshape(-1)
    if tuple(T_0to1.shape) != (4, 4) or tuple(R.shape) != (3, 3) or t.numel() != 3:
        raise ValueError("T_0to1 must be (4, 4), R (3, 3) and t of 3 numbers")
    t_gt = T_0to1[:3, 3]
    n = float(t.norm() * t_gt.norm())
    if n == 0:
        raise ValueError("t and the translation of T_0to1 must be non-zero")
    t_err = math.degrees(math.acos(max(-1.0, min(1.0, float(t @ t_gt) / n))))
    t_err = min(t_err, 180 - t_err)
    cos = max(-1.0, min(1.0, (float(torch.trace(R.T @ T_0to1[:3, :3])) - 1) / 2))
    return t_err, abs(math.degrees(math.acos(cos)))


def pose_auc(errors: Tensor | list[float], thresholds=(5.0, 10.0, 20.0)) -> dict[str, float]:
    """LoFTR's AUC of the recall-vs-error curve up to each threshold (degrees), with the curve
    starting at ``(0, 0)`` and infinite errors (failed pairs) never recalled."""
    if isinstance(errors, Tensor):
        if errors.dim() != 1 or not errors.is_floating_point():
            raise ValueError(
                f"errors must be a 1-D float tensor, got {errors.dtype} {tuple(errors.shape)}"
            )
    elif not isinstance(errors, (list, tuple)):
        raise TypeError(f"errors must be a list or a 1-D tensor, got {type(errors).__name__}")
    e = torch.as_tensor(errors, dtype=torch.float64).reshape(-1)
    if e.numel() == 0:
        raise ValueError("errors must not be empty")
    if bool(torch.isnan(e).any()) or bool((e < 0).any()):
        raise ValueError("errors must be non-negative (inf marks a failed pair)")
    if not thresholds or any(not isinstance(t, (int, float)) or t <= 0 for t in thresholds):
        raise ValueError(f"thresholds must be positive numbers, got {thresholds}")
    e = torch.cat([torch.zeros(1, dtype=e.dtype), e.sort().values])
    recall = torch.linspace(0, 1, e.numel(), dtype=e.dtype)
    out = {}
    for thr in thresholds:
        last = int(torch.searchsorted(e, torch.tensor(float(thr), dtype=e.dtype)))
        y = torch.cat([recall[:last], recall[last - 1 : last]])
        x = torch.cat([e[:last], torch.tensor([float(thr)], dtype=e.dtype)])
        out[f"auc@{thr:g}"] = float(torch.trapezoid(y, x) / thr)
    return out


def symmetric_epipolar_distance(
    kpts0: Tensor, kpts1: Tensor, T_0to1: Tensor, K0: Tensor, K1: Tensor
) -> Tensor:
    """LoFTR's squared symmetric epipolar distance ``(N,)`` of matches under the true essential
    matrix ``[t]_x R`` of ``T_0to1``, in calibrated coordinates."""
    kpts0 = check_tensor(kpts0, "kpts0", dims=2, nonempty=False, expected="(N, 2)")
    kpts1 = check_tensor(kpts1, "kpts1", dims=2, nonempty=False, expected="(N, 2)")
    if kpts1.shape != kpts0.shape or kpts0.shape[-1] != 2:
        raise ValueError("kpts0 and kpts1 must both have shape (N, 2)")
    T = check_tensor(T_0to1, "T_0to1", dims=2, expected="(4, 4)").to(kpts0.dtype)
    if tuple(T.shape) != (4, 4):
        raise ValueError(f"T_0to1 must have shape (4, 4), got {tuple(T.shape)}")
    K0 = _intrinsics(K0, "K0").to(kpts0.dtype)
    K1 = _intrinsics(K1, "K1").to(kpts0.dtype)
    t = T[:3, 3]
    tx = torch.zeros(3, 3, dtype=T.dtype)
    tx[0, 1], tx[0, 2], tx[1, 0], tx[1, 2], tx[2, 0], tx[2, 1] = (
        -t[2],
        t[1],
        t[2],
        -t[0],
        -t[1],
        t[0],
    )
    e = tx @ T[:3, :3]
    p0 = F.pad((kpts0 - K0[:2, 2]) / K0.diagonal()[:2], (0, 1), value=1.0)
    p1 = F.pad((kpts1 - K1[:2, 2]) / K1.diagonal()[:2], (0, 1), value=1.0)
    ep0 = p0 @ e.T
    etp1 = p1 @ e
    num = (p1 * ep0).sum(-1) ** 2
    return num * (1 / (ep0[:, 0] ** 2 + ep0[:, 1] ** 2) + 1 / (etp1[:, 0] ** 2 + etp1[:, 1] ** 2))
