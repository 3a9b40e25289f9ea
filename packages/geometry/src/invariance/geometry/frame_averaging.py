r"""Frame Averaging: invariant and equivariant networks from any backbone.

Paper: Omri Puny, Matan Atzmon, Heli Ben-Hamu, Ishan Misra, Aditya Grover, Edward J. Smith,
Yaron Lipman, "Frame Averaging for Invariant and Equivariant Network Design", ICLR 2022,
arXiv:2110.03336. Official code: https://github.com/omri1348/Frame-Averaging (no licence file;
ideas only, nothing ported). Peer: ``frame-averaging-pytorch`` (lucidrains, MIT).

Mechanism. Group averaging :math:`\langle\phi\rangle(X)=\frac1{|G|}\sum_g g\cdot\phi(g^{-1}X)` is
exact but intractable for E(3). FA replaces G by a small input-dependent *frame*
:math:`\mathcal F(X)\subset G` that is itself equivariant, :math:`\mathcal F(gX)=g\mathcal F(X)`.
For point clouds the frame is the PCA frame (:func:`invariance.geometry.ops.pca_frames`):
centroid :math:`t`, covariance eigenvectors :math:`V` and all sign flips :math:`S`, giving
8 elements for O(3)/E(3) and 4 for SO(3)/SE(3). Then

.. math::
   \Phi(X)=\frac1{|\mathcal F|}\sum_{(R,t)\in\mathcal F}\phi\big((X-t)R\big),\qquad
   \Psi(X)=\frac1{|\mathcal F|}\sum_{(R,t)\in\mathcal F}\phi\big((X-t)R\big)R^\top+t,

invariant and equivariant respectively (row vectors). Velocity-like inputs/outputs are framed
without :math:`t`. The frame axis is folded into the batch. Frames are computed on detached
positions (as in the official code; no gradient through ``eigh``, which is unstable near repeated
eigenvalues).

Cost. Every frame is :math:`R_0\,\mathrm{diag}(s_f)` with :math:`s_f\in\{\pm1\}^3`
(:func:`invariance.geometry.ops.frame_signs`), so the cloud is rotated once,
:math:`(X-t)R_0`, and each framed copy is a sign flip of it; equivariant outputs are averaged in
the frame coordinates and rotated back once. One batched 3x3 ``eigh`` per cloud is all the
linear algebra. The backbone runs in passes of ``frames_per_pass`` frames (``"auto"``: about
``auto_points`` points per pass), and the outputs are summed as they come (no ``F*B`` output
tensor is kept). What remains is the backbone's own cost, ``F`` times; the README gives the measured
breakdown (``invariance-geometry bench fa_overhead``).

Tested properties (``tests/test_frame_averaging.py``):
* E(3) invariance of FA(PointNet) (rotations, reflections, translations) in float64 with a
  non-invariant backbone; negative control: the bare backbone
  (``test_fa_invariant_e3_with_negative_control``).
* E(3) equivariance of point outputs and O(3) equivariance of vector outputs, including a
  velocity input (``test_fa_equivariant_points_and_vectors``).
* SO(3) frames: SE(3)-invariant but *not* reflection-invariant with a chiral backbone
  (``test_fa_so3_frames_not_reflection_invariant``).
* Graph backbones with a PyG ``batch`` vector and ``edge_index`` (``test_fa_graph_backbone``).
* Point permutation invariance/equivariance (``test_fa_permutation``).
* Stochastic FA averages to the full FA (``test_fa_stochastic_eval_is_full``).
* Learning: FA-PointNet beats PointNet on rotated test shapes (``test_fa_learns_rotated_shapes``).
* The rotate-once/sign-flip implementation equals the frame-by-frame definition for O3/SO3,
  invariant/points/vectors outputs and any ``frames_per_pass``
  (``test_fa_equals_the_explicit_frame_average``, ``test_fa_graph_points_equal_dense``).
* Peer parity (``tests/test_fa_peer.py``): equals ``frame-averaging-pytorch`` 0.1.2 to 1e-10
  (float64; golden JSON recorded by running the peer, plus a live comparison when it is installed).
  Convention difference: the peer's equivariant output has no centroid added back, so it equals
  our ``output="vectors"``; our ``output="points"`` is that plus the centroid.

Deviations. The frame is the plain PCA frame of the paper's point-cloud experiments. The FA-GNN
for n-body (which recomputes frames from latent vectors between layers) is not implemented here;
FA is a generic wrapper and the n-body task is covered by EqMotion. Degenerate covariances (repeated
eigenvalues: a cube, an icosahedron) make the frame non-unique: the output stays finite but is
not exactly invariant, and ``on_degenerate`` warns (default), raises or stays silent
(``test_fa_on_degenerate_symmetric_clouds``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .ops._checks import check_points
from .ops.frames import centroid_covariance, flag_degenerate, frame_signs, pca_frames

__all__ = ["FrameAveraging"]

Output = Literal["invariant", "points", "vectors"]

#: default pass size (points) of ``frames_per_pass="auto"``
AUTO_POINTS = 4096


class FrameAveraging(nn.Module):
    r"""Frame-average any point-cloud or graph backbone (Puny et al., ICLR 2022).

    Args:
        backbone (nn.Module): called as ``backbone(pos, *args, **kwargs)`` with framed
            positions, dense (F·B, N, 3) or PyG-style (F·N_total, 3) with ``batch``.
        group (str): ``"O3"`` (8 frames: E(3) incl. reflections) or ``"SO3"`` (4 frames:
            SE(3)) (default: ``"O3"``).
        output (str): ``"invariant"`` (average the outputs), ``"points"`` (outputs are positions,
            last dim 3: un-frame and add the centroid) or ``"vectors"`` (un-frame only)
            (default: ``"invariant"``).
        vector_inputs (Sequence[str]): keyword inputs that are 3-vectors per point (velocities,
            normals): framed by rotation only (default: ``()``).
        stochastic (bool): in training mode use one uniformly random frame per cloud instead of
            all of them (cheaper; invariant in distribution); eval mode always averages all
            frames (default: ``False``).
        on_degenerate (str): what to do with clouds whose covariance has repeated eigenvalues
            (a cube, a regular polyhedron, a sphere's vertices): their PCA frame is not unique,
            so the output is finite but not exactly invariant for them. ``"warn"`` (default)
            emits a ``RuntimeWarning`` naming how many clouds of the batch are affected,
            ``"raise"`` raises ``ValueError``, ``"ignore"`` stays silent.
        frames_per_pass (int, "auto" or None): dense inputs only: run the backbone on this many
            frames at a time (an ``k*B`` batch per pass); ``None``: all ``F`` frames in one
            ``F*B`` batch; ``"auto"``: as many frames per pass as fit in ``auto_points`` points
            (at least one). The result is the same up to float rounding; on CPU a memory-bound
            backbone is faster in cache-sized passes (measured: a PointNet on 32 x 1024 points
            took 15-20x its single-frame time for one 8-frame batch, the backbone alone scaling
            super-linearly in the batch) (default: ``"auto"``).
        auto_points (int): the ``"auto"`` pass size in points (default: ``AUTO_POINTS`` = 4096:
            in a sweep on the 2-core CPU a PointNet's time per point grew from ~1.3 us at 1-2k
            points per call to ~4 us at 8k, ~6 us at 16-32k and ~10 us at 128k+; at 16 x 256
            points, 2 frames per pass (8192 points) measured 7.0x vs 6.1x for 1 frame per pass).

    Shapes:
        dense: pos (B, N, 3) or (N, 3); other tensor args whose first dim is B are repeated per
        frame. Graph: pos (N_total, 3) with ``batch`` (N_total,); ``edge_index`` (keyword, or any
        positional integer (2, E) tensor) is offset per frame copy; tensors with first dim
        N_total, num_graphs or E are repeated. Outputs keep the backbone's shape.

    Invariance: ``output="invariant"``: invariant to E(3) (O3) or SE(3) (SO3) acting on
    ``pos`` (and the rotation part on ``vector_inputs``); ``"points"``/``"vectors"``:
    equivariant. Permutation symmetry is the backbone's.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        group: Literal["O3", "SO3"] = "O3",
        output: Output = "invariant",
        vector_inputs: Sequence[str] = (),
        stochastic: bool = False,
        on_degenerate: Literal["ignore", "warn", "raise"] = "warn",
        frames_per_pass: int | Literal["auto"] | None = "auto",
        auto_points: int = AUTO_POINTS,
    ) -> None:
        super().__init__()
        if (
            frames_per_pass is not None
            and frames_per_pass != "auto"
            and (not isinstance(frames_per_pass, int) or frames_per_pass < 1)
        ):
            raise ValueError(
                f"frames_per_pass must be an int >= 1, 'auto' or None, got {frames_per_pass!r}"
            )
        if isinstance(auto_points, bool) or not isinstance(auto_points, int) or auto_points < 1:
            raise ValueError(f"auto_points must be an int >= 1, got {auto_points!r}")
        if on_degenerate not in ("ignore", "warn", "raise"):
            raise ValueError(
                f"on_degenerate must be 'ignore', 'warn' or 'raise', got {on_degenerate!r}"
            )
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if group not in ("O3", "SO3"):
            raise ValueError(f"group must be 'O3' or 'SO3', got {group!r}")
        if output not in ("invariant", "points", "vectors"):
            raise ValueError(f"output must be 'invariant', 'points' or 'vectors', got {output!r}")
        self.backbone = backbone
        self.group, self.output = group, output
        self.vector_inputs = tuple(vector_inputs)
        self.stochastic, self.on_degenerate = stochastic, on_degenerate
        self.frames_per_pass, self.auto_points = frames_per_pass, auto_points

    @property
    def num_frames(self) -> int:
        return 8 if self.group == "O3" else 4

    def reset_parameters(self) -> None:
        if hasattr(self.backbone, "reset_parameters"):
            self.backbone.reset_parameters()

    def extra_repr(self) -> str:
        return f"group={self.group}, output={self.output}, frames={self.num_frames}, stochastic={self.stochastic}"  # noqa: E501

    # ------------------------------------------------------------------ helpers
    def _signs(self, lead: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """(F, *lead, 3) diagonal sign patterns: frame ``f`` of a cloud is ``R0 · diag(s_f)``.

        All frames, or (stochastic training) one uniformly random frame per cloud, (1, *lead, 3).
        """
        S = frame_signs(self.group, dtype=dtype, device=device)  # (F, 3)
        F = S.shape[0]
        if self.stochastic and self.training:
            return S[torch.randint(F, lead, device=device)].unsqueeze(0)
        return S.view(F, *([1] * len(lead)), 3).expand(F, *lead, 3)

    def _step(self, F: int, points_per_frame: int) -> int:
        """Frames per backbone pass (dense inputs)."""
        fpp = self.frames_per_pass
        if fpp is None:
            return F
        if fpp == "auto":
            return max(1, min(F, self.auto_points // max(points_per_frame, 1)))
        return min(fpp, F)

    def _check_vec_out(self, y: Tensor) -> None:
        if y.shape[-1] != 3:
            raise ValueError(
                f"output={self.output!r} needs a backbone output with last dim 3, got {tuple(y.shape)}"  # noqa: E501
            )

    def _first_frame(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Centroid and the first frame ``R0`` (the eigenvectors, ascending; for SO3 the third
        column is the cross product of the first two) of dense clouds (B, N, 3): the part of
        :func:`~invariance.geometry.ops.pca_frames` FA needs (same validation and degeneracy
        flag, without building the other frames)."""
        check_points(pos, "pos", dim=3)
        t, cov = centroid_covariance(pos)
        eigvals, V = torch.linalg.eigh(cov)
        flag_degenerate(eigvals, on_degenerate=self.on_degenerate)
        if self.group == "SO3":
            c3 = torch.linalg.cross(V[..., 0], V[..., 1], dim=-1)
            V = torch.cat([V[..., :2], c3.unsqueeze(-1)], dim=-1)
        return t, V

    @staticmethod
    def _rotate_back(y: Tensor, R0: Tensor) -> Tensor:
        """y (L, *, 3) times R0ᵀ per item, R0 (L, 3, 3)."""
        L = y.shape[0]
        return (y.reshape(L, -1, 3) @ R0.transpose(-1, -2)).reshape(y.shape)

    # ------------------------------------------------------------------ forward
    def forward(
        self, pos: Tensor, *args: Any, batch: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        if not isinstance(pos, Tensor) or pos.shape[-1] != 3 or pos.dim() not in (2, 3):
            shape = tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__
            raise ValueError(
                f"pos must be (N, 3), (B, N, 3) or (N_total, 3) with batch; got {shape}"
            )
        unknown = set(self.vector_inputs) - set(kwargs)
        if unknown:
            raise ValueError(
                f"vector_inputs {sorted(unknown)} were not passed as keyword arguments"
            )
        if batch is not None:
            return self._forward_graph(pos, batch, args, kwargs)
        squeeze = pos.dim() == 2
        if squeeze:
            pos = pos.unsqueeze(0)
            args = tuple(a.unsqueeze(0) if isinstance(a, Tensor) else a for a in args)
            kwargs = {k: v.unsqueeze(0) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        B, N = pos.shape[:2]
        # one eigendecomposition per cloud (pca_frames also rejects NaN/Inf); every frame is
        # R0·diag(s_f), so the framed clouds are sign flips of one rotated copy (X - t) R0
        t, R0 = self._first_frame(pos.detach())  # (B, 3), (B, 3, 3)
        base = (pos - t.unsqueeze(1)) @ R0  # (B, N, 3)
        S = self._signs((B,), pos.dtype, pos.device)  # (F, B, 3)
        F = S.shape[0]

        vec: dict[str, Tensor] = {}
        for name in self.vector_inputs:
            v = kwargs[name]
            if not (
                isinstance(v, Tensor) and v.dim() >= 2 and v.shape[0] == B and v.shape[-1] == 3
            ):
                raise ValueError(
                    f"vector input {name!r} must be (B, ..., 3), got {getattr(v, 'shape', v)}"
                )
            vec[name] = (v.reshape(B, -1, 3) @ R0).reshape(v.shape)

        identity_first = not (self.stochastic and self.training)  # frame 0 is R0 itself

        def sl(s: Tensor, v: Tensor, lo: int) -> Tensor:  # frames s (k, B, 3) on v (B, ..., 3)
            k = s.shape[0]
            if k == 1 and lo == 0 and identity_first:
                return v  # the all-plus sign pattern: no copy
            sv = s.view(k, B, *([1] * (v.dim() - 2)), 3)
            return (v.unsqueeze(0) * sv).reshape(k * B, *v.shape[1:])

        def rep(v: Any, k: int) -> Any:
            if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == B:
                return v.unsqueeze(0).expand(k, *v.shape).reshape(k * B, *v.shape[1:])
            return v

        step = self._step(F, B * N)
        acc: Tensor | None = None
        for lo in range(0, F, step):
            s = S[lo : lo + step]
            k = s.shape[0]
            y = self.backbone(
                sl(s, base, lo),
                *(rep(a, k) for a in args),
                **{n: sl(s, vec[n], lo) if n in vec else rep(v, k) for n, v in kwargs.items()},
            )
            if y.shape[0] != k * B:
                raise ValueError(
                    f"backbone output has leading size {y.shape[0]}, expected frames*items = {k}*{B}"  # noqa: E501
                )
            y = y.reshape(k, B, *y.shape[1:])
            if self.output != "invariant":
                self._check_vec_out(y)
                if not (k == 1 and lo == 0 and identity_first):
                    y = y * s.view(k, B, *([1] * (y.dim() - 3)), 3)
            part = y[0] if k == 1 else y.sum(0)
            acc = part if acc is None else acc + part
        assert acc is not None
        out = acc / F
        if self.output != "invariant":
            out = self._rotate_back(out, R0)
            if self.output == "points":
                out = out + t.view(B, *([1] * (out.dim() - 2)), 3)
        return out[0] if squeeze else out

    def _forward_graph(self, pos: Tensor, batch: Tensor, args: tuple, kwargs: dict) -> Tensor:
        if batch.dim() != 1 or batch.shape[0] != pos.shape[0]:
            raise ValueError(f"batch must be ({pos.shape[0]},), got {tuple(batch.shape)}")
        if pos.dim() != 2:
            raise ValueError(f"with batch, pos must be (N_total, 3), got {tuple(pos.shape)}")
        G = int(batch.max()) + 1
        Nt = pos.shape[0]
        fr = pca_frames(
            pos.detach(),
            group=self.group,
            batch=batch,
            num_graphs=G,
            on_degenerate=self.on_degenerate,
        )
        R0, t = fr.frames[:, 0], fr.center  # (G, 3, 3), (G, 3)
        S = self._signs((G,), pos.dtype, pos.device)  # (F, G, 3)
        F = S.shape[0]
        R0n, Sn = R0[batch], S[:, batch]  # (Nt, 3, 3), (F, Nt, 3)
        base = ((pos - t[batch]).unsqueeze(-2) @ R0n).squeeze(-2)  # (Nt, 3)
        framed = (base.unsqueeze(0) * Sn).reshape(F * Nt, 3)
        eis = [kwargs.get("edge_index")] + [
            a
            for a in args
            if isinstance(a, Tensor)
            and not a.is_floating_point()
            and a.dim() == 2
            and a.shape[0] == 2
        ]
        E = next((e.shape[1] for e in eis if isinstance(e, Tensor)), None)

        def rep(v: Any, name: str | None = None) -> Any:
            is_ei = (
                isinstance(v, Tensor)
                and not v.is_floating_point()
                and v.dim() == 2
                and v.shape[0] == 2
            )
            if name == "edge_index" or (name is None and is_ei):
                off = (torch.arange(F, device=v.device) * Nt).view(F, 1, 1)
                return (v.unsqueeze(0) + off).permute(1, 0, 2).reshape(2, F * v.shape[1])
            if name in self.vector_inputs:
                if not (isinstance(v, Tensor) and v.shape == (Nt, 3)):
                    raise ValueError(
                        f"vector input {name!r} must be ({Nt}, 3), got {getattr(v, 'shape', v)}"
                    )
                vb = (v.unsqueeze(-2) @ R0n).squeeze(-2)
                return (vb.unsqueeze(0) * Sn).reshape(F * Nt, 3)
            if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] in (Nt, G, E):
                return v.repeat(F, *([1] * (v.dim() - 1)))
            return v

        batch_f = (
            batch.unsqueeze(0) + G * torch.arange(F, device=batch.device).view(F, 1)
        ).reshape(-1)
        y = self.backbone(
            framed,
            *(rep(a) for a in args),
            batch=batch_f,
            **{k: rep(v, k) for k, v in kwargs.items()},
        )
        if y.shape[0] == F * Nt:  # node-level output
            L, Sl, Rl, tl = Nt, Sn, R0n, t[batch]
        elif y.shape[0] == F * G:
            L, Sl, Rl, tl = G, S, R0, t
        else:
            raise ValueError(
                f"backbone output has leading size {y.shape[0]}, expected frames*items = "
                f"{F}*{Nt} (nodes) or {F}*{G} (graphs)"
            )
        y = y.reshape(F, L, *y.shape[1:])
        if self.output == "invariant":
            return y.mean(0)
        self._check_vec_out(y)
        out = self._rotate_back((y * Sl.view(F, L, *([1] * (y.dim() - 3)), 3)).mean(0), Rl)
        if self.output == "points":
            out = out + tl.view(L, *([1] * (out.dim() - 2)), 3)
        return out


def __getattr__(name: str) -> object:
    """Config and recipe names moved to ``recipes.frame_averaging``; still importable here."""
    if name in {"FrameAveragingConfig", "FrameAveragingRecipe"}:
        return getattr(importlib.import_module("invariance.geometry.recipes.frame_averaging"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
