"""Benches of the graph domain (registered at import; run with ``invariance-graph bench NAME``).

Timings go through :func:`invariance.core.bench.compare` (``torch.utils.benchmark``, the candidates
interleaved, repeats, median and spread), so every row is flat.

* ``igt_step``: one training step (forward + backward) of IGT-N, IGT-VN, GREA and ERM-GIN on the
  same Spurious-Motif batch, against GREA (the peer IGT replaces; there is no official IGT code).
* ``hei_step``: one full-batch HEI step (penalty via autograd, both players) against one step of
  the plain PyG ``LINKX`` backbone (ERM) on the same CSBM-mixture graph.
"""

from __future__ import annotations

import contextlib
import io

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


# --------------------------------------------------------------------------- PARD
def _official_pard(root: str | None):
    """Import the official PARD code from a checkout at ``root`` (``PARD_OFFICIAL_ROOT``), with
    pure-torch stand-ins for what it imports but does not use here (``torch_scatter`` is given the
    three functions the dense batching calls; ``lightning`` a plain ``nn.Module`` base without
    logging; ``pyemd``/``graph_tool``/``pygsp``/``wandb`` empty). ``None`` when unavailable."""
    import importlib.util
    import os
    import sys
    import types

    root = root or os.environ.get("PARD_OFFICIAL_ROOT")
    if not root or not os.path.isdir(os.path.join(root, "pard")):
        return None

    def scatter(src, index, dim=0, out=None, dim_size=None, reduce="sum"):
        size = list(src.shape)
        size[dim] = dim_size if dim_size is not None else int(index.max()) + 1
        out = torch.zeros(size, dtype=src.dtype) if out is None else out
        idx = index.view([-1] + [1] * (src.dim() - 1)).expand_as(src) if src.dim() > 1 else index
        return out.scatter_add_(dim, idx, src)

    def scatter_max(src, index, dim=0, dim_size=None):
        n = dim_size if dim_size is not None else int(index.max()) + 1
        out = torch.full((n,), torch.iinfo(src.dtype).min, dtype=src.dtype)
        out = out.scatter_reduce(0, index, src, "amax")
        return out, None

    if importlib.util.find_spec("torch_scatter") is None:
        ts = types.ModuleType("torch_scatter")
        ts.scatter, ts.scatter_max = scatter, scatter_max
        ts.scatter_add = lambda src, index, dim=0, out=None, dim_size=None: scatter(
            src, index, dim, out, dim_size
        )
        sys.modules["torch_scatter"] = ts
    if importlib.util.find_spec("lightning") is None:
        lm = types.ModuleType("lightning")

        class LightningModule(torch.nn.Module):
            def save_hyperparameters(self, *a, **k):
                pass

            def log(self, *a, **k):
                pass

            log_dict = log

            @property
            def device(self):
                return next(self.parameters()).device

        lm.LightningModule = LightningModule
        sys.modules["lightning"] = lm
    for name in ("pyemd", "pygsp", "wandb", "graph_tool", "graph_tool.all"):
        if (
            name.split(".")[0] not in sys.modules
            and importlib.util.find_spec(name.split(".")[0]) is None
        ):
            sys.modules[name] = types.ModuleType(name)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        from pard.parallel import task, transform

        return task, transform
    except Exception:  # noqa: BLE001  (any import problem: no official side)
        return None


def _ours_to_official(state: dict, official_state: dict) -> dict:
    return {k: state[k].reshape(v.shape) for k, v in official_state.items() if k in state}


@register_bench("graph", "pard")
def bench_pard(
    *,
    device: str = "cpu",
    quick: bool = False,
    batch_size: int = 16,
    hidden: int = 32,
    edge_hidden: int = 16,
    layers: int = 2,
    official_root: str = "",
) -> dict:
    """PARD on caveman graphs (<= 16 nodes, K=1): training step (forward + backward on a
    prepared batch), sampling ``batch_size`` graphs, block decomposition and degree MMD, ours vs
    the official code when ``official_root`` (or ``PARD_OFFICIAL_ROOT``) points to a checkout."""
    from torch_geometric.data import Batch

    from invariance.graph.generation import (
        block_decomposition,
        compute_mmd,
        make_family,
        nx_to_data,
    )
    from invariance.graph.generation.metrics import degree_hist
    from invariance.graph.pard import PARD

    off = _official_pard(official_root or None)
    bs = 8 if quick else batch_size
    gs = [
        nx_to_data(g) for g in make_family("caveman_small", 60, seed=0) if g.number_of_nodes() <= 16
    ][:bs]
    torch.manual_seed(0)
    ours = PARD.from_graphs(
        gs,
        max_hops=1,
        hidden=hidden,
        edge_hidden=edge_hidden,
        num_layers=layers,
        heads=4,
        num_steps=4 if quick else 10,
    )
    pb = ours.batch(gs)

    def our_step():
        ours.zero_grad(set_to_none=True)
        ours.loss(pb, with_block=False)["loss"].backward()

    # denoise the last block of every graph (T reverse steps) on the same dense input
    half = pb.nodes.size(1) // 2
    bid = torch.where(pb.virtual, torch.full_like(pb.block_id, -1), pb.block_id)[:, :half]
    last = (bid == bid.max(1, keepdim=True).values) & (bid >= 0)
    bdeg = pb.block_degree[:, : int(bid.max()) + 1]

    def our_block():
        ours._denoise_last_block(
            pb.nodes[:, :half], pb.edges[:, :half, :half], bid, last, bdeg, None
        )

    ours.eval()
    steps = {"ours": our_step}
    sample = {"ours": our_block}
    blocks = {"ours": lambda: [block_decomposition(d.edge_index, d.num_nodes, 1) for d in gs]}
    hists = [degree_hist(g) for g in make_family("caveman_small", 100, seed=1)]
    mmd = {"ours": lambda: compute_mmd(hists[:50], hists[50:])}
    ref = None
    if off is not None:
        task, transform = off
        from pard.analysis.dist_helper import compute_mmd as off_mmd
        from pard.analysis.dist_helper import gaussian_tv
        from pard.parallel import utils as U

        data = [
            transform.ToParallelBlocks(1)(transform.ToOneHot(1, 1, True, True)(d.clone()))
            for d in gs
        ]
        nd, ed = U.get_node_edge_marginal_distribution(data)
        isz, _, nbl = U.get_init_block_size_degree_marginal_distrbution(data)
        mbd = ours.net.input_conditioner[1].block_degree_embedding.num_embeddings
        kw = dict(
            channels=hidden,
            num_layers=layers,
            norm="ln",
            prenorm=True,
            add_transpose=True,
            edge_channels=edge_hidden,
            n_head=4,
        )
        bm = task.PredictBlockProperties(2, 3, max(nbl) + 3, len(isz), mbd, **kw)
        # the official constructor prints its noise marginals; keep them out of the bench table
        with contextlib.redirect_stdout(io.StringIO()):
            om = task.AutoregressiveDiffusion(
                2,
                3,
                max(nbl) + 3,
                len(isz),
                mbd,
                use_input=True,
                coeff_ce=0.1,
                num_diffusion_steps=ours.num_steps,
                node_marginal_distribution=nd,
                edge_marginal_distribution=ed,
                initial_blocksize_distribution=isz,
                blocksize_model=bm,
                **kw,
            )
        om.load_state_dict(_ours_to_official(ours.net.state_dict(), om.state_dict()), strict=False)
        bm.load_state_dict(
            _ours_to_official(ours.block_model.state_dict(), bm.state_dict()), strict=False
        )
        sb = Batch.from_data_list(data)

        def off_step():
            om.zero_grad(set_to_none=True)
            om._shared_step(sb.clone()).backward()

        steps["official"], ref = off_step, "official"
        om.eval()

        def off_block():
            om.generate_last_block(
                Batch(
                    nodes=pb.nodes[:, :half].clone(),
                    edges=pb.edges[:, :half, :half].clone(),
                    nodes_blockid=bid.clone(),
                    virtual_node_mask=last.clone(),
                    block_size=pb.block_size.clone(),
                    block_degree=bdeg.clone(),
                )
            )

        sample["official"] = off_block
        blocks["official"] = lambda: [transform.ToParallelBlocks(1)(d.clone(), True) for d in data]
        mmd["official"] = lambda: off_mmd(
            hists[:50], hists[50:], kernel=gaussian_tv, is_parallel=False
        )
    kw = dict(repeats=3 if quick else 5, min_run_time=0.1 if quick else 0.3, device=device)
    rows = compare(
        steps,
        reference=ref,
        label=f"train step, {bs} graphs, {pb.nodes.size(1)} doubled nodes",
        **kw,
    )
    rows += compare(
        sample,
        reference=ref,
        label=f"denoise the last block of {bs} graphs, {ours.num_steps} steps",
        **kw,
    )
    rows += compare(blocks, reference=ref, label=f"block decomposition of {bs} graphs", **kw)
    rows += compare(mmd, reference=ref, label="degree MMD, 50 x 50 graphs", **kw)
    for r in rows:
        r["official_available"] = off is not None
    return {"rows": rows, "machine": machine(device)}
