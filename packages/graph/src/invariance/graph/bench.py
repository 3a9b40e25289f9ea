"""Benches of the graph domain (registered at import; run with ``invariance-graph bench NAME``).

Timings go through :func:`invariance.core.bench.compare` (``torch.utils.benchmark``, the candidates
interleaved, repeats, median and spread), so every row is flat.

* ``igt_step``: one training step (forward + backward) of IGT-N, IGT-VN, GREA and ERM-GIN on the
  same Spurious-Motif batch, against GREA (the peer IGT replaces; there is no official IGT code).
* ``hei_step``: one full-batch HEI step (penalty via autograd, both players) against one step of
  the plain PyG ``LINKX`` backbone (ERM) on the same CSBM-mixture graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch

from invariance.core.bench import compare, machine, register_bench
from invariance.graph.data import make_csbm_mixture, make_spurious_motif
from invariance.graph.hei import HEI, neighbour_pattern
from invariance.graph.recipes.igt import build_graph_model


@register_bench("graph", "igt_step")
def bench_igt_step(
    *, device: str = "cpu", quick: bool = False, batch_size: int = 64, hidden: int = 32
) -> dict:
    """Milliseconds per training step of IGT-N / IGT-VN / GREA / ERM-GIN on one batch."""
    bs = 16 if quick else batch_size
    b = Batch.from_data_list(make_spurious_motif(bs, split="test", seed=0)).to(device)
    fns = {}
    for kind in ("grea", "igt", "igt_vn", "erm"):
        torch.manual_seed(0)
        m = build_graph_model(kind, 4, 3, hidden=hidden).to(device).train()

        def step(m=m):
            m.zero_grad(set_to_none=True)
            m.loss(b)["loss"].backward()

        fns[kind] = step
    rows = compare(
        fns,
        reference="grea",
        repeats=3 if quick else 5,
        min_run_time=0.1 if quick else 0.2,
        device=device,
        label=f"{bs} test graphs, hidden {hidden}",
    )
    return {"rows": rows, "machine": machine(device)}


@register_bench("graph", "hei_step")
def bench_hei_step(
    *, device: str = "cpu", quick: bool = False, n: int = 2000, hidden: int = 64
) -> dict:
    """Milliseconds per full-batch step: HEI (LINKX + environment penalty) vs PyG LINKX alone."""
    nn_ = 300 if quick else n
    d = make_csbm_mixture(nn_, seed=0).to(device)
    z = neighbour_pattern(d)
    torch.manual_seed(0)
    hei = HEI(nn_, d.x.size(1), 3, hidden=hidden, anneal_steps=0).to(device).train()
    erm = hei.backbone

    def step_hei():
        hei.zero_grad(set_to_none=True)
        hei.loss(d, z)["loss"].backward()

    def step_erm():
        erm.zero_grad(set_to_none=True)
        F.cross_entropy(erm(d.x, d.edge_index)[d.train_mask], d.y[d.train_mask]).backward()

    rows = compare(
        {"linkx_erm": step_erm, "hei": step_hei},
        reference="linkx_erm",
        repeats=3 if quick else 5,
        min_run_time=0.1 if quick else 0.2,
        device=device,
        label=f"CSBM-mixture, {nn_} nodes, hidden {hidden}",
    )
    return {"rows": rows, "machine": machine(device)}
