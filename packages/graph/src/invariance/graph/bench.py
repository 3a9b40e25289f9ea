"""Benches of the graph domain (registered at import; run with ``invariance-graph bench NAME``).

* ``igt_step``: wall time of one training step (forward + backward) of IGT-N, IGT-VN, GREA and
  ERM-GIN on the same Spurious-Motif batch. GREA is the peer IGT replaces; there is no official
  IGT code to time against.
* ``hei_step``: one full-batch HEI step (penalty via autograd, both players) against one step of
  the plain PyG ``LINKX`` backbone (ERM) on the same CSBM-mixture graph.
"""

from __future__ import annotations

import torch

from invariance.core.bench import register_bench, time_fn


@register_bench("graph", "igt_step")
def bench_igt_step(*, device: str = "cpu", quick: bool = False, batch_size: int = 64,
                   hidden: int = 32) -> dict:
    """Seconds per training step of IGT-N / IGT-VN / GREA / ERM-GIN on one batch."""
    from torch_geometric.data import Batch

    from invariance.graph.data import make_spurious_motif
    from invariance.graph.igt import build_graph_model

    bs = 16 if quick else batch_size
    b = Batch.from_data_list(make_spurious_motif(bs, split="test", seed=0)).to(device)
    out = {}
    for kind in ("igt", "igt_vn", "grea", "erm"):
        torch.manual_seed(0)
        m = build_graph_model(kind, 4, 3, hidden=hidden).to(device).train()

        def step(m=m):
            m.zero_grad(set_to_none=True)
            m.loss(b)["loss"].backward()

        t = time_fn(step, warmup=1 if quick else 3, repeat=3 if quick else 10, device=device)
        out[f"{kind}_ms"] = 1e3 * t["median_s"]
    out["batch_graphs"] = bs
    out["igt_over_grea"] = out["igt_ms"] / out["grea_ms"]
    return out


@register_bench("graph", "hei_step")
def bench_hei_step(*, device: str = "cpu", quick: bool = False, n: int = 2000,
                   hidden: int = 64) -> dict:
    """Seconds per full-batch step: HEI (LINKX + environment penalty) vs PyG LINKX alone."""
    import torch.nn.functional as F

    from invariance.graph.data import make_csbm_mixture
    from invariance.graph.hei import HEI, neighbour_pattern

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

    r = 3 if quick else 10
    th = time_fn(step_hei, warmup=1, repeat=r, device=device)["median_s"]
    te = time_fn(step_erm, warmup=1, repeat=r, device=device)["median_s"]
    return {"hei_ms": 1e3 * th, "linkx_erm_ms": 1e3 * te, "overhead": th / te, "nodes": nn_}
