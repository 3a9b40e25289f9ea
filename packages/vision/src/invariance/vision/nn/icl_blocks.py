"""Building blocks of the InvariantSelectPR experiment: a tiny random convolutional trunk (a
stand-in for the pretrained backbone in unit tests, no weights needed) and a compact tensor
codec for JSON caches of frozen features."""

from __future__ import annotations

import base64

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int

__all__ = ["tiny_trunk", "tensor_to_json", "tensor_from_json"]


def tiny_trunk(width: int = 16, out_dim: int = 64, *, seed: int = 0) -> nn.Sequential:
    """A randomly initialised 3-stage conv trunk ``(n, 3, H, W) -> (n, out_dim, H/4, W/4)``
    (Conv-BN-ReLU, stride 2 twice), seeded, in eval mode. Random convolutional features already
    separate digits a little, so tests of the selection pipeline are not vacuous."""
    check_int(width, "width")
    check_int(out_dim, "out_dim")
    check_int(seed, "seed", lo=0)
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, out_dim, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return net.eval()


def tensor_to_json(x: Tensor) -> dict:
    """A float32 tensor as ``{"shape", "b64"}`` (its raw little-endian bytes in base64)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    a = x.detach().to(torch.float32).contiguous().cpu().numpy()
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def tensor_from_json(d: dict) -> Tensor:
    """Inverse of :func:`tensor_to_json`."""
    if not isinstance(d, dict) or "shape" not in d or "b64" not in d:
        raise ValueError("d must be a dict with 'shape' and 'b64' (from tensor_to_json)")
    raw = bytearray(base64.b64decode(d["b64"]))
    return torch.frombuffer(raw, dtype=torch.float32).reshape(d["shape"]).clone()
