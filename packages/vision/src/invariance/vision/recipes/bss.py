"""Recipe of Batch Styles Standardization (Scalbert et al. 2024): config, the registered ``bss``
recipe (SimCLR pre-training on unlabeled source style domains, linear probe on unseen domains)
and its reproduce experiment. The transform is in :mod:`invariance.vision.nn.bss`, the SSL
pipeline in :mod:`invariance.vision.bss`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from invariance.core import groups as G
from invariance.core.recipe import (
    CheckResult,
    ConfigError,
    Recipe,
    ReproduceResult,
    TrainConfig,
)
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.vision.bss import BSS, SimCLR, SSLAugment, nt_xent_loss
from invariance.vision.data.digit_styles import DOMAINS, make_digit_styles
from invariance.vision.nn.bss import batch_styles_standardization
from invariance.vision.recipes._common import cached_train_arms, mean_sd, reproduce_config

__all__ = ["BSSConfig", "BSSRecipe", "linear_probe"]


@dataclass
class BSSConfig(TrainConfig):
    """BSS recipe config (tiny preset by default).

    ``variant``: ``bss`` (batch-wise jitter + BSS), ``simclr`` (per-image jitter, baseline),
    ``fa_per_image`` (per-image jitter + per-image Fourier augmentation, control),
    ``bw_jitter`` (batch-wise jitter without BSS, ablation), ``bss_image_jitter`` (BSS after
    SimCLR's per-image jitter; not the paper's pipeline, a round-4 lead, README).
    """

    steps: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    n_per_domain: int = 192
    source_domains: str = "ABC"
    target_domains: str = "DE"
    size: int = 32
    width: int = 16
    feat_dim: int = 64
    proj_dim: int = 32
    temperature: float = 0.2
    variant: str = "bss"
    r_min: float = 0.01
    r_max: float = 0.3
    bss_mode: str = "swap"
    probe_frac: float = 0.1
    probe_steps: int = 300

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "batch_size": (2, None),
        "n_per_domain": (1, None),
        "size": (8, None),
        "width": (1, None),
        "feat_dim": (1, None),
        "proj_dim": (1, None),
        "temperature": (1e-6, None),
        "r_min": (0.0, 1.0),
        "r_max": (0.0, 1.0),
        "probe_frac": (1e-6, 1.0),
        "probe_steps": (1, None),
    }
    choices: ClassVar[dict] = {
        "variant": ("bss", "simclr", "fa_per_image", "bw_jitter", "bss_image_jitter"),
        "bss_mode": ("swap", "mix"),
    }

    def validate(self) -> None:
        super().validate()
        if self.r_min > self.r_max:
            raise ConfigError(f"BSSConfig.r_min ({self.r_min}) must be <= r_max ({self.r_max})")
        for f in ("source_domains", "target_domains"):
            v = getattr(self, f)
            if not v or any(d not in DOMAINS for d in v):
                raise ConfigError(f"BSSConfig.{f} must be letters of {''.join(DOMAINS)}, got {v!r}")


class _Views(torch.utils.data.Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "image": self.data["image"][i],
            "label": self.data["label"][i],
            "domain": self.data["domain"][i],
        }


def _domains_data(
    domains: str, n: int | None, seed: int, split: str, size: int
) -> dict[str, Tensor]:
    parts = [make_digit_styles(n, seed=seed, domain=d, split=split, size=size) for d in domains]
    return {k: torch.cat([p[k] for p in parts]) for k in ("image", "label", "domain")}


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    steps: int = 300,
    lr: float = 0.1,
    seed: int = 0,
) -> float:
    """Accuracy of a logistic-regression probe on standardised frozen features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(a.shape[1], int(train_y.max()) + 1)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), lr=lr, max_iter=steps, history_size=20)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(a), train_y) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((lin(b).argmax(1) == test_y).float().mean())


class BSSRecipe(Recipe):
    """SimCLR pre-training on unlabeled source domains with BSS; linear probe on the sources,
    evaluated on unseen domains."""

    Config = BSSConfig
    presets = {
        "tiny": {},
        # Sized for a CPU session (README): the round-2 sweep's setting (200 steps, lr 3e-3,
        # BSS window r ~ U(0, 0.02), the best of the r ranges tried at 32 px); 33-53 s per run
        # on one core at load 2. "large" is the earlier, bigger setting (not run).
        # `reproduce --quick` (about 3 s per run at one thread): 16 px, 20 steps
        "quick": {"steps": 20, "n_per_domain": 64, "size": 16, "probe_steps": 50},
        "full": {"steps": 200, "lr": 3e-3, "r_min": 0.0, "r_max": 0.02},
        "large": {
            "steps": 1500,
            "batch_size": 128,
            "n_per_domain": 900,
            "width": 32,
            "feat_dim": 128,
            "proj_dim": 64,
            "probe_frac": 0.2,
        },
    }

    def make_data(self, cfg: BSSConfig, split: str) -> _Views:
        if split == "train":
            return _Views(
                _domains_data(cfg.source_domains, cfg.n_per_domain, cfg.seed, "train", cfg.size)
            )
        if split in ("val", "test"):
            return _Views(
                _domains_data(
                    cfg.target_domains, cfg.n_per_domain, cfg.seed + 100, "test", cfg.size
                )
            )
        raise ValueError(f"split must be train/val/test, got {split!r}")

    def build(self, cfg: BSSConfig) -> nn.Module:
        if cfg.variant not in ("bss", "simclr", "fa_per_image", "bw_jitter", "bss_image_jitter"):
            raise ValueError(
                "variant must be bss, simclr, fa_per_image, bw_jitter or "
                f"bss_image_jitter, got {cfg.variant!r}"
            )
        self.cfg = cfg
        self._gen = torch.Generator().manual_seed(cfg.seed + 12345)
        bss = None
        if cfg.variant in ("bss", "fa_per_image", "bss_image_jitter"):
            bss = BSS(
                r_range=(cfg.r_min, cfg.r_max),
                mode=cfg.bss_mode,
                per_image=cfg.variant == "fa_per_image",
            )
        self.augment = SSLAugment(batchwise=cfg.variant in ("bss", "bw_jitter"), bss=bss)
        return SimCLR(width=cfg.width, feat_dim=cfg.feat_dim, proj_dim=cfg.proj_dim)

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["image"]
        gen = self._gen if model.training else torch.Generator().manual_seed(0)
        v1, v2 = self.augment(x, generator=gen), self.augment(x, generator=gen)
        return nt_xent_loss(model(v1), model(v2), temperature=self.cfg.temperature)

    @torch.no_grad()
    def _features(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.cat([model.encode(x[i : i + 256]) for i in range(0, len(x), 256)])

    def metrics(self, model: nn.Module, dataset: _Views) -> dict[str, float]:
        """``acc_<D>``: probe trained on ``probe_frac`` of the source labels, tested on unseen
        domain D; ``acc``: their mean. Diagnostics: ``acc_source`` (the same probe on held-out
        source glyphs) and ``acc_in_<D>`` (an in-domain probe trained on as many labelled
        images of D itself, other glyphs): ``acc_in_<D> - acc_<D>`` is what the style shift
        costs, the gap that BSS is meant to close."""
        cfg = self.cfg
        src = _domains_data(cfg.source_domains, None, cfg.seed, "train", cfg.size)
        g = torch.Generator().manual_seed(cfg.seed + 7)
        keep = torch.rand(len(src["label"]), generator=g) < cfg.probe_frac
        fx = self._features(model, src["image"][keep])
        fy = src["label"][keep]
        out: dict[str, float] = {}
        d = dataset.data
        accs = []
        for dom in sorted(set(d["domain"].tolist())):
            sel = d["domain"] == dom
            test_f = self._features(model, d["image"][sel])
            acc = linear_probe(
                fx, fy, test_f, d["label"][sel], steps=cfg.probe_steps, seed=cfg.seed
            )
            out[f"acc_{DOMAINS[dom]}"] = acc
            accs.append(acc)
            own = make_digit_styles(
                None, seed=cfg.seed + 300, domain=DOMAINS[dom], split="train", size=cfg.size
            )
            pick = torch.randperm(len(own["label"]), generator=g)[: int(keep.sum())]
            out[f"acc_in_{DOMAINS[dom]}"] = linear_probe(
                self._features(model, own["image"][pick]),
                own["label"][pick],
                test_f,
                d["label"][sel],
                steps=cfg.probe_steps,
                seed=cfg.seed,
            )
        out["acc"] = sum(accs) / len(accs)
        # sanity: the same probe on held-out glyphs of the SOURCE domains
        held = _domains_data(
            cfg.source_domains, max(32, cfg.n_per_domain // 4), cfg.seed + 200, "test", cfg.size
        )
        out["acc_source"] = linear_probe(
            fx,
            fy,
            self._features(model, held["image"]),
            held["label"],
            steps=cfg.probe_steps,
            seed=cfg.seed,
        )
        out["style_sensitivity"] = self.style_sensitivity(model, held["image"])
        return out

    @torch.no_grad()
    def style_sensitivity(self, model: nn.Module, x: Tensor, *, r: float = 0.02) -> float:
        """The invariance BSS trains for, measured on the trained encoder: ``1 - cos`` between
        the features of the same images standardised to two different reference styles (BSS
        with area ratio ``r``; references: image 0 and image ``len(x) // 2`` of the batch),
        averaged over the images."""
        a = batch_styles_standardization(x, r=r, ref_index=0)
        b = batch_styles_standardization(x, r=r, ref_index=len(x) // 2)
        fa, fb = self._features(model, a), self._features(model, b)
        return float(1 - torch.nn.functional.cosine_similarity(fa, fb, dim=1).mean())

    def check(self, model: nn.Module, cfg: BSSConfig) -> list[CheckResult]:
        gen = torch.Generator().manual_seed(cfg.seed)
        x = torch.rand(6, 3, 16, 16, dtype=torch.float64, generator=gen)

        def style(g, imgs):
            # change the style (amplitudes) of every image but the reference (index 0)
            out = imgs.clone()
            out[1:] = imgs[1:] * g
            return out

        full = lambda v: batch_styles_standardization(v, r=1.0, ref_index=0, clip=False)
        low = lambda v: batch_styles_standardization(v, r=0.05, ref_index=0, clip=False)
        per_img = lambda v: batch_styles_standardization(
            v, r=1.0, per_image=True, clip=False, generator=torch.Generator().manual_seed(1)
        )
        grp = G.Scaling(0.2, 5.0)
        return [
            check_invariant(
                "r=1 output invariant to non-reference styles", full, (x,), grp, (style,)
            ),
            check_not_invariant(
                "r=0.05 keeps high-frequency style (negative control)", low, (x,), grp, (style,)
            ),
            check_not_invariant(
                "per-image references (negative control)", per_img, (x,), grp, (style,)
            ),
        ]

    def reproduce(self, cfg: BSSConfig, run, *, quick: bool) -> ReproduceResult:
        cfg = reproduce_config(self, cfg, quick)
        t0 = time.perf_counter()
        seeds = [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        # baseline: SimCLR with its per-image jitter (the paper's baseline). Further arms: the
        # matched ablation (batch-wise jitter without BSS) and, in the full run, BSS after
        # per-image jitter (not the paper's pipeline) with its per-image FA control.
        arms = (
            ("bss", "simclr")
            if quick
            else ("bss", "simclr", "bw_jitter", "bss_image_jitter", "fa_per_image")
        )
        res = cached_train_arms(
            self, cfg, {a: {"variant": a} for a in arms}, seeds, run=run, tag="bss"
        )
        keys = [k for k in res["bss"][0] if k.startswith("acc") or k == "style_sensitivity"]
        stats = {a: {k: mean_sd([m[k] for m in v]) for k in keys} for a, v in res.items()}
        summary = {
            a: {k: f"{m:.3f} +- {sd:.3f}" for k, (m, sd) in st.items()} for a, st in stats.items()
        }
        return ReproduceResult(
            task=f"SimCLR on digit styles {cfg.source_domains}, linear probe on unseen "
            f"{cfg.target_domains}",
            metric="probe accuracy (unseen domains)",
            method="SimCLR + BSS",
            baseline="SimCLR",
            method_values=[m["acc"] for m in res["bss"]],
            baseline_values=[m["acc"] for m in res["simclr"]],
            seeds=seeds,
            higher_is_better=True,
            invariance_error=stats["bss"]["style_sensitivity"][0],
            arms={a: [m["acc"] for m in v] for a, v in res.items() if a not in ("bss", "simclr")},
            seconds=time.perf_counter() - t0,
            details={
                "summary (mean +- sd over seeds)": summary,
                "invariance_error": "1 - cos of encoder features under two batch styles",
                "steps": cfg.steps,
                "lr": cfg.lr,
                "r_range": (cfg.r_min, cfg.r_max),
            },
        )


register(
    "bss",
    domain="vision",
    paper="Towards domain-invariant Self-Supervised Learning with Batch Styles Standardization",
    authors="Scalbert, Vakalopoulou, Couzinie-Devy",
    year=2024,
    arxiv="2303.06088",
    code_url="",
    symmetry="output invariant to the Fourier-amplitude style of the batch (r=1)",
    baseline="SimCLR (per-image colour jitter)",
    tags=("ssl", "domain-generalization"),
)(BSSRecipe)
