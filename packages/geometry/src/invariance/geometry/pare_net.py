r"""PARE-Net building blocks: vector-neuron layers, the position-aware rotation-equivariant
convolution, the invariant (Gram-Schmidt frame) head and the feature-based hypothesis proposer.

Paper: Yao et al. (ECCV 2024), "PARE-Net: Position-Aware
Rotation-Equivariant Networks for Robust Point Cloud Registration", arXiv:2407.10142. Official
code: github.com/yaorz97/PARENet (no licence file: read for understanding only, nothing copied).

Mechanism (features are *vector neurons*: ``(..., C, 3)`` tensors, C vector channels; every
linear map mixes channels only, so a rotation ``x -> x @ R.T`` commutes with it):

* :class:`VNLinear`, :class:`VNLeakyReLU` (keep a vector when it points along a learned direction,
  otherwise remove its component along that direction, mixed with slope 0.2) and
  :class:`VNLinearLeakyReLU` (linear map, unit-normalised channels, then the VN leaky ReLU).
* :class:`PAREConv`: for a query ``q`` and neighbours ``s_k``, the position-aware channels
  ``L_k = [r_k, c, r_k x c]`` (``r_k = s_k - q``, ``c = mean_k r_k``) feed a correlation net
  (VN layer, channel norms -> invariant scores, two 1x1 layers, softmax over K kernel points);
  a bank of K channel-mixing weights combines the per-neighbour input (``L_k`` in the first block;
  ``[f_k - f_q, f_k, r_k]`` in residual blocks) weighted by the scores; each vector channel is
  unit-normalised, averaged over neighbours, passed through a VN leaky ReLU and a VN linear
  leaky ReLU; residual blocks add a VN-linear shortcut of ``f_q``.
* :class:`VNInvariantHead` (``VNStdFeature``): a learned equivariant frame by Gram-Schmidt
  (``u1``, ``u2``, ``u3 = u1 x u2``); projecting the features on it gives SO(3)-invariant
  features.
* :func:`solve_local_rotations`: the rotation aligning two sets of equivariant feature vectors
  (Kabsch on vectors, no translation); :func:`feature_hypotheses` turns *every* correspondence
  into a pose hypothesis (rotation from its features, translation from its points), scores each
  by its inliers among voter correspondences and refines the best by weighted Procrustes.

Tested properties: blocks SO(3)-equivariant and the head invariant to float64 precision
(< 1e-10), rotations recovered from rotated features, hypotheses equivariant
(``T(P R1^T, Q) = T(P, Q) R1^-1``), each with a negative control.

Deviations: the official VN-linear-leaky-ReLU normalises ``p + 1e-9`` (adding a constant
*vector*), which breaks equivariance at the 1e-7 level; here the norm is clamped instead, which is
exactly equivariant (the official behaviour is reproduced in the tests as a negative control).
PARE-lite (:class:`PARENet`, CPU-sized): an FPS pyramid (three levels, kNN neighbourhoods) instead
of the official voxel pyramid / KPConv-style FPN, one geometric-transformer block on the
superpoints, dual matching in point-to-node patches with a matchability score, the proposer on
the top correspondences; losses: the overlap-weighted circle loss, the fine matching
log-likelihood and the rotation contrastive loss (weights 1:1:1). The recipe
(:mod:`invariance.geometry.recipes.pare_net`) trains and evaluates it.

Limitation at CPU size (measured on held-out pairs of 256 points, two independently sampled
fragments of one surface): PARE-Conv sees positions only, and the position-aware channels are
sensitive to the sampling. At matched points the unit feature channels agree (cosine, after
undoing the rotation) 0.46 after the first block and 0.09 at the superpoints at initialisation
(k = 12). The kNN-centroid offset on its own agrees 0.57 with k = 12 neighbours and 0.82 with
k = 32, so the recipe's defaults use k = 32. The Gram-Schmidt frames therefore differ between
fragments and the invariant descriptors of matched and random points are nearly equally far
apart (distance ratio 0.98). The superpoint transformer (GeoTransformer's form) carries geometry
only in its attention logits, so it cannot make up for this. Within a few hundred steps the
network fits its training pairs (superpoint precision 0.6 after 600 steps on 48 pairs), but it
reaches only 0.3 on held-out pairs, where chance is 0.2.

Hypothesis features: the official model trains the rotation loss on the decoder's equivariant
head but takes the hypotheses' rotations at test time from the encoder's fine features (its
``use_encoder_re_feats``, on by default). :class:`PARENet` offers both
(``hypothesis_features``, default ``"decoder"``). Measured with 100 proposer hypotheses on
correspondences with 10 % true matches in random order (16 held-out SO(3)-rotated pairs,
3 seeds): the encoder's features register 0.43-0.60 of the pairs from initialisation through 60
training steps, the decoder's 0.31-0.60 over the same range and 0.71 after 200 steps (the
encoder's 0.56 then); RANSAC with 100 samples registers 0.28-0.30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invariance.geometry.nn.pare_layers import PAREConv, VNInvariantHead, position_aware_channels
from invariance.geometry.nn.vector_neurons import (
    VNLeakyReLU,
    VNLinear,
    VNLinearLeakyReLU,
    check_channels,
    check_vn,
    unit_channels,
)
from invariance.geometry.ops import farthest_point_sample, knn
from invariance.geometry.registration._cache import cached_indices
from invariance.geometry.registration.matching import (
    check_gt,
    circle_loss,
    dual_normalized_scores,
    mutual_topk,
    node_overlaps,
    point_to_node,
)
from invariance.geometry.registration.solvers import weighted_procrustes
from invariance.geometry.registration.transformer import GeometricTransformer

__all__ = [
    "VNLinear",
    "VNLeakyReLU",
    "VNLinearLeakyReLU",
    "PAREConv",
    "VNInvariantHead",
    "position_aware_channels",
    "solve_local_rotations",
    "feature_hypotheses",
    "HypothesisResult",
    "PARENet",
]


def solve_local_rotations(
    f_src: Tensor, f_ref: Tensor, *, rtol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Rotations ``R`` with ``f_ref ≈ f_src @ R.T`` per correspondence.

    Args:
        f_src, f_ref: ``(P, D, 3)`` equivariant feature vectors of the two sides.
        rtol: hypotheses whose cross-covariance has a second singular value below ``rtol`` times
            the first are flagged (nearly rank-1 features do not determine a rotation).

    Returns:
        ``R (P, 3, 3)`` (proper rotations) and ``valid (P,)`` bool.
    """
    check_vn(f_src, "f_src")
    check_vn(f_ref, "f_ref")
    if f_src.shape != f_ref.shape or f_src.dim() != 3:
        raise ValueError(
            f"f_src {tuple(f_src.shape)} and f_ref {tuple(f_ref.shape)} must both be (P, D, 3)"
        )
    H = f_src.transpose(-1, -2) @ f_ref  # sum_d f_src_d f_ref_d^T
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    det = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    det = torch.where(det == 0, torch.ones_like(det), det)
    D = torch.ones(*det.shape, 3, dtype=f_src.dtype, device=f_src.device)
    D[..., 2] = det
    R = (V * D.unsqueeze(-2)) @ U.transpose(-1, -2)
    valid = S[..., 1] > rtol * S[..., 0]
    return R, valid


@dataclass
class HypothesisResult:
    """Output of :func:`feature_hypotheses`."""

    R: Tensor
    t: Tensor
    inliers: Tensor
    num_hypotheses: int
    best: int


def feature_hypotheses(
    src: Tensor,
    ref: Tensor,
    f_src: Tensor,
    f_ref: Tensor,
    voters_src: Tensor,
    voters_ref: Tensor,
    *,
    radius: float = 0.1,
    refine_steps: int = 5,
    voter_weights: Tensor | None = None,
    max_hypotheses: int | None = None,
) -> HypothesisResult:
    """PARE-Net's proposer: one hypothesis per correspondence from its equivariant features.

    Args:
        src, ref: ``(P, 3)`` the correspondences' points (``ref ≈ src @ R.T + t``).
        f_src, f_ref: ``(P, D, 3)`` their equivariant features.
        voters_src, voters_ref: ``(V, 3)`` correspondences that vote (inlier if the hypothesis
            maps the source voter within ``radius`` of the reference voter).
        radius: acceptance radius (default: ``0.1``).
        refine_steps: weighted-Procrustes refinements of the best hypothesis on its inliers.
        voter_weights: ``(V,)`` weights of the voters in the refinement (default: uniform).
        max_hypotheses: score only the first ``max_hypotheses`` correspondences (pass them
            sorted by confidence; default: all ``P``).
    """
    for name, x in (
        ("src", src),
        ("ref", ref),
        ("voters_src", voters_src),
        ("voters_ref", voters_ref),
    ):
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[-1] != 3 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N, 3) tensor")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError(f"{name} must be a finite floating tensor")
    if src.shape != ref.shape or voters_src.shape != voters_ref.shape:
        raise ValueError("src/ref and voters_src/voters_ref must pair up (same shapes)")
    if f_src.shape[0] != src.shape[0]:
        raise ValueError(f"f_src must have one row per correspondence ({src.shape[0]})")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    if not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps must be an int >= 0, got {refine_steps!r}")
    check_vn(f_src, "f_src")
    check_vn(f_ref, "f_ref")
    if max_hypotheses is not None:
        if isinstance(max_hypotheses, bool) or not isinstance(max_hypotheses, int):
            raise TypeError(f"max_hypotheses must be an int, got {max_hypotheses!r}")
        if max_hypotheses < 1:
            raise ValueError(f"max_hypotheses must be >= 1, got {max_hypotheses}")
        h = min(max_hypotheses, src.shape[0])
        src, ref, f_src, f_ref = src[:h], ref[:h], f_src[:h], f_ref[:h]
    R, valid = solve_local_rotations(f_src, f_ref)
    t = ref - (src.unsqueeze(-2) @ R.transpose(-1, -2)).squeeze(-2)
    pred = torch.einsum("vj,pij->pvi", voters_src, R) + t[:, None, :]
    counts = ((pred - voters_ref).norm(dim=-1) < radius).sum(-1)
    counts = torch.where(valid, counts, torch.full_like(counts, -1))
    best = int(counts.argmax())
    Rb, tb = R[best], t[best]
    w = voter_weights if voter_weights is not None else torch.ones_like(voters_src[:, 0])
    inl = (voters_src @ Rb.T + tb - voters_ref).norm(dim=-1) < radius
    for _ in range(refine_steps):
        if int(inl.sum()) < 3:
            break
        try:
            Rb, tb = weighted_procrustes(voters_src, voters_ref, w * inl.to(w.dtype))
        except ValueError:  # degenerate inlier set: keep the hypothesis
            break
        inl = (voters_src @ Rb.T + tb - voters_ref).norm(dim=-1) < radius
    return HypothesisResult(Rb, tb, inl, int(src.shape[0]), best)


def _pyramid(pos: Tensor, k: int, ratio: int) -> dict[str, Tensor]:
    """Three levels by farthest point sampling (N, N/ratio, N/ratio^2) and the neighbour indices
    each block needs: same level (``nb*``, first = the point itself), fine to coarse (``sub*``)
    and coarse to fine (``up*``, 1-NN)."""
    n0 = pos.shape[0]
    n1, n2 = max(n0 // ratio, 4), max(n0 // ratio**2, 4)
    p1 = pos[farthest_point_sample(pos, n1)]
    p2 = p1[farthest_point_sample(p1, n2)]
    nb = lambda x: knn(x, min(k, x.shape[0]), method="brute")[0]  # noqa: E731
    sub = lambda x, q: knn(x, min(k, x.shape[0]), q, method="brute")[0]  # noqa: E731
    return {
        "p0": pos,
        "p1": p1,
        "p2": p2,
        "nb0": nb(pos),
        "nb1": nb(p1),
        "nb2": nb(p2),
        "sub1": sub(pos, p1),
        "sub2": sub(p1, p2),
        "up1": knn(p2, 1, p1, method="brute")[0][:, 0],
        "up0": knn(p1, 1, pos, method="brute")[0][:, 0],
    }


class PARENet(nn.Module):
    """PARE-lite: a three-level PARE-Conv pyramid, invariant heads, a geometric transformer on the
    superpoints, dual matching in patches and the feature-based hypothesis proposer.

    Args:
        channels: vector channels of the three encoder levels (default: ``(16, 32, 64)``).
        out_channels: vector channels of the fine (level-0) equivariant features.
        k: neighbours per block; ratio: FPS subsampling ratio between levels.
        coarse_dim: width of the geometric transformer; fine_dim: fine descriptor size.
        patch_k: points per superpoint patch; num_coarse: superpoint pairs matched.
        invariant: ``False`` builds the non-invariant twin (descriptors from the raw equivariant
            features instead of their projection on the learned frame).
        hypothesis_features: which equivariant features give the proposer its rotations:
            ``"decoder"`` (default; the fine decoder output ``eq0`` that the rotation loss trains)
            or ``"encoder"`` (the encoder's fine features ``eq0_enc``, the official test-time
            default ``use_encoder_re_feats``; see the module docstring for when each is better).
    """

    def __init__(
        self,
        *,
        channels: tuple[int, int, int] = (16, 32, 64),
        out_channels: int = 32,
        k: int = 16,
        ratio: int = 4,
        coarse_dim: int = 64,
        fine_dim: int = 64,
        patch_k: int = 32,
        num_coarse: int = 16,
        invariant: bool = True,
        hypothesis_features: str = "decoder",
    ) -> None:
        super().__init__()
        if hypothesis_features not in ("decoder", "encoder"):
            raise ValueError(
                f"hypothesis_features must be 'decoder' or 'encoder', got {hypothesis_features!r}"
            )
        self.hypothesis_features = hypothesis_features
        if len(channels) != 3:
            raise ValueError(f"channels must have 3 entries, got {channels!r}")
        check_channels(k=k, ratio=ratio, patch_k=patch_k, num_coarse=num_coarse)
        c1, c2, c3 = channels
        self.k, self.ratio, self.patch_k, self.num_coarse = k, ratio, patch_k, num_coarse
        self.invariant = invariant
        self.enc = nn.ModuleList(
            [
                PAREConv(0, c1),
                PAREConv(c1, c1, residual=True),
                PAREConv(c1, c2, residual=True),
                PAREConv(c2, c2, residual=True),
                PAREConv(c2, c3, residual=True),
                PAREConv(c3, c3, residual=True),
            ]
        )
        self.dec2 = VNLinearLeakyReLU(c3 + c2, c2)
        self.dec1 = VNLinearLeakyReLU(c2 + c1, out_channels)
        self.coarse_head = VNInvariantHead(c3)
        self.fine_head = VNInvariantHead(out_channels)
        self.transformer = GeometricTransformer(3 * c3, coarse_dim, blocks=1, sigma_d=0.2)
        self.fine_proj = nn.Linear(3 * out_channels, fine_dim)
        self.matchability = nn.Linear(3 * out_channels, 1)
        self.match_proj = nn.Linear(fine_dim, fine_dim)

    def encode(self, pos: Tensor, *, name: str = "pos") -> dict[str, Tensor]:
        """Pyramid, equivariant features (``eq0`` level 0 from the decoder, ``eq0_enc`` level 0
        from the encoder, ``eq2`` superpoints) and the (in)variant descriptors of one cloud
        ``(N, 3)`` (``name``: how errors call it)."""
        if not isinstance(pos, Tensor) or not pos.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor")
        if pos.dim() != 2 or pos.shape[-1] != 3 or pos.shape[0] < 4 * self.ratio**2:
            raise ValueError(
                f"{name} must be (N, 3) with N >= {4 * self.ratio**2}, got {tuple(pos.shape)}"
            )
        if not torch.isfinite(pos).all():
            raise ValueError(f"{name} contains NaN or Inf values")
        P = cached_indices(
            pos, ("pare", self.k, self.ratio), lambda: _pyramid(pos, self.k, self.ratio)
        )
        e = self.enc
        f0 = e[1](P["p0"], P["p0"], P["nb0"], e[0](P["p0"], P["p0"], P["nb0"]))
        f1 = e[2](P["p0"], P["p1"], P["sub1"], f0)
        f1 = e[3](P["p1"], P["p1"], P["nb1"], f1)
        f2 = e[4](P["p1"], P["p2"], P["sub2"], f1)
        f2 = e[5](P["p2"], P["p2"], P["nb2"], f2)
        d1 = self.dec2(torch.cat([f2[P["up1"]], f1], dim=-2))
        d0 = self.dec1(torch.cat([d1[P["up0"]], f0], dim=-2))
        if self.invariant:
            inv2 = self.coarse_head(f2).flatten(-2)
            inv0 = self.fine_head(d0).flatten(-2)
        else:  # the twin: the same features, not made invariant
            inv2, inv0 = f2.flatten(-2), d0.flatten(-2)
        return {
            **P,
            "eq0": d0,
            "eq0_enc": f0,
            "eq2": f2,
            "coarse_in": inv2,
            "fine": self.fine_proj(inv0),
            "match": torch.sigmoid(self.matchability(inv0)).squeeze(-1),
        }

    def forward(self, src: Tensor, tgt: Tensor) -> dict[str, dict[str, Tensor]]:
        a, b = self.encode(src, name="src"), self.encode(tgt, name="tgt")
        a["coarse"], b["coarse"] = self.transformer(
            a["p2"], a["coarse_in"], b["p2"], b["coarse_in"]
        )
        return {"src": a, "tgt": b}

    @property
    def hypothesis_key(self) -> str:
        """The :meth:`encode` entry whose vectors give the proposer its rotations."""
        return "eq0" if self.hypothesis_features == "decoder" else "eq0_enc"

    # ------------------------------------------------------------------ matching
    def _patch_scores(self, a: dict, b: dict, pi: Tensor, pj: Tensor) -> tuple[Tensor, ...]:
        ia, ma = point_to_node(a["p0"], a["p2"], self.patch_k)
        ib, mb = point_to_node(b["p0"], b["p2"], self.patch_k)
        Pa, Pb = ia[pi], ib[pj]  # (K, k) point indices
        Ma, Mb = ma[pi], mb[pj]
        fa, fb = self.match_proj(a["fine"][Pa]), self.match_proj(b["fine"][Pb])
        S = torch.einsum("kpd,kqd->kpq", fa, fb) / math.sqrt(fa.shape[-1])
        valid = Ma[:, :, None] & Mb[:, None, :]
        S = S.masked_fill(~valid, float("-inf"))
        row = S.softmax(dim=2).nan_to_num(0.0)
        col = S.softmax(dim=1).nan_to_num(0.0)
        M = row * col * a["match"][Pa][:, :, None] * b["match"][Pb][:, None, :]
        return M, Pa, Pb, valid

    def correspondences(self, out: dict, *, num: int = 256) -> dict[str, Tensor]:
        """Coarse pairs by dual-normalised scores, then dual matching in their patches: the top
        ``num`` correspondences (points, equivariant features, scores) and the voters (mutual
        top-3 per patch with confidence > 0.005)."""
        a, b = out["src"], out["tgt"]
        S = dual_normalized_scores(a["coarse"], b["coarse"])
        kk = min(self.num_coarse, S.numel())
        flat = S.flatten().topk(kk).indices
        pi, pj = flat // S.shape[1], flat % S.shape[1]
        M, Pa, Pb, valid = self._patch_scores(a, b, pi, pj)
        scores = M.flatten()
        n = min(num, int((scores > 0).sum().clamp_min(3)))
        top = scores.topk(n).indices
        K, p, q = M.shape
        kidx, rem = top // (p * q), top % (p * q)
        si, ti = Pa[kidx, rem // q], Pb[kidx, rem % q]
        vs, vt = [], []
        for kk_ in range(K):
            r, c = mutual_topk(M[kk_], 3, 0.005)
            vs.append(Pa[kk_, r])
            vt.append(Pb[kk_, c])
        vsi, vti = torch.cat(vs), torch.cat(vt)
        if vsi.numel() < 3:
            vsi, vti = si, ti
        return {
            "src_idx": si,
            "tgt_idx": ti,
            "score": scores[top],
            "voter_src": vsi,
            "voter_tgt": vti,
        }

    @torch.no_grad()
    def register(self, src: Tensor, tgt: Tensor, *, num: int = 256, radius: float = 0.1):
        """Estimate the pose ``tgt ≈ src @ R.T + t``: returns the :class:`HypothesisResult` of
        the feature-based proposer and the correspondences it used."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 3:
            raise ValueError(f"num must be an int >= 3, got {num!r}")
        out = self(src, tgt)
        c = self.correspondences(out, num=num)
        a, b, key = out["src"], out["tgt"], self.hypothesis_key
        res = feature_hypotheses(
            src[c["src_idx"]],
            tgt[c["tgt_idx"]],
            a[key][c["src_idx"]],
            b[key][c["tgt_idx"]],
            src[c["voter_src"]],
            tgt[c["voter_tgt"]],
            radius=radius,
        )
        return res, c

    # ------------------------------------------------------------------ training
    def loss(self, src: Tensor, tgt: Tensor, R: Tensor, t: Tensor, *, radius: float = 0.05):
        """Coarse circle loss + fine matching loss + rotation contrastive loss (weights 1:1:1)."""
        check_gt(R, t, radius)
        out = self(src, tgt)
        a, b = out["src"], out["tgt"]
        own_a = torch.cdist(a["p0"], a["p2"]).argmin(1)
        own_b = torch.cdist(b["p0"], b["p2"]).argmin(1)
        ov = node_overlaps(src, tgt, own_a, own_b, a["p2"].shape[0], b["p2"].shape[0], R, t, radius)
        l_coarse = circle_loss(a["coarse"], b["coarse"], ov)
        pi, pj = (ov > 0.1).nonzero(as_tuple=True)
        if pi.numel() > self.num_coarse:
            pick = ov[pi, pj].topk(self.num_coarse).indices
            pi, pj = pi[pick], pj[pick]
        l_fine = src.new_zeros(())
        if pi.numel():
            M, Pa, Pb, valid = self._patch_scores(a, b, pi, pj)
            d = torch.cdist(src[Pa] @ R.T + t, tgt[Pb])  # (K, p, q)
            gt = (d < radius) & valid
            logM = M.clamp_min(1e-9).log()
            l_pos = -(logM[gt]).mean() if gt.any() else M.sum() * 0
            un_a = ~gt.any(2) & valid.any(2)
            un_b = ~gt.any(1) & valid.any(1)
            ma, mb = a["match"][Pa], b["match"][Pb]
            l_un = -0.5 * (1 - ma[un_a]).clamp_min(1e-9).log().mean() if un_a.any() else 0.0
            l_un2 = -0.5 * (1 - mb[un_b]).clamp_min(1e-9).log().mean() if un_b.any() else 0.0
            l_fine = l_pos + l_un + l_un2
        # rotation contrastive loss on the unit equivariant feature channels
        moved = src @ R.T + t
        dist, j = torch.cdist(moved, tgt).min(dim=1)
        fa = unit_channels(a["eq0"]) @ R.T
        fb = unit_channels(b["eq0"])
        pos = dist < radius
        l_rot = src.new_zeros(())
        if pos.any():
            l_rot = (fa[pos] - fb[j[pos]]).norm(dim=-1).sub(0.1).relu().mean()
        perm = torch.randperm(tgt.shape[0], generator=torch.Generator().manual_seed(0))[
            : src.shape[0]
        ]
        far = (moved[: len(perm)] - tgt[perm]).norm(dim=-1) > 0.2
        if far.any():
            l_rot = (
                l_rot + (1.4 - (fa[: len(perm)][far] - fb[perm][far]).norm(dim=-1)).relu().mean()
            )
        total = l_coarse + l_fine + l_rot
        return {
            "loss": total,
            "coarse": l_coarse.detach(),
            "fine": torch.as_tensor(l_fine).detach(),
            "rot": l_rot.detach(),
        }
