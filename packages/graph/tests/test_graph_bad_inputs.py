"""Bad-input contract of the graph package's public entry points (CONTRIBUTING.md, "Bad input").

Each entry point gets one valid call; ``fuzz_bad_inputs`` derives NaN/inf/empty/extra-dim/
fewer-dims/int-dtype tensors, negative/NaN/inf/wrong-type numbers and unknown strings from it and
requires a ``ValueError``/``TypeError`` naming the argument (or, for mutations that are valid
input, listed in ``accept``, a finite output).
"""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from invariance.core.testing import fuzz_bad_inputs, fuzz_table
from invariance.graph.data import make_csbm_mixture, make_spurious_motif, node_homophily
from invariance.graph.generation import (
    CategoricalDiffusion,
    block_decomposition,
    compute_mmd,
    cosine_alphabar,
    er_valence_molecules,
    higher_order_degrees,
    make_family,
    nx_to_data,
    qm9_mini,
    smiles_to_data,
    uniform_prior,
)
from invariance.graph.grea import GREA
from invariance.graph.hei import (
    HEI,
    EnvironmentInference,
    hei_penalty,
    local_similarity,
    standardise,
)
from invariance.graph.igt import IGT, Intervener, VirtualNodePooling, derangement
from invariance.graph.nn.gin import GINVirtualNode
from invariance.graph.nn.ppgn_transformer import PPGNTransformer
from invariance.graph.nn.rationale import rationale_auc, size_regulariser, topk_mask
from invariance.graph.pard import PARD

torch.manual_seed(0)
_B = Batch.from_data_list(make_spurious_motif(4, split="test", seed=1))
_G = make_csbm_mixture(60, seed=0, dim=8)


def _graph_loss(model):
    """``model.loss`` on a batch built from raw tensors (what a user passes in the Batch)."""

    def fn(x, edge_index, batch, y):
        return model.loss(Batch(x=x, edge_index=edge_index, batch=batch, y=y))["loss"]

    return fn


def _hei_loss(model):
    def fn(x, edge_index, y, train_mask):
        d = _G.clone()
        d.x, d.edge_index, d.y, d.train_mask = x, edge_index, y, train_mask
        return model.loss(d)["loss"]

    return fn


def _cases():
    torch.manual_seed(0)
    gin = GINVirtualNode(4, 8, num_layers=2)
    igt = IGT(4, 3, hidden=8, num_layers=2)
    igt_vn = IGT(4, 3, variant="virtual", hidden=8, num_layers=2, num_virtual=2)
    grea = GREA(4, 3, hidden=8, num_layers=2)
    hei = HEI(_G.num_nodes, 8, 3, hidden=8)
    inter = Intervener(8, heads=2)
    pool = VirtualNodePooling(8, 2, heads=2)
    env = EnvironmentInference(1, 8, 3)
    g = {"x": _B.x, "edge_index": _B.edge_index, "batch": _B.batch, "y": _B.y}
    m = torch.rand(_B.num_nodes, 1) * 0.8 + 0.1
    logits = torch.randn(10, 3)
    return [
        (
            "GINVirtualNode.forward",
            gin,
            {"x": _B.x, "edge_index": _B.edge_index, "batch": _B.batch},
            {},
        ),
        (
            "GINVirtualNode()",
            GINVirtualNode,
            {"in_channels": 4, "hidden_channels": 8, "num_layers": 2, "dropout": 0.1},
            {},
        ),
        ("IGT.loss", _graph_loss(igt), g, {}),
        ("IGT-VN.loss", _graph_loss(igt_vn), g, {}),
        ("GREA.loss", _graph_loss(grea), g, {}),
        (
            "IGT()",
            IGT,
            {
                "in_channels": 4,
                "num_classes": 3,
                "hidden": 8,
                "gamma": 0.4,
                "alpha": 1.0,
                "beta": 1.0,
                "adv_scale": 0.3,
                "num_virtual": 2,
                "heads": 2,
                "variant": "node",
                "mask": "soft",
                "dropout": 0.0,
            },
            {},
        ),
        (
            "GREA()",
            GREA,
            {
                "in_channels": 4,
                "num_classes": 3,
                "hidden": 8,
                "gamma": 0.4,
                "beta": 1.0,
                "mask": "soft",
            },
            {},
        ),
        (
            "Intervener.forward",
            inter,
            {
                "z": torch.randn(2, 5, 8),
                "gate": torch.rand(2, 5, 1),
                "pad": torch.zeros(2, 5, dtype=torch.bool),
            },
            {},
        ),
        (
            "VirtualNodePooling.forward",
            pool,
            {"h": torch.randn(2, 5, 8), "pad": torch.zeros(2, 5, dtype=torch.bool)},
            {},
        ),
        ("size_regulariser", size_regulariser, {"mask": m, "batch": _B.batch, "gamma": 0.4}, {}),
        ("topk_mask", topk_mask, {"mask": m, "batch": _B.batch, "ratio": 0.4}, {}),
        (
            "rationale_auc",
            rationale_auc,
            {"scores": torch.rand(20), "truth": torch.arange(20) % 2 == 0},
            {},
        ),
        ("derangement", derangement, {"n": 5}, {}),
        (
            "make_spurious_motif",
            make_spurious_motif,
            {"n": 3, "bias": 0.7, "split": "train", "seed": 0},
            {"skip": ("seed",)},
        ),
        (
            "make_csbm_mixture",
            make_csbm_mixture,
            {"n": 60, "num_classes": 3, "dim": 4, "degree": 3, "h_hi": 0.8, "h_lo": 0.2, "seed": 0},
            {"skip": ("seed",)},
        ),
        (
            "node_homophily",
            node_homophily,
            {"edge_index": _G.edge_index, "y": _G.y, "num_nodes": _G.num_nodes},
            {},
        ),
        (
            "HEI()",
            HEI,
            {
                "num_nodes": 60,
                "in_channels": 8,
                "num_classes": 3,
                "hidden": 8,
                "num_envs": 3,
                "penalty": "hei",
                "penalty_weight": 1e4,
                "l2_weight": 1e-3,
                "anneal_steps": 5,
                "estimator": "local",
                "dropout": 0.5,
            },
            {},
        ),
        ("HEI.forward", hei, {"x": _G.x, "edge_index": _G.edge_index}, {}),
        (
            "HEI.loss",
            _hei_loss(hei),
            {"x": _G.x, "edge_index": _G.edge_index, "y": _G.y, "train_mask": _G.train_mask},
            {},
        ),
        (
            "hei_penalty",
            hei_penalty,
            {
                "logits": logits,
                "y": torch.randint(0, 3, (10,)),
                "env": torch.softmax(torch.randn(10, 4), 1),
                "form": "hei",
            },
            {},
        ),
        (
            "local_similarity",
            local_similarity,
            {"x": _G.x, "edge_index": _G.edge_index, "method": "norm2"},
            {},
        ),
        ("EnvironmentInference.forward", env, {"z": torch.randn(10, 1)}, {}),
        ("standardise", standardise, {"z": torch.randn(10)}, {}),
    ]


def _pard_cases():
    """PARD and the generation toolkit (issue 17)."""
    torch.manual_seed(0)
    grids = [nx_to_data(g) for g in make_family("grid_small")[:4]]
    pard = PARD.from_graphs(
        grids, max_hops=1, hidden=8, edge_hidden=4, num_layers=1, heads=2, num_steps=3
    )
    g = grids[2]
    net = PPGNTransformer(8, 4, 1, 2)
    B, N = 2, 5
    mask = torch.ones(B, N, N, dtype=torch.bool)

    def pard_loss(edge_index, num_nodes):
        return pard.loss([Data(edge_index=edge_index, num_nodes=num_nodes)])["loss"]

    return [
        (
            "block_decomposition",
            block_decomposition,
            {"edge_index": g.edge_index, "num_nodes": g.num_nodes, "max_hops": 2},
            {},
        ),
        (
            "higher_order_degrees",
            higher_order_degrees,
            {"edge_index": g.edge_index, "num_nodes": g.num_nodes, "max_hops": 2},
            {},
        ),
        (
            "cosine_alphabar",
            cosine_alphabar,
            {"t": torch.arange(0, 11), "num_steps": 10},
            {"accept": ("t:extra_dim", "t:fewer_dims")},
        ),
        (
            "CategoricalDiffusion()",
            CategoricalDiffusion,
            {"num_steps": 10, "m": torch.tensor([0.5, 0.3, 0.2])},
            {},
        ),
        ("uniform_prior", uniform_prior, {"num_classes": 3}, {}),
        (
            "compute_mmd",
            compute_mmd,
            {"samples1": [np.ones(3)], "samples2": [np.arange(3.0)], "sigma": 1.0},
            {},
        ),
        ("make_family", make_family, {"name": "caveman_small", "n": 5, "seed": 0}, {}),
        ("qm9_mini", qm9_mini, {"max_atoms": 6}, {}),
        ("smiles_to_data", smiles_to_data, {"smiles": "CCO"}, {}),
        (
            "er_valence_molecules",
            er_valence_molecules,
            {"train": [smiles_to_data("CCO"), smiles_to_data("C=CN")], "n": 2, "seed": 0},
            {},
        ),
        (
            "PPGNTransformer.forward",
            net,
            {
                "X": torch.randn(B, N, 8),
                "E": torch.randn(B, N, N, 4),
                "edge_mask": mask,
                "causal": mask,
            },
            {},
        ),
        ("PARD.loss", pard_loss, {"edge_index": g.edge_index, "num_nodes": g.num_nodes}, {}),
        ("PARD.generate", pard.generate, {"num_graphs": 2}, {}),
        (
            "PARD.from_graphs",
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
    ]


CASES = _cases() + _pard_cases()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_graph_entry_point_rejects_bad_inputs(case):
    name, fn, kwargs, kw = case
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_hei_loss_needs_two_training_nodes():
    """Standardising z over one training node divides by a NaN std (before: a NaN loss)."""
    hei = HEI(_G.num_nodes, 8, 3, hidden=8)
    d = _G.clone()
    d.train_mask = torch.zeros_like(d.train_mask)
    d.train_mask[3] = True
    with pytest.raises(ValueError, match="train_mask"):
        hei.loss(d)
    d.train_mask[4] = True  # two nodes: fine
    assert torch.isfinite(hei.loss(d)["loss"])


def test_single_graph_batch_through_batchnorm():
    """A training batch of one graph reaches BatchNorm over graphs (the encoder's virtual-node
    MLP) and over nodes; before: torch's "Expected more than 1 value per channel". Now a
    ValueError names ``batch``; eval mode (running statistics) accepts one graph."""
    one = Batch.from_data_list(make_spurious_motif(1, split="test", seed=0))
    torch.manual_seed(0)
    for model in (IGT(4, 3, hidden=8, virtual_node=True), GREA(4, 3, hidden=8)):
        model.train()
        with pytest.raises(ValueError, match="batch"):
            model.loss(one)
        model.eval()
        assert torch.isfinite(model(one)).all()
    gin = GINVirtualNode(4, 8, virtual_node=True).train()
    with pytest.raises(ValueError, match="batch"):
        gin(one.x, one.edge_index, one.batch)


def test_bad_input_summary():
    reps = [fuzz_bad_inputs(fn, kwargs, name=name, **kw) for name, fn, kwargs, kw in CASES]
    print()
    print(fuzz_table(reps, markdown=True))
    assert sum(r.tried for r in reps) == sum(r.handled for r in reps)
