"""Recipe ``pard``: config, data (generic families or the rdkit QM9-like set), symmetry and
leakage checks, and the reproduce experiment: PARD with blocks (``max_hops`` = 1) against the same
network as one-shot diffusion (``max_hops`` = 0, one block) at the same total number of denoising
steps, and an Erdos-Renyi baseline with sizes copied from training graphs; MMD^2 of degree,
clustering and orbit statistics to the test graphs, with the train-vs-test floor."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import ClassVar

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from invariance.core import CheckResult, Recipe, ReproduceResult, TrainConfig, register
from invariance.core.groups import Permutation
from invariance.core.testing import check_equivariant, check_not_invariant
from invariance.core.train import train_arms
from invariance.graph.generation import (
    block_decomposition,
    er_valence_molecules,
    graph_mmds,
    graph_to_smiles,
    make_family,
    molecule_metrics,
    nx_to_data,
    qm9_mini,
    smiles_to_data,
    split_graphs,
)
from invariance.graph.generation.families import FAMILIES
from invariance.graph.pard import PARD
from invariance.graph.recipes._pard_checks import (  # noqa: F401  (re-exported)
    leakage_checks,
    network_checks,
    relabel_error,
    relabel_invariance_error,
)

MOLECULES = "qm9_mini"


@dataclass
class PARDConfig(TrainConfig):
    """PARD recipe config (defaults = tiny preset).

    Args (besides :class:`TrainConfig`): family (a generic family or ``qm9_mini``), num_graphs
    (graphs generated for random families), max_graph_nodes (larger graphs are dropped),
    max_hops (K of the block order; 0 = one-shot diffusion), num_steps (denoising steps per
    block), hidden, edge_hidden, num_layers, heads, norm, ce_coeff, uniform_noise,
    input_residual, absolute_block_id, relative_block_id (the official block-id conditioning
    options: absolute per-node embedding, relative edge encoding): the model; n_samples: graphs
    generated for evaluation; seeds: number of reproduce seeds (``seed``, ``seed + 1``, ...).
    """

    steps: int = 50
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.01
    family: str = "sbm"
    num_graphs: int = 200
    max_graph_nodes: int = 14
    max_hops: int = 1
    num_steps: int = 1
    hidden: int = 32
    edge_hidden: int = 16
    num_layers: int = 2
    heads: int = 4
    norm: str = "ln"
    ce_coeff: float = 0.1
    uniform_noise: bool = False
    input_residual: bool = True
    absolute_block_id: bool = True
    relative_block_id: bool = False
    n_samples: int = 128
    seeds: int = 4

    ranges: ClassVar[dict] = {
        "num_graphs": (3, None),
        "max_graph_nodes": (2, 64),
        "max_hops": (0, 6),
        "num_steps": (1, 1000),
        "hidden": (4, None),
        "edge_hidden": (2, None),
        "num_layers": (1, None),
        "heads": (1, None),
        "ce_coeff": (0.0, None),
        "n_samples": (1, None),
        "seeds": (1, None),
        "steps": (1, None),
    }
    choices: ClassVar[dict] = {"family": (*FAMILIES, MOLECULES), "norm": ("ln", "bn")}

    def validate(self) -> None:
        super().validate()
        if self.hidden % self.heads:
            from invariance.core import ConfigError

            raise ConfigError(f"PARDConfig.heads={self.heads} must divide hidden={self.hidden}")


def _types(cfg: PARDConfig) -> tuple[int, int]:
    return (4, 3) if cfg.family == MOLECULES else (1, 1)


def family_split(cfg: PARDConfig) -> dict[str, list]:
    """``{"train", "val", "test"}`` graphs (PyG ``Data``), the 64/16/20 split, data seed 0."""
    if cfg.family == MOLECULES:
        items = [smiles_to_data(s) for s in qm9_mini(cfg.max_graph_nodes)]
        for d, s in zip(items, qm9_mini(cfg.max_graph_nodes)):
            d.smiles = s
    else:
        gs = make_family(cfg.family, cfg.num_graphs, seed=0)
        items = [nx_to_data(g) for g in gs if 2 <= g.number_of_nodes() <= cfg.max_graph_nodes]
    tr, va, te = split_graphs(items, seed=0)
    return {"train": tr, "val": va, "test": te}


def _to_nx(x: Tensor, adj: Tensor) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(x.numel()))
    g.add_edges_from((int(i), int(j)) for i, j in (adj > 0).nonzero().tolist() if i < j)
    return g


def _data_nx(d: Data) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(int(d.num_nodes)))
    g.add_edges_from(d.edge_index.t().tolist())
    return g


def _er_baseline(train: list, n: int, seed: int) -> list[nx.Graph]:
    """G(n, m) graphs with (n, m) copied from random training graphs."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(train), n):
        d = train[int(i)]
        out.append(
            nx.gnm_random_graph(
                int(d.num_nodes), d.edge_index.size(1) // 2, seed=int(rng.integers(1 << 30))
            )
        )
    return out


def _avg(m: dict) -> float:
    return (m["degree"] + m["clustering"] + m["orbit"]) / 3


@register(
    "pard",
    domain="graph",
    paper="Pard: Permutation-Invariant Autoregressive Diffusion for Graph Generation",
    authors="L. Zhao, X. Ding, L. Akoglu",
    year=2024,
    arxiv="2402.03687",
    code_url="https://github.com/LingxiaoShawn/Pard",
    symmetry="likelihood invariant to node relabelling; denoiser equivariant inside blocks",
    baseline="one-shot diffusion (same network, one block, same total steps)",
    tags=("graph-generation", "diffusion", "autoregressive"),
)
class PARDRecipe(Recipe):
    """PARD on small generic graph families (or the rdkit QM9-like molecules)."""

    Config = PARDConfig
    presets = {
        "tiny": {},
        "full": {
            "family": "caveman_small",
            "num_graphs": 500,
            "max_graph_nodes": 14,
            "steps": 300,
            "batch_size": 8,
            "num_steps": 6,
            "n_samples": 64,
            "seeds": 3,
        },
        "molecules": {
            "family": MOLECULES,
            "max_graph_nodes": 9,
            "steps": 600,
            "batch_size": 16,
            "num_steps": 10,
            "n_samples": 100,
            "seeds": 3,
        },
    }
    collate_fn = list

    def make_data(self, cfg: PARDConfig, split: str) -> list:
        return family_split(cfg)[split]

    def build(self, cfg: PARDConfig) -> nn.Module:
        n_types, e_types = _types(cfg)
        model = PARD.from_graphs(
            family_split(cfg)["train"],
            n_types,
            e_types,
            max_hops=cfg.max_hops,
            hidden=cfg.hidden,
            edge_hidden=cfg.edge_hidden,
            num_layers=cfg.num_layers,
            heads=cfg.heads,
            norm=cfg.norm,
            num_steps=cfg.num_steps,
            ce_coeff=cfg.ce_coeff,
            uniform_noise=cfg.uniform_noise,
            input_residual=cfg.input_residual,
            absolute_block_id=cfg.absolute_block_id,
            relative_block_id=cfg.relative_block_id,
        )
        model.eval_samples = cfg.n_samples
        if cfg.family == MOLECULES:
            model.train_smiles = [d.smiles for d in family_split(cfg)["train"]]
        return model

    def optimizer(self, cfg: PARDConfig, model: nn.Module):
        """The default optimiser with its multi-tensor (``foreach``) update: the same update,
        fewer small kernel launches (PARD has many small parameters)."""
        opt = super().optimizer(cfg, model)
        for group in opt.param_groups:
            if "foreach" in group:
                group["foreach"] = True
        return opt

    def step(self, model: nn.Module, batch) -> dict[str, Tensor]:
        # the training graphs are fixed: their block decompositions are computed once
        return model.loss(model.batch(batch, cache=self.__dict__.setdefault("_blocks", {})))

    def metrics(self, model: nn.Module, dataset) -> dict[str, float]:
        n = int(getattr(model, "eval_samples", 24))
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        samples = model.generate(n, gen)
        secs = time.perf_counter() - t0
        out = {"sample_seconds": secs, "relabel_loss_error": relabel_error(model, dataset)}
        if model.num_node_types > 1:  # molecules
            out.update(_molecule_metrics(samples, getattr(model, "train_smiles", [])))
            return out
        mm = graph_mmds([_data_nx(d) for d in dataset], [_to_nx(x, a) for x, a in samples])
        out.update(mm)
        out["mmd_avg"] = _avg(mm)
        out["mean_nodes"] = float(np.mean([x.numel() for x, _ in samples]))
        return out

    def check(self, model: nn.Module, cfg: PARDConfig) -> list[CheckResult]:
        d = family_split(cfg)["test"][0]
        n = int(d.num_nodes)

        def ids(edge_index):
            return block_decomposition(edge_index, n, cfg.max_hops).block_id.double()

        def broken(edge_index):
            return ids(edge_index) * n + torch.arange(n, dtype=torch.float64)

        group = Permutation(n=n)
        model = model.eval()
        return [
            check_equivariant(
                "block ids equivariant to node permutation",
                ids,
                (d.edge_index,),
                group,
                "edge_index",
                "nodes",
                tol=1e-12,
                trials=3,
            ),
            check_not_invariant(
                "NEGATIVE CONTROL: block ids with label tie-breaking",
                broken,
                (d.edge_index,),
                group,
                "edge_index",
                "nodes",
                trials=3,
            ),
            *network_checks(model, family_split(cfg)["test"][:1], cfg.num_steps),
        ]

    def reproduce(self, cfg: PARDConfig, run, *, quick: bool) -> ReproduceResult:
        t0 = time.perf_counter()  # quick = the tiny preset (the defaults), nothing shrunk
        seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
        split = family_split(cfg)
        nb = [
            block_decomposition(d.edge_index, int(d.num_nodes), cfg.max_hops).num_blocks
            for d in split["train"]
        ]
        total = max(1, round(statistics.mean(nb) * cfg.num_steps))
        arms = {"pard": {}, "one_shot": {"max_hops": 0, "num_steps": total}}
        res = _train_arms(self, cfg, arms, seeds, run)
        if cfg.family == MOLECULES:
            return _molecule_result(cfg, res, split, seeds, total, run, t0)
        test_nx = [_data_nx(d) for d in split["test"]]
        er = [graph_mmds(test_nx, _er_baseline(split["train"], cfg.n_samples, s)) for s in seeds]
        floor = graph_mmds(test_nx, [_data_nx(d) for d in split["train"]])
        details = {
            "family": f"{cfg.family}, graphs <= {cfg.max_graph_nodes} nodes, split sizes "
            f"{[len(split[k]) for k in ('train', 'val', 'test')]}",
            "denoising steps": f"PARD {cfg.num_steps} per block x {statistics.mean(nb):.2f} blocks "
            f"(K={cfg.max_hops}); one-shot {total} steps on one block",
            "floor (train vs test)": floor,
            "per statistic (mean over seeds)": {
                arm: {
                    k: statistics.mean(r[k] for r in rs) for k in ("degree", "clustering", "orbit")
                }
                for arm, rs in {**res, "erdos_renyi": er}.items()
            },
            "sampling seconds (mean)": {
                a: statistics.mean(r["sample_seconds"] for r in rs) for a, rs in res.items()
            },
            "mean generated nodes": {
                a: statistics.mean(r["mean_nodes"] for r in rs) for a, rs in res.items()
            },
        }
        inv = max(r["relabel_loss_error"] for r in res["pard"])
        if run is not None:
            run.write_results({"arms": res, "erdos_renyi": er, "details": details})
        return ReproduceResult(
            task=f"generate {cfg.family} graphs (MMD^2 to the test graphs)",
            metric="MMD^2 mean of degree, clustering, orbit",
            higher_is_better=False,
            method=f"PARD (K={cfg.max_hops}, {cfg.num_steps} steps/block)",
            baseline=f"one-shot diffusion (K=0, {total} steps)",
            method_values=[r["mmd_avg"] for r in res["pard"]],
            baseline_values=[r["mmd_avg"] for r in res["one_shot"]],
            seeds=seeds,
            arms={"Erdos-Renyi (copied n, m)": [_avg(m) for m in er]},
            invariance_error=inv,
            seconds=time.perf_counter() - t0,
            details=details,
        )


MOLECULE_KEYS = ("validity", "uniqueness", "novelty", "connected", "valid_connected")


def _molecule_metrics(samples: list, train_smiles: list) -> dict[str, float]:
    """Validity / uniqueness / novelty (the field's, largest fragment) plus ``connected`` (one
    fragment) and ``valid_connected`` (valid and one fragment) of ``(atoms, bonds)`` samples."""
    out = molecule_metrics([graph_to_smiles(x, a) for x, a in samples], train_smiles)
    conn = [nx.is_connected(_to_nx(x, a)) for x, a in samples]
    ok = [c and graph_to_smiles(x, a) is not None for c, (x, a) in zip(conn, samples)]
    out["connected"] = float(np.mean(conn))
    out["valid_connected"] = float(np.mean(ok))
    return out


def _molecule_result(cfg, res, split, seeds, total, run, t0) -> ReproduceResult:
    """QM9-like molecules: validity of the generated molecules, PARD vs one-shot diffusion, with an
    Erdos-Renyi-with-valences arm (valid by construction: it calibrates what validity says);
    uniqueness, novelty, connectedness in the details."""
    train_smiles = [d.smiles for d in split["train"]]
    er = [
        _molecule_metrics(er_valence_molecules(split["train"], cfg.n_samples, s), train_smiles)
        for s in seeds
    ]
    details = {
        "per metric (mean over seeds)": {
            arm: {k: statistics.mean(r[k] for r in rs) for k in MOLECULE_KEYS}
            for arm, rs in {**res, "er_valence": er}.items()
        },
        "data": f"{MOLECULES}, <= {cfg.max_graph_nodes} heavy atoms, split sizes "
        f"{[len(split[k]) for k in ('train', 'val', 'test')]}",
        "denoising steps": f"PARD {cfg.num_steps} per block (K={cfg.max_hops}); one-shot {total}",
        "sampling seconds (mean)": {
            a: statistics.mean(r["sample_seconds"] for r in rs) for a, rs in res.items()
        },
    }
    if run is not None:
        run.write_results({"arms": res, "er_valence": er, "details": details})
    return ReproduceResult(
        task=f"generate molecules ({MOLECULES}, <= {cfg.max_graph_nodes} heavy atoms)",
        metric="validity",
        higher_is_better=True,
        method=f"PARD (K={cfg.max_hops}, {cfg.num_steps} steps/block)",
        baseline=f"one-shot diffusion (K=0, {total} steps)",
        method_values=[r["validity"] for r in res["pard"]],
        baseline_values=[r["validity"] for r in res["one_shot"]],
        seeds=seeds,
        arms={"Erdos-Renyi with valences (copied n, m)": [r["validity"] for r in er]},
        invariance_error=max(r["relabel_loss_error"] for r in res["pard"]),
        seconds=time.perf_counter() - t0,
        details=details,
    )


def _train_arms(recipe, cfg, arms, seeds, run) -> dict:
    return train_arms(recipe, cfg, arms, seeds, run=run, split="test")
