"""Signal augmentations with torchaudio: time stretch, a fast pitch shift, reverberation with
room impulse responses, additive noise at a given SNR, and the random chain used in training.

Every function takes a float waveform ``(..., time)`` and validates its arguments (errors name the
argument). :func:`pitch_shift` is torchaudio's algorithm (phase-vocoder stretch by ``1/r``, then
resampling back) with the resampling ratio rounded to a multiple of 100 Hz: the stock
``torchaudio.functional.pitch_shift`` resamples ``int(sr / r) -> sr``, a ratio whose gcd is
usually 1, so its polyphase kernel is huge and one call on 1 s of 16 kHz audio takes ~20 s on a
CPU; the rounded ratio changes the shift by under 0.03 semitones.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
from torch import Tensor

from invariance.sequence._checks import check_float, check_int, check_tensor

__all__ = [
    "AUGMENTATIONS",
    "time_stretch",
    "pitch_shift",
    "synthetic_rir",
    "reverb",
    "add_noise",
    "augment",
    "random_augment",
]

#: the augmentation families of the paper, in the order of the UED tables
AUGMENTATIONS = ("stretch", "pitch", "reverb", "noise")


def _wave(name: str, x: Tensor) -> Tensor:
    check_tensor(name, x, floating=True)
    if x.dim() not in (1, 2):
        raise ValueError(f"{name} must be (time,) or (channels, time), got shape {tuple(x.shape)}")
    if x.shape[-1] < 64:
        raise ValueError(f"{name} must hold at least 64 samples, got {x.shape[-1]}")
    if bool((x == 0).all()):
        raise ValueError(f"{name} is silent (all zeros)")
    return x


def _stft_stretch(x: Tensor, rate: float, n_fft: int, hop: int) -> Tensor:
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    win = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(flat, n_fft, hop, window=win, center=True, return_complex=True)
    adv = torch.linspace(0, math.pi * hop, spec.shape[-2], dtype=x.dtype, device=x.device)[:, None]
    spec = AF.phase_vocoder(spec, rate, adv)
    n = int(round(shape[-1] / rate))
    y = torch.istft(spec, n_fft, hop, window=win, length=n)
    return y.reshape(*shape[:-1], n)


def time_stretch(x: Tensor, rate: float, *, n_fft: int = 512, hop_length: int = 128) -> Tensor:
    """Phase-vocoder time stretch: ``rate > 1`` speeds up (length ``round(len / rate)``), pitch
    kept."""
    _wave("x", x)
    check_float("rate", rate, 0.25, 4.0)
    check_int("n_fft", n_fft, 16)
    check_int("hop_length", hop_length, 1, n_fft)
    return _stft_stretch(x, float(rate), n_fft, hop_length)


def pitch_shift(
    x: Tensor,
    sample_rate: int,
    n_steps: float,
    *,
    bins_per_octave: int = 12,
    n_fft: int = 512,
    hop_length: int = 128,
) -> Tensor:
    """Shift the pitch by ``n_steps`` semitones keeping the length: stretch by ``r = 2^(-n/12)``
    with the phase vocoder, then resample ``round(sr / r, -2) -> sr`` (gcd >= 100, a small
    polyphase kernel) and crop/pad to the input length."""
    _wave("x", x)
    check_int("sample_rate", sample_rate, 1000)
    check_float("n_steps", n_steps, -24.0, 24.0)
    check_int("bins_per_octave", bins_per_octave, 1)
    check_int("n_fft", n_fft, 16)
    check_int("hop_length", hop_length, 1, n_fft)
    if n_steps == 0:
        return x.clone()
    rate = 2.0 ** (-float(n_steps) / bins_per_octave)
    y = _stft_stretch(x, rate, n_fft, hop_length)
    orig = max(100, int(round(sample_rate / rate / 100.0)) * 100)
    y = AF.resample(y, orig, sample_rate)
    n = x.shape[-1]
    if y.shape[-1] >= n:
        return y[..., :n]
    return torch.nn.functional.pad(y, (0, n - y.shape[-1]))


def synthetic_rir(
    sample_rate: int,
    rt60: float = 0.3,
    *,
    direct: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A room impulse response: a direct path of weight ``direct`` at t=0, then Gaussian noise
    under an exponential decay reaching -60 dB at ``rt60`` seconds; unit L2 norm."""
    check_int("sample_rate", sample_rate, 1000)
    check_float("rt60", rt60, 0.01, 5.0)
    check_float("direct", direct, 0.0)
    n = int(rt60 * sample_rate)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    h = torch.randn(n, generator=generator, dtype=torch.float64) * torch.exp(-6.9078 * t / rt60)
    h = h * 0.2
    h[0] = direct
    h = h / h.norm()
    return h.float()


def reverb(x: Tensor, rir: Tensor) -> Tensor:
    """Convolve with a room impulse response (``F.fftconvolve``), cropped to the input length."""
    _wave("x", x)
    check_tensor("rir", rir, ndim=1, floating=True)
    if float(rir.abs().sum()) == 0.0:
        raise ValueError("rir is all zeros")
    return AF.fftconvolve(x, rir.to(x.dtype).expand(*x.shape[:-1], -1))[..., : x.shape[-1]]


def add_noise(
    x: Tensor,
    snr_db: float,
    noise: Tensor | None = None,
    *,
    color: str = "white",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Add ``noise`` (default: fresh white or pink Gaussian noise) scaled so that
    ``10 log10(P_x / P_noise) = snr_db`` (``torchaudio.functional.add_noise``)."""
    _wave("x", x)
    check_float("snr_db", snr_db, -30.0, 80.0)
    if color not in ("white", "pink"):
        raise ValueError(f"color must be 'white' or 'pink', got {color!r}")
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        if color == "pink":
            f = torch.fft.rfft(noise)
            k = torch.arange(f.shape[-1], dtype=torch.float64).clamp_min(1.0)
            noise = torch.fft.irfft(f / k.sqrt(), n=x.shape[-1])
        noise = noise.to(x.dtype)
    else:
        check_tensor("noise", noise, floating=True)
        if noise.shape != x.shape:
            raise ValueError(
                f"noise must have the shape of x {tuple(x.shape)}, got {tuple(noise.shape)}"
            )
        if float(noise.abs().max()) == 0.0:
            raise ValueError("noise is all zeros")
    snr = torch.full(x.shape[:-1], float(snr_db), dtype=x.dtype)
    return AF.add_noise(x, noise, snr)


def augment(x: Tensor, kind: str, sample_rate: int, generator: torch.Generator) -> Tensor:
    """One augmentation of family ``kind`` (``stretch`` rate U[0.8, 1.25] away from 1, ``pitch``
    +-U[1.5, 3.5] semitones, ``reverb`` RT60 U[0.2, 0.6] s, ``noise`` white or pink at U[5, 15]
    dB SNR) with parameters drawn from ``generator``."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"kind must be one of {AUGMENTATIONS}, got {kind!r}")

    def u(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
    if kind == "stretch":
        return time_stretch(x, 1.0 / u(1.1, 1.25) if sign < 0 else u(1.1, 1.25))
    if kind == "pitch":
        return pitch_shift(x, sample_rate, sign * u(1.5, 3.5))
    if kind == "reverb":
        return reverb(
            x, synthetic_rir(sample_rate, u(0.2, 0.6), direct=u(0.5, 1.0), generator=generator)
        )
    color = "white" if sign > 0 else "pink"
    return add_noise(x, u(5.0, 15.0), color=color, generator=generator)


def random_augment(
    x: Tensor, sample_rate: int, generator: torch.Generator, p: float = 0.5
) -> Tensor:
    """The training chain: each family of :data:`AUGMENTATIONS` applied with probability ``p``, in
    order (at least one is applied)."""
    check_float("p", p, 0.0, 1.0)
    on = [float(torch.rand((), generator=generator)) < p for _ in AUGMENTATIONS]
    if not any(on):
        on[int(torch.randint(len(on), (), generator=generator))] = True
    for kind, flag in zip(AUGMENTATIONS, on):
        if flag:
            x = augment(x, kind, sample_rate, generator)
    return x
