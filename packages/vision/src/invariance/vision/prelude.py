r"""PreludeNet: a predictive-coding encoder-decoder for depth (Ziskind, Kim, Burachas 2022).

Paper: "Learning Invariant World State Representations with Predictive Coding" (Avi Ziskind,
Sujeong Kim, Giedrius T. Burachas), arXiv:2207.02972. No official code was released; the encoder
is PredNet (Lotter, Kreiman, Cox, "Deep Predictive Coding Networks for Video Prediction and
Unsupervised Learning", ICLR 2017, arXiv:1605.08104; official Keras code coxlab/prednet, MIT),
restated here from the paper's equations.

Mechanism.

* **PredNet encoder** (:class:`PredNet`), layers ``l = 0..L-1`` at time ``t``: a top-down pass
  ``R_l^t = ConvLSTM_l([E_l^{t-1}, Up2(R_{l+1}^t)], R_l^{t-1})`` (no top input at the last
  layer), then a bottom-up pass ``Â_l^t = ReLU(Conv(R_l^t))`` (clipped at 1 for the pixels,
  "SatLU"), ``A_0^t = x_t``, ``A_{l+1}^t = MaxPool2(ReLU(Conv(E_l^t)))`` and the error units
  ``E_l^t = [ReLU(A_l^t - Â_l^t), ReLU(Â_l^t - A_l^t)]``. States start at zero; the gates of
  the ConvLSTM are hard sigmoids as in the Keras original.
* **Predictive-coding loss** (:func:`prediction_error_loss`): ``sum_t w_t sum_l (lambda_l /
  n_l) sum E_l^t`` with ``w_0 = 0`` and ``w_t = 1 / (T - 1)`` otherwise, ``lambda = (1, 0, ..)``
  ("L0") or ``(1, 0.1, ..)`` ("L_all"), ``n_l`` the number of error units of layer ``l``.
* **Predictive decoder** (:class:`PreludeNet`): a top-down ConvLSTM stack that takes the
  encoder's representation and error units ``[R_l^t, E_l^t]`` as lateral inputs (``R^t`` is
  formed before frame ``t`` is seen; ``E^t`` carries what frame ``t`` adds) and the upsampled
  decoder state of the level above, and regresses depth at full resolution (softplus head) for
  the current frame. **Hybrid** training stops the depth gradient at the lateral connections, so the
  encoder learns from the prediction errors only; **supervised** training lets it flow into the
  encoder. (The paper gives no layer-level decoder design; this one is ours.)

Tested properties: error units are non-negative and vanish when the prediction equals the input;
the first frame does not enter the loss; the network is causal (outputs at ``t`` do not change
when later frames change); in hybrid mode the depth loss leaves the encoder's gradients at zero.

Deviations: sizes are CPU-sized (the recipe's presets: channels ``(3, 8, 16)`` or
``(3, 12, 24)``, 4 frames of 24 px); the decoder design is ours (see above).

Speed (same function): one conv per ConvLSTM cell over ``[inputs, h]`` for all four gates, the
conv over the input channels only while the state is zero, channels-last frames on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_tensor

__all__ = ["ConvLSTMCell", "PredNet", "PreludeNet", "DepthUNet", "prediction_error_loss"]


def _hard_sigmoid(x: Tensor) -> Tensor:
    """Keras' hard sigmoid: ``clip(0.2 x + 0.5, 0, 1)``."""
    return (0.2 * x + 0.5).clamp(0, 1)


def _up2(x: Tensor) -> Tensor:
    """Nearest-neighbour 2x upsampling."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: one conv over ``[inputs..., h]`` gives all four gates (fused),
    input/forget/output gates through one (hard) sigmoid call. ``x`` is a tensor or a list of
    tensors concatenated along channels (one copy). With no state (``h = c = 0``) the conv runs
    over the input channels only, which is the same function without the zero half."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, hard: bool = True) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(hidden, "hidden")
        check_int(kernel, "kernel")
        self.hidden, self.hard = hidden, hard
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(
        self, x: Tensor | list[Tensor], state: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if state is None:
            inp = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
            w = self.conv.weight[:, : inp.shape[1]]
            z = F.conv2d(inp, w, self.conv.bias, padding=self.conv.padding)
        else:
            z = self.conv(torch.cat([*xs, state[0]], 1))
        k = 3 * self.hidden
        gates = _hard_sigmoid(z[:, :k]) if self.hard else torch.sigmoid(z[:, :k])
        i, f, o = gates.chunk(3, 1)
        ig = i * torch.tanh(z[:, k:])
        c = ig if state is None else torch.addcmul(ig, f, state[1])
        return o * torch.tanh(c), c


class PredNet(nn.Module):
    """PredNet with ``channels = (C_0, C_1, ...)`` for ``A``/``Â`` and ``r_channels`` for ``R``
    (default: the same). Input ``(B, T, C_0, H, W)`` with ``H, W`` divisible by
    ``2^(L-1)``. ``channels_last``: run the recurrence on channels-last frames (the same
    function; about 10 % faster convolutions on CPU)."""

    def __init__(
        self,
        channels: tuple[int, ...] = (3, 16, 32),
        r_channels: tuple[int, ...] | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        if len(channels) < 1 or any(isinstance(c, bool) or int(c) < 1 for c in channels):
            raise ValueError(f"channels must be positive ints, got {channels}")
        r_channels = tuple(channels) if r_channels is None else tuple(r_channels)
        if len(r_channels) != len(channels):
            raise ValueError("r_channels must have one entry per layer")
        self.channels, self.r_channels, self.L = tuple(channels), r_channels, len(channels)
        self.cells = nn.ModuleList(
            ConvLSTMCell(
                2 * channels[l] + (r_channels[l + 1] if l + 1 < self.L else 0), r_channels[l]
            )
            for l in range(self.L)
        )
        self.ahat = nn.ModuleList(
            nn.Conv2d(r_channels[l], channels[l], 3, padding=1) for l in range(self.L)
        )
        self.a_up = nn.ModuleList(
            nn.Conv2d(2 * channels[l], channels[l + 1], 3, padding=1) for l in range(self.L - 1)
        )

    def forward(self, x: Tensor) -> dict[str, list]:
        """Returns ``errors`` (``[t][l]`` error units), ``R`` (``[t][l]`` representations) and
        ``prediction`` (``(B, T, C_0, H, W)``: ``Â_0^t``, the prediction of frame ``t`` made
        before seeing it)."""
        x = check_tensor(x, "x", dims=5, expected="(B, T, C, H, W)")
        b, T, c, h, w = x.shape
        if c != self.channels[0]:
            raise ValueError(f"x must have {self.channels[0]} channels, got shape {tuple(x.shape)}")
        f = 2 ** (self.L - 1)
        if h % f or w % f:
            raise ValueError(f"x's height and width must be divisible by {f}, got {(h, w)}")
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        states: list[tuple[Tensor, Tensor] | None] = [None] * self.L
        errs: list[Tensor | None] = [None] * self.L
        out_e, out_r, preds = [], [], []
        for t in range(T):
            r_t: list[Tensor] = [None] * self.L  # type: ignore[list-item]
            for l in reversed(range(self.L)):
                s = (h // 2**l, w // 2**l)
                e_prev = errs[l]
                if e_prev is None:
                    e_prev = x.new_zeros(b, 2 * self.channels[l], *s).contiguous(memory_format=fmt)
                inp = [e_prev]
                if l + 1 < self.L:
                    inp.append(_up2(r_t[l + 1]))
                hc = self.cells[l](inp, states[l])
                states[l] = hc
                r_t[l] = hc[0]
            a = x[:, t].contiguous(memory_format=fmt)
            e_t = []
            for l in range(self.L):
                ahat = F.relu(self.ahat[l](r_t[l]))
                if l == 0:
                    ahat = ahat.clamp_max(1.0)
                    preds.append(ahat)
                d = a - ahat
                e = torch.cat([F.relu(d), F.relu(-d)], 1)
                e_t.append(e)
                if l + 1 < self.L:
                    a = F.max_pool2d(F.relu(self.a_up[l](e)), 2)
            errs = e_t
            out_e.append(e_t)
            out_r.append(r_t)
        return {"errors": out_e, "R": out_r, "prediction": torch.stack(preds, 1)}


def prediction_error_loss(errors: list[list[Tensor]], layer_weights: tuple[float, ...]) -> Tensor:
    """PredNet's training loss: ``sum_t w_t sum_l (lambda_l / n_l) sum E_l^t`` averaged over the
    batch, ``w_0 = 0``, ``w_t = 1/(T - 1)``; ``n_l`` is the number of error units per sample."""
    T = len(errors)
    if T < 2:
        raise ValueError(f"errors must cover at least 2 time steps, got {T}")
    if len(layer_weights) != len(errors[0]):
        raise ValueError(
            f"layer_weights must have {len(errors[0])} entries, got {len(layer_weights)}"
        )
    total = errors[0][0].new_zeros(())
    for t in range(1, T):
        for lam, e in zip(layer_weights, errors[t]):
            if lam:
                total = total + lam * e.flatten(1).mean(1).mean() / (T - 1)
    return total


class PreludeNet(nn.Module):
    """PredNet encoder + predictive depth decoder. ``mode="hybrid"``: the depth loss does not
    reach the encoder (laterals detached); ``"supervised"``: it does."""

    def __init__(
        self,
        channels: tuple[int, ...] = (3, 16, 32),
        decoder_channels: tuple[int, ...] = (16, 16, 32),
        mode: str = "hybrid",
    ) -> None:
        super().__init__()
        if mode not in ("hybrid", "supervised"):
            raise ValueError(f"mode must be 'hybrid' or 'supervised', got {mode!r}")
        if len(decoder_channels) != len(channels):
            raise ValueError("decoder_channels must have one entry per encoder layer")
        self.mode = mode
        self.encoder = PredNet(channels)
        L = len(channels)
        rc = self.encoder.r_channels
        self.dec = nn.ModuleList(
            ConvLSTMCell(
                rc[l] + 2 * channels[l] + (decoder_channels[l + 1] if l + 1 < L else 0),
                decoder_channels[l],
            )
            for l in range(L)
        )
        self.head = nn.Conv2d(decoder_channels[0], 1, 3, padding=1)

    def forward(self, x: Tensor) -> dict[str, Tensor | list]:
        """Depth ``(B, T, 1, H, W)`` for every frame, plus the encoder's outputs."""
        enc = self.encoder(x)
        L = self.encoder.L
        states: list[tuple[Tensor, Tensor] | None] = [None] * L
        depths = []
        for r_t, e_t in zip(enc["R"], enc["errors"]):
            d_up = None
            for l in reversed(range(L)):
                lat = [r_t[l], e_t[l]]
                if self.mode == "hybrid":
                    lat = [v.detach() for v in lat]
                inp = lat if d_up is None else [*lat, _up2(d_up)]
                states[l] = self.dec[l](inp, states[l])
                d_up = states[l][0]
            depths.append(F.softplus(self.head(d_up)))
        return {**enc, "depth": torch.stack(depths, 1)}


class DepthUNet(nn.Module):
    """The feed-forward baseline: a small U-Net from one frame to depth (softplus head)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = check_int(width, "width")

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.ReLU()
            )

        self.e1, self.e2, self.e3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.d2, self.d1 = block(6 * w, 2 * w), block(3 * w, w)
        self.head = nn.Conv2d(w, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, 3, H, W)`` or ``(B, T, 3, H, W)`` (frames independently)."""
        x = check_tensor(x, "x", dims=(4, 5))
        seq = x.dim() == 5
        if seq:
            b, t = x.shape[:2]
            x = x.flatten(0, 1)
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"x's height and width must be divisible by 4, got {tuple(x.shape)}")
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        out = F.softplus(self.head(d1))
        return out.unflatten(0, (b, t)) if seq else out
