"""PARD: parity with the official network and training loss, causal masking, in-block
equivariance, relabelling invariance of the loss, and a learning test.

Provenance of ``pard_golden_net.pt``: github.com/LingxiaoShawn/Pard at commit f0f8d98 (MIT), run on
CPU (torch 2.14, torch-geometric 2.8.1) with a pure-torch ``torch_scatter`` shim and a lightning
stub (``LightningModule`` = ``nn.Module`` without logging). Four graphs (relaxed caveman
(2, 4, 0.2, seed 1), 2x3 grid, path P5, star S4), ``ToOneHot`` -> ``ToParallelBlocks(max_hops=2)``
-> ``ToDenseParallelBlocksBatch``; ``AutoregressiveDiffusion(2, 3, ..., channels=16, num_layers=2,
norm='ln', add_transpose=True, edge_channels=8, n_head=4, use_input=True, coeff_ce=0.1,
num_diffusion_steps=10)`` with marginals from ``get_node_edge_marginal_distribution``; LayerNorm
affine parameters perturbed; the step embedding patched to take float steps (our deviation, see
``invariance.graph.pard``). Stored: the state dicts, ``model(dense)`` logits at steps
(3, 7, 1, 10), ``_shared_step`` loss after ``torch.manual_seed(123)`` and the
``PredictBlockProperties._shared_step`` loss.
"""

import pathlib

import pytest
import torch
from torch_geometric.data import Data

from invariance.core.testing import fuzz_bad_inputs
from invariance.graph.generation import make_family, nx_to_data
from invariance.graph.nn.ppgn_transformer import PPGNTransformer
from invariance.graph.pard import PARD, graph_statistics, official_state_to_ours
from invariance.graph.recipes.pard import (
    PARDConfig,
    PARDRecipe,
    family_split,
    leakage_checks,
    relabel_invariance_error,
)

GOLD = torch.load(pathlib.Path(__file__).parent / "pard_golden_net.pt", weights_only=True)


def _official_model():
    gs = [Data(edge_index=e, num_nodes=n) for e, n in zip(GOLD["edges"], GOLD["num_nodes"])]
    st = graph_statistics(gs, GOLD["max_hops"])
    m = PARD(
        st,
        max_hops=GOLD["max_hops"],
        hidden=16,
        edge_hidden=8,
        num_layers=2,
        heads=4,
        num_steps=GOLD["T"],
        ce_coeff=0.1,
    )
    sd = {
        k: v
        for k, v in official_state_to_ours(GOLD["state"]).items()
        if k not in ("node_noise", "edge_noise", "initial_blocksize_distribution")
    }
    m.net.load_state_dict(sd)
    m.block_model.load_state_dict(official_state_to_ours(GOLD["block_state"]))
    return m.eval(), gs, st


def test_statistics_and_layout_match_official():
    m, gs, st = _official_model()
    assert torch.allclose(st["node_marginal"], GOLD["node_dist"])
    assert torch.allclose(st["edge_marginal"], GOLD["edge_dist"])
    assert torch.allclose(st["init_size"], GOLD["init_size"])
    assert (st["max_num_blocks"], st["max_block_size"], st["max_block_degree"]) == (
        GOLD["max_num_blocks"],
        GOLD["max_block_size"],
        GOLD["max_block_degree"],
    )
    b, d = m.batch(gs), GOLD["dense"]
    for ours, key in [
        (b.nodes, "nodes"),
        (b.edges, "edges"),
        (b.block_id, "nodes_blockid"),
        (b.virtual, "virtual_node_mask"),
        (b.block_degree, "block_degree"),
        (b.block_size, "block_size"),
    ]:
        assert torch.equal(ours.to(d[key].dtype), d[key]), key


def test_network_matches_official():
    m, _, _ = _official_model()
    d = GOLD["dense"]
    with torch.no_grad():
        nl, el = m.net(
            d["nodes"],
            d["edges"],
            d["nodes_blockid"],
            d["virtual_node_mask"],
            d["block_degree"],
            d["timestep"],
        )
    assert torch.allclose(nl, GOLD["node_logit"], atol=1e-5)
    assert torch.allclose(el, GOLD["edge_logit"], atol=1e-5)


def test_training_losses_match_official():
    """Same RNG stream as the official ``prepare_input`` (steps, then node and edge noise)."""
    m, gs, _ = _official_model()
    torch.manual_seed(123)
    with torch.no_grad():
        out = m.loss(gs)
    assert float(out["diffusion"]) == pytest.approx(GOLD["loss"], rel=1e-5)
    assert float(out["block"]) == pytest.approx(GOLD["block_loss"], rel=1e-5)


REL = torch.load(pathlib.Path(__file__).parent / "pard_golden_relative.pt", weights_only=True)


@pytest.mark.parametrize("absolute", [True, False])
def test_relative_block_id_matches_official(absolute):
    """Relative block-id edge encoding (official ``use_relative_blockid=True``), with and without
    the absolute block id. Provenance of ``pard_golden_relative.pt``: same official commit, shim,
    graphs and sizes as ``pard_golden_net.pt`` (module docstring), recorded by the script
    ``graph_pard_golden_relative.py`` (kept with the integration notes): ``AutoregressiveDiffusion(
    ..., use_relative_blockid=True, use_absolute_blockid=absolute)`` after ``torch.manual_seed(0)``
    (the ``absolute=False`` model loads the other's weights minus the block-id embedding),
    ``model.edge_conditioner[0](e, dense)`` on a random edge tensor, ``model(dense)`` logits,
    ``_shared_step`` after ``torch.manual_seed(123)``; ``PredictBlockProperties(...,
    use_relative_blockid=True, use_absolute_blockid=absolute)._shared_step`` (same weights)."""
    gs = [Data(edge_index=e, num_nodes=n) for e, n in zip(REL["edges"], REL["num_nodes"])]
    st = graph_statistics(gs, GOLD["max_hops"])
    kw = dict(hidden=16, edge_hidden=8, num_layers=2, heads=4, num_steps=GOLD["T"], ce_coeff=0.1)
    m = PARD(
        st, max_hops=GOLD["max_hops"], relative_block_id=True, absolute_block_id=absolute, **kw
    )
    skip = ("node_noise", "edge_noise", "initial_blocksize_distribution")
    sd = official_state_to_ours(REL["abs1"]["state"])
    sd = {k: v for k, v in sd.items() if k not in skip}
    if not absolute:
        sd = {k: v for k, v in sd.items() if "block_id_embedding" not in k}
    m.net.load_state_dict(sd)
    bsd = official_state_to_ours(REL["block"]["state"])
    m.block_model.load_state_dict({k: v for k, v in bsd.items() if absolute or "block_id" not in k})
    m.eval()
    d, g = REL["dense"], REL["abs1" if absolute else "abs0"]
    ids, virt = d["nodes_blockid"], d["virtual_node_mask"]
    with torch.no_grad():
        enc = m.net.edge_conditioner[0](g["edge_in"], ids, virt)
        nl, el = m.net(d["nodes"], d["edges"], ids, virt, d["block_degree"], d["timestep"])
    assert torch.allclose(enc, g["edge_conditioned"], atol=1e-6)
    assert torch.allclose(nl, g["node_logit"], atol=1e-5)
    assert torch.allclose(el, g["edge_logit"], atol=1e-5)
    torch.manual_seed(123)
    with torch.no_grad():
        out = m.loss(gs)
    assert float(out["diffusion"]) == pytest.approx(g["loss"], rel=1e-5)
    block_loss = REL["block"]["loss" if absolute else "loss_abs0"]
    assert float(out["block"]) == pytest.approx(block_loss, rel=1e-5)
    # the encoding depends on block distances only: shifting every block id leaves it unchanged
    shift = torch.where(ids >= 0, ids + 1, ids)
    with torch.no_grad():
        assert torch.equal(m.net.edge_conditioner[0](g["edge_in"], shift, virt), enc)


@pytest.mark.parametrize("family,K", [("caveman_small", 1), ("sbm", 3), ("grid_small", 2)])
def test_no_leakage_through_causal_mask(family, K):
    cfg = PARDConfig(family=family, max_hops=K, max_graph_nodes=16)
    torch.manual_seed(0)
    model = PARDRecipe().build(cfg)
    graphs = family_split(cfg)["train"][:3]
    ok, leak = leakage_checks(model, graphs)
    assert ok.passed and ok.error == 0.0 and ok.variation > 1e-3, ok  # later blocks did move
    assert leak.passed and leak.negative_control, leak


def test_relative_block_id_keeps_causality_and_invariance():
    """With the relative encoding instead of the absolute id: still no leakage (exact) and a
    relabelling-invariant loss."""
    cfg = PARDConfig(family="caveman_small", max_hops=1, max_graph_nodes=16, relative_block_id=True)
    cfg.absolute_block_id = False
    torch.manual_seed(0)
    model = PARDRecipe().build(cfg)
    assert isinstance(model.net.input_conditioner[0], torch.nn.Identity)
    graphs = family_split(cfg)["train"][:3]
    ok, leak = leakage_checks(model, graphs)
    assert ok.passed and ok.error == 0.0 and ok.variation > 1e-3, ok
    assert leak.passed and leak.negative_control, leak
    assert relabel_invariance_error(model, graphs[0], seed=1) < 1e-9


def test_recipe_checks_pass():
    cfg = PARDConfig()
    torch.manual_seed(0)
    r = PARDRecipe()
    for c in r.check(r.build(cfg), cfg):
        assert c.passed, (c.name, c.error, c.detail)


@pytest.mark.parametrize("family,K", [("caveman_small", 1), ("sbm", 2), ("grid_small", 3)])
def test_loss_invariant_to_relabelling(family, K):
    cfg = PARDConfig(family=family, max_hops=K, max_graph_nodes=16)
    torch.manual_seed(0)
    model = PARDRecipe().build(cfg)
    for s, d in enumerate(family_split(cfg)["train"][:3]):
        assert relabel_invariance_error(model, d, seed=s) < 1e-9


def test_learning_and_generation():
    torch.manual_seed(0)
    gs = [nx_to_data(g) for g in make_family("ladder_small")[:4]]
    m = PARD.from_graphs(
        gs, max_hops=1, hidden=16, edge_hidden=8, num_layers=1, heads=2, num_steps=4
    )
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = m.loss(gs, generator=gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    for x, adj in m.generate(4, torch.Generator().manual_seed(1)):
        assert 1 <= x.numel() <= m.max_nodes
        assert torch.equal(adj, adj.t()) and int(adj.diagonal().abs().sum()) == 0
        assert int(adj.max()) <= 1 and int(x.max()) == 0  # no virtual classes left


def test_one_shot_is_one_block():
    gs = [nx_to_data(g) for g in make_family("grid_small")[:3]]
    m = PARD.from_graphs(gs, max_hops=0, hidden=8, edge_hidden=4, num_layers=1, heads=2)
    assert m.max_num_blocks == 1
    assert int(m.batch(gs).block_id.max()) == 0


def test_bad_inputs_are_named():
    gs = [nx_to_data(g) for g in make_family("grid_small")[:3]]
    m = PARD.from_graphs(gs, max_hops=1, hidden=8, edge_hidden=4, num_layers=1, heads=2)
    with pytest.raises(ValueError, match="self-loops"):
        m.loss([Data(edge_index=torch.tensor([[0, 1, 1], [1, 0, 1]]), num_nodes=2)])
    with pytest.raises(ValueError, match="empty"):
        m.loss([Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=0)])
    big = nx_to_data(make_family("grid_small")[-1])
    with pytest.raises(ValueError, match="max_nodes"):
        m.loss([big])
    with pytest.raises(ValueError, match="symmetric"):
        m.loss([Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)])
    with pytest.raises(ValueError, match="unknown type"):
        m.loss(
            [Data(x=torch.tensor([0, 3]), edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2)]
        )
    with pytest.raises(ValueError, match="num_graphs"):
        m.generate(0)
    with pytest.raises(ValueError, match="heads"):
        PARD.from_graphs(gs, hidden=6, heads=4)


# ---------------------------------------------------------------- bad inputs
# ``ENTRY_POINTS``: name -> (callable, one valid call's kwargs, fuzz options). Each is fuzzed here
# and collected by ``tests/test_graph_bad_inputs.py``'s package-wide summary.


def _entry_points() -> dict:
    torch.manual_seed(0)
    grids = [nx_to_data(g) for g in make_family("grid_small")[:4]]
    pard = PARD.from_graphs(
        grids, max_hops=1, hidden=8, edge_hidden=4, num_layers=1, heads=2, num_steps=3
    )
    g = grids[2]
    B, N = 2, 5
    mask = torch.ones(B, N, N, dtype=torch.bool)

    def pard_loss(edge_index, num_nodes):
        return pard.loss([Data(edge_index=edge_index, num_nodes=num_nodes)])["loss"]

    return {
        "PPGNTransformer.forward": (
            PPGNTransformer(8, 4, 1, 2),
            {
                "X": torch.randn(B, N, 8),
                "E": torch.randn(B, N, N, 4),
                "edge_mask": mask,
                "causal": mask,
            },
            {},
        ),
        "PARD.loss": (pard_loss, {"edge_index": g.edge_index, "num_nodes": g.num_nodes}, {}),
        "PARD.generate": (pard.generate, {"num_graphs": 2}, {}),
        "PARD.from_graphs": (
            lambda **kw: PARD.from_graphs(grids, **kw),
            {
                "max_hops": 1,
                "hidden": 8,
                "edge_hidden": 4,
                "num_layers": 1,
                "heads": 2,
                "num_steps": 3,
                "ce_coeff": 0.1,
                "norm": "ln",
                "absolute_block_id": True,
                "relative_block_id": True,
            },
            {},
        ),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_pard_bad_inputs(name):
    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert rep.ok, "\n".join(rep.failures)
