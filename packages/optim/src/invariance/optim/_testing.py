"""Seeded problems shared by the optim tests, the golden recorder and the benches (private)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from invariance.optim._projection import _cos, _row_stats

__all__ = ["ParityNet", "run_parity_problem", "which_views_fire"]


class ParityNet(nn.Module):
    """Tiny net whose weights trigger each AdamP branch.

    ``conv.weight`` feeds a BatchNorm (channel view fires), ``lin1.weight`` feeds a LayerNorm over
    all its outputs (only the layer view fires), ``lin2.weight`` feeds the loss directly (no view
    fires), and the norms/bias are 1-D.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.lin1 = nn.Linear(27, 6, bias=False)
        self.ln = nn.LayerNorm(6)
        self.lin2 = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.lin2(torch.tanh(self.ln(self.lin1(h))))


def _problem(seed: int, dtype: torch.dtype) -> tuple[ParityNet, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = ParityNet()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    model = model.to(dtype)
    x = torch.randn(16, 2, 3, 3, generator=g, dtype=dtype)
    y = torch.randn(16, 2, generator=g, dtype=dtype)
    return model, x, y


def run_parity_problem(
    make_opt: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    *,
    steps: int = 15,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Train :class:`ParityNet` for ``steps`` full-batch steps; return the final parameters."""
    model, x, y = _problem(seed, dtype)
    opt = make_opt(list(model.parameters()))
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def which_views_fire(seed: int = 0, delta: float = 0.1, eps: float = 1e-8) -> dict[str, str]:
    """Which AdamP view fires for each >=2-D parameter of the parity problem at step 1."""
    model, x, y = _problem(seed, torch.float64)
    (model(x) - y).pow(2).mean().backward()
    out = {}
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        dot, pn2, gn2 = _row_stats(p.detach(), p.grad)
        row_len = p.numel() // p.shape[0]
        if _cos(dot, pn2, gn2, eps).max() < delta / row_len**0.5:
            out[name] = "channel"
        elif _cos(dot.sum(), pn2.sum(), gn2.sum(), eps) < delta / p.numel() ** 0.5:
            out[name] = "layer"
        else:
            out[name] = "none"
    return out
