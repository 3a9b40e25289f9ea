"""InvDiff: invariant guidance for bias mitigation in diffusion models.

Paper: Hou, Wu et al., "InvDiff: Invariant Guidance for Bias Mitigation in Diffusion Models"
(KDD 2025), arXiv 2412.08480. Official code: https://github.com/Hundredl/InvDiff (MIT, (c) 2024
Yueying Wu), a fork of diffusers' ``train_text_to_image.py`` on Stable Diffusion v1.4.

Mechanism (a max-min game on a frozen, biased diffusion model ``eps_base``, no bias labels):

1. **Group inference** (max): record each training sample's denoising loss ``l_i`` under the
   frozen base (:func:`invariance.vision.nn.diffusion.per_sample_losses`), then find soft groups
   ``W`` (rows on the simplex) that maximise the spread of the group risks:
   ``min_W  -std_g(m_g) - beta * min_{i,g} W_ig l_i`` with ``m_g = sum_i W_ig l_i / sum_i W_ig``,
   Adam, projected onto the simplex after every step (:func:`infer_groups`). Pluggable: any
   per-sample score or a known group matrix (oracle) can be passed instead.
2. **Invariant guidance** (min): a small learnable UNet ``eps_delta`` (output conv zero-initialised)
   guides the frozen base, ``eps = eps_base + w * eps_delta`` (:class:`DeltaGuidedUNet`), trained
   with the group-invariance objective ``L = mean_g m_g + lambda * var_g m_g`` over the groups
   present in the batch (:func:`group_invariance_loss`): group-balanced risk plus a V-REx-style
   penalty on the spread of the group risks.
3. **Guided sampling**: the ordinary sampler with the wrapped UNet
   (:func:`invariance.vision.nn.diffusion.ddim_sample`).

The bias of generated images is measured with the official bias score (:func:`bias_score`) from
the predictions of an attribute classifier.

Tested properties (``tests/test_invdiff.py``):

* guidance weight 0, and the zero-initialised delta in residual mode, reproduce the base model and
  the base sampler exactly (``torch.equal``), on both backbones; the convex mix at init gives
  ``(1 - r) eps_base``;
* training the guidance leaves every base parameter bit-identical;
* the group loss is invariant to permuting samples (rows of ``l`` and ``W`` together) and group
  columns (``invariance.core.testing``; negative control: grouping by batch position), equals the
  plain mean with one group, the mean of per-group means with one-hot groups and ``lambda = 0``,
  and its penalty is zero when the group risks are equal;
* the grouper's rows are distributions (>= 0, sum 1) and a planted two-level loss vector is split
  perfectly; the bias score is 0 for balanced counts and 1 for one attribute only;
* the Min-SNR-gamma weight equals ``min(SNR_t, gamma) / SNR_t``; per-timestep grouper losses
  average to the averaged ones; the background tint keeps the colour in every pixel;
* golden values from the official ``optimize_weights``, the official group-loss lines,
  ``calculate_debias_score`` and ``EpsilonWithDelta`` (run in a scratch venv; provenance in the
  test).

Deviations:

* Scale: a ``diffusers.UNet2DModel`` with class embeddings on 8x8 biased coloured digits
  (:func:`invariance.vision.data.biased_digits.make_biased_digits`), the class label as the
  "prompt", instead of Stable Diffusion at 512 px with text prompts (no hub, no GPU here). The
  closer backbone is an option (recipe ``backbone="cond"``): a
  ``diffusers.UNet2DConditionModel`` that attends by cross-attention to learned class tokens
  (:class:`invariance.vision.nn.diffusion.CrossAttnClassUNet`), as Stable Diffusion's UNet
  attends to the prompt's text tokens; grouping, guidance and sampling are the same code.
* Default mix is residual (``eps_base + w * eps_delta``, the official ``ratio <= -1`` branch with
  ``w = 1``), so step 0 reproduces the base; the official convex mix (``ratio = 0.8``) starts from
  ``0.2 eps_base`` and is kept as ``mix="convex"``.
* Per-sample losses for grouping: by default the noise target averaged over 16 fixed timesteps
  (the official grouper compares the noise prediction with the *clean* latent at one random
  timestep; kept as ``reference="x0", n_timesteps=1, random_t=True``) and standardised within each
  class (``normalize="class"``) so that groups do not simply split the classes.
* The bias classifier is a small CNN trained on the analog's colour labels, not a ResNet-18.
  Besides the official bias score the recipe reports a direction-aware figure: the per-class
  minority-colour share of the samples and its lower value over classes (data ~0.10, balanced
  0.50), because the bias score cannot tell "copies the data's bias" from "one colour for every
  class".
* The reproduce presets make the small base *learn* the data's bias before it is de-biased:
  the colour also tints the background (``background=0.3``), base and guidance train with
  diffusers' Min-SNR-5 loss weight (the official script's ``--snr_gamma``), the base is sampled
  and guided with EMA weights (``--use_ema``), sampling is ancestral (DDIM with ``eta = 1``;
  deterministic DDIM over-produces the minority colour at this size) and the inferred grouper
  standardises the losses within class at every timestep before averaging
  (``normalize="class_t"``: the minority shows only at mid-range timesteps).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.nn.diffusion import noise_prediction

__all__ = [
    "DeltaGuidedUNet",
    "group_invariance_loss",
    "infer_groups",
    "normalize_losses",
    "grouper_precision_recall",
    "bias_score",
]


class DeltaGuidedUNet(nn.Module):
    """A frozen base noise predictor guided by a learnable one.

    Args:
        base: the biased model (any module called as ``base(x_t, t, **kw)`` returning a tensor,
            a tuple or an object with ``.sample``); frozen here (``requires_grad_(False)``).
        delta: the guidance model with the same call signature and output shape.
        mix: ``"residual"`` (``eps_base + weight * eps_delta``, default) or ``"convex"``
            (``weight * eps_delta + (1 - weight) * eps_base``, the official mix for
            ``-1 < ratio <= 1``).
        weight: guidance weight (the official ``delta_ratio``); 0 gives the base exactly.
        zero_init: zero the delta's ``conv_out`` weight and bias (as the official code does).

    ``forward(x_t, t, **kw)`` returns the mixed prediction tensor.
    """

    def __init__(
        self,
        base: nn.Module,
        delta: nn.Module,
        *,
        mix: str = "residual",
        weight: float = 1.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Module):
            raise TypeError(f"base must be an nn.Module, got {type(base).__name__}")
        if not isinstance(delta, nn.Module):
            raise TypeError(f"delta must be an nn.Module, got {type(delta).__name__}")
        if mix not in ("residual", "convex"):
            raise ValueError(f"mix must be 'residual' or 'convex', got {mix!r}")
        self.weight = check_number(weight, "weight")
        self.mix = mix
        self.base = base.requires_grad_(False)
        self.delta = delta
        if zero_init:
            conv = getattr(delta, "conv_out", None)
            if not isinstance(conv, nn.Conv2d):
                raise ValueError("zero_init needs delta.conv_out to be an nn.Conv2d")
            with torch.no_grad():
                conv.weight.zero_()
                if conv.bias is not None:
                    conv.bias.zero_()

    def train(self, mode: bool = True) -> DeltaGuidedUNet:
        super().train(mode)
        self.base.eval()  # the frozen base never switches to training behaviour
        return self

    def forward(self, x: Tensor, t: Tensor, **kw: Any) -> Tensor:
        check_tensor(x, "x", dims=4, expected="(B, C, H, W) noisy images")
        cfg = getattr(self.base, "config", None)
        if cfg is not None and hasattr(cfg, "block_out_channels"):
            f = 2 ** (len(cfg.block_out_channels) - 1)
            if x.shape[-1] % f or x.shape[-2] % f:
                raise ValueError(f"x must have H and W divisible by {f}, got {tuple(x.shape)}")
            if getattr(cfg, "in_channels", x.shape[1]) != x.shape[1]:
                raise ValueError(f"x must have {cfg.in_channels} channels, got {x.shape[1]}")
        if isinstance(t, Tensor):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError("t holds NaN or inf")
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, x.shape[0])):
                raise ValueError(f"t must be a scalar or ({x.shape[0]},), got {tuple(t.shape)}")
        elif isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"t must be a tensor or a number, got {type(t).__name__}")
        c = kw.get("class_labels")
        n_cls = getattr(cfg, "num_class_embeds", None) if cfg is not None else None
        n_cls = n_cls or getattr(self.base, "n_classes", None)  # CrossAttnClassUNet
        if c is not None:
            check_tensor(c, "class_labels", dims=1, floating=False)
            if c.is_floating_point() or c.shape[0] != x.shape[0]:
                raise ValueError(f"class_labels must be ({x.shape[0]},) integers")
            if n_cls and (int(c.min()) < 0 or int(c.max()) >= n_cls):
                raise ValueError(f"class_labels must be in [0, {n_cls})")
        with torch.no_grad():
            eb = noise_prediction(self.base(x, t, **kw))
        ed = noise_prediction(self.delta(x, t, **kw))
        if ed.shape != eb.shape:
            raise ValueError(f"delta predicts shape {tuple(ed.shape)}, base {tuple(eb.shape)}")
        if self.mix == "residual":
            return eb + self.weight * ed
        return self.weight * ed + (1 - self.weight) * eb


def group_invariance_loss(
    losses: Tensor, groups: Tensor, *, lam: float = 1.0, eps: float = 1e-9
) -> tuple[Tensor, Tensor, Tensor]:
    """InvDiff's debiasing objective on one batch.

    Args:
        losses: ``(B,)`` per-sample losses.
        groups: ``(B, G)`` soft group weights (rows on the simplex; one-hot for hard groups).
        lam: weight of the risk-variance penalty (``lambda``, default ``1``).
        eps: added to each group's soft mass (the official ``1e-9``).

    Returns:
        ``(loss, mean, var)``: ``m_g = sum_i W_ig l_i / (sum_i W_ig + eps)`` over the groups with
        ``m_g > eps`` (groups absent from the batch are dropped), ``mean = mean_g m_g``,
        ``var`` = unbiased variance of the ``m_g`` (0 with one group), ``loss = mean + lam * var``.
    """
    check_tensor(losses, "losses", dims=1, expected="(B,) per-sample losses")
    check_tensor(groups, "groups", dims=2, expected="(B, G) group weights")
    if groups.shape[0] != losses.shape[0]:
        raise ValueError(f"groups has {groups.shape[0]} rows but losses has {losses.shape[0]}")
    if bool((groups < 0).any()):
        raise ValueError("groups must be non-negative (rows on the simplex)")
    check_number(lam, "lam", lo=0.0)
    check_number(eps, "eps", lo=0.0)
    w = groups.to(losses.dtype)
    m = (losses[:, None] * w).sum(0) / (w.sum(0) + eps)
    kept = m[m > eps]
    if kept.numel() == 0:
        kept = m
    mean = kept.mean()
    if kept.numel() > 1:
        var = kept.var()
        return mean + lam * var, mean, var
    return mean, mean, torch.zeros_like(mean)


def normalize_losses(losses: Tensor, labels: Tensor | None = None, mode: str = "class") -> Tensor:
    """Per-sample losses before grouping: ``"none"``, or ``"class"`` (standardise within each
    class, then shift to be positive), so that groups are not just the classes."""
    check_tensor(losses, "losses", dims=1)
    if mode not in ("none", "class"):
        raise ValueError(f"mode must be 'none' or 'class', got {mode!r}")
    if mode == "none":
        return losses
    if labels is None:
        raise ValueError("labels are needed for mode='class'")
    check_tensor(labels, "labels", dims=1, floating=False)
    if labels.shape != losses.shape:
        raise ValueError(f"labels has shape {tuple(labels.shape)}, losses {tuple(losses.shape)}")
    z = torch.empty_like(losses)
    for c in labels.unique():
        sel = labels == c
        v = losses[sel]
        sd = v.std() if v.numel() > 1 else v.new_tensor(1.0)
        z[sel] = (v - v.mean()) / (sd + 1e-12)
    return z - z.min() + 1.0


def infer_groups(
    losses: Tensor,
    n_groups: int = 2,
    *,
    beta: float = 0.0,
    steps: int = 500,
    lr: float = 0.01,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Soft groups that maximise the spread of the group risks (InvDiff's stage 1).

    Minimises ``-std_g(m_g) - beta * min_{i,g} W_ig l_i`` over ``W`` (``m_g`` the ``W``-weighted
    mean loss of group ``g``, unbiased std) with Adam (``lr``, ``steps`` full-batch steps),
    clamping ``W >= 0`` and renormalising every row to sum 1 after each step, as the official
    ``optimize_weights``.

    Args:
        losses: ``(N,)`` per-sample losses (non-negative).
        n_groups: number of groups ``G >= 2``.
        beta: the official ``loss_not_zero_weight`` (default ``0``).
        steps, lr: optimiser steps and Adam learning rate (official: 500, 0.01).
        init: ``(N, G)`` starting weights (default ``U(0, 1)`` from ``generator``).

    Returns:
        ``(N, G)`` weights, every row on the simplex.
    """
    check_tensor(losses, "losses", dims=1, expected="(N,) per-sample losses")
    check_int(n_groups, "n_groups", lo=2)
    check_number(beta, "beta", lo=0.0)
    check_int(steps, "steps", lo=0)
    check_number(lr, "lr", lo=0.0, lo_open=True)
    if losses.shape[0] < n_groups:
        raise ValueError(f"losses has {losses.shape[0]} samples, fewer than n_groups={n_groups}")
    if bool((losses < 0).any()):
        raise ValueError("losses must be non-negative")
    l = losses.detach().reshape(-1, 1).float()
    if init is None:
        w0 = torch.rand((l.shape[0], n_groups), generator=generator)
    else:
        check_tensor(init, "init", dims=2, expected="(N, G) initial weights")
        if tuple(init.shape) != (l.shape[0], n_groups):
            raise ValueError(f"init must have shape {(l.shape[0], n_groups)}, got {init.shape}")
        w0 = init.detach().float()
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            per = l * w
            m = per.sum(0) / w.sum(0)
            obj = -torch.std(m) - beta * per.min()
            obj.backward()
            opt.step()
            with torch.no_grad():
                w.clamp_(min=0.0)
                w.div_(w.sum(1, keepdim=True))
    return w.detach()


def grouper_precision_recall(groups: Tensor, losses: Tensor, minority: Tensor) -> dict[str, float]:
    """Quality of inferred groups against known minority flags: samples hard-assigned
    (``argmax_g W``) to the group with the highest mean loss are the predicted minority;
    returns ``precision``, ``recall`` and ``base_rate`` (share of true minority)."""
    check_tensor(groups, "groups", dims=2)
    check_tensor(losses, "losses", dims=1)
    check_tensor(minority, "minority", dims=1, floating=False)
    if not groups.shape[0] == losses.shape[0] == minority.shape[0]:
        raise ValueError("groups, losses and minority must have the same length")
    hard = groups.argmax(1)
    m = torch.stack(
        [
            losses[hard == g].mean() if bool((hard == g).any()) else losses.new_tensor(-1.0)
            for g in range(groups.shape[1])
        ]
    )
    pred = hard == int(m.argmax())
    true = minority.bool()
    tp = float((pred & true).sum())
    return {
        "precision": tp / max(1.0, float(pred.sum())),
        "recall": tp / max(1.0, float(true.sum())),
        "base_rate": float(true.float().mean()),
    }


def bias_score(prompts: Tensor, attributes: Tensor, n_prompts: int, n_attributes: int) -> Tensor:
    """The official bias score: for each prompt (here: class) ``p`` with attribute counts
    ``c_k``, ``bias_p = sum_{i<j} |c_i - c_j| / sum_k c_k / (K (K - 1) / 2)``; returns the
    ``(n_prompts,)`` scores (0 = balanced, 1 = one attribute only; NaN for a prompt without
    samples). Report their mean."""
    check_tensor(prompts, "prompts", dims=1, floating=False)
    check_tensor(attributes, "attributes", dims=1, floating=False)
    check_int(n_prompts, "n_prompts")
    check_int(n_attributes, "n_attributes", lo=2)
    if prompts.shape != attributes.shape:
        raise ValueError("prompts and attributes must have the same shape")
    if int(prompts.min()) < 0 or int(prompts.max()) >= n_prompts:
        raise ValueError(f"prompts must be in [0, {n_prompts})")
    if int(attributes.min()) < 0 or int(attributes.max()) >= n_attributes:
        raise ValueError(f"attributes must be in [0, {n_attributes})")
    counts = torch.zeros(n_prompts, n_attributes, dtype=torch.float64)
    counts.index_put_((prompts.long(), attributes.long()), torch.ones(len(prompts)).double(), True)
    diff = (counts[:, :, None] - counts[:, None, :]).abs().sum((1, 2)) / 2
    pairs = n_attributes * (n_attributes - 1) / 2
    return diff / counts.sum(1) / pairs
