"""Class-conditional diffusion building blocks on ``diffusers`` (used by InvDiff).

* :func:`class_unet`: a small ``diffusers.UNet2DModel`` with class embeddings (the class enters
  through the time embedding);
* :func:`cond_class_unet` / :class:`CrossAttnClassUNet`: a small
  ``diffusers.UNet2DConditionModel`` conditioned by cross-attention on learned class tokens (the
  way Stable Diffusion, InvDiff's official backbone, is conditioned on a prompt's text tokens);
  called like the other, ``model(x_t, t, class_labels=c)``;
* :func:`noise_prediction`: the tensor out of any UNet call (``.sample``, a tuple or a tensor);
* :func:`denoising_losses`: per-sample epsilon-prediction MSE at random timesteps (training loss);
* :func:`per_sample_losses`: per-sample denoising loss of a frozen model over fixed timesteps
  (the signal InvDiff's group inference maximises over);
* :func:`ddim_sample`: the class-conditional DDIM loop (``DDPMPipeline`` takes no class labels).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor

__all__ = [
    "class_unet",
    "cond_class_unet",
    "CrossAttnClassUNet",
    "noise_prediction",
    "denoising_losses",
    "per_sample_losses",
    "ddim_sample",
]


def class_unet(
    size: int = 8, width: int = 16, n_classes: int = 2, channels: int = 3, *, levels: int = 2
) -> UNet2DModel:
    """``UNet2DModel`` with ``levels`` resolution levels of ``width * 2**i`` channels, one ResNet
    layer per block, GroupNorm with 8 groups and ``num_class_embeds=n_classes``."""
    check_int(size, "size", lo=4)
    check_int(width, "width", lo=8)
    check_int(n_classes, "n_classes")
    check_int(channels, "channels")
    check_int(levels, "levels")
    if width % 8:
        raise ValueError(f"width must be a multiple of 8 (GroupNorm with 8 groups), got {width}")
    if size % (2 ** (levels - 1)):
        raise ValueError(f"size must be divisible by 2**(levels-1) = {2 ** (levels - 1)}")
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=tuple(width * 2**i for i in range(levels)),
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        norm_num_groups=8,
        num_class_embeds=n_classes,
    )


def _check_timestep(t: Any, batch: int, name: str = "timestep") -> None:
    """A timestep is a number, a 0-d tensor or a ``(B,)`` / ``(1,)`` tensor of finite values."""
    if isinstance(t, Tensor):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} holds NaN or inf")
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, batch)):
            raise ValueError(f"{name} must be a scalar or ({batch},), got {tuple(t.shape)}")
    elif isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"{name} must be a tensor or a number, got {type(t).__name__}")


class CrossAttnClassUNet(nn.Module):
    """A ``UNet2DConditionModel`` conditioned on a class through cross-attention.

    Each class has ``n_tokens`` learned tokens of size ``unet.config.cross_attention_dim``
    (:meth:`encode`); they are the ``encoder_hidden_states`` every cross-attention block attends
    to, as a prompt's text-encoder tokens are in Stable Diffusion. ``forward(x_t, t,
    class_labels=c)`` (or ``encoder_hidden_states=...`` directly) returns the UNet's output, so
    the model drops in wherever :func:`class_unet` is used (training losses, DDIM sampling,
    :class:`~invariance.vision.invdiff.DeltaGuidedUNet`). ``config`` and ``conv_out`` are the
    UNet's.
    """

    def __init__(self, unet: UNet2DConditionModel, n_classes: int, *, n_tokens: int = 1) -> None:
        super().__init__()
        if not isinstance(unet, UNet2DConditionModel):
            raise TypeError(f"unet must be a UNet2DConditionModel, got {type(unet).__name__}")
        self.n_classes = check_int(n_classes, "n_classes")
        self.n_tokens = check_int(n_tokens, "n_tokens")
        self.unet = unet
        dim = unet.config.cross_attention_dim
        self.class_tokens = nn.Embedding(n_classes, n_tokens * dim)
        nn.init.normal_(self.class_tokens.weight, std=dim**-0.5)

    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def conv_out(self) -> nn.Module:
        return self.unet.conv_out

    def encode(self, class_labels: Tensor) -> Tensor:
        """``(B,)`` class indices -> ``(B, n_tokens, cross_attention_dim)`` tokens."""
        check_tensor(class_labels, "class_labels", dims=1, floating=False)
        if class_labels.numel() and (
            int(class_labels.min()) < 0 or int(class_labels.max()) >= self.n_classes
        ):
            raise ValueError(f"class_labels must be in [0, {self.n_classes})")
        return self.class_tokens(class_labels).view(len(class_labels), self.n_tokens, -1)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | int | float,
        class_labels: Tensor | None = None,
        *,
        encoder_hidden_states: Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        check_tensor(sample, "sample", dims=4, expected="(B, C, H, W) noisy images")
        _check_timestep(timestep, sample.shape[0])
        if encoder_hidden_states is None:
            if class_labels is None:
                raise ValueError("class_labels (or encoder_hidden_states) is required")
            if class_labels.shape[:1] != sample.shape[:1]:
                raise ValueError(f"class_labels must be ({sample.shape[0]},) class indices")
            encoder_hidden_states = self.encode(class_labels)
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict
        )


def cond_class_unet(
    size: int = 8,
    width: int = 16,
    n_classes: int = 2,
    channels: int = 3,
    *,
    levels: int = 2,
    cross_attention_dim: int = 32,
    n_tokens: int = 1,
    head_dim: int = 8,
) -> CrossAttnClassUNet:
    """:class:`CrossAttnClassUNet` around a ``UNet2DConditionModel`` with the layout of
    :func:`class_unet` (``levels`` levels of ``width * 2**i`` channels, one ResNet layer per
    block, GroupNorm with 8 groups) whose every down/up block and the mid block carry a
    transformer with self- and cross-attention (heads of ``head_dim`` channels)."""
    check_int(size, "size", lo=4)
    check_int(width, "width", lo=8)
    check_int(n_classes, "n_classes")
    check_int(channels, "channels")
    check_int(levels, "levels")
    check_int(cross_attention_dim, "cross_attention_dim")
    check_int(head_dim, "head_dim")
    if width % 8:
        raise ValueError(f"width must be a multiple of 8 (GroupNorm with 8 groups), got {width}")
    if width % head_dim:
        raise ValueError(f"width ({width}) must be a multiple of head_dim ({head_dim})")
    if size % (2 ** (levels - 1)):
        raise ValueError(f"size must be divisible by 2**(levels-1) = {2 ** (levels - 1)}")
    chans = tuple(width * 2**i for i in range(levels))
    unet = UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=chans,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        # diffusers' (legacy) name: the number of heads per level
        attention_head_dim=tuple(c // head_dim for c in chans),
    )
    return CrossAttnClassUNet(unet, n_classes, n_tokens=n_tokens)


def noise_prediction(out: Any) -> Tensor:
    """The prediction tensor of a UNet call: ``out.sample``, ``out[0]`` of a tuple, or ``out``."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"a UNet must return a Tensor, a (Tensor, ...) tuple or .sample, got {out!r}")


def _check_batch(x0: Tensor, labels: Tensor) -> None:
    check_tensor(x0, "x0", dims=4, expected="(B, C, H, W)")
    check_tensor(labels, "labels", dims=1, floating=False, expected="(B,) class indices")
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labels.shape[0] != x0.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but x0 has {x0.shape[0]} images")


def denoising_losses(
    model: nn.Module | Any,
    scheduler: DDPMScheduler,
    x0: Tensor,
    labels: Tensor,
    *,
    generator: torch.Generator | None = None,
    snr_gamma: float = 0.0,
) -> Tensor:
    """Per-sample epsilon-prediction MSE ``mean_{c,h,w} (eps_model(x_t, t, c) - eps)^2`` at
    ``t ~ U{0..T-1}`` and fresh Gaussian noise (the DDPM training loss before the batch mean);
    shape ``(B,)``. ``snr_gamma > 0`` weights each sample by Min-SNR-gamma,
    ``min(SNR_t, gamma) / SNR_t`` with ``SNR_t = abar_t / (1 - abar_t)`` (diffusers'
    ``train_text_to_image.py --snr_gamma``, which InvDiff's training script inherits): the
    low-noise steps, where the image is nearly given, count less."""
    _check_batch(x0, labels)
    check_number(snr_gamma, "snr_gamma", lo=0.0)
    b = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    t = t.to(x0.device)
    xt = scheduler.add_noise(x0, noise, t)
    pred = noise_prediction(model(xt, t, class_labels=labels))
    loss = (pred.float() - noise.float()).pow(2).flatten(1).mean(1)
    if snr_gamma > 0:
        abar = scheduler.alphas_cumprod.to(loss.device)[t]
        snr = abar / (1 - abar)
        loss = loss * (snr.clamp(max=snr_gamma) / snr).float()
    return loss


@torch.no_grad()
def per_sample_losses(
    model: nn.Module | Any,
    scheduler: DDPMScheduler,
    x0: Tensor,
    labels: Tensor,
    *,
    n_timesteps: int = 16,
    reference: str = "eps",
    random_t: bool = False,
    seed: int = 0,
    batch_size: int = 256,
    reduce: str = "mean",
) -> Tensor:
    """Per-sample denoising loss of a frozen model, the input of InvDiff's group inference.

    ``reference="eps"`` (ours): MSE to the noise target, averaged over ``n_timesteps`` fixed
    timesteps ``t_k = (k + 1/2) T / K`` (random ``t`` per sample and draw when ``random_t``).
    ``reference="x0"`` reproduces the official grouper's quirk: MSE of the noise prediction to
    the *clean* image (with ``n_timesteps=1, random_t=True`` as shipped). Noise is drawn from a
    private generator seeded with ``seed``, so the losses are a deterministic function of the
    model and the data. Returns ``(B,)``, or ``(n_timesteps, B)`` (one row per timestep) with
    ``reduce="none"``.
    """
    _check_batch(x0, labels)
    check_int(n_timesteps, "n_timesteps")
    check_int(batch_size, "batch_size")
    if reference not in ("eps", "x0"):
        raise ValueError(f"reference must be 'eps' or 'x0', got {reference!r}")
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    n_t = scheduler.config.num_train_timesteps
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n_timesteps, x0.shape[0], dtype=torch.float64)
    for k in range(n_timesteps):
        for i in range(0, x0.shape[0], batch_size):
            xb, cb = x0[i : i + batch_size], labels[i : i + batch_size]
            if random_t:
                t = torch.randint(0, n_t, (xb.shape[0],), generator=g)
            else:
                t = torch.full((xb.shape[0],), int((k + 0.5) * n_t / n_timesteps))
            noise = torch.randn(xb.shape, generator=g, dtype=xb.dtype).to(xb.device)
            t = t.to(xb.device)
            pred = noise_prediction(model(scheduler.add_noise(xb, noise, t), t, class_labels=cb))
            ref = noise if reference == "eps" else xb
            out[k, i : i + batch_size] = (pred - ref).double().pow(2).flatten(1).mean(1).cpu()
    return out.float() if reduce == "none" else (out.sum(0) / n_timesteps).float()


@torch.no_grad()
def ddim_sample(
    model: nn.Module | Any,
    labels: Tensor,
    *,
    size: int,
    channels: int = 3,
    steps: int = 20,
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    batch_size: int = 512,
) -> Tensor:
    """Class-conditional DDIM sampling (``DDIMScheduler``, ``clip_sample``) from Gaussian noise
    drawn with ``generator``: ``(len(labels), channels, size, size)`` in ``[-1, 1]``. With the
    same generator state, two models that predict the same noise give the same images."""
    check_tensor(labels, "labels", dims=1, floating=False, expected="(N,) class indices")
    check_int(size, "size", lo=4)
    check_int(channels, "channels")
    check_int(steps, "steps")
    sched = DDIMScheduler(num_train_timesteps=num_train_timesteps, clip_sample=True)
    sched.set_timesteps(steps)
    dev = labels.device
    x = torch.randn((len(labels), channels, size, size), generator=generator).to(dev)
    outs = []
    for i in range(0, len(labels), batch_size):
        xb, cb = x[i : i + batch_size], labels[i : i + batch_size]
        for t in sched.timesteps:
            tt = torch.full((xb.shape[0],), int(t), device=dev, dtype=torch.long)
            eps = noise_prediction(model(xb, tt, class_labels=cb))
            xb = sched.step(eps, t, xb, eta=eta, generator=generator).prev_sample
        outs.append(xb.clamp(-1, 1))
    return torch.cat(outs)
