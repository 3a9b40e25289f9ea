r"""S4 / S4D state-space layers with HiPPO initialisation (HTTYH).

Paper: "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections",
Gu, Johnson, Timalsina, Rudra, Ré, ICLR 2023, arXiv:2206.12037 (with S4, arXiv:2111.00396, and
S4D, arXiv:2206.11893). Official code: https://github.com/state-spaces/s4 (Apache-2.0); read for the
conventions, no code copied.

Mechanism. A layer applies, per channel h, the SSM :math:`x' = Ax + Bu,\ y = Cx + Du` discretised
with step :math:`\Delta_h`, as a causal convolution with the kernel :math:`K_l = C\bar A^l\bar B`
(FFT, length 2L zero padding), then GELU, a position-wise linear map and a GLU. :math:`A` is a
HiPPO matrix: diagonal (S4D, :class:`S4DKernel`: Vandermonde product, Lin/Inv/LegS inits) or
diagonal-plus-low-rank (S4, :class:`S4Kernel`: Cauchy sums at the FFT nodes + Woodbury, with the
:math:`\tilde C = C(I-\bar A^L)` truncation trick). HTTYH explains why: TI-LegS projects the
input's history onto exponentially warped Legendre polynomials
(:func:`invariance.sequence.hippo.legs_reconstruct`), FouT onto a sliding Fourier basis, and
:math:`\Delta` sets the time scale, so :math:`\log\Delta\sim U[\log(1/L_{max}),\log(1/L_{min})]`
(:func:`invariance.sequence.hippo.timescale_range`). The same map can be run as a recurrence
(``S4Layer.forward_recurrent``).

Kernels. The S4D kernel is a *blocked* Vandermonde product: with :math:`l = jb + i`,
:math:`\bar A^l = \bar A^{jb}\bar A^i`, so only :math:`O(N(b + L/b))` powers are exponentiated
and the rest is one real GEMM per channel. The S4 kernel computes the Cauchy reciprocals
:math:`1/(z_k - w_n)` once and shares them between the four numerators of the Woodbury terms
(one batched GEMM), in frequency chunks of bounded memory (checkpointed under autograd).
Discretisation, powers and FFT nodes are computed in float64 (cheap), so the float32 kernels are
closer to a float64 evaluation than the naive formulas
(:mod:`invariance.sequence.nn.ssm_reference`, the bench reference).

Tested properties (packages/sequence/tests/test_s4_*.py):
- ``test_s4_cauchy_kernel_equals_dense`` / ``test_s4d_vandermonde_equals_dense``: fast kernels
  equal the slow dense kernel :math:`C\bar A^l\bar B` to 1e-6 (float64), for every init/measure;
  ``test_s4_kernel_equals_hippo_ssm``: the DPLR kernel equals the original HiPPO SSM's.
- ``test_s4_recurrent_equals_convolution``: stepping the recurrence gives the convolution output;
  ``test_s4_linear_step_equals_dense_step``: the O(N) DPLR step (bilinear through Woodbury, half
  state) equals the dense O(N²) step state by state (1e-10) and the convolution (float64 1e-8);
  ``test_s4_linear_step_float32``: float32 recurrence = convolution (1e-5; FouT 1e-4).
- ``test_s4_layer_delay_equivariant``: shifting the input shifts the output (causal layer, after
  removing the constant response to zeros); negative controls
  ``test_s4_layer_circular_fft_not_delay_equivariant`` (FFT without zero padding wraps around) and
  ``test_s4_layer_bidirectional_not_delay_equivariant``.
- ``test_s4_double_length`` (same true C after doubling), ``test_s4_bad_input``,
  ``tests/test_sequence_bad_inputs.py`` (the fuzz harness over every public entry point).
- ``test_s4_fast_kernels_match_float64_reference``: blocked Vandermonde and shared-reciprocal
  Cauchy kernels equal the naive formula evaluated in float64 (float32 error <= 1e-5 and below
  the naive float32 formula's); ``test_s4_kernel_memory_bounded`` (L=16384, H=256 peaks
  under 1 GB).
- ``test_s4_layer_seed_seeds_everything``, ``test_s4_tied_dropout``.
- ``test_s4d_timescale_is_time_rescaling``: K_l(2Δ) = K_{2l}(Δ) + K_{2l+1}(Δ) exactly (ZOH).
- ``test_s4d_learns_delay_with_httyh_timescale``: S4D with the HTTYH Δ range beats the mis-set
  range on a delayed-copy task (the learning test).
- hippo: see :mod:`invariance.sequence.hippo`.

Deviations: the DPLR kernel uses plain PyTorch Cauchy sums (shared reciprocals + GEMM; no pykeops /
CUDA extension); the S4 recurrent step is O(N) through the DPLR structure (``step_mode=
"linear"``, default; the dense O(N²) step is kept as ``"dense"``), but its one-off setup computes
the true C from :math:`\tilde C` with a dense :math:`\bar A^{L}` (O(N³)); Re(w) is floored at
-1e-4 (FouT's undamped modes otherwise break the float32 Cauchy kernel);
:math:`\tilde C` is built at construction (``l_max`` required) rather than at the first forward; the
layer uses nn.Linear + GLU (official S4D: Conv1d(k=1) + GLU, the same map); there is no pre/post
norm inside the layer (the residual pre-norm lives in :class:`S4Model`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from invariance.sequence.nn.s4_layers import (
    S4DKernel,
    S4Kernel,
    S4Layer,
    S4Model,
    TiedDropout,
    ssm_param_groups,
)

__all__ = [
    "S4DKernel",
    "S4Kernel",
    "S4Layer",
    "S4Model",
    "TiedDropout",
    "ssm_param_groups",
    "ZeroReferenced",
]

#: names that moved to :mod:`invariance.sequence.recipes.s4` (still importable from here)
_MOVED = (
    "S4Config",
    "S4Recipe",
    "S4DRecipe",
    "delay_task_run",
    "bench_s4_kernels",
    "bench_s4_step",
)


class ZeroReferenced(nn.Module):
    r"""``x -> f(x) - f(0)``: removes the constant response to silence, so that a causal
    time-invariant ``f`` commutes *exactly* with zero-filled delays (used by the symmetry
    checks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) - self.model(torch.zeros_like(x))


def __getattr__(name: str) -> Any:
    """Backward-compatible access to the recipe names that moved to ``recipes/s4.py``."""
    if name in _MOVED:
        from invariance.sequence.recipes import s4 as _recipes

        return getattr(_recipes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
