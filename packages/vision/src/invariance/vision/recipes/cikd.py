"""Recipe of the controllable multi-task network with CIKD (Aich et al. 2023): config, the
registered ``cikd`` recipe (a slimmable encoder + 3 task decoders on DigitsMTL, sandwich
training with configuration-invariant distillation), its reproduce experiment (hypervolume and
controllability of the task trade-off at several MAC budgets) and the ``cikd_slim_conv`` bench.
The mechanism is in :mod:`invariance.vision.cikd`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.core import groups as G
from invariance.core.bench import compare, machine, register_bench
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_equivariant, check_invariant, check_not_invariant
from invariance.vision.cikd import (
    SlimmableMTLNet,
    cikd_loss,
    controllability,
    count_macs,
    hypervolume,
    search_widths,
)
from invariance.vision.data.digits_mtl import make_digits_mtl
from invariance.vision.nn.slimmable import SlimConv2d
from invariance.vision.recipes._common import cached_train_arms, mean_sd, reproduce_config

__all__ = ["CIKDConfig", "CIKDRecipe", "PREFERENCES", "task_scores", "bench_cikd_slim_conv"]

TASKS = {"cls": "cls", "seg": "seg", "depth": "reg"}
#: the requested trade-offs: every (a, b, c) / 3 with a + b + c = 3 (10 points of the simplex)
PREFERENCES = [
    {"cls": a / 3, "seg": b / 3, "depth": (3 - a - b) / 3} for a in range(4) for b in range(4 - a)
]


@dataclass
class CIKDConfig(TrainConfig):
    """CIKD recipe config (tiny preset). ``variant``: ``cikd`` (sandwich + CIKD, the method),
    ``sandwich`` (sandwich rule without CIKD, ablation), ``decoder_only`` (encoder fixed at
    width 1, decoder widths sampled: prior controllable MTL), ``static`` (one fixed uniform
    width ``static_width``, trained alone). ``beta``: weight of the CIKD term (0.1: chosen
    from {1, 0.3, 0.1} on seed 0 of the full preset, where beta = 1 cost task accuracy).
    ``base``: encoder channels ``(b, 2b, 4b, 4b)``,
    decoders ``2b``. ``budgets``: MAC budgets as fractions of the full network's MACs (decoder-only
    control needs >= 0.60 at the default size: 0.35 and 0.5 only the slimmable encoder meets,
    0.65 is just above that floor)."""

    steps: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    image_size: int = 16
    n_train: int = 256
    n_test: int = 128
    base: int = 8
    variant: str = "cikd"
    beta: float = 0.1
    static_width: float = 1.0
    budgets: tuple = (0.35, 0.5, 0.65, 0.8, 0.9)

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "batch_size": (2, None),
        "image_size": (8, None),
        "n_train": (2, None),
        "n_test": (2, None),
        "base": (1, None),
        "beta": (0.0, None),
        "static_width": (0.25, 1.0),
        "budgets": (0.01, 1.0),
    }
    choices: ClassVar[dict] = {
        "variant": ("cikd", "sandwich", "decoder_only", "static"),
        "static_width": (0.25, 0.5, 0.75, 1.0),
    }

    def validate(self) -> None:
        super().validate()
        from invariance.core.recipe import ConfigError

        if self.image_size % 4:
            raise ConfigError(
                f"CIKDConfig.image_size must be a multiple of 4, got {self.image_size}"
            )


class _MTLSet(torch.utils.data.Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}


def _losses(out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {
        "cls": F.cross_entropy(out["cls"], batch["label"]),
        "seg": F.binary_cross_entropy_with_logits(out["seg"], batch["mask"]),
        "depth": (out["depth"] - batch["depth"]).abs().mean(),
    }


@torch.no_grad()
def task_scores(model: SlimmableMTLNet, data: dict[str, Tensor], config: dict) -> dict[str, float]:
    """Higher-is-better scores in [0, 1] at ``config``: ``cls`` accuracy, ``seg`` foreground IoU
    and ``depth`` = ``1 - L1 / L1(mean predictor)`` clipped at 0."""
    was = model.training
    model.eval()
    try:
        outs = [
            model(data["image"][i : i + 256], config)[0] for i in range(0, len(data["image"]), 256)
        ]
    finally:
        model.train(was)
    out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    acc = float((out["cls"].argmax(1) == data["label"]).float().mean())
    pred, gt = out["seg"] > 0, data["mask"] > 0.5
    iou = float((pred & gt).sum() / (pred | gt).sum().clamp(min=1))
    l1 = float((out["depth"] - data["depth"]).abs().mean())
    l1_0 = float((data["depth"] - data["depth"].mean()).abs().mean())
    return {"cls": acc, "seg": iou, "depth": max(0.0, 1 - l1 / l1_0)}


def _stage_error(model: SlimmableMTLNet, x: Tensor, config: dict) -> float:
    """Relative feature error ``||F^k - F^max[:C]|| / ||F^max[:C]||`` averaged over stages."""
    model.eval()
    with torch.no_grad():
        full = model.encode(x, 1.0)
        slim = model.encode(x, config["encoder"])
    errs = [
        float((s - f[:, : s.shape[1]]).norm() / f[:, : s.shape[1]].norm().clamp(min=1e-12))
        for s, f in zip(slim, full)
    ]
    return sum(errs) / len(errs)


class CIKDRecipe(Recipe):
    """Slimmable multi-task net trained with the sandwich rule and CIKD; evaluated by
    hypervolume and controllability of the trade-offs the width search delivers at each budget."""

    Config = CIKDConfig
    presets = {
        "tiny": {},
        # CIKD and decoder-only control only (~50 s of CPU for the 6 cells)
        "quick": {"steps": 60, "n_train": 512, "n_test": 256},
        # sized for a 2-core CPU session: ~2 min per sandwich run at load ~15
        "full": {"steps": 150, "n_train": 1024, "n_test": 512},
    }

    def make_data(self, cfg: CIKDConfig, split: str) -> _MTLSet:
        if split == "train":
            return _MTLSet(make_digits_mtl(cfg.n_train, seed=cfg.seed, size=cfg.image_size))
        if split == "val":
            return _MTLSet(
                make_digits_mtl(cfg.n_test, seed=cfg.seed + 500, split="test", size=cfg.image_size)
            )
        if split == "test":
            return _MTLSet(
                make_digits_mtl(cfg.n_test, seed=cfg.seed + 900, split="test", size=cfg.image_size)
            )
        raise ValueError(f"split must be train/val/test, got {split!r}")

    def build(self, cfg: CIKDConfig) -> nn.Module:
        self.cfg = cfg
        self._gen = torch.Generator().manual_seed(cfg.seed + 4242)
        b = cfg.base
        return SlimmableMTLNet(TASKS, channels=(b, 2 * b, 4 * b, 4 * b), dec_channels=2 * b)

    def _configs(self, model: SlimmableMTLNet) -> list[dict[str, float]]:
        """Sandwich rule: the largest, the smallest, and one configuration per middle width in
        which each module's middle width is assigned by a random permutation (so every width
        of every module is trained at every step)."""
        cfg, ws = self.cfg, model.widths
        keys = ["encoder", *model.tasks]
        if cfg.variant == "static":
            return [{k: cfg.static_width for k in keys}]
        mids = ws[1:-1]
        perms = {k: torch.randperm(len(mids), generator=self._gen).tolist() for k in keys}
        confs = [model.full_config(), model.min_config()]
        confs += [{k: mids[perms[k][j]] for k in keys} for j in range(len(mids))]
        if cfg.variant == "decoder_only":
            for c in confs:
                c["encoder"] = 1.0
        return confs

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        x = batch["image"]
        if not model.training:  # evaluation loss: the full (or the static) configuration
            conf = self._configs(model)[0]
            out, _ = model(x, conf)
            ls = _losses(out, batch)
            return {"loss": sum(ls.values()), **{k: v.detach() for k, v in ls.items()}}
        confs = self._configs(model)
        total = x.new_zeros(())
        teacher = None
        logs: dict[str, Tensor] = {}
        kd = x.new_zeros(())
        for j, conf in enumerate(confs):
            out, feats = model(x, conf)
            ls = _losses(out, batch)
            total = total + sum(ls.values())
            if j == 0:
                teacher = feats
                logs = {k: v.detach() for k, v in ls.items()}
            elif cfg.variant == "cikd" and cfg.beta > 0:
                kd = kd + cikd_loss(feats, teacher)
        loss = total / len(confs) + cfg.beta * kd * (cfg.variant == "cikd")
        return {"loss": loss, "cikd": kd.detach(), **logs}

    def metrics(self, model: nn.Module, dataset: _MTLSet) -> dict[str, float]:
        """Per budget ``B``: ``hv_B`` (hypervolume of the 10 requested trade-offs' scores, 0
        reference), ``ctrl_B`` (controllability), ``feasible_B``; ``hv`` and ``ctrl``: their
        means over the budgets that decoder-only control can also meet (``B >=
        decoder_only_floor``, the MAC fraction of the full encoder with the smallest decoders);
        ``full_<task>`` scores at full width; ``feat_err`` (relative feature error of
        the smallest encoder vs the full one)."""
        cfg = self.cfg
        assert isinstance(model, SlimmableMTLNet)
        data = dataset.data
        val = self.make_data(cfg, "val").data
        size = cfg.image_size
        mac_cache: dict[tuple, int] = {}

        def macs(c: dict) -> int:
            k = tuple(sorted(c.items()))
            if k not in mac_cache:
                mac_cache[k] = count_macs(model, c, size)
            return mac_cache[k]

        full = macs(model.full_config())
        score_cache: dict[tuple, dict] = {}

        def scores(c: dict, d: dict, tag: str) -> dict:
            k = (tag, *sorted(c.items()))
            if k not in score_cache:
                score_cache[k] = task_scores(model, d, c)
            return score_cache[k]

        out: dict[str, float] = {}
        hvs, ctrls = [], []
        # budgets that decoder-only control can meet (encoder at 1, smallest decoders)
        floor = macs({"encoder": 1.0, **{t: model.widths[0] for t in TASKS}}) / full
        out["decoder_only_floor"] = floor
        for b in cfg.budgets:
            pts, perf, feas = [], [], 0
            for p in PREFERENCES:
                if cfg.variant == "static":
                    conf = {k: cfg.static_width for k in ("encoder", *TASKS)}
                    ok = macs(conf) <= b * full
                else:
                    enc = (1.0,) if cfg.variant == "decoder_only" else None

                    def val_score(c, p=p):
                        s = scores(c, val, "val")
                        return sum(p[t] * s[t] for t in TASKS)

                    conf, ok = search_widths(
                        macs, b * full, p, model.widths, score=val_score, encoder_widths=enc
                    )
                s = scores(conf, data, "test")
                perf.append(s)
                feas += int(ok)
                if ok:
                    pts.append([s[t] for t in TASKS])
            hv = hypervolume(pts, [0.0] * len(TASKS))
            ct = controllability(PREFERENCES, perf)
            out[f"hv_{b}"], out[f"ctrl_{b}"], out[f"feasible_{b}"] = hv, ct, feas / len(PREFERENCES)
            if b >= floor:
                hvs.append(hv)
                ctrls.append(ct)
        out["hv"] = sum(hvs) / len(hvs) if hvs else 0.0
        out["ctrl"] = sum(ctrls) / len(ctrls) if ctrls else 0.0
        own = (
            {k: cfg.static_width for k in ("encoder", *TASKS)}
            if cfg.variant == "static"
            else model.full_config()
        )
        fs = scores(own, data, "test")  # a static model at its own (only) width
        out.update({f"full_{t}": v for t, v in fs.items()})
        out["feat_err"] = _stage_error(model, data["image"][:128], model.min_config())
        out["macs_full"] = float(full)
        return out

    def check(self, model: nn.Module, cfg: CIKDConfig) -> list[CheckResult]:
        return cikd_checks(model, seed=cfg.seed)

    def reproduce(self, cfg: CIKDConfig, run, *, quick: bool) -> ReproduceResult:
        cfg = reproduce_config(self, cfg, quick)
        t0 = time.perf_counter()
        seeds = [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        # beta is unused by every arm but cikd: pinned there so their cached cells do not
        # depend on it
        arms = {
            "cikd": {"variant": "cikd"},
            "decoder_only": {"variant": "decoder_only", "beta": 1.0},
        }
        if not quick:  # sandwich without CIKD and separately trained static models
            arms["sandwich"] = {"variant": "sandwich", "beta": 1.0}
            arms.update(
                {
                    f"static_{w}": {"variant": "static", "static_width": w, "beta": 1.0}
                    for w in (0.5, 0.75)
                }
            )
        res = cached_train_arms(self, cfg, arms, seeds, run=run, tag="cikd_v3")
        keys = ["hv", "ctrl", "feat_err", "full_cls", "full_seg", "full_depth"] + [
            f"{m}_{b}" for b in cfg.budgets for m in ("hv", "ctrl", "feasible")
        ]
        summary = {
            a: {k: "{:.3f} +- {:.3f}".format(*mean_sd([r[k] for r in rows])) for k in keys}
            for a, rows in res.items()
        }
        hv = {a: [r["hv"] for r in rows] for a, rows in res.items()}
        if not quick:  # the static models: at each budget the widest one that fits
            hv["static (best per budget)"] = _static_envelope(res, cfg.budgets)
        verdicts = {}
        for other in [a for a in hv if a != "cikd"]:
            r = ReproduceResult("", "", "cikd", other, hv["cikd"], hv[other])
            verdicts[f"CIKD vs {other} (hv, noise rule)"] = f"{r.verdict} ({r.improvement:+.4f})"
        ct = {a: [r["ctrl"] for r in rows] for a, rows in res.items() if "static" not in a}
        for b in cfg.budgets:
            if all(r[f"feasible_{b}"] > 0 for r in res["decoder_only"]):
                rb = ReproduceResult(
                    "", "", "cikd", "decoder_only",
                    [r[f"ctrl_{b}"] for r in res["cikd"]],
                    [r[f"ctrl_{b}"] for r in res["decoder_only"]],
                )  # fmt: skip
                verdicts[f"CIKD vs decoder_only (controllability at {b:.0%}, noise rule)"] = (
                    f"{rb.verdict} ({rb.improvement:+.3f})"
                )
        if "sandwich" in res:
            fe = ReproduceResult(
                "", "", "cikd", "sandwich",
                [r["feat_err"] for r in res["cikd"]], [r["feat_err"] for r in res["sandwich"]],
                higher_is_better=False,
            )  # fmt: skip
            verdicts["CIKD vs sandwich (feature error of the smallest encoder, noise rule)"] = (
                f"{fe.verdict} ({fe.improvement:+.3f})"
            )
        return ReproduceResult(
            task=f"3-task DigitsMTL ({cfg.image_size} px), trade-offs at budgets "
            f"{list(cfg.budgets)} of the full MACs",
            metric="controllability: Kendall tau of requested preference vs realised task "
            "score (mean over tasks and the budgets both meet)",
            method="slimmable encoder+decoders, sandwich + CIKD",
            baseline="decoder-only control (encoder at width 1)",
            method_values=ct["cikd"],
            baseline_values=ct["decoder_only"],
            seeds=seeds,
            higher_is_better=True,
            invariance_error=mean_sd([r["feat_err"] for r in res["cikd"]])[0],
            arms={a: v for a, v in ct.items() if a not in ("cikd", "decoder_only")},
            seconds=time.perf_counter() - t0,
            details={
                "summary (mean +- sd over seeds)": summary,
                **verdicts,
                "hypervolume (mean over the budgets both meet)": {
                    a: "{:.4f} +- {:.4f}".format(*mean_sd(v)) for a, v in hv.items()
                },
                "invariance_error": "relative feature error of the smallest encoder against "
                "the full one (what CIKD trains to be configuration-invariant)",
                "steps": cfg.steps,
            },
        )


def _static_envelope(res: dict, budgets: tuple) -> list[float]:
    """Per seed: mean over the budgets both control schemes meet of the hypervolume of the
    widest static model that fits the budget."""
    statics = sorted((float(a.split("_")[1]), a) for a in res if a.startswith("static_"))
    out = []
    for i in range(len(res["cikd"])):
        hvs = []
        for b in budgets:
            if b < res["cikd"][i]["decoder_only_floor"]:
                continue
            fit = [a for _, a in statics if res[a][i][f"feasible_{b}"] > 0]
            hvs.append(res[fit[-1]][i][f"hv_{b}"] if fit else 0.0)
        out.append(sum(hvs) / len(hvs))
    return out


def cikd_checks(model: SlimmableMTLNet, *, seed: int = 0) -> list[CheckResult]:
    """Dense outputs equivariant to circular shifts by multiples of the encoder stride (4 px) at
    a slimmed configuration, with a circular-padding copy of the model in eval mode; negative
    control: shifts by an odd number of pixels. Classification logits are invariant to the same
    shifts."""
    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        if isinstance(mod, SlimConv2d):
            mod.padding_mode = "circular"
    g = torch.Generator().manual_seed(seed)
    x = 5 * torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    conf = {"encoder": 0.5, "cls": 0.75, "seg": 0.5, "depth": 0.25}

    def dense(v):
        out, _ = m(v, conf)
        return torch.cat([out["seg"], out["depth"]], 1)

    def logits(v):
        return m(v, conf)[0]["cls"]

    shift4 = G.CyclicShift(dim=-1, max_shift=3)

    def act4(s, v):
        return torch.roll(v, shifts=(4 * int(s), -4 * int(s)), dims=(-2, -1))

    def act_odd(s, v):
        return torch.roll(v, shifts=(2 * int(s) + 1, 0), dims=(-2, -1))

    return [
        check_equivariant("dense outputs equivariant to 4-px shifts (slimmed config)", dense,
                          (x,), shift4, (act4,), act4, dtype=None),
        check_invariant("class logits invariant to 4-px shifts (slimmed config)", logits,
                        (x,), shift4, (act4,), dtype=None),
        check_not_invariant("odd-pixel shifts break dense equivariance (negative control)",
                            dense, (x,), shift4, (act_odd,), act_odd, dtype=None),
    ]  # fmt: skip


register(
    "cikd",
    domain="vision",
    paper="Efficient Controllable Multi-Task Architectures",
    authors="Aich, Schulter, Roy-Chowdhury, Chandraker, Suh",
    year=2023,
    arxiv="2308.11744",
    code_url="",
    symmetry="encoder features invariant to the runtime width configuration (CIKD, trained); "
    "dense outputs translation-equivariant by the encoder stride",
    baseline="decoder-only control (encoder fixed at full width); sandwich without CIKD and "
    "separately trained static models as further arms",
    tags=("multi-task", "slimmable", "controllable"),
)(CIKDRecipe)


@register_bench("vision", "cikd_slim_conv")
def bench_cikd_slim_conv(
    *, device: str = "cpu", quick: bool = False, batch: int = 32, size: int = 16, width: float = 0.5
) -> dict:
    """A :class:`SlimConv2d` at ``width`` vs ``torch.nn.functional.conv2d`` on pre-sliced
    weights (the reference) and a full ``nn.Conv2d`` (forward)."""
    g = torch.Generator().manual_seed(0)
    conv = SlimConv2d(64, 64, 3, padding=1).to(device)
    cin = int(64 * width)
    x = torch.randn(batch, cin, size, size, generator=g).to(device)
    xf = torch.randn(batch, 64, size, size, generator=g).to(device)
    w = conv.weight[:cin, :cin].detach().clone()
    b = conv.bias[:cin].detach().clone()
    full = nn.Conv2d(64, 64, 3, padding=1).to(device)

    def run(f):
        def go():
            with torch.no_grad():
                f()

        return go

    rows = compare(
        {
            "F.conv2d (sliced weights)": run(lambda: F.conv2d(x, w, b, 1, 1)),
            "SlimConv2d": run(lambda: conv(x, width)),
            "nn.Conv2d (full width)": run(lambda: full(xf)),
        },
        reference="F.conv2d (sliced weights)",
        device=device,
        label=f"batch {batch}, 64 ch full, width {width}, {size}x{size}",
        **({"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}),
    )
    return {"rows": rows, "machine": machine(device)}
