"""The experiment side of the InvDiff recipe (:mod:`invariance.vision.recipes.invdiff`): the
base's weight average (:class:`EMA`), the training set's groups (:func:`make_groups`), the
colour classifier that reads the bias attribute, the bias of sampled images, one seed of the
reproduce experiment (:func:`run_seed`) and the sample grid."""

from __future__ import annotations

import copy
import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from invariance.core.train import fit
from invariance.vision.data.biased_digits import make_biased_digits
from invariance.vision.invdiff import (
    DeltaGuidedUNet,
    bias_score,
    grouper_precision_recall,
    infer_groups,
    normalize_losses,
)
from invariance.vision.nn.diffusion import ddim_sample, denoising_losses, per_sample_losses

if TYPE_CHECKING:
    from invariance.vision.recipes.invdiff import InvDiffConfig, InvDiffRecipe

__all__ = ["EMA", "attribute_classifier", "make_groups", "run_seed", "sample_bias", "save_grid"]


class EMA:
    """Exponential moving average of a model's parameters (diffusers' ``EMAModel`` without its
    warm-up): ``update(model)`` after each optimiser step, ``copy_to(model)`` at the end.
    ``decay = 0`` keeps the last weights (nothing is averaged)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in model.parameters()] if self.decay else []

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            p.copy_(s)


@lru_cache(maxsize=4)
def attribute_classifier(
    size: int, seed: int = 0, steps: int = 150, background: float = 0.0
) -> tuple[nn.Module, float]:
    """A small CNN that reads the foreground colour (the bias attribute), trained on colour-
    balanced coloured digits of every class (drawn with ``background``); returns
    ``(classifier, held-out accuracy)``."""
    g = torch.Generator().manual_seed(seed + 31337)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed + 31337)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 2),
    )
    torch.random.set_rng_state(torch_state)
    kw = dict(classes=tuple(range(10)), p_bias=0.5, size=size, background=background)
    tr = make_biased_digits(None, seed=seed + 11, split="train", **kw)
    te = make_biased_digits(None, seed=seed + 12, split="test", **kw)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    n = tr["image"].shape[0]
    with torch.enable_grad():
        for _ in range(steps):
            i = torch.randint(0, n, (128,), generator=g)
            loss = nn.functional.cross_entropy(net(tr["image"][i]), tr["attr"][i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((net(te["image"]).argmax(1) == te["attr"]).float().mean())
    return net, acc


def make_groups(
    cfg: InvDiffConfig, base: nn.Module, scheduler: DDPMScheduler, data: dict[str, Tensor]
) -> tuple[Tensor, dict[str, float]]:
    """The training set's group matrix for ``cfg.grouper`` (and, for inferred groups, the
    grouper's precision/recall against the true minority flags)."""
    n = data["image"].shape[0]
    if cfg.grouper == "single":
        return torch.ones(n, 1), {}
    if cfg.grouper == "oracle":
        m = data["minority"].long()
        return torch.nn.functional.one_hot(m, 2).float(), {}
    official = cfg.grouper == "official"
    per_t = not official and cfg.normalize == "class_t"
    base.eval()
    losses = per_sample_losses(
        base,
        scheduler,
        data["image"],
        data["label"],
        n_timesteps=1 if official else cfg.n_timesteps,
        reference="x0" if official else "eps",
        random_t=official,
        seed=cfg.seed + 4242,
        reduce="none" if per_t else "mean",
    )
    if per_t:  # standardise within class at every timestep, then average (each t counts equally)
        losses = torch.stack([normalize_losses(l, data["label"], "class") for l in losses]).mean(0)
    elif not official:
        losses = normalize_losses(losses, data["label"], cfg.normalize)
    g = torch.Generator().manual_seed(cfg.seed + 77)
    w = infer_groups(losses, cfg.n_groups, beta=cfg.beta, steps=cfg.group_steps, generator=g)
    return w, grouper_precision_recall(w, losses, data["minority"])


def sample_bias(
    model: nn.Module,
    base: nn.Module,
    cfg: InvDiffConfig,
    *,
    keep: dict | None = None,
    name: str = "",
    base_cache: dict | None = None,
) -> dict[str, float]:
    """Bias of ``model``'s and ``base``'s samples from the same noise (``n_samples`` per class):
    ``bias`` (the official score), ``minority_share_<k>`` (share of class ``k``'s samples in the
    other colour) and ``min_share`` (the lower of the two: the direction-aware headline, ~0.10
    in the data, 0.50 when balanced, 0 when a class never gets its minority colour), plus
    ``weight0_error``: the largest difference between the base's samples and the guided
    model's at guidance weight 0 (on 8 samples). ``base_cache`` keeps the base's samples for
    further guided models on the same base."""
    clf, acc = attribute_classifier(cfg.size, background=cfg.background)
    labels = torch.arange(2).repeat_interleave(cfg.n_samples)

    def draw(m: nn.Module, lab: Tensor = labels) -> Tensor:
        g = torch.Generator().manual_seed(cfg.seed + 2024)
        return ddim_sample(
            m, lab, size=cfg.size, steps=cfg.sample_steps, generator=g, eta=cfg.sample_eta
        )

    out: dict[str, float] = {"attribute_classifier_acc": acc}
    for tag, m in (("", model), ("_base", base)):
        if tag and base_cache is not None and "x" in base_cache:
            x = base_cache["x"]
        else:
            x = draw(m)
            if tag and base_cache is not None:
                base_cache["x"] = x
        attr = clf(x).argmax(1)
        out[f"bias{tag}"] = float(bias_score(labels, attr, 2, 2).mean())
        for k in range(2):
            sel = labels == k
            out[f"minority_share_{k}{tag}"] = float((attr[sel] != k).float().mean())
        out[f"min_share{tag}"] = min(out[f"minority_share_{k}{tag}"] for k in range(2))
        if keep is not None:
            keep[name if not tag else "base model"] = x[:: max(1, cfg.n_samples // 8)][:16]
    guided = getattr(model, "guided", model)
    if isinstance(guided, DeltaGuidedUNet):
        w, few = guided.weight, labels[:: max(1, len(labels) // 8)]
        guided.weight = 0.0
        try:
            out["weight0_error"] = float((draw(model, few) - draw(base, few)).abs().max())
        finally:
            guided.weight = w
    return out


def run_seed(
    recipe: InvDiffRecipe, cfg: InvDiffConfig, seed: int, arms: dict, grids: dict | None
) -> dict[str, dict]:
    """One seed of the reproduce: the base model once, then every guidance arm on it."""
    from invariance.vision.recipes.invdiff import InvDiffModel, _Digits

    c0 = dataclasses.replace(cfg, seed=seed)
    recipe.cfg = c0
    data = make_biased_digits(
        c0.n_images, seed=seed, p_bias=c0.p_bias, size=c0.size, background=c0.background
    )
    ds = _Digits(data)
    torch.manual_seed(seed)
    proto = InvDiffModel(c0)
    sched = proto.scheduler
    gen = torch.Generator().manual_seed(seed + 1)

    base = proto.guided.base
    opt = torch.optim.AdamW(base.parameters(), lr=c0.lr, weight_decay=0.0)
    ema = EMA(base, c0.ema)

    def base_step(m, b):
        loss = denoising_losses(
            m, sched, b["image"], b["label"], generator=gen, snr_gamma=c0.snr_gamma
        ).mean()
        return {"loss": loss}

    def base_train_step(m, b, o, step):
        out = base_step(m, b)
        o.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), c0.grad_clip)
        o.step()
        ema.update(m)
        return {"loss": out["loss"].detach()}

    fit(
        base,
        opt,
        ds,
        base_step,
        steps=c0.base_steps,
        batch_size=c0.batch_size,
        seed=seed,
        log_every=10**9,
        train_step_fn=base_train_step,
    )
    ema.copy_to(base)
    base.eval().requires_grad_(False)
    out: dict[str, dict] = {}
    base_cache: dict = {}
    test = _Digits(
        make_biased_digits(
            None,
            seed=seed + 1000,
            p_bias=c0.p_bias,
            size=c0.size,
            split="test",
            background=c0.background,
        )
    )
    for arm, over in arms.items():
        c = dataclasses.replace(c0, **over)
        recipe.cfg = c
        torch.manual_seed(seed + 7)
        model = InvDiffModel(c)
        model.guided.base = copy.deepcopy(base)
        w, q = make_groups(c, model.base, sched, data)
        model.groups = w
        if q:
            model.group_quality = torch.tensor([q["precision"], q["recall"], q["base_rate"]])
        model.phase.fill_(1)
        recipe._gen = torch.Generator().manual_seed(seed + 2)
        opt = torch.optim.AdamW(model.guided.delta.parameters(), lr=c.lr, weight_decay=0.0)
        fit(
            model,
            opt,
            ds,
            recipe.step,
            steps=c.steps - c.base_steps,
            batch_size=c.batch_size,
            seed=seed,
            grad_clip=c.grad_clip,
            log_every=10**9,
        )
        recipe._keep, recipe._keep_name, recipe._base_cache = grids, arm, base_cache
        m = recipe.metrics(model, test)
        recipe._keep = recipe._base_cache = None
        if "base model" not in out:
            out["base model"] = {
                k[:-5] if k.endswith("_base") else k: v
                for k, v in m.items()
                if k.endswith("_base") or k == "attribute_classifier_acc"
            }
            out["base model"]["weight0_error"] = 0.0
        out[arm] = {k: v for k, v in m.items() if not k.endswith("_base")}
    return out


def save_grid(grids: dict[str, Tensor], path: Path) -> Path:
    """One row of samples per arm (class 0 left, class 1 right) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grids)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.1 * len(names) + 0.3), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        x = ((grids[name] + 1) / 2).clamp(0, 1)
        row = torch.cat(list(x), dim=2).permute(1, 2, 0).numpy()
        ax.imshow(row, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
