"""Layers of the rotation-invariant galaxy CNN (Dieleman, Willett & Dambre 2015, arXiv 1503.07077).

Re-implemented in PyTorch from the description in the paper and the official Theano code
(benanne/kaggle-galaxies, BSD-3-Clause, Copyright (c) 2014 Sander Dieleman): ``layers.py``
(``MultiRotSliceLayer``/``MultiRotMergeLayer``) and ``custom.py``
(``OptimisedDivGalaxyOutputLayer``). No code was copied; index conventions were checked against
those files.

* :func:`galaxy_views` cuts the 16 parts: representations (0 deg, 45 deg) -> (plain, mirrored) ->
  corner k in (top-left, top-right, bottom-right, bottom-left), corner k rotated by k*90 deg so
  that the galaxy centre sits in the same corner of every part, stacked part-major in the batch
  dimension (index ``p * B + b``) like the official ``T.concatenate(parts, axis=0)``.
* :func:`merge_views` undoes the stacking: ``concat`` (official) or ``mean`` (cyclic pooling of
  Dieleman et al. 2016; exactly invariant to the dihedral group D4 of the square).
* :class:`GalaxyZooOutput` is the 37-output decision-tree normalisation, applied in the
  official order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.data.galaxies import QUESTION_SLICES

__all__ = [
    "galaxy_views",
    "merge_views",
    "GalaxyZooOutput",
    "UntiedConv2d",
    "Maxout",
    "SCALING_SEQUENCE",
]

#: (answers to rescale, index of the factor), applied IN THIS ORDER, each using already-rescaled
#: values (official ``scaling_sequence``): Q2 *= A1.2; Q3-Q5 *= A2.2; Q7 *= A1.1; Q8 *= A6.1;
#: Q9 *= A2.1; Q10-Q11 *= A4.1.
SCALING_SEQUENCE: tuple[tuple[slice, int], ...] = (
    (slice(3, 5), 1),
    (slice(5, 13), 4),
    (slice(15, 18), 0),
    (slice(18, 25), 13),
    (slice(25, 28), 3),
    (slice(28, 37), 7),
)


def _check_image(x: Tensor, name: str = "x") -> None:
    """Validate a (B, C, S, S) square image batch."""
    check_tensor(x, name, dims=4, expected="(B, C, S, S)")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be a square image batch (B, C, S, S), got {tuple(x.shape)}")


def _resample(x: Tensor, size: int, angle: float, crop: float) -> Tensor:
    """Rotate by ``angle`` (rad) about the centre and resample the central ``crop`` to ``size``.

    The sampling grid is symmetric under the dihedral group of the square, so this commutes
    exactly with ``rot90``/flips of the input (bilinear weights are D4-symmetric).
    """
    b = x.shape[0]
    c, s = math.cos(angle) * crop, math.sin(angle) * crop
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    grid = torch.nn.functional.affine_grid(
        theta.expand(b, 2, 3), [b, x.shape[1], size, size], align_corners=True
    )
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )


def galaxy_views(
    x: Tensor,
    *,
    view_size: int = 69,
    part_size: int = 45,
    crop: float = 1.0,
    include_45: bool = True,
    include_flip: bool = True,
) -> Tensor:
    """Cut the official 16 parts (4 with neither 45 deg nor flip) out of a galaxy batch.

    Args:
        x: (B, C, S, S) images.
        view_size: side of each representation (default: 69, as in the paper).
        part_size: side of each corner part (default: 45).
        crop: fraction of the input side mapped onto ``view_size`` (default: 1.0; the paper
            maps the central 207 of 424 pixels, crop=0.488).
        include_45: add the 45-degree-rotated representation (default: True).
        include_flip: add the mirrored views (default: True).

    Returns:
        (V * B, C, part_size, part_size), ``V = 4 * (1 + include_45) * (1 + include_flip)``,
        part-major: row ``p * B + b`` is part ``p`` of image ``b``.
    """
    _check_image(x)
    check_int(view_size, "view_size")
    check_int(part_size, "part_size")
    check_number(crop, "crop")
    if not 0 < part_size <= view_size:
        raise ValueError(f"need 0 < part_size <= view_size, got {part_size} and {view_size}")
    if not 0 < crop <= 1.5:
        raise ValueError(f"crop must be in (0, 1.5], got {crop}")
    if x.shape[-1] == view_size and crop == 1.0:
        reps = [x]
    else:
        reps = [_resample(x, view_size, 0.0, crop)]
    if include_45:
        reps.append(_resample(x, view_size, math.pi / 4, crop))
    ps = part_size
    parts = []
    for rep in reps:
        for view in [rep, rep.flip(-1)] if include_flip else [rep]:
            parts.append(view[..., :ps, :ps])  # 0 deg
            parts.append(torch.rot90(view[..., :ps, -ps:], 1, dims=(-2, -1)))  # 90 deg
            parts.append(torch.rot90(view[..., -ps:, -ps:], 2, dims=(-2, -1)))  # 180 deg
            parts.append(torch.rot90(view[..., -ps:, :ps], 3, dims=(-2, -1)))  # 270 deg
    return torch.cat(parts, dim=0)


def merge_views(feats: Tensor, n_views: int, mode: str = "concat") -> Tensor:
    """Merge part features (V * B, ...) into per-image features.

    ``concat``: (B, V * F) in part order (official ``MultiRotMergeLayer``); ``mean``: (B, F),
    the average over the orbit (exactly invariant to permutations of the parts).
    """
    if feats.shape[0] % n_views:
        raise ValueError(f"leading dim {feats.shape[0]} is not a multiple of n_views={n_views}")
    b = feats.shape[0] // n_views
    f = feats.reshape(n_views, b, -1)
    if mode == "concat":
        return f.transpose(0, 1).reshape(b, -1)
    if mode == "mean":
        return f.mean(0)
    raise ValueError(f"merge mode must be 'concat' or 'mean', got {mode!r}")


class GalaxyZooOutput(nn.Module):
    r"""Decision-tree output layer for the 37 Galaxy Zoo answers (official order).

    .. math::
        p = \max(x, 0), \quad p_a \leftarrow p_a / (\textstyle\sum_{a' \in q(a)} p_{a'} + 10^{-12}),

    then the six rescaling steps of :data:`SCALING_SEQUENCE`, each using already-rescaled values.
    With ``normalise=False`` the raw outputs are clipped to [0, 1] (used for the first training
    chunk, as in the official code). ``activation="softplus"`` replaces the ReLU by
    ``softplus(scale * x)``, the official ``SoftplusDivGalaxyOutputLayer`` (scale 10), which has
    no dead all-zero state.

    Args:
        activation (str): ``"relu"`` (official best model) or ``"softplus"`` (default: ``"relu"``).
        softplus_scale (float): scale inside the softplus (default: 10.0).
        eps (float): added to every group sum (default: 1e-12).

    Shapes:
        input (B, 37) -> output (B, 37).

    Invariance:
        none itself; its outputs obey the decision tree: sum(Q1) = sum(Q6) = 1,
        sum(Q2) = A1.2, sum(Q3) = sum(Q4) = sum(Q5) = A2.2, sum(Q7) = A1.1, sum(Q8) = A6.1,
        sum(Q9) = A2.1, sum(Q10) = sum(Q11) = A4.1 (whenever each group has a positive input).
    """

    def __init__(
        self, *, activation: str = "relu", softplus_scale: float = 10.0, eps: float = 1e-12
    ) -> None:
        super().__init__()
        if activation not in ("relu", "softplus"):
            raise ValueError(f"activation must be 'relu' or 'softplus', got {activation!r}")
        self.activation, self.softplus_scale, self.eps = activation, softplus_scale, eps
        group = torch.zeros(37, dtype=torch.long)
        for q, s in enumerate(QUESTION_SLICES):
            group[s] = q
        self.register_buffer("group", group, persistent=False)

    def forward(self, x: Tensor, normalise: bool = True) -> Tensor:
        check_tensor(x, "x", dims=2, expected="(B, 37)")
        if x.shape[1] != 37:
            raise ValueError(f"GalaxyZooOutput expects x of shape (B, 37), got {tuple(x.shape)}")
        if not normalise:
            return x.clamp(0.0, 1.0)
        if self.activation == "relu":
            p = x.clamp_min(0.0)
        else:
            p = torch.nn.functional.softplus(x * self.softplus_scale)
        sums = torch.zeros(x.shape[0], 11, dtype=p.dtype, device=p.device)
        sums = sums.index_add(1, self.group, p)
        p = p / (sums[:, self.group] + self.eps)
        cols = list(p.unbind(1))
        for sl, idx in SCALING_SEQUENCE:
            factor = cols[idx]
            for a in range(sl.start, sl.stop):
                cols[a] = cols[a] * factor
        return torch.stack(cols, dim=1)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, eps={self.eps}"


class UntiedConv2d(nn.Module):
    """Valid convolution with untied biases (one bias per output channel and position).

    cuda-convnet's ``untie_biases=True``. Args: in/out channels, kernel size, input size (square),
    ``w_std`` (default: 0.01) and ``bias_init`` (default: 0.1), as in the official init.

    Shapes: (N, C_in, S, S) -> (N, C_out, S - k + 1, S - k + 1).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        in_size: int,
        w_std: float = 0.01,
        bias_init: float = 0.1,
    ) -> None:
        super().__init__()
        if in_size < kernel_size:
            raise ValueError(f"in_size {in_size} is smaller than kernel_size {kernel_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.in_size = kernel_size, in_size
        self.w_std, self.bias_init = w_std, bias_init
        out = in_size - kernel_size + 1
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels, out, out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.w_std)
        nn.init.constant_(self.bias, self.bias_init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-1] != self.in_size:
            raise ValueError(
                f"UntiedConv2d expects (N, {self.in_channels}, {self.in_size}, "
                f"{self.in_size}), got {tuple(x.shape)}"
            )
        return torch.nn.functional.conv2d(x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"in_size={self.in_size}"
        )


class Maxout(nn.Module):
    """Maxout over groups of ``pool`` consecutive features: (N, pool * F) -> (N, F)."""

    def __init__(self, *, pool: int = 2) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.pool:
            raise ValueError(f"feature dim {x.shape[-1]} is not a multiple of pool={self.pool}")
        return x.unflatten(-1, (-1, self.pool)).amax(-1)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"
