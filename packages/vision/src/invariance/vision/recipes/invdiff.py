"""Recipe of InvDiff (Hou, Wu et al. 2025): config, the registered ``invdiff`` recipe (biased base
model -> group inference -> invariant guidance, in one ``train``), the reproduce experiment on
biased coloured digits and the ``invdiff_guidance`` / ``invdiff_grouper`` benches. The mechanism
is in :mod:`invariance.vision.invdiff`, the diffusion pieces in
:mod:`invariance.vision.nn.diffusion`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDPMScheduler
from torch import Tensor, nn

from invariance.core import groups as G
from invariance.core.recipe import CheckResult, ConfigError, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.core.train import NamedOptimizers, build_optimizer, fit
from invariance.vision.data.biased_digits import make_biased_digits
from invariance.vision.invdiff import (
    DeltaGuidedUNet,
    bias_score,
    group_invariance_loss,
    grouper_precision_recall,
    infer_groups,
    normalize_losses,
)
from invariance.vision.nn.diffusion import (
    class_unet,
    cond_class_unet,
    ddim_sample,
    denoising_losses,
    per_sample_losses,
)
from invariance.vision.recipes._common import mean_sd, reproduce_config

__all__ = [
    "InvDiffConfig",
    "InvDiffRecipe",
    "InvDiffModel",
    "attribute_classifier",
    "make_unet",
]

GROUPERS = ("inferred", "official", "oracle", "single")


@dataclass
class InvDiffConfig(TrainConfig):
    """InvDiff recipe config (tiny preset by default).

    ``steps`` counts all optimiser steps: the first ``base_steps`` train the biased base model,
    the rest train the guidance model on the frozen base. ``grouper``: ``inferred`` (ours:
    class-standardised losses averaged over ``n_timesteps`` fixed timesteps), ``official`` (the
    official grouper's losses: clean-image reference, one random timestep), ``oracle`` (the true
    minority flags as two hard groups) or ``single`` (one group: the ERM-guidance control).
    ``backbone``: ``class`` (``UNet2DModel``, the class added to the time embedding) or ``cond``
    (``UNet2DConditionModel``, cross-attention on learned class tokens, as the official Stable
    Diffusion backbone attends to prompt tokens); base and guidance model use the same one.
    """

    steps: int = 30
    base_steps: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    n_images: int = 128
    size: int = 8
    p_bias: float = 0.9
    width: int = 16
    delta_width: int = 8
    grouper: str = "inferred"
    n_groups: int = 2
    beta: float = 0.0
    group_steps: int = 500
    n_timesteps: int = 16
    normalize: str = "class"
    lam: float = 1.0
    mix: str = "residual"
    weight: float = 1.0
    backbone: str = "class"
    grad_clip: float = 1.0
    sample_steps: int = 10
    n_samples: int = 32

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "base_steps": (0, None),
        "batch_size": (2, None),
        "n_images": (4, None),
        "size": (8, 32),
        "p_bias": (0.0, 1.0),
        "width": (8, None),
        "delta_width": (8, None),
        "n_groups": (2, None),
        "beta": (0.0, None),
        "group_steps": (0, None),
        "n_timesteps": (1, None),
        "lam": (0.0, None),
        "weight": (-10.0, 10.0),
        "grad_clip": (1e-6, None),
        "sample_steps": (1, None),
        "n_samples": (1, None),
    }
    choices: ClassVar[dict] = {
        "grouper": GROUPERS,
        "normalize": ("class", "none"),
        "mix": ("residual", "convex"),
        "backbone": ("class", "cond"),
    }

    def validate(self) -> None:
        super().validate()
        if self.base_steps >= self.steps:
            raise ConfigError(
                f"InvDiffConfig.base_steps ({self.base_steps}) must be < steps ({self.steps}): "
                "the guidance model needs steps of its own"
            )
        for f in ("width", "delta_width"):
            if getattr(self, f) % 8:
                raise ConfigError(f"InvDiffConfig.{f} must be a multiple of 8")
        if self.size % 2:
            raise ConfigError("InvDiffConfig.size must be even")


class _Digits(torch.utils.data.Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}


def _n_groups(cfg: InvDiffConfig) -> int:
    return {"single": 1, "oracle": 2}.get(cfg.grouper, cfg.n_groups)


class InvDiffModel(nn.Module):
    """The trained pipeline: ``guided`` (:class:`DeltaGuidedUNet` over the base) and the
    training set's group weights ``groups`` (N, G); ``phase`` 0 while the base trains, 1 after
    group inference. ``forward`` is the guided noise prediction."""

    def __init__(self, cfg: InvDiffConfig) -> None:
        super().__init__()
        base = make_unet(cfg, cfg.width)
        delta = make_unet(cfg, cfg.delta_width)
        self.guided = DeltaGuidedUNet(base, delta, mix=cfg.mix, weight=cfg.weight)
        self.guided.base.requires_grad_(True)  # phase 0 trains the base
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.register_buffer("groups", torch.zeros(cfg.n_images, _n_groups(cfg)))
        self.register_buffer("phase", torch.zeros((), dtype=torch.long))
        self.register_buffer("group_quality", torch.full((3,), float("nan")))

    @property
    def base(self) -> nn.Module:
        return self.guided.base

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor) -> Tensor:
        return self.guided(x, t, class_labels=class_labels)


_BACKBONES = {
    "class": "UNet2DModel, class embedding",
    "cond": "UNet2DConditionModel, cross-attention on class tokens",
}


def make_unet(cfg: InvDiffConfig, width: int) -> nn.Module:
    """The noise predictor of ``cfg.backbone`` at ``width`` channels (two classes)."""
    if cfg.backbone == "cond":
        return cond_class_unet(cfg.size, width)
    return class_unet(cfg.size, width)


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
    )
    if not official:
        losses = normalize_losses(losses, data["label"], cfg.normalize)
    g = torch.Generator().manual_seed(cfg.seed + 77)
    w = infer_groups(losses, cfg.n_groups, beta=cfg.beta, steps=cfg.group_steps, generator=g)
    return w, grouper_precision_recall(w, losses, data["minority"])


class InvDiffRecipe(Recipe):
    """Biased base diffusion model, group inference from its denoising losses, and the
    invariant guidance model trained with the group-invariance objective."""

    Config = InvDiffConfig
    _keep_name = ""
    # phase 0 (the biased base) trains before the guidance model is used
    unused_parameters = ("guided.delta.",)
    presets = {
        "tiny": {},
        # `reproduce --quick` (3 seeds, 128 s at load 2): far too short to de-bias (lr 3e-3,
        # 150-400 base and 150 guidance steps, fewer images, the cond backbone: none showed it)
        "quick": {
            "base_steps": 150,
            "steps": 210,
            "batch_size": 64,
            "n_images": 360,
            "group_steps": 200,
            "n_timesteps": 4,
            "n_samples": 100,
        },
        # `reproduce` (3 seeds; ~6 CPU-minutes, far longer on a shared box)
        "full": {
            "base_steps": 600,
            "steps": 900,
            "lr": 2e-3,
            "batch_size": 64,
            "n_images": 720,
            "n_timesteps": 16,
            "sample_steps": 20,
            "n_samples": 200,
        },
    }

    def make_data(self, cfg: InvDiffConfig, split: str) -> _Digits:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train/val/test, got {split!r}")
        tr = split == "train"
        d = make_biased_digits(
            cfg.n_images if tr else None,
            seed=cfg.seed if tr else cfg.seed + 1000,
            p_bias=cfg.p_bias,
            size=cfg.size,
            split="train" if tr else "test",
        )
        if tr:
            self._train = d
        return _Digits(d)

    def build(self, cfg: InvDiffConfig) -> InvDiffModel:
        self.cfg = cfg
        self._gen = torch.Generator().manual_seed(cfg.seed + 999)
        return InvDiffModel(cfg)

    def optimizer(self, cfg: InvDiffConfig, model: InvDiffModel) -> NamedOptimizers:
        return NamedOptimizers(
            base=build_optimizer(model.guided.base, cfg.optimizer, lr=cfg.lr),
            delta=build_optimizer(model.guided.delta, cfg.optimizer, lr=cfg.lr),
        )

    def step(self, model: InvDiffModel, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        gen = self._gen if model.training else torch.Generator().manual_seed(0)
        x, c = batch["image"], batch["label"]
        if int(model.phase) == 0:
            loss = denoising_losses(model.base, model.scheduler, x, c, generator=gen).mean()
            return {"loss": loss}
        per = denoising_losses(model, model.scheduler, x, c, generator=gen)
        loss, mean, var = group_invariance_loss(per, model.groups[batch["index"]], lam=self.cfg.lam)
        return {"loss": loss, "group_mean": mean.detach(), "group_var": var.detach()}

    def start_guidance(self, model: InvDiffModel, data: dict[str, Tensor]) -> None:
        """Freeze the base, infer the groups, switch to phase 1."""
        model.guided.base.requires_grad_(False)
        w, q = make_groups(self.cfg, model.base, model.scheduler, data)
        model.groups.copy_(w)
        if q:
            model.group_quality.copy_(torch.tensor([q["precision"], q["recall"], q["base_rate"]]))
        model.phase.fill_(1)

    def train_step(self, model, batch, optimizer, step):
        cfg = self.cfg
        if step < cfg.base_steps:
            name, params = "base", model.guided.base.parameters()
        else:
            if int(model.phase) == 0:
                self.start_guidance(model, self._train)
            name, params = "delta", model.guided.delta.parameters()
        model.train()
        out = self.step(model, batch)
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(list(params), cfg.grad_clip)
        optimizer[name].step()
        return {k: v.detach() for k, v in out.items()}

    def metrics(self, model: InvDiffModel, dataset: _Digits) -> dict[str, float]:
        """``bias``: mean official bias score of ``n_samples`` guided samples per class (colour
        read by :func:`attribute_classifier`); ``bias_base``: the base model from the same
        noise; ``minority_share_<k>``; ``heldout_loss`` (denoising MSE on test digits);
        ``group_precision`` / ``group_recall`` of inferred groups."""
        cfg = self.cfg
        model.eval()
        out = sample_bias(
            model,
            model.base,
            cfg,
            keep=getattr(self, "_keep", None),
            name=self._keep_name,
            base_cache=getattr(self, "_base_cache", None),
        )
        d = dataset.data
        gen = torch.Generator().manual_seed(cfg.seed + 5)
        with torch.no_grad():
            out["heldout_loss"] = float(
                denoising_losses(model, model.scheduler, d["image"], d["label"], generator=gen)
                .mean()
                .item()
            )
        q = model.group_quality.tolist()
        out["group_precision"], out["group_recall"] = q[0], q[1]
        return out

    def check(self, model: nn.Module, cfg: InvDiffConfig) -> list[CheckResult]:
        gen = torch.Generator().manual_seed(cfg.seed)
        problems, batch, n_g = 5, 12, 3
        l = torch.rand(problems, batch, generator=gen, dtype=torch.float64) * 2
        w = torch.rand(problems, batch, n_g, generator=gen, dtype=torch.float64)
        w = w / w.sum(-1, keepdim=True)

        def loss(l, w):
            return torch.stack([group_invariance_loss(a, b)[0] for a, b in zip(l, w)])

        def by_position(l, w):  # negative control: groups = thirds of the batch, W ignored
            pos = torch.arange(batch) * n_g // batch
            hard = torch.nn.functional.one_hot(pos, n_g).to(l)
            return torch.stack([group_invariance_loss(a, hard)[0] for a in l])

        perm = G.Permutation(dim=1, n=batch)
        cols = G.Permutation(dim=2, n=n_g)
        return [
            check_invariant(
                "group loss invariant to permuting samples", loss, (l, w), perm, ("nodes",) * 2
            ),
            check_invariant(
                "group loss invariant to relabelling groups", loss, (l, w), cols, (None, "nodes")
            ),
            check_not_invariant(
                "groups by batch position (negative control)",
                by_position,
                (l, w),
                perm,
                ("nodes",) * 2,
            ),
        ]

    def reproduce(self, cfg: InvDiffConfig, run, *, quick: bool) -> ReproduceResult:
        cfg = reproduce_config(self, cfg, quick)
        t0 = time.perf_counter()
        seeds = [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        arms = {
            "InvDiff (inferred groups)": {"grouper": "inferred"},
            "ERM guidance (one group)": {"grouper": "single"},
            "InvDiff (oracle groups)": {"grouper": "oracle"},
        }
        if not quick:
            arms["InvDiff (official grouper)"] = {"grouper": "official"}
            arms["oracle groups, lambda 0"] = {"grouper": "oracle", "lam": 0.0}
        res: dict[str, list[dict]] = {a: [] for a in ["base model", *arms]}
        grids: dict[str, Tensor] = {}
        for s in seeds:
            per_seed = run_seed(self, cfg, s, arms, grids if s == seeds[0] else None)
            for a, m in per_seed.items():
                res[a].append(m)
                if run is not None:
                    run.log_metrics({"arm": a, "seed": s, **m})
        plots = []
        if run is not None and getattr(run, "path", None) is not None:
            plots.append(str(save_grid(grids, Path(run.path) / "invdiff_samples.png")))
        stats = {
            a: {k: mean_sd([m[k] for m in v]) for k in v[0] if isinstance(v[0][k], float)}
            for a, v in res.items()
        }
        summary = {
            a: {k: f"{m:.3f} +- {sd:.3f}" for k, (m, sd) in st.items()} for a, st in stats.items()
        }
        method, baseline = "InvDiff (inferred groups)", "ERM guidance (one group)"
        return ReproduceResult(
            task=f"biased coloured digits {cfg.size}x{cfg.size} (p_bias {cfg.p_bias}): "
            f"bias of class-conditional samples ({_BACKBONES[cfg.backbone]})",
            metric="bias score (0 = balanced colours)",
            method=method,
            baseline=baseline,
            method_values=[m["bias"] for m in res[method]],
            baseline_values=[m["bias"] for m in res[baseline]],
            higher_is_better=False,
            seeds=seeds,
            invariance_error=max(m["weight0_error"] for v in res.values() for m in v),
            arms={a: [m["bias"] for m in v] for a, v in res.items() if a not in (method, baseline)},
            seconds=time.perf_counter() - t0,
            plots=plots,
            not_showable=(
                "the quick preset trains the base 150 steps: too short for it to learn the "
                "data's class-colour bias (its samples score far below the data's 0.80), so "
                "there is little to de-bias; run without --quick"
                if quick
                else ""
            ),
            details={
                "summary (mean +- sd over seeds)": summary,
                "invariance_error": "max |samples(weight 0) - samples(base)| (exactly 0 expected)",
                "data bias score": f"{2 * cfg.p_bias - 1:.2f}",
                "backbone": _BACKBONES[cfg.backbone],
                "base_steps": cfg.base_steps,
                "guidance_steps": cfg.steps - cfg.base_steps,
            },
        )


@lru_cache(maxsize=4)
def attribute_classifier(size: int, seed: int = 0, steps: int = 150) -> tuple[nn.Module, float]:
    """A small CNN that reads the foreground colour (the bias attribute), trained on colour-
    balanced coloured digits of every class; returns ``(classifier, held-out accuracy)``."""
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
    kw = dict(classes=tuple(range(10)), p_bias=0.5, size=size)
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


def sample_bias(
    model: nn.Module,
    base: nn.Module,
    cfg: InvDiffConfig,
    *,
    keep: dict | None = None,
    name: str = "",
    base_cache: dict | None = None,
) -> dict[str, float]:
    """Bias of ``model``'s and ``base``'s samples from the same noise (``n_samples`` per class),
    plus ``weight0_error``: the largest difference between the base's samples and the guided
    model's at guidance weight 0 (on 8 samples). ``base_cache`` keeps the base's samples for
    further guided models on the same base."""
    clf, acc = attribute_classifier(cfg.size)
    labels = torch.arange(2).repeat_interleave(cfg.n_samples)

    def draw(m: nn.Module, lab: Tensor = labels) -> Tensor:
        g = torch.Generator().manual_seed(cfg.seed + 2024)
        return ddim_sample(m, lab, size=cfg.size, steps=cfg.sample_steps, generator=g)

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

    c0 = dataclasses.replace(cfg, seed=seed)
    recipe.cfg = c0
    data = make_biased_digits(c0.n_images, seed=seed, p_bias=c0.p_bias, size=c0.size)
    ds = _Digits(data)
    torch.manual_seed(seed)
    proto = InvDiffModel(c0)
    sched = proto.scheduler
    gen = torch.Generator().manual_seed(seed + 1)

    def base_step(m, b):
        return {"loss": denoising_losses(m, sched, b["image"], b["label"], generator=gen).mean()}

    base = proto.guided.base
    opt = torch.optim.AdamW(base.parameters(), lr=c0.lr, weight_decay=0.0)
    fit(
        base,
        opt,
        ds,
        base_step,
        steps=c0.base_steps,
        batch_size=c0.batch_size,
        seed=seed,
        grad_clip=c0.grad_clip,
        log_every=10**9,
    )
    base.eval().requires_grad_(False)
    out: dict[str, dict] = {}
    base_cache: dict = {}
    test = _Digits(
        make_biased_digits(None, seed=seed + 1000, p_bias=c0.p_bias, size=c0.size, split="test")
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


register(
    "invdiff",
    domain="vision",
    paper="InvDiff: Invariant Guidance for Bias Mitigation in Diffusion Models",
    authors="Hou, Wu, Xu, Huang, Bai, Wu, Bian",
    year=2025,
    arxiv="2412.08480",
    code_url="https://github.com/Hundredl/InvDiff",
    symmetry="group-invariance objective invariant to sample order and group relabelling",
    baseline="guidance model trained with one group (ERM guidance)",
    tags=("diffusion", "debiasing", "group-robustness"),
)(InvDiffRecipe)
