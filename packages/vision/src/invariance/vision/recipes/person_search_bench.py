"""Benches of the person-search evaluation: ``person_search_search`` (our
:func:`~invariance.vision.person_search_det.search_map_topk` against SeqNet's ``eval_search_prw``,
github.com/serend1p1ty/SeqNet, MIT, when ``SEQNET_REPO`` points at a checkout of it) and
``person_search_eval`` (:func:`~invariance.vision.person_search.reid_map_cmc` against a NumPy
loop of the Market-1501 protocol)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import types
from pathlib import Path

import torch

from invariance.core.bench import compare, machine, register_bench
from invariance.vision.person_search import reid_map_cmc
from invariance.vision.person_search_det import search_map_topk

__all__ = ["bench_person_search_search", "bench_person_search_eval"]


def _seqnet_eval(repo: str):
    """SeqNet's ``eval_search_prw``, loaded from ``repo/eval_func.py``; its ``utils`` helpers
    (torch/tabulate logging, Kuhn-Munkres for CBGM, both unused with ``cbgm=False``) are stubbed
    while the file loads."""
    path = Path(repo) / "eval_func.py"
    if not path.exists():
        return None
    stubs = {
        "utils": types.ModuleType("utils"),
        "utils.km": types.ModuleType("utils.km"),
        "utils.utils": types.ModuleType("utils.utils"),
    }
    stubs["utils.km"].run_kuhn_munkres = lambda *a, **k: None
    stubs["utils.utils"].write_json = lambda *a, **k: None
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("seqnet_eval_func", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mod.eval_search_prw


@register_bench("vision", "person_search_search")
def bench_person_search_search(
    *, device: str = "cpu", quick: bool = False, n_scenes: int = 60, n_ids: int = 20
) -> dict:
    """Person-search mAP / top-k over ``n_scenes`` gallery scenes (every ground-truth box a
    query): ours vs SeqNet's ``eval_search_prw`` (``SEQNET_REPO``; the reference when set)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    gt_boxes, gt_pids, gallery = [], [], []
    for _ in range(n_scenes):
        k = int(torch.randint(1, 4, (), generator=g))
        pids = torch.randperm(n_ids, generator=g)[:k]
        xy = 40 * torch.rand(k, 2, generator=g, dtype=torch.float64)
        wh = torch.stack(
            [5 + 10 * torch.rand(k, generator=g), 10 + 20 * torch.rand(k, generator=g)]
        )
        boxes = torch.cat([xy, xy + wh.T.double()], 1)
        det = boxes + torch.randn(k, 4, generator=g, dtype=torch.float64)
        emb = torch.nn.functional.normalize(
            torch.randn(k, 32, generator=g, dtype=torch.float64), dim=1
        )
        gt_boxes.append(boxes)
        gt_pids.append(pids)
        gallery.append({"boxes": det, "emb": emb})
    q_emb = torch.cat([d["emb"] for d in gallery])
    q_pid = torch.cat(gt_pids)
    q_scene = torch.cat([torch.full((len(p),), i) for i, p in enumerate(gt_pids)])

    fns = {"search_map_topk (ours)": lambda: search_map_topk(
        q_emb, q_pid, q_scene, gallery, gt_boxes, gt_pids, topk=(1, 5, 10)
    )}  # fmt: skip
    ref = "search_map_topk (ours)"
    official = _seqnet_eval(os.environ.get("SEQNET_REPO", ""))
    if official is not None:

        class _DS:
            def __init__(self, annos):
                self.annotations, self.img_prefix = annos, ""

            def __len__(self):
                return len(self.annotations)

        annos = [
            {"img_name": f"s{i}", "boxes": b.numpy(), "pids": p.numpy(), "cam_id": 0}
            for i, (b, p) in enumerate(zip(gt_boxes, gt_pids))
        ]
        q_annos = [
            {"img_name": f"s{int(s)}", "boxes": gt_boxes[int(s)][j][None].numpy(),
             "pids": int(gt_pids[int(s)][j]), "cam_id": 0}
            for s in range(n_scenes) for j in range(len(gt_pids[s]))
        ]  # fmt: skip
        dets = [
            np.concatenate([d["boxes"].numpy(), np.ones((len(d["boxes"]), 1))], 1) for d in gallery
        ]
        feats = [d["emb"].numpy() for d in gallery]
        qf = list(q_emb.numpy())
        keep = [i for i, a in enumerate(q_annos) if sum(a["pids"] in x["pids"] for x in annos) > 1]
        q_annos = [q_annos[i] for i in keep]
        qf = [qf[i] for i in keep]

        def run_official():
            with contextlib.redirect_stdout(io.StringIO()):
                official(_DS(annos), _DS(q_annos), dets, feats, qf, None, None, cbgm=False)

        fns["SeqNet eval_search_prw"] = run_official
        ref = "SeqNet eval_search_prw"
    reps = {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}
    rows = compare(
        fns, reference=ref, device=device, label=f"{n_scenes} scenes, {len(q_pid)} queries", **reps
    )
    return {"rows": rows, "machine": machine(device)}


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
