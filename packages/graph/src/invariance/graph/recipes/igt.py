"""Recipes ``igt``, ``igt_vn`` and ``grea``: config, GREA's alternating training schedule, the
shared reproduce grid (Spurious-Motif x bias x seed, Mol-Motif) and its per-cell cache.

The three registered recipes train the same grid of model kinds (IGT-N adversarial and
cooperative, IGT-VN, GREA, ERM-GIN); each cell is cached in a
:class:`~invariance.core.cache.ResultCache`, so the second and third recipe train nothing.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from invariance.core import CheckResult, ConfigError, Recipe, ReproduceResult, TrainConfig, register
from invariance.core.cache import ResultCache
from invariance.core.groups import Permutation
from invariance.core.testing import (
    check_equivariant,
    check_invariant,
    check_not_invariant,
)
from invariance.core.train import NamedOptimizers, build_optimizer
from invariance.graph._perm import GraphFn, graph_act_in, graph_actions, graph_inputs
from invariance.graph.grea import GREA
from invariance.graph.igt import IGT
from invariance.graph.recipes._graph_grid import (
    GRID_CACHE_VERSION as GRID_CACHE_VERSION,
)
from invariance.graph.recipes._graph_grid import (
    _dims,
    _first_node_readout,
    _graph_data,
    _model_kw,
    grid_cell_key,
    run_grid_cell,
)
from invariance.graph.recipes._graph_grid import (
    graph_invariance_error as graph_invariance_error,
)
from invariance.graph.recipes._graph_training import (
    _GRID_NAMES,
    _freeze_idle,
    alternate_phase,
    build_graph_model,
    evaluate_graphs,
    graph_train_step,
    grid_markdown,
)
from invariance.graph.recipes._graph_training import (
    train_graph_model as train_graph_model,
)


@dataclass
class IGTConfig(TrainConfig):
    """IGT/GREA recipe config. Defaults are the tiny preset (seconds on a CPU).

    Args (besides :class:`TrainConfig`):
        dataset: ``"spmotif"`` or ``"molmotif"``. bias: Spurious-Motif / Mol-Motif train bias.
        n_train, n_test: graphs per split (Mol-Motif: a cap). colour_shortcut: SPMotif colours.
        hidden, num_layers, gamma, alpha, beta, adversarial, adv_scale, num_virtual, heads,
        virtual_node, mask, reencode: model. schedule: ``"alternate"`` (GREA's official
        two-optimiser schedule, used by ``reproduce``) or ``"joint"``. epochs, seeds: reproduce
        sizes. ``train`` follows ``schedule`` too (the recipe's ``train_step``).
        adv_lr_scale: with ``schedule="alternate"``, the adversary's (the intervener of an
        adversarial IGT) learning rate is ``adv_lr_scale * lr``. Adam divides out ``adv_scale``,
        so this is what keeps the adversary slower; measured at b=0.9 (3 seeds), 0.1 recovers
        the cooperative variant's rationale AUC where 1.0 loses it (README).
        mol_tag: Mol-Motif with the label-correlated atom tag shortcut (``tag_shortcut`` of
        :func:`~invariance.graph.data.make_mol_motif`), so that it is a real OOD test.
        cache, cache_dir: ``reproduce`` stores every trained grid cell (kind, dataset, bias, seed,
        hash of the training config) as JSON in ``cache_dir`` (default: ``grid-cache/`` beside the
        run directory, i.e. under the run root) and reuses it, so ``reproduce igt``, ``igt_vn``
        and ``grea``, which share one grid, train it once.
    """

    steps: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    dataset: str = "spmotif"
    bias: float = 0.9
    n_train: int = 96
    n_test: int = 48
    colour_shortcut: bool = True
    hidden: int = 16
    num_layers: int = 3
    gamma: float = 0.3
    alpha: float = 1.0
    beta: float = 1.0
    adversarial: bool = True
    adv_scale: float = 0.3
    num_virtual: int = 4
    heads: int = 4
    virtual_node: bool = False
    mask: str = "soft"
    reencode: bool = False
    schedule: str = "alternate"
    epochs: int = 10
    seeds: int = 1
    mol_tag: bool = True
    adv_lr_scale: float = 0.1
    cache: bool = True
    cache_dir: str | None = None
    optimizer: str = "adam"

    ranges: ClassVar[dict] = {
        "lr": (1e-8, None),
        "bias": (0.0, 1.0),
        "n_train": (2, None),
        "n_test": (1, None),
        "hidden": (1, None),
        "num_layers": (1, None),
        "gamma": (1e-6, 1 - 1e-6),
        "alpha": (0.0, None),
        "beta": (0.0, None),
        "adv_scale": (1e-8, None),
        "num_virtual": (1, None),
        "heads": (1, None),
        "epochs": (1, None),
        "seeds": (1, None),
        "adv_lr_scale": (0.0, None),
        "batch_size": (2, None),
        "steps": (1, None),
    }
    choices: ClassVar[dict] = {
        "dataset": ("spmotif", "molmotif"),
        "mask": ("soft", "hard"),
        "schedule": ("alternate", "joint"),
    }

    def validate(self) -> None:
        super().validate()
        if self.hidden % self.heads:
            raise ConfigError(
                f"IGTConfig.hidden ({self.hidden}) must be divisible by "
                f"IGTConfig.heads ({self.heads})"
            )


_FULL = {
    "n_train": 600,
    "n_test": 300,
    "hidden": 32,
    "steps": 500,
    "epochs": 25,
    "seeds": 3,
    "batch_size": 64,
    "lr": 1e-3,
}
# the reproduce size planned in spec §1.4 (2,000 train / 500 test graphs, 40 epochs); Mol-Motif is
# capped by the molecules available (~400 train after the ring resampling)
_SPEC = {**_FULL, "n_train": 2000, "n_test": 500, "epochs": 40}
# ``reproduce --quick``: b=0.5, where GREA's rationale beats ERM beyond seed noise in a few seconds
# per cell (measured, README); the three recipes share these cells through the cache
_QUICK = {
    "bias": 0.5,
    "n_train": 240,
    "n_test": 90,
    "hidden": 32,
    "epochs": 16,
    "lr": 3e-3,
    "batch_size": 32,
    "seeds": 3,
}


def run_graph_reproduce(
    kinds: list[str],
    cfg: IGTConfig,
    biases: list[float],
    datasets: list[str],
    *,
    cache_dir=None,
    progress=None,
) -> dict:
    """Train every model kind on every (dataset, bias, seed); return mean/sd of OOD acc and AUC.

    With ``cache_dir``, each cell is read from / written to a
    :class:`~invariance.core.cache.ResultCache` there (key :func:`grid_cell_key`), so recipes that
    share the grid train it once. ``progress(cell, cached)`` is called per cell.
    Rows hold ``[mean, sd]`` over seeds and the per-seed values.
    """
    cache = (
        ResultCache(cache_dir, sources=("invariance.graph", "invariance.core"))
        if cache_dir
        else None
    )
    rows: dict = {}
    for ds in datasets:
        for bias in biases if ds == "spmotif" else [cfg.bias]:
            c = IGTConfig(**{**cfg.__dict__, "dataset": ds, "bias": bias})
            for kind in kinds:
                cells = []
                for s in range(cfg.seeds):
                    key = grid_cell_key(kind, c, s)
                    cell = cache.get(key) if cache is not None else None
                    cached = cell is not None
                    if not cached:
                        cell = run_grid_cell(kind, c, s)
                        if cache is not None:
                            cache.put(key, cell)
                    cells.append(cell)
                    if progress is not None:
                        progress(cell, cached)

                def ms(v):
                    v = [float(x) for x in v]
                    if any(math.isnan(x) for x in v):
                        return [float("nan"), float("nan")]
                    return [statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0]

                accs = [x["ood_acc"] for x in cells]
                aucs = [x["rationale_auc"] for x in cells]
                errs = [x.get("invariance_error", float("nan")) for x in cells]
                rows[f"{ds}/b={bias}/{kind}"] = {
                    "ood_acc": ms(accs),
                    "rationale_auc": ms(aucs),
                    "ood_acc_per_seed": accs,
                    "rationale_auc_per_seed": aucs,
                    "invariance_error_per_seed": errs,
                    "s_per_epoch": statistics.mean(x["train_seconds"] for x in cells) / c.epochs,
                }
    return rows


class _GraphRecipe(Recipe):
    Config = IGTConfig
    presets = {"tiny": {}, "full": _FULL, "spec": _SPEC}
    collate_fn = Batch.from_data_list
    kind = "igt"

    def make_data(self, cfg: IGTConfig, split: str) -> list[Data]:
        return _graph_data(cfg, split)

    def build(self, cfg: IGTConfig) -> nn.Module:
        fi, nc, ed = _dims(cfg)
        kw = _model_kw(cfg)
        if self.kind != "grea":
            kw["adversarial"] = cfg.adversarial
        return build_graph_model(self.kind, fi, nc, edge_dim=ed, **kw)

    def step(self, model: nn.Module, batch) -> dict[str, Tensor]:
        return model.loss(batch)

    def optimizer(self, cfg: IGTConfig, model: nn.Module):
        """``schedule="alternate"`` (default): one ``cfg.optimizer`` (Adam by default, as GREA's
        official code) per group of ``model.param_groups()``, the intervener of an adversarial IGT
        at ``adv_lr_scale * lr``, as in ``reproduce``; ``"joint"``: one ``cfg.optimizer`` over
        everything."""
        if cfg.schedule not in ("joint", "alternate"):
            raise ValueError(f"schedule must be 'joint' or 'alternate', got {cfg.schedule!r}")
        n = len(self.make_data(cfg, "train"))
        self._per_epoch = max(1, n // cfg.batch_size)  # fit drops the last partial batch
        if cfg.schedule == "joint" or not hasattr(model, "param_groups"):
            return super().optimizer(cfg, model)
        adv = getattr(model, "adversarial", False)
        groups = model.param_groups()
        self._groups = groups
        return NamedOptimizers(
            **{
                k: build_optimizer(
                    v,
                    cfg.optimizer,
                    weight_decay=cfg.weight_decay,
                    lr=cfg.lr * cfg.adv_lr_scale if k == "intervener" and adv else cfg.lr,
                )
                for k, v in groups.items()
            }
        )

    def train_step(self, model: nn.Module, batch, optimizer, step: int) -> dict[str, Tensor]:
        """``train`` runs the same schedule as ``reproduce``: GREA's alternating phases by epoch
        (:func:`alternate_phase`, idle player frozen), the intervener every third step, gradient
        clip 5 (:func:`graph_train_step`). ``schedule="joint"``: one plain optimiser step."""
        if not isinstance(optimizer, dict) and not hasattr(optimizer, "items"):
            optimizer.zero_grad(set_to_none=True)
            out = model.loss(batch)
            out["loss"].backward()
            optimizer.step()
            return {
                k: v.detach() for k, v in out.items() if isinstance(v, Tensor) and v.numel() == 1
            }
        opts = dict(optimizer.items())
        groups = self._groups
        active = alternate_phase(step // self._per_epoch)
        _freeze_idle(groups, active)
        try:
            return graph_train_step(model, batch, opts, active=active, step=step)
        finally:
            for ps in groups.values():
                for p in ps:
                    p.requires_grad_(True)

    def metrics(self, model: nn.Module, dataset) -> dict[str, float]:
        return evaluate_graphs(model, list(dataset))

    def _check_batch(self, cfg: IGTConfig):
        data = _graph_data(IGTConfig(**{**cfg.__dict__, "n_test": 6}), "test")
        return Batch.from_data_list(data[:4])

    def check(self, model: nn.Module, cfg: IGTConfig) -> list[CheckResult]:
        b = self._check_batch(cfg)
        model = copy.deepcopy(model).eval()
        grp = Permutation()
        inp, act = graph_inputs(b), graph_act_in(b)
        nb = b.num_graphs
        res = [
            check_invariant(
                "rationale logits invariant to node permutation",
                GraphFn(model, lambda m, x: m(x), nb),
                inp,
                grp,
                act,
                trials=2,
            )
        ]
        if isinstance(model, IGT):
            partner = torch.arange(nb).roll(1)
            res.append(
                check_invariant(
                    "intervention logits invariant to node permutation (fixed partner)",
                    GraphFn(model, lambda m, x: m.intervene(x, partner), nb),
                    inp,
                    grp,
                    act,
                    trials=2,
                )
            )
        elif isinstance(model, GREA):
            res.append(
                check_invariant(
                    "pair logits invariant to node permutation",
                    GraphFn(model, lambda m, x: m.pair_logits(x), nb),
                    inp,
                    grp,
                    act,
                    trials=2,
                )
            )
        if isinstance(model, IGT) and model.variant == "virtual":
            res.append(
                check_invariant(
                    "virtual-node mask invariant to node permutation",
                    GraphFn(model, lambda m, x: m.virtual_mask(x), nb),
                    inp,
                    grp,
                    act,
                    trials=2,
                )
            )
        an, _ = graph_actions(b.batch)
        res.append(
            check_equivariant(
                "node rationale scores equivariant",
                GraphFn(model, lambda m, x: m.node_scores(x), nb),
                inp,
                grp,
                act,
                an,
                trials=2,
            )
        )
        res.append(
            check_not_invariant(
                "NEGATIVE CONTROL: first-node readout is not invariant",
                GraphFn(model, _first_node_readout, nb),
                inp,
                grp,
                act,
                trials=2,
            )
        )
        return res

    def reproduce(self, cfg: IGTConfig, run, *, quick: bool) -> ReproduceResult:
        t0 = time.perf_counter()
        kinds = ["igt", "igt_coop", "igt_vn", "grea", "erm"]
        cache_dir = None
        if cfg.cache:
            if cfg.cache_dir:
                cache_dir = Path(cfg.cache_dir)
            elif run is not None:
                cache_dir = Path(run.path).resolve().parent / "grid-cache"
        log_path = Path(run.path) / "cells.jsonl" if run is not None else None

        def progress(cell, cached):
            if log_path is not None:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({**cell, "cached": cached}) + "\n")

        if quick:
            cfg = IGTConfig(**{**cfg.__dict__, **_QUICK})
            kinds = ["igt", "igt_vn", "grea", "erm"]
            biases = [cfg.bias]
            rows = run_graph_reproduce(
                kinds, cfg, biases, ["spmotif"], cache_dir=cache_dir, progress=progress
            )
        else:
            biases = [0.5, 0.7, 0.9]
            rows = run_graph_reproduce(
                kinds, cfg, biases, ["spmotif", "molmotif"], cache_dir=cache_dir, progress=progress
            )
        if run is not None:
            (Path(run.path) / "grid.md").write_text(grid_markdown(rows, cfg.seeds))
            run.write_results(rows)
        setting = f"spmotif/b={biases[-1]}"
        base_kind = "grea" if self.kind != "grea" else "erm"
        metric = "rationale_auc" if self.kind != "grea" else "ood_acc"
        me, base = rows[f"{setting}/{self.kind}"], rows[f"{setting}/{base_kind}"]
        arms = {
            f"{k} ({m})": rows[f"{setting}/{k}"][f"{m}_per_seed"]
            for k in kinds
            if k not in (self.kind, base_kind)
            for m in (["ood_acc"] if k == "erm" else ["ood_acc", "rationale_auc"])
        }
        if self.kind != "grea":  # the accuracy behind the rationale AUC
            arms[f"{self.kind} (ood_acc)"] = me["ood_acc_per_seed"]
            arms[f"{base_kind} (ood_acc)"] = base["ood_acc_per_seed"]
        not_showable = ""
        if quick and self.kind != "grea":
            not_showable = (
                "IGT's gain over GREA needs the strongest shortcut (b=0.9) and the full budget "
                "(600 graphs x 25 epochs, minutes for the grid): there IGT-N leads GREA in "
                "rationale AUC on the mean, within noise (README). At the quick size (b=0.5, 240 "
                "graphs, 16 epochs) both find the "
                "motif and their rationale AUCs tie"
            )
        return ReproduceResult(
            task=f"Spurious-Motif (colour shortcut), b={biases[-1]}, OOD test (larger bases)",
            metric=metric,
            method=_GRID_NAMES[self.kind],
            baseline=_GRID_NAMES[base_kind],
            method_values=me[f"{metric}_per_seed"],
            baseline_values=base[f"{metric}_per_seed"],
            seeds=list(range(cfg.seeds)),
            arms=arms,
            not_showable=not_showable,
            invariance_error=max(me["invariance_error_per_seed"]),
            seconds=time.perf_counter() - t0,
            details={"grid": rows},
        )


_META = dict(
    domain="graph",
    authors="Z. Xu, M. Pan, Y. Chen, H. Chen, Y. Yan, M. Das, H. Tong",
    year=2023,
    arxiv="2312.07859",
    code_url="",
    symmetry="graph outputs invariant to node permutation; node mask equivariant",
)


@register(
    "igt",
    paper="Invariant Graph Transformer (IGT-N, node-level intervention)",
    baseline="grea",
    tags=("rationale", "ood", "transformer"),
    **_META,
)
class IGTRecipe(_GraphRecipe):
    """IGT-N on Spurious-Motif."""

    kind = "igt"


@register(
    "igt_vn",
    paper="Invariant Graph Transformer (IGT-VN, virtual-node-level intervention)",
    baseline="grea",
    tags=("rationale", "ood", "transformer"),
    **_META,
)
class IGTVNRecipe(_GraphRecipe):
    """IGT-VN on Spurious-Motif."""

    kind = "igt_vn"


@register(
    "grea",
    paper="Graph Rationalization with Environment-based Augmentations (GREA)",
    baseline="erm",
    tags=("rationale", "ood", "baseline"),
    **{
        **_META,
        "authors": "G. Liu, T. Zhao, J. Xu, T. Luo, M. Jiang",
        "year": 2022,
        "arxiv": "2206.02886",
        "code_url": "https://github.com/liugangcode/GREA",
    },
)
class GREARecipe(_GraphRecipe):
    """GREA (graph-level intervention) baseline on Spurious-Motif."""

    kind = "grea"
