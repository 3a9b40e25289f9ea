r"""Batch Styles Standardization (Scalbert, Vakalopoulou, Couzinie-Devy, ICLR 2024).

"Towards domain-invariant Self-Supervised Learning with Batch Styles Standardization",
arXiv:2303.06088. No official repository was found; this is an independent implementation from
the paper's description (no code or text copied).

Mechanism. For one view-batch :math:`X_1..X_N` (after the per-image SSL augmentations of that
view) take the 2-D FFT of every image and channel, :math:`F_i = A_i e^{i P_i}`. Draw ONE area
ratio :math:`r \sim U(r_{min}, r_{max})` and ONE reference index :math:`j` for the whole batch.
A rectangular low-frequency mask :math:`M_r` on the centred spectrum (half-sizes
:math:`\lfloor \sqrt{r} H/2 \rfloor`, :math:`\lfloor \sqrt{r} W/2 \rfloor` around the DC bin at
``(H//2, W//2)``, inclusive; symmetric, so the new spectrum stays Hermitian and the output real)
selects the "style" amplitudes:

* ``mode="swap"`` (amplitude swap, FDA-style): :math:`\hat A_i = M_r A_j + (1 - M_r) A_i`;
* ``mode="mix"`` (amplitude mix, FACT-style): :math:`\hat A_i = M_r((1-\lambda)A_i+\lambda A_j)
  + (1 - M_r) A_i` with ONE :math:`\lambda \sim U(\lambda_{min}, \lambda_{max})` per batch;

and :math:`\hat X_i = \mathrm{Re}\,\mathrm{IFFT2}(\hat A_i e^{i P_i})`, optionally clipped to
[0, 1]. Every image of the batch then carries the reference's style, so SSL negatives cannot be
told apart by style, while the two views of an image (standardised with different references)
teach style invariance. ``per_image=True`` draws an independent reference and ratio per image:
the ordinary per-image Fourier augmentation used as control. ``window="fda"`` reproduces the
window of albumentations' ``fourier_domain_adaptation`` (centre ``(H-1)/2``), which misses the
DC bin on even sizes; the default ``"centered"`` window always contains it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["batch_styles_standardization", "BSS", "low_frequency_mask"]


def low_frequency_mask(
    h: int, w: int, r: float | Tensor, *, window: str = "centered", device=None
) -> Tensor:
    """Boolean mask on the CENTRED (fftshift-ed) spectrum, shape (h, w) or (n, h, w).

    ``centered``: rows ``[h//2 - bh, h//2 + bh]``, ``bh = floor(sqrt(r) h / 2)`` (same for
    columns), always containing the DC bin. ``fda``: albumentations' window
    ``[floor(c - b), floor(c + b))`` with ``c = (h-1)/2``, ``b = floor(min(h, w) * r)`` (``r`` is
    then FDA's ``beta``).
    """
    r_t = torch.as_tensor(r, dtype=torch.float64).reshape(-1)
    if (r_t < 0).any() or (r_t > 1).any():
        raise ValueError(f"area ratio r must lie in [0, 1], got {r_t.tolist()}")
    rows = torch.arange(h, device=device, dtype=torch.float64)[None, :]
    cols = torch.arange(w, device=device, dtype=torch.float64)[None, :]
    rr = r_t.to(device)[:, None]
    if window == "centered":
        bh = torch.floor(rr.sqrt() * h / 2)
        bw = torch.floor(rr.sqrt() * w / 2)
        mr = (rows >= h // 2 - bh) & (rows <= h // 2 + bh)
        mc = (cols >= w // 2 - bw) & (cols <= w // 2 + bw)
    elif window == "fda":
        b = torch.floor(min(h, w) * rr)
        ch, cw = (h - 1) / 2.0, (w - 1) / 2.0
        mr = (rows >= torch.floor(ch - b)) & (rows < torch.floor(ch + b))
        mc = (cols >= torch.floor(cw - b)) & (cols < torch.floor(cw + b))
    else:
        raise ValueError(f"window must be 'centered' or 'fda', got {window!r}")
    m = mr[:, :, None] & mc[:, None, :]
    return m[0] if torch.as_tensor(r).dim() == 0 else m


def _check_unit(name: str, v: object) -> None:
    """``v`` is None or a finite number in [0, 1]."""
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1] or None, got {type(v).__name__}")
    if not 0 <= v <= 1:  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got {v!r}")


def _check_range(name: str, v: object) -> None:
    """``v`` is a (lo, hi) pair with 0 <= lo <= hi <= 1."""
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"{name} must be a (lo, hi) pair, got {v!r}")
    for x in v:
        _check_unit(name, x)
    if v[0] > v[1]:
        raise ValueError(f"{name} must satisfy 0 <= lo <= hi <= 1, got {tuple(v)}")


def batch_styles_standardization(
    x: Tensor,
    *,
    r: float | None = None,
    r_range: tuple[float, float] = (0.01, 0.3),
    ref_index: int | None = None,
    mode: str = "swap",
    lam: float | None = None,
    lam_range: tuple[float, float] = (0.5, 1.0),
    window: str = "centered",
    per_image: bool = False,
    clip: bool = True,
    generator: torch.Generator | None = None,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, dict]:
    """Standardise the Fourier-amplitude style of a batch to one reference image.

    Args:
        x: (N, C, H, W) real, finite images, N >= 1; in [0, 1] when ``clip`` (other values
            raise ``ValueError`` instead of being clipped silently).
        r: area ratio of the low-frequency window; drawn from ``r_range`` when None.
        r_range: range of the per-batch area ratio (default: (0.01, 0.3)).
        ref_index: reference image; drawn uniformly when None.
        mode: ``"swap"`` (amplitude swap) or ``"mix"`` (amplitude mix) (default: ``"swap"``).
        lam: mixing weight in [0, 1] for ``mode="mix"``; drawn from ``lam_range`` when None.
        window: ``"centered"`` (default) or ``"fda"`` (albumentations' window, ``r`` = beta).
        per_image: independent reference/ratio per image (the per-image control, not BSS).
        clip: the input must lie in [0, 1] and the output is clipped to [0, 1] (default:
            True); with ``clip=False`` any real input is accepted and nothing is clipped.
        generator: source of randomness for r, lambda and the reference.
        return_info: also return ``{"ref_index", "r", "lam", "max_imag"}``.

    Returns:
        (N, C, H, W) tensor (and the info dict).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"x must be a real floating tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x must be a non-empty batch, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or inf")
    if clip and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(
            f"x must hold images in [0, 1] when clip=True, got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (pass clip=False for other ranges)"
        )
    if mode not in ("swap", "mix"):
        raise ValueError(f"mode must be 'swap' or 'mix', got {mode!r}")
    _check_range("r_range", r_range)
    _check_range("lam_range", lam_range)
    _check_unit("r", r)
    _check_unit("lam", lam)
    n, _, h, w = x.shape
    if ref_index is not None and (
        isinstance(ref_index, bool) or not isinstance(ref_index, int) or not -n <= ref_index < n
    ):
        raise ValueError(f"ref_index {ref_index!r} out of range for a batch of {n}")
    k = n if per_image else 1

    def draw(lo_hi, fixed):
        if fixed is not None:
            return torch.full((k,), float(fixed), dtype=torch.float64)
        a, b = lo_hi
        return a + (b - a) * torch.rand(k, generator=generator, dtype=torch.float64)

    rs = draw(r_range, r)
    lams = draw(lam_range, lam) if mode == "mix" else torch.ones(k, dtype=torch.float64)
    if ref_index is not None:
        refs = torch.full((k,), ref_index % n, dtype=torch.long)
    else:
        refs = torch.randint(0, n, (k,), generator=generator)
    if per_image:
        mask = low_frequency_mask(h, w, rs, window=window, device=x.device)  # (n, h, w)
        src = refs
    else:
        mask = low_frequency_mask(h, w, rs[0].item(), window=window, device=x.device)[None]
        src = refs.expand(n)
    mask = mask[:, None].to(x.dtype)  # (n or 1, 1, h, w)
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    amp, phase = spec.abs(), torch.angle(spec)
    lam_t = lams.to(x.dtype).to(x.device).view(-1, 1, 1, 1)
    target = (1 - lam_t) * amp + lam_t * amp[src]
    new_amp = mask * target + (1 - mask) * amp
    out_c = torch.fft.ifft2(torch.fft.ifftshift(torch.polar(new_amp, phase), dim=(-2, -1)))
    out = out_c.real
    if clip:
        out = out.clamp(0.0, 1.0)
    if return_info:
        info = {
            "ref_index": refs.tolist() if per_image else int(refs[0]),
            "r": rs.tolist() if per_image else float(rs[0]),
            "lam": lams.tolist() if per_image else float(lams[0]),
            "max_imag": float(out_c.imag.abs().max()),
        }
        return out, info
    return out


class BSS(nn.Module):
    """Batch Styles Standardization as a batch transform (no parameters, pure ``forward``).

    Args:
        r_range (tuple): range of the per-batch area ratio (default: (0.01, 0.3)).
        mode (str): ``"swap"`` or ``"mix"`` (default: ``"swap"``).
        lam_range (tuple): range of lambda for ``mode="mix"`` (default: (0.5, 1.0)).
        window (str): ``"centered"`` or ``"fda"`` (default: ``"centered"``).
        per_image (bool): per-image control instead of batch standardisation (default: False).
        clip (bool): clip to [0, 1] (default: True).
        p (float): probability of applying it to a batch (default: 1.0).

    Shapes:
        (N, C, H, W) -> (N, C, H, W).

    Invariance:
        with r = 1 and mode="swap" (clip off) the output is invariant to any change of the
        Fourier amplitudes (style) of the non-reference images, e.g. positive rescaling or a
        zero-phase blur; for any r the low-frequency amplitudes of every output equal the
        reference's and the phases of every image are kept.
    """

    def __init__(
        self,
        *,
        r_range: tuple[float, float] = (0.01, 0.3),
        mode: str = "swap",
        lam_range: tuple[float, float] = (0.5, 1.0),
        window: str = "centered",
        per_image: bool = False,
        clip: bool = True,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("swap", "mix"):
            raise ValueError(f"mode must be 'swap' or 'mix', got {mode!r}")
        if window not in ("centered", "fda"):
            raise ValueError(f"window must be 'centered' or 'fda', got {window!r}")
        _check_range("r_range", r_range)
        _check_range("lam_range", lam_range)
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p must be a number in [0, 1], got {type(p).__name__}")
        if not 0 <= p <= 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.r_range, self.mode, self.lam_range = tuple(r_range), mode, tuple(lam_range)
        self.window, self.per_image, self.clip, self.p = window, per_image, clip, p

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.p < 1 and torch.rand((), generator=generator).item() >= self.p:
            return x
        return batch_styles_standardization(
            x,
            r_range=self.r_range,
            mode=self.mode,
            lam_range=self.lam_range,
            window=self.window,
            per_image=self.per_image,
            clip=self.clip,
            generator=generator,
        )

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(r_range={self.r_range}, mode={self.mode!r}, "
            f"window={self.window!r}, per_image={self.per_image}, clip={self.clip}, "
            f"p={self.p})"
        )
