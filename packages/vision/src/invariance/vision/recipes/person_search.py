"""Recipe of SSL-style scale-invariant person search (Wang et al. 2023): config, the registered
``person_search`` recipe (re-identification on ground-truth boxes of procedural multi-scale
scenes, trained without identity labels), its reproduce experiment and the ``person_search_eval``
bench. The mechanism is in :mod:`invariance.vision.person_search`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from invariance.core import groups as G
from invariance.core.bench import compare, machine, register_bench
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.vision.data.synth_persons import make_synth_persons
from invariance.vision.person_search import (
    InstanceMemory,
    PersonSearchNet,
    crop_boxes,
    multilabel_loss,
    multilabel_targets,
    reid_map_cmc,
    scale_invariant_loss,
    scale_pyramid,
)
from invariance.vision.recipes._common import cached_train_arms, mean_sd, reproduce_config

__all__ = ["PersonSearchConfig", "PersonSearchRecipe", "person_search_checks", "cross_scale_gap"]


@dataclass
class PersonSearchConfig(TrainConfig):
    """Person-search config (tiny preset). ``variant``: ``ssl`` (exemplar branch + scale-
    invariant loss + dynamic multi-label loss) or ``baseline`` (the same network and multi-label
    loss without the exemplar branch and the scale-invariant loss)."""

    steps: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    image_size: int = 64
    n_train_scenes: int = 32
    n_test_scenes: int = 24
    n_ids: int = 30
    n_train_ids: int = 20
    width: int = 8
    emb_dim: int = 32
    variant: str = "ssl"
    lam_sl: float = 1.0
    margin: float = 0.3
    t_start: float = 0.8
    t_end: float = 0.6
    knn: int = 5
    temperature: float = 0.1

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "batch_size": (1, None),
        "image_size": (48, None),
        "n_train_scenes": (2, None),
        "n_test_scenes": (2, None),
        "n_ids": (4, None),
        "n_train_ids": (3, None),
        "width": (1, None),
        "emb_dim": (1, None),
        "lam_sl": (0.0, None),
        "margin": (0.0, 2.0),
        "t_start": (-1.0, 1.0),
        "t_end": (-1.0, 1.0),
        "knn": (1, None),
        "temperature": (1e-6, None),
    }
    choices: ClassVar[dict] = {"variant": ("ssl", "baseline")}


class _Scenes(torch.utils.data.Dataset):
    def __init__(self, d: dict) -> None:
        self.d = d
        counts = [len(b) for b in d["boxes"]]
        self.offsets = torch.tensor([0, *counts]).cumsum(0)

    def __len__(self) -> int:
        return self.d["image"].shape[0]

    def __getitem__(self, i: int) -> dict:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return {
            "image": self.d["image"][i],
            "boxes": self.d["boxes"][i],
            "idx": torch.arange(lo, hi),
            "pid": self.d["pid"][i],
            "camera": int(self.d["camera"][i]),
        }


def _collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "idx": torch.cat([it["idx"] for it in items]),
        "pid": torch.cat([it["pid"] for it in items]),
    }


class _Model(nn.Module):
    def __init__(self, cfg: PersonSearchConfig, n_boxes: int) -> None:
        super().__init__()
        self.net = PersonSearchNet(width=cfg.width, emb_dim=cfg.emb_dim)
        self.memory = InstanceMemory(n_boxes, cfg.emb_dim)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))


def cross_scale_gap(emb: Tensor, pids: Tensor, heights: Tensor) -> float:
    """Cross-scale gap of scene embeddings: mean cosine of same-identity pairs of similar height
    (ratio < 1.5) minus that of same-identity pairs of very different heights (ratio > 2.5);
    0 for a perfectly scale-invariant embedding (NaN when a pair kind is missing)."""
    sim = emb @ emb.T
    same = (pids[:, None] == pids[None, :]) & ~torch.eye(len(pids), dtype=torch.bool)
    ratio = torch.maximum(heights[:, None] / heights[None, :], heights[None, :] / heights[:, None])
    near, far = same & (ratio < 1.5), same & (ratio > 2.5)
    if not bool(near.any()) or not bool(far.any()):
        return float("nan")
    return float(sim[near].mean() - sim[far].mean())


class PersonSearchRecipe(Recipe):
    """Weakly supervised re-id on multi-scale scenes (GT boxes; no identity labels)."""

    Config = PersonSearchConfig
    presets = {
        "tiny": {},
        # ~15-40 s per run at load ~15 (one torch thread)
        "quick": {"steps": 40, "n_train_scenes": 96, "n_test_scenes": 64},
        # sized for a 2-core CPU session (~2 min per SSL run at load ~18)
        "full": {
            "steps": 150,
            "n_train_scenes": 320,
            "n_test_scenes": 160,
            "n_ids": 60,
            "n_train_ids": 40,
        },
    }
    collate_fn = staticmethod(_collate)

    def _data(self, cfg: PersonSearchConfig, split: str) -> dict:
        n = cfg.n_train_scenes if split == "train" else cfg.n_test_scenes
        seed = cfg.seed if split == "train" else cfg.seed + 1000
        return make_synth_persons(
            n,
            seed=seed,
            split="train" if split == "train" else "test",
            size=cfg.image_size,
            n_ids=cfg.n_ids,
            n_train_ids=cfg.n_train_ids,
        )

    def make_data(self, cfg: PersonSearchConfig, split: str) -> _Scenes:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train/val/test, got {split!r}")
        return _Scenes(self._data(cfg, split))

    def build(self, cfg: PersonSearchConfig) -> nn.Module:
        self.cfg = cfg
        n_boxes = sum(len(b) for b in self._data(cfg, "train")["boxes"])
        return _Model(cfg, n_boxes)

    def step(self, model: nn.Module, batch: dict) -> dict[str, Tensor]:
        cfg = self.cfg
        f = model.net.embed_boxes(batch["image"], batch["boxes"])
        idx = batch["idx"]
        mem = model.memory
        frac = min(1.0, float(model.steps_done) / max(1, cfg.steps - 1))
        t = cfg.t_start + (cfg.t_end - cfg.t_start) * frac
        bank = torch.where(mem.seen[:, None], mem.bank, torch.zeros_like(mem.bank))
        bank = bank.index_copy(0, idx, f.detach())  # the batch's own slots: current features
        seen = mem.seen.clone()
        seen[idx] = True
        targets = multilabel_targets(bank, idx, t, k=cfg.knn, seen=seen)
        l_ml = multilabel_loss(f, bank, targets, temperature=cfg.temperature)
        out = {"ml": l_ml.detach()}
        loss = l_ml
        if cfg.variant == "ssl" and cfg.lam_sl > 0:
            crops = crop_boxes(batch["image"], batch["boxes"])
            pyr = scale_pyramid(crops)
            e = model.net.embed_crops(torch.cat(pyr))
            owner = torch.arange(f.shape[0]).repeat(len(pyr))
            l_sl = scale_invariant_loss(f, e, owner, margin=cfg.margin)
            out["sl"] = l_sl.detach()
            loss = loss + cfg.lam_sl * l_sl
        if model.training:
            mem.update(idx, f)
            model.steps_done += 1
        out["loss"] = loss
        return out

    def metrics(self, model: nn.Module, dataset: _Scenes) -> dict[str, float]:
        """``map`` and ``top1`` over every test box as query (gallery: the boxes of the other
        scenes), ``map_small`` for queries shorter than 20 px, and ``scale_gap``."""
        net = model.net.eval()
        d = dataset.d
        embs = []
        with torch.no_grad():
            for i in range(0, len(d["boxes"]), 32):
                embs.append(net.embed_boxes(d["image"][i : i + 32], d["boxes"][i : i + 32]))
        emb = torch.cat(embs)
        pids = torch.cat(d["pid"])
        scene = torch.cat([torch.full((len(b),), i) for i, b in enumerate(d["boxes"])])
        heights = torch.cat([b[:, 3] - b[:, 1] for b in d["boxes"]])
        dist = 1 - emb @ emb.T
        m_all, cmc = reid_map_cmc(dist, pids, pids, scene, scene, max_rank=5)
        small = heights < 20
        m_small, _ = reid_map_cmc(dist[small], pids[small], pids, scene[small], scene, max_rank=5)
        gap = cross_scale_gap(emb, pids, heights)
        return {"map": m_all, "top1": cmc[0], "map_small": m_small, "scale_gap": gap}

    def check(self, model: nn.Module, cfg: PersonSearchConfig) -> list[CheckResult]:
        return person_search_checks(model.net, seed=cfg.seed)

    def reproduce(self, cfg: PersonSearchConfig, run, *, quick: bool) -> ReproduceResult:
        cfg = reproduce_config(self, cfg, quick)
        t0 = time.perf_counter()
        seeds = [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        res = cached_train_arms(
            self,
            cfg,
            {"ssl": {"variant": "ssl"}, "baseline": {"variant": "baseline"}},
            seeds,
            run=run,
            tag="person_search",
        )
        keys = ("map", "top1", "map_small", "scale_gap")
        summary = {
            a: {k: "{:.3f} +- {:.3f}".format(*mean_sd([r[k] for r in rows])) for k in keys}
            for a, rows in res.items()
        }
        verdicts = {}
        for k, hib in (("top1", True), ("map_small", True), ("scale_gap", False)):
            r = ReproduceResult(
                "", "", "ssl", "baseline",
                [x[k] for x in res["ssl"]], [x[k] for x in res["baseline"]],
                higher_is_better=hib,
            )  # fmt: skip
            verdicts[f"SSL vs baseline on {k} (noise rule)"] = f"{r.verdict} ({r.improvement:+.3f})"
        return ReproduceResult(
            task=f"weakly supervised re-id on multi-scale SynthPersons scenes (GT boxes, "
            f"{cfg.n_ids - cfg.n_train_ids} unseen identities)",
            metric="mAP",
            method="SSL-style (exemplar branch + scale-invariant + multi-label)",
            baseline="same network, multi-label only",
            method_values=[r["map"] for r in res["ssl"]],
            baseline_values=[r["map"] for r in res["baseline"]],
            seeds=seeds,
            higher_is_better=True,
            invariance_error=mean_sd([r["scale_gap"] for r in res["ssl"]])[0],
            seconds=time.perf_counter() - t0,
            details={
                "summary (mean +- sd over seeds)": summary,
                **verdicts,
                "invariance_error": "cross-scale gap: mean cosine of same-identity box pairs of "
                "similar height minus that of pairs whose heights differ > 2.5x (baseline: "
                f"{mean_sd([r['scale_gap'] for r in res['baseline']])[0]:.3f})",
                "steps": cfg.steps,
            },
        )


def person_search_checks(net: PersonSearchNet, *, seed: int = 0) -> list[CheckResult]:
    """Box embeddings invariant to translating the scene and its boxes together by multiples of
    the backbone stride (4 px; circular-padding copy in eval mode); negative control: 2-px."""
    m = copy.deepcopy(net).double().eval()
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            mod.padding_mode = "circular"
            mod._reversed_padding_repeated_twice = [1, 1, 1, 1]
    g = torch.Generator().manual_seed(seed)
    img = 3 * torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 18.0], [12.0, 4.0, 18.0, 16.0]], dtype=torch.float64)

    def emb(image, b):
        return m.embed_boxes(image, [b])

    def shift(step):
        def act_img(s, x):
            return torch.roll(x, shifts=(step * int(s), step * int(s)), dims=(-2, -1))

        def act_box(s, b):
            return b + step * int(s)

        return (act_img, act_box)

    grp = G.CyclicShift(dim=-1, max_shift=3)
    return [
        check_invariant(
            "box embeddings invariant to 4-px scene+box shifts", emb, (img, boxes), grp, shift(4),
            dtype=None,
        ),
        check_not_invariant(
            "2-px shifts (not a stride multiple) change them (negative control)", emb,
            (img, boxes), grp, shift(2), dtype=None,
        ),
    ]  # fmt: skip


register(
    "person_search",
    domain="vision",
    paper="Self-similarity Driven Scale-invariant Learning for Weakly Supervised Person Search",
    authors="Wang, Yang, Wu, Qi, Lei",
    year=2023,
    arxiv="2302.12986",
    code_url="https://github.com/Wangbenzhi/SSL",
    symmetry="person embeddings trained to be invariant to the person's scale (cross-scale "
    "gap); box embeddings translation-invariant by the backbone stride",
    baseline="same re-id network with the dynamic multi-label loss only (no exemplar branch, no "
    "scale-invariant loss)",
    tags=("person-search", "re-identification", "scale-invariance", "weak-supervision"),
)(PersonSearchRecipe)


@register_bench("vision", "person_search_eval")
def bench_person_search_eval(
    *, device: str = "cpu", quick: bool = False, n_query: int = 200, n_gallery: int = 1000
) -> dict:
    """:func:`reid_map_cmc` (torch, float64) vs a per-query NumPy loop of the same Market-1501
    protocol written the way torchreid's python ``eval_market1501`` is (reference)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    dist = torch.rand(n_query, n_gallery, generator=g, dtype=torch.float64)
    qp = torch.randint(0, 50, (n_query,), generator=g)
    gp = torch.randint(0, 50, (n_gallery,), generator=g)
    qc = torch.randint(0, 6, (n_query,), generator=g)
    gc = torch.randint(0, 6, (n_gallery,), generator=g)
    dn, qpn, gpn, qcn, gcn = (t.numpy() for t in (dist, qp, gp, qc, gc))

    def numpy_loop():
        idx = np.argsort(dn, axis=1)
        aps = []
        for i in range(n_query):
            o = idx[i]
            keep = ~((gpn[o] == qpn[i]) & (gcn[o] == qcn[i]))
            raw = (gpn[o] == qpn[i])[keep].astype(np.float64)
            if not raw.any():
                continue
            cum = raw.cumsum()
            aps.append(((cum / np.arange(1, len(raw) + 1)) * raw).sum() / raw.sum())
        return float(np.mean(aps))

    rows = compare(
        {
            "numpy_market1501_loop": numpy_loop,
            "reid_map_cmc": lambda: reid_map_cmc(dist, qp, gp, qc, gc),
        },
        reference="numpy_market1501_loop",
        device=device,
        label=f"{n_query} queries x {n_gallery} gallery",
        **({"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}),
    )
    return {"rows": rows, "machine": machine(device)}
