"""invariance.graph.generation: block decomposition, categorical diffusion and metrics against
values recorded by running the official PARD code.

Provenance of ``pard_golden.json``: github.com/LingxiaoShawn/Pard at commit f0f8d98 (MIT), run on
CPU with the project's torch 2.14 / torch-geometric 2.8.1 / networkx 3.6.1 and a pure-torch
``torch_scatter`` shim (``scatter(..., out=x)`` accumulating into ``x``), lightning /
graph_tool / pygsp / wandb stubbed (unused by these functions); ORCA compiled from
``pard/analysis/orca/orca.cpp`` with ``g++ -O2 -std=c++11``. Functions (named in the json):
``ToParallelBlocks`` / ``compute_higher_order_degrees`` (block ids, sizes, degrees, keys),
``noise_schedule`` and ``DiscreteDiffusion`` methods (float32),
``spectre_utils.degree_stats / clustering_stats /
orbit_stats_all / spectral_stats`` and raw ``orca`` counts.
"""

import json
import pathlib

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from invariance.core.groups import Permutation
from invariance.core.testing import assert_equivariant, assert_not_invariant, fuzz_bad_inputs
from invariance.graph.generation import (
    CategoricalDiffusion,
    block_decomposition,
    clustering_mmd,
    compute_mmd,
    cosine_alphabar,
    degree_mmd,
    er_valence_molecules,
    graph_to_smiles,
    higher_order_degrees,
    make_family,
    molecule_metrics,
    nx_to_data,
    orbit_counts,
    orbit_counts_bruteforce,
    orbit_mmd,
    qm9_mini,
    smiles_to_data,
    spectral_mmd,
    split_graphs,
    uniform_prior,
)

GOLD = json.loads((pathlib.Path(__file__).parent / "pard_golden.json").read_text())


def _graphs(key):
    out = []
    for edges in GOLD["metrics"][key]:
        n = edges[-1][1]
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(tuple(e) for e in edges[:-1])
        out.append(g)
    return out


@pytest.mark.parametrize(
    "case", GOLD["blocks"]["cases"], ids=lambda c: f"{c['graph']}-K{c['max_hops']}"
)
def test_block_decomposition_matches_official(case):
    ei = torch.tensor(case["edges"], dtype=torch.long).t()
    n, K = case["num_nodes"], case["max_hops"]
    assert higher_order_degrees(ei, n, K).tolist() == case["keys"]
    dec = block_decomposition(ei, n, K)
    assert dec.block_id.tolist() == case["block_id"]
    assert dec.block_size.tolist() == case["block_size"]
    assert dec.block_degree.tolist() == case["block_degree"]


def test_key_packing_overflow_is_kept():
    """K8 with K=3: walk counts reach N, digits overlap; the official packing is reproduced."""
    case = next(c for c in GOLD["blocks"]["cases"] if c["graph"] == "k8" and c["max_hops"] == 3)
    assert max(case["keys"]) > 8**3  # overlapping digits
    ei = torch.tensor(case["edges"]).t()
    assert higher_order_degrees(ei, 8, 3).tolist() == case["keys"]


def _block_ids(n):
    def fn(edge_index):
        return block_decomposition(edge_index, n, 3).block_id.double()

    return fn


def _broken_block_ids(n):
    """NEGATIVE CONTROL: ties broken by node label (peel one node at a time)."""

    def fn(edge_index):
        bid = block_decomposition(edge_index, n, 3).block_id
        return (bid * n + torch.arange(n)).double()

    return fn


@pytest.mark.parametrize("family", ["caveman_small", "community2", "sbm"])
def test_block_ids_permutation_equivariant(family):
    g = make_family(family, 3, seed=1)[2]
    d = nx_to_data(g)
    n = d.num_nodes
    assert_equivariant(
        _block_ids(n), (d.edge_index,), Permutation(n=n), "edge_index", "nodes", tol=0.0, trials=5
    )
    assert_not_invariant(
        _broken_block_ids(n), (d.edge_index,), Permutation(n=n), "edge_index", "nodes", trials=5
    )


def test_alphabar_matches_official():
    for T, ref in GOLD["diffusion"]["alphabar"].items():
        got = cosine_alphabar(torch.arange(int(T) + 1), int(T))
        assert torch.allclose(got, torch.tensor(ref), atol=1e-7, rtol=0)
        assert bool((got[1:] <= got[:-1]).all())  # monotone


@pytest.mark.parametrize("prior", ["marginal", "uniform"])
def test_diffusion_pieces_match_official(prior):
    G = GOLD["diffusion"]
    P = G["priors"][prior]
    D = CategoricalDiffusion(G["T"], torch.tensor(P["m"]))
    x0, xt, t = torch.tensor(G["x0"]), torch.tensor(G["xt"]), torch.tensor(G["t"])
    logits = torch.tensor(G["logits"])
    s = (t - 1).clamp(min=1)
    tt = s + 1

    def close(a, b, tol=2e-6):
        assert torch.allclose(a, torch.tensor(b), atol=tol, rtol=1e-5), (a, b)

    close(D.q_t0_prob(x0, t), P["qt_0_prob"])
    close(D.q_s_t0_prob(xt, x0, tt, s), P["qs_t0_prob"])
    close(D.p_s_t_prob(logits.softmax(-1), xt, tt, s), P["ps_t_prob"])
    close(D.p_s_t_logprob(logits.log_softmax(-1), xt, tt, s), P["ps_t_logprob"], 2e-5)
    close(D.prior_kl(x0), P["prior_at_T"])
    keep = torch.tensor(G["conditional_mask"])
    vlb, ce = D.loss_terms(logits, torch.where(keep, x0, xt), x0, t, keep=keep)
    assert float(vlb.sum()) == pytest.approx(P["vlb_sum"], rel=1e-5)
    assert float(ce.sum()) == pytest.approx(P["ce_sum"], rel=1e-5)
    assert float(vlb.sum() + 0.1 * ce.sum()) == pytest.approx(P["loss"]["loss"], rel=1e-5)


def test_kernel_rows_sum_to_one():
    D = CategoricalDiffusion(30, torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 4, (6, 7), generator=g)
    xt = torch.randint(0, 4, (6, 7), generator=g)
    t = torch.tensor([2, 5, 10, 20, 29, 30])
    p0 = torch.randn(6, 7, 4, generator=g, dtype=torch.float64).softmax(-1)
    for p in (
        D.q_t0_prob(x0, t, torch.float64),
        D.q_s_t0_prob(xt, x0, t, t - 1, torch.float64),
        D.p_s_t_prob(p0, xt, t, t - 1),
    ):
        assert torch.allclose(p.sum(-1), torch.ones(6, 7, dtype=torch.float64), atol=1e-12)
        assert float(p.min()) >= 0


def test_orbit_counter_equals_bruteforce():
    rng = np.random.default_rng(0)
    graphs = [
        nx.gnp_random_graph(int(rng.integers(4, 11)), float(p), seed=i)
        for i, p in enumerate(rng.uniform(0.1, 0.9, 25))
    ]
    graphs += [nx.complete_graph(5), nx.petersen_graph(), nx.star_graph(5), nx.cycle_graph(6)]
    for g in graphs:
        assert (orbit_counts(g) == orbit_counts_bruteforce(g)).all()


def test_orbit_counter_equals_orca():
    gs = _graphs("ref")[:2] + _graphs("pred")[:2]
    for g, ref in zip(gs, GOLD["metrics"]["orca_counts"]):
        assert orbit_counts(g).tolist() == ref


def test_mmds_match_official():
    ref, pred = _graphs("ref"), _graphs("pred")
    M = GOLD["metrics"]
    assert degree_mmd(ref, pred) == pytest.approx(M["degree"], abs=1e-12)
    assert clustering_mmd(ref, pred) == pytest.approx(M["clustering"], abs=1e-12)
    assert orbit_mmd(ref, pred) == pytest.approx(M["orbit"], abs=1e-12)
    assert spectral_mmd(ref, pred) == pytest.approx(M["spectral"], abs=1e-12)
    assert degree_mmd(ref, ref) == pytest.approx(0.0, abs=1e-12)


def test_families_and_split():
    gs = make_family("grid_small")
    assert len(gs) == 108
    tr, va, te = split_graphs(gs, seed=0)
    assert (len(tr), len(va), len(te)) == (69, 17, 22)
    assert (
        make_family("caveman_small", 10, seed=3)[0].edges
        == make_family("caveman_small", 10, seed=3)[0].edges
    )


def test_molecules_roundtrip_and_metrics():
    smi = qm9_mini()
    assert len(smi) == 412
    d = smiles_to_data(smi[5])
    adj = torch.zeros(d.num_nodes, d.num_nodes, dtype=torch.long)
    adj[d.edge_index[0], d.edge_index[1]] = d.edge_attr + 1
    back = graph_to_smiles(d.x, adj)
    assert back == smi[5]
    bad = adj.clone()
    bad[0, 1:] = 3  # triple bonds everywhere from atom 0: invalid valence
    bad[1:, 0] = 3
    assert graph_to_smiles(d.x, bad) is None
    m = molecule_metrics([back, back, None, "CCO"], smi)
    assert m["validity"] == 0.75 and m["uniqueness"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="unknown atom"):
        smiles_to_data("CCS")


def test_er_valence_baseline_respects_valences():
    from invariance.graph.generation.molecules import VALENCE

    train = [smiles_to_data(s) for s in qm9_mini()[:40]]
    out = er_valence_molecules(train, 30, seed=1)
    assert len(out) == 30
    sizes = {int(d.num_nodes) for d in train}
    for x, adj in out:
        assert int(x.numel()) in sizes
        assert torch.equal(adj, adj.t()) and int(adj.diagonal().abs().sum()) == 0
        used = adj.sum(1)  # bond orders = classes 1..3
        assert all(int(u) <= VALENCE[int(a)] for u, a in zip(used, x))
        assert graph_to_smiles(x, adj) is not None  # valid by construction
    again = er_valence_molecules(train, 30, seed=1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(out, again))
    with pytest.raises(ValueError, match="train"):
        er_valence_molecules([Data(edge_index=torch.zeros(2, 0, dtype=torch.long))], 3)


# ---------------------------------------------------------------- bad inputs
# ``ENTRY_POINTS``: name -> (callable, one valid call's kwargs, fuzz options). Each is fuzzed here
# and collected by ``tests/test_graph_bad_inputs.py``'s package-wide summary.


def _entry_points() -> dict:
    g = nx_to_data(make_family("grid_small")[2])
    graph = {"edge_index": g.edge_index, "num_nodes": g.num_nodes, "max_hops": 2}
    return {
        "block_decomposition": (block_decomposition, graph, {}),
        "higher_order_degrees": (higher_order_degrees, graph, {}),
        "cosine_alphabar": (
            cosine_alphabar,
            {"t": torch.arange(0, 11), "num_steps": 10},
            {"accept": ("t:extra_dim", "t:fewer_dims")},
        ),
        "CategoricalDiffusion()": (
            CategoricalDiffusion,
            {"num_steps": 10, "m": torch.tensor([0.5, 0.3, 0.2])},
            {},
        ),
        "uniform_prior": (uniform_prior, {"num_classes": 3}, {}),
        "compute_mmd": (
            compute_mmd,
            {"samples1": [np.ones(3)], "samples2": [np.arange(3.0)], "sigma": 1.0},
            {},
        ),
        "make_family": (make_family, {"name": "caveman_small", "n": 5, "seed": 0}, {}),
        "qm9_mini": (qm9_mini, {"max_atoms": 6}, {}),
        "smiles_to_data": (smiles_to_data, {"smiles": "CCO"}, {}),
        "er_valence_molecules": (
            er_valence_molecules,
            {"train": [smiles_to_data("CCO"), smiles_to_data("C=CN")], "n": 2, "seed": 0},
            {},
        ),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_generation_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)


def test_parallel_blocks_cache_gives_the_same_batch():
    """The optional per-graph cache (used by the recipe's training step) changes nothing: the
    batch equals the uncached one, on a hit and across ``max_hops`` (part of the cache key)."""
    import dataclasses

    from invariance.graph.generation import parallel_blocks

    graphs = [nx_to_data(g) for g in make_family("caveman_small", 6, seed=1)]
    cache: dict = {}
    for K in (1, 1, 2):
        ref = parallel_blocks(graphs, K)
        got = parallel_blocks(graphs, K, cache=cache)
        for f in dataclasses.fields(ref):
            assert torch.equal(getattr(ref, f.name), getattr(got, f.name)), (K, f.name)
    assert len(cache) == len(graphs)
    with pytest.raises(TypeError, match="cache"):
        parallel_blocks(graphs, 1, cache=[])
