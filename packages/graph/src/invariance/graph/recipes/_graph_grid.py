"""The graph-rationale grid cell shared by the IGT, IGT-VN and GREA recipes (private): dataset
and model arguments from a config, the cache key of a cell, and one cell (train one model kind
on one dataset, bias and seed; evaluate OOD accuracy, rationale AUC and the node-permutation
invariance error). ``recipes.igt`` imports these names and runs the grid."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from invariance.core.groups import Permutation
from invariance.core.testing import equivariance_error
from invariance.graph._perm import GraphFn, graph_act_in, graph_inputs
from invariance.graph.data.mol_motif import make_mol_motif
from invariance.graph.data.spurious_motif import make_spurious_motif
from invariance.graph.nn.rationale import Rationalizer
from invariance.graph.recipes._graph_training import (
    build_graph_model,
    evaluate_graphs,
    train_graph_model,
)

if TYPE_CHECKING:
    from invariance.graph.recipes.igt import IGTConfig


def _graph_data(cfg: IGTConfig, split: str, seed: int | None = None) -> list[Data]:
    seed = cfg.seed if seed is None else seed
    if cfg.dataset == "spmotif":
        n = cfg.n_train if split == "train" else cfg.n_test
        return make_spurious_motif(
            n, bias=cfg.bias, split=split, seed=seed, colour_shortcut=cfg.colour_shortcut
        )
    if cfg.dataset == "molmotif":
        n = cfg.n_train if split == "train" else cfg.n_test
        return make_mol_motif(
            split=split, seed=seed, bias=cfg.bias, max_graphs=n, tag_shortcut=cfg.mol_tag
        )
    raise ValueError(f"dataset must be 'spmotif' or 'molmotif', got {cfg.dataset!r}")


def _dims(cfg: IGTConfig) -> tuple[int, int, int | None]:
    if cfg.dataset == "molmotif":
        return (14 if cfg.mol_tag else 12), 2, 4
    return (4 if cfg.colour_shortcut else 1), 3, None


def _model_kw(cfg: IGTConfig) -> dict:
    return dict(
        hidden=cfg.hidden,
        num_layers=cfg.num_layers,
        gamma=cfg.gamma,
        alpha=cfg.alpha,
        beta=cfg.beta,
        adv_scale=cfg.adv_scale,
        num_virtual=cfg.num_virtual,
        heads=cfg.heads,
        virtual_node=cfg.virtual_node,
        mask=cfg.mask,
        reencode=cfg.reencode,
    )


def _first_node_readout(model: Rationalizer, b) -> Tensor:
    """BROKEN variant for the negative control: read out the first node of each graph only."""
    h, m = model.encode(b)
    first = torch.ones_like(b.batch, dtype=torch.bool)
    first[1:] = b.batch[1:] != b.batch[:-1]
    return model.predictor((h if m is None else m * h)[first])


# bump when a code change alters what a grid cell trains or measures (invalidates the cache)
GRID_CACHE_VERSION = 2
# config fields that do not change a grid cell's training (the cell key holds dataset/bias/seed;
# the grid's model kinds fix ``adversarial``)
_NOT_IN_CELL_HASH = (
    "seed",
    "seeds",
    "steps",
    "ckpt_every",
    "log_every",
    "adversarial",
    "cache",
    "cache_dir",
    "dataset",
    "bias",
)


def grid_cell_key(kind: str, cfg: IGTConfig, seed: int) -> dict:
    """Cache key of one grid cell: kind, dataset, bias, seed and every config field that affects
    its training (a :class:`~invariance.core.cache.ResultCache` hashes it)."""
    fields = {k: v for k, v in sorted(cfg.__dict__.items()) if k not in _NOT_IN_CELL_HASH}
    if cfg.dataset != "molmotif":
        fields.pop("mol_tag", None)
    return {
        "grid": "graph-rationale",
        "v": GRID_CACHE_VERSION,
        "kind": kind,
        "dataset": cfg.dataset,
        "bias": cfg.bias,
        "seed": seed,
        "cfg": fields,
    }


def run_grid_cell(kind: str, cfg: IGTConfig, seed: int) -> dict:
    """Train one model kind on one (dataset, bias, seed) and evaluate it on the OOD test split."""
    fi, nc, ed = _dims(cfg)
    tr, te = _graph_data(cfg, "train", seed), _graph_data(cfg, "test", seed)
    torch.manual_seed(seed)
    m = build_graph_model(kind, fi, nc, edge_dim=ed, **_model_kw(cfg))
    adv_lr = (
        cfg.lr * cfg.adv_lr_scale
        if getattr(m, "adversarial", False) and cfg.schedule == "alternate"
        else None
    )
    t0 = time.perf_counter()
    train_graph_model(
        m,
        tr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=seed,
        schedule=cfg.schedule,
        weight_decay=cfg.weight_decay,
        adv_lr=adv_lr,
        optimizer=cfg.optimizer,
    )
    sec = time.perf_counter() - t0
    r = evaluate_graphs(m, te)
    return {
        "kind": kind,
        "dataset": cfg.dataset,
        "bias": cfg.bias,
        "seed": seed,
        "ood_acc": r["acc"],
        "rationale_auc": r.get("rationale_auc", float("nan")),
        "invariance_error": graph_invariance_error(m, te[:4]),
        "train_seconds": sec,
        "n_train": len(tr),
        "n_test": len(te),
    }


def graph_invariance_error(model: nn.Module, graphs: list[Data]) -> float:
    """Node-permutation invariance error (float64, within-graph permutations) of a trained
    model's graph logits on ``graphs``."""
    b = Batch.from_data_list(graphs)
    m = copy.deepcopy(model).eval()
    rep = equivariance_error(
        GraphFn(m, lambda mm, x: mm(x), b.num_graphs),
        graph_inputs(b),
        Permutation(),
        graph_act_in(b),
        trials=2,
    )
    return float(rep.max_error)
