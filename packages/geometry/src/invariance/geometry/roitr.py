r"""RoITr: the Rotation-Invariant Transformer for point cloud matching (RoITr-lite).

Paper: Yu, Qin, Hou, Saleh, Li, Busam, Ilic (CVPR 2023), "Rotation-Invariant Transformer for
Point Cloud Matching", arXiv:2303.08231. Official code: github.com/haoyu94/RoITr (MIT), built on
GeoTransformer (MIT). Read for understanding; nothing copied.

Mechanism:

* **PPF local attention.** For a centre ``i`` and its neighbours ``j``, the point pair features
  ``PPF_ij = (||d||, angle(n_i, d)/pi, angle(n_j, d)/pi, angle(n_i, n_j)/pi)`` (``d = p_j - p_i``)
  are embedded linearly, ``e_ij = W_e PPF_ij``; with ``q_i = W_q x_i``, ``k_j = W_k x_j``,
  ``v_j = W_v x_j``, ``p_ij = W_p e_ij``, ``u_ij = W_u e_ij`` over 4 heads,
  ``a_ij = softmax_j((q_i.k_j + q_i.p_ij)/sqrt(d_h))`` and ``y_i = sum_j a_ij (v_j + u_ij)``, then a
  Linear, ``LayerNorm(y_i + x_i)`` (no feed-forward). A block is ``in_proj``, the layer,
  ``out_proj``, LayerNorm, the identity shortcut and a ReLU.
* **Encoder/decoder.** Three levels (N, N/4, N/16 by farthest point sampling); neighbourhoods are
  computed once per level and reused by the decoder; a transition down is a PPF attention from
  the sampled centres to their k nearest points of the finer level, *the centre itself dropped*.
  The decoder adds the global mean at the coarsest level and, going up, ``Linear(x_fine) +
  interpolate(Linear(x_coarse))`` (3-NN inverse-distance weights) followed by one block.
* **Global transformer** on the superpoints (:class:`~invariance.geometry.registration.transformer.
  GeometricTransformer` with the *position state*, the self-excluded attention over the geometric
  structure embedding that the cross attention uses for cross-frame spatial awareness).
* **Matching.** Dual-normalised superpoint scores, the top pairs, point-to-node patches, scores
  ``<F_i, F_j>/sqrt(d)`` solved by log-domain optimal transport with a learnable dustbin (padded
  patch slots masked out of the transport, as in the official code), mutual top-3 extraction with
  confidence > 0.05, RANSAC on the correspondences.
* **Losses.** The overlap-weighted circle loss on superpoints and the negative log-likelihood of
  the transport plan at ground-truth matches (and the dustbins for unmatched points).

Normals must be oriented by a rigid-motion-invariant rule (the official code orients them toward
the origin, which is invariant to rotations about the origin only): :func:`orient_normals` turns
each normal away from the cloud's centroid. Tested properties: descriptors SE(3)-invariant
(float64), correspondences unchanged and the pose equivariant when the clouds move; the same
network on raw coordinates (no PPF) is the negative control.

Golden values: the official network needs the CUDA ``pointops`` extension (kNN, FPS, grouping),
which does not build or run on this CPU-only machine, so the official model cannot be run end to
end. Its pure-torch pieces do run with a small shim (``pointops`` and open3d stubbed,
``Tensor.cuda`` the identity): ``calc_ppf_gpu``, ``GeometricStructureEmbedding``,
``LearnableLogOptimalTransport`` (with and without masks), ``weighted_circle_loss`` and
``point_to_node_partition`` were run at commit 393539d and ours equal them (PPF, circle loss and
the partition to float64 precision; embedding and transport to 1e-7, where the official code
computes frequencies and marginals in float32) -- ``tests/golden_roitr_official.json``.

Deviations (lite, CPU): three levels instead of four, widths 32-64 instead of 64-256, one
(self, cross) pair, FPS starting at the point farthest from the centroid (the official kernel
starts at index 0, which is not permutation invariant), our vectorised RANSAC instead of open3d's.
Each :class:`RIBlock` centres its attention output over the cloud's points before the LayerNorm
(``y - mean_points(y)``, which keeps the block SE(3)- and permutation-invariant): with the
constant input feature every point starts equal and on smooth surfaces the PPF neighbourhoods
differ little, so without centring the per-point variation of the descriptors stays at ~1-2% of
their magnitude and the losses do not move in 100+ steps (measured on 256-point pairs; with
centring the variation is ~80% at initialisation and a pair is overfitted). The descriptors then
depend on the whole fragment (its mean), as every global-context layer of the paper's network does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from invariance.geometry.ops import farthest_point_sample, knn, point_pair_features
from invariance.geometry.registration._cache import cached_indices
from invariance.geometry.registration.matching import (
    check_gt,
    circle_loss,
    dual_normalized_scores,
    mutual_topk,
    node_overlaps,
    point_to_node,
)
from invariance.geometry.registration.solvers import log_optimal_transport, ransac
from invariance.geometry.registration.transformer import GeometricTransformer

__all__ = ["PPFAttention", "RIBlock", "RoITr", "orient_normals", "ppf"]

_SCALE = torch.tensor([1.0, 1 / math.pi, 1 / math.pi, 1 / math.pi], dtype=torch.float64)


def ppf(pos_i: Tensor, pos_j: Tensor, n_i: Tensor, n_j: Tensor) -> Tensor:
    """RoITr's scaled PPF: ``(||d||, angles / pi)``, shape ``(..., 4)``."""
    return point_pair_features(pos_i, pos_j, n_i, n_j) * _SCALE.to(pos_i)


def orient_normals(pos: Tensor, normals: Tensor) -> Tensor:
    """Flip each normal to point away from the centroid (a rigid-motion-invariant rule)."""
    if pos.shape != normals.shape or pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"pos and normals must both be (N, 3), got {tuple(pos.shape)}, "
                         f"{tuple(normals.shape)}")  # fmt: skip
    s = ((pos - pos.mean(0)) * normals).sum(-1, keepdim=True)
    return torch.where(s < 0, -normals, normals)


class PPFAttention(nn.Module):
    """One PPF local attention layer: features ``(M, C)`` of the centres, ``(M, k, C)`` of their
    neighbours and ``(M, k, 4)`` PPFs -> ``(M, C)``."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.h, self.dh = heads, dim // heads
        self.embed = nn.Linear(4, dim)
        self.q, self.k, self.v, self.p, self.u = (nn.Linear(dim, dim) for _ in range(5))
        self.out, self.drop, self.norm = nn.Linear(dim, dim), nn.Dropout(dropout), nn.LayerNorm(dim)

    def forward(self, x_c: Tensor, x_n: Tensor, f: Tensor) -> Tensor:
        M, k, _ = x_n.shape
        e = self.embed(f)
        q = self.q(x_c).view(M, self.h, self.dh)
        kk = self.k(x_n).view(M, k, self.h, self.dh)
        v = self.v(x_n).view(M, k, self.h, self.dh)
        p = self.p(e).view(M, k, self.h, self.dh)
        u = self.u(e).view(M, k, self.h, self.dh)
        a = (torch.einsum("mhc,mkhc->mhk", q, kk + p) / math.sqrt(self.dh)).softmax(-1)
        y = torch.einsum("mhk,mkhc->mhc", a, v + u).reshape(M, -1)
        return self.norm(self.drop(self.out(y)) + x_c)


class RIBlock(nn.Module):
    """``in_proj -> PPF attention -> out_proj -> centre over points -> LayerNorm -> + shortcut ->
    ReLU`` (the centring is a deviation, see the module docstring; ``center=False`` disables it).
    """

    def __init__(
        self, c_in: int, c_out: int, hidden: int | None = None, *, center: bool = True
    ) -> None:
        super().__init__()
        h = hidden or c_out
        self.center = center
        self.inp, self.attn, self.outp = nn.Linear(c_in, h), PPFAttention(h), nn.Linear(h, c_out)
        self.norm = nn.LayerNorm(c_out)
        self.short = nn.Identity() if c_in == c_out else nn.Linear(c_in, c_out)

    def forward(self, x_c: Tensor, x_n: Tensor, f: Tensor) -> Tensor:
        y = self.outp(self.attn(self.inp(x_c), self.inp(x_n), f))
        if self.center:
            y = y - y.mean(0, keepdim=True)
        return torch.relu(self.norm(y) + self.short(x_c))


class RoITr(nn.Module):
    """RoITr-lite (see the module docstring).

    Args:
        widths: feature widths of the three levels (default: ``(32, 48, 64)``).
        k: neighbours per level (default: ``(8, 12, 12)``); ratio: FPS ratio between levels.
        coarse_dim: width of the global transformer; fine_dim: fine descriptor size.
        patch_k: points per superpoint patch; num_coarse: superpoint pairs matched.
        sinkhorn_iters: optimal-transport iterations (default: ``20``).
        use_ppf: ``False`` builds the negative-control twin: the same network with raw relative
            coordinates (and raw normals) in place of the PPF (not rotation invariant).
    """

    def __init__(
        self,
        *,
        widths: tuple[int, int, int] = (32, 48, 64),
        k: tuple[int, int, int] = (8, 12, 12),
        ratio: int = 4,
        coarse_dim: int = 64,
        fine_dim: int = 64,
        patch_k: int = 32,
        num_coarse: int = 16,
        sinkhorn_iters: int = 20,
        use_ppf: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or len(k) != 3:
            raise ValueError(f"widths and k must have 3 entries, got {widths!r}, {k!r}")
        for name, v in (("ratio", ratio), ("patch_k", patch_k), ("num_coarse", num_coarse),
                        ("sinkhorn_iters", sinkhorn_iters), *zip(("k",) * 3, k),
                        *zip(("widths",) * 3, widths)):  # fmt: skip
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must hold ints >= 1, got {v!r}")
        w1, w2, w3 = widths
        self.k, self.ratio, self.patch_k = tuple(k), ratio, patch_k
        self.num_coarse, self.iters, self.use_ppf = num_coarse, sinkhorn_iters, use_ppf
        self.stem = nn.Parameter(torch.ones(1, w1))  # the constant input feature (c = 1)
        self.enc0 = RIBlock(w1, w1)
        self.down1, self.enc1 = RIBlock(w1, w2), RIBlock(w2, w2)
        self.down2, self.enc2 = RIBlock(w2, w3), RIBlock(w3, w3)
        self.glob = nn.Linear(2 * w3, w3)
        self.lat1, self.up1, self.dec1 = nn.Linear(w2, w2), nn.Linear(w3, w2), RIBlock(w2, w2)
        self.lat0, self.up0, self.dec0 = nn.Linear(w1, w1), nn.Linear(w2, w1), RIBlock(w1, w1)
        self.transformer = GeometricTransformer(w3, coarse_dim, blocks=1, position_state=True)
        self.fine_proj = nn.Linear(w1, fine_dim)
        self.alpha = nn.Parameter(torch.tensor(1.0))

    # ------------------------------------------------------------------ features
    def _pairs(self, pos: Tensor, nrm: Tensor, q_idx: Tensor | None, idx: Tensor) -> Tensor:
        qp = pos if q_idx is None else pos[q_idx]
        qn = nrm if q_idx is None else nrm[q_idx]
        pi, ni = qp[:, None].expand(-1, idx.shape[1], -1), qn[:, None].expand(-1, idx.shape[1], -1)
        if self.use_ppf:
            return ppf(pi, pos[idx], ni, nrm[idx])
        rel = pos[idx] - pi  # the twin: raw offsets (3) + the neighbour's raw normal's z
        return torch.cat([rel, nrm[idx][..., 2:]], dim=-1)

    def _neighbourhoods(self, pos: Tensor) -> tuple[Tensor, ...]:
        """FPS levels and every kNN index the encoder and decoder use (computed once per
        cloud: :func:`~invariance.geometry.registration._cache.cached_indices`)."""
        n0 = pos.shape[0]
        i1 = farthest_point_sample(pos, max(n0 // self.ratio, self.k[2] + 2))
        p1 = pos[i1]
        i2 = farthest_point_sample(p1, max(n0 // self.ratio**2, 4))
        p2 = p1[i2]
        k0, k1, k2 = self.k
        nb0 = knn(pos, k0, exclude_self=True, method="brute")[0]
        nb1 = knn(p1, min(k1, p1.shape[0] - 1), exclude_self=True, method="brute")[0]
        nb2 = knn(p2, min(k2, p2.shape[0] - 1), exclude_self=True, method="brute")[0]
        # transition down: the centres' k nearest finer points, the centre itself dropped
        td1 = knn(pos, k1 + 1, p1, method="brute")[0][:, 1:]
        td2 = knn(p1, min(k2 + 1, p1.shape[0]), p2, method="brute")[0][:, 1:]
        return i1, i2, nb0, nb1, nb2, td1, td2

    def encode(
        self, pos: Tensor, normals: Tensor, *, names: tuple[str, str] = ("pos", "normals")
    ) -> dict[str, Tensor]:
        """Pyramid, fine (level-0) and superpoint features of one cloud ``(N, 3)`` with normals
        (``names``: how errors call the two inputs)."""
        for name, t in zip(names, (pos, normals)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a floating torch.Tensor")
            if t.dim() != 2 or t.shape[-1] != 3:
                raise ValueError(f"{name} must be an (N, 3) tensor, got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or Inf values")
        need = max(self.k[0] + 1, 4 * self.ratio**2)
        for name, t in zip(names, (pos, normals)):
            if t.shape[0] < need:
                raise ValueError(f"{name} needs at least {need} points, got {t.shape[0]}")
        if pos.shape != normals.shape:
            raise ValueError(f"{names[0]} and {names[1]} must have the same shape")
        n0 = pos.shape[0]
        i1, i2, nb0, nb1, nb2, td1, td2 = cached_indices(
            pos, ("roitr", self.k, self.ratio), lambda: self._neighbourhoods(pos)
        )
        p1, m1 = pos[i1], normals[i1]
        p2, m2 = p1[i2], m1[i2]
        f0p, f1p, f2p = (self._pairs(pos, normals, None, nb0), self._pairs(p1, m1, None, nb1),
                         self._pairs(p2, m2, None, nb2))  # fmt: skip
        t1, t2 = self._pairs(pos, normals, i1, td1), self._pairs(p1, m1, i2, td2)
        x0 = self.stem.expand(n0, -1).to(pos.dtype)
        x0 = self.enc0(x0, x0[nb0], f0p)
        x1 = self.down1(x0[i1], x0[td1], t1)
        x1 = self.enc1(x1, x1[nb1], f1p)
        x2 = self.down2(x1[i2], x1[td2], t2)
        x2 = self.enc2(x2, x2[nb2], f2p)
        x2 = self.glob(torch.cat([x2, x2.mean(0, keepdim=True).expand_as(x2)], -1))
        y1 = self.lat1(x1) + _interpolate(p2, p1, self.up1(x2))
        y1 = self.dec1(y1, y1[nb1], f1p)
        y0 = self.lat0(x0) + _interpolate(p1, pos, self.up0(y1))
        y0 = self.dec0(y0, y0[nb0], f0p)
        return {"p0": pos, "p2": p2, "x2": x2, "fine": self.fine_proj(y0)}

    def forward(self, src, src_normals, tgt, tgt_normals) -> dict[str, dict[str, Tensor]]:
        a = self.encode(src, src_normals, names=("src", "src_normals"))
        b = self.encode(tgt, tgt_normals, names=("tgt", "tgt_normals"))
        a["coarse"], b["coarse"] = self.transformer(a["p2"], a["x2"], b["p2"], b["x2"])
        return {"src": a, "tgt": b}

    # ------------------------------------------------------------------ matching
    def _plans(self, a: dict, b: dict, pi: Tensor, pj: Tensor):
        ia, ma = point_to_node(a["p0"], a["p2"], self.patch_k)
        ib, mb = point_to_node(b["p0"], b["p2"], self.patch_k)
        Pa, Pb, Ma, Mb = ia[pi], ib[pj], ma[pi], mb[pj]
        fa, fb = a["fine"][Pa], b["fine"][Pb]
        s = torch.einsum("kpd,kqd->kpq", fa, fb) / math.sqrt(fa.shape[-1])
        Z = log_optimal_transport(s, self.alpha, self.iters, row_mask=Ma, col_mask=Mb)
        return Z, Pa, Pb, Ma, Mb

    @torch.no_grad()
    def match(self, out: dict, *, threshold: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
        """Correspondences ``(src_idx, tgt_idx, confidence)`` from the top superpoint pairs."""
        a, b = out["src"], out["tgt"]
        S = dual_normalized_scores(a["coarse"], b["coarse"])
        top = S.flatten().topk(min(self.num_coarse, S.numel())).indices
        Z, Pa, Pb, Ma, Mb = self._plans(a, b, top // S.shape[1], top % S.shape[1])
        P = Z[:, :-1, :-1].exp() * (Ma[:, :, None] & Mb[:, None, :])
        si, ti, conf = [], [], []
        for kk in range(P.shape[0]):
            r, c = mutual_topk(P[kk], 3, threshold)
            si.append(Pa[kk, r])
            ti.append(Pb[kk, c])
            conf.append(P[kk, r, c])
        return torch.cat(si), torch.cat(ti), torch.cat(conf)

    @torch.no_grad()
    def register(self, src, src_normals, tgt, tgt_normals, *, iterations: int = 1000,
                 threshold: float = 0.05, generator: torch.Generator | None = None):  # fmt: skip
        """Pose ``tgt ≈ src @ R.T + t`` by RANSAC on the matched correspondences; returns the
        :class:`~invariance.geometry.registration.RansacResult` and the correspondences."""
        out = self(src, src_normals, tgt, tgt_normals)
        si, ti, conf = self.match(out)
        if si.numel() < 3:  # too few matches: fall back to the most confident ones
            si, ti, conf = self._fallback(out)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        res = ransac(src[si], tgt[ti], threshold=threshold, iterations=iterations, generator=gen)
        return res, (si, ti, conf)

    def _fallback(self, out):
        a, b = out["src"], out["tgt"]
        d = torch.cdist(a["fine"], b["fine"])
        j = d.argmin(1)
        conf = -d.min(1).values
        keep = conf.topk(min(64, conf.numel())).indices
        return keep, j[keep], conf[keep]

    # ------------------------------------------------------------------ training
    def loss(self, src, src_normals, tgt, tgt_normals, R: Tensor, t: Tensor, *,
             radius: float = 0.05) -> dict[str, Tensor]:  # fmt: skip
        """Circle loss on superpoints + OT negative log-likelihood on ground-truth patch pairs."""
        check_gt(R, t, radius)
        out = self(src, src_normals, tgt, tgt_normals)
        a, b = out["src"], out["tgt"]
        own_a = torch.cdist(src, a["p2"]).argmin(1)
        own_b = torch.cdist(tgt, b["p2"]).argmin(1)
        ov = node_overlaps(src, tgt, own_a, own_b, a["p2"].shape[0], b["p2"].shape[0], R, t, radius)
        l_coarse = circle_loss(a["coarse"], b["coarse"], ov)
        pi, pj = (ov > 0.1).nonzero(as_tuple=True)
        if pi.numel() > self.num_coarse:  # ground-truth pairs in training (RoITr samples them)
            pick = ov[pi, pj].topk(self.num_coarse).indices
            pi, pj = pi[pick], pj[pick]
        l_fine = src.new_zeros(())
        if pi.numel():
            Z, Pa, Pb, Ma, Mb = self._plans(a, b, pi, pj)
            valid = Ma[:, :, None] & Mb[:, None, :]
            gt = (torch.cdist(src[Pa] @ R.T + t, tgt[Pb]) < radius) & valid
            un_a = Ma & ~gt.any(2)
            un_b = Mb & ~gt.any(1)
            terms = [Z[:, :-1, :-1][gt], Z[:, :-1, -1][un_a], Z[:, -1, :-1][un_b]]
            l_fine = -torch.cat(terms).mean()
        return {"loss": l_coarse + l_fine, "coarse": l_coarse.detach(), "fine": l_fine.detach()}


def _interpolate(coarse: Tensor, fine: Tensor, feats: Tensor) -> Tensor:
    """3-NN inverse-distance interpolation of ``feats`` at ``coarse`` onto ``fine`` points."""
    k = min(3, coarse.shape[0])
    idx, dist = knn(coarse, k, fine, method="brute")
    w = 1.0 / (dist + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (feats[idx] * w.unsqueeze(-1)).sum(1)
