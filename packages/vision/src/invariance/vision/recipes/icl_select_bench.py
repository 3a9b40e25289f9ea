"""Benches of InvariantSelectPR (:mod:`invariance.vision.icl_select`): ``icl_select_retrieval``
(our batched cosine top-k vs scikit-learn's brute-force cosine kNN) and ``icl_select_loss`` (the
CCI loss vs ``pytorch_metric_learning``'s SupCon). Registered on import (every module of
``recipes/`` is imported by the package)."""

from __future__ import annotations

import torch

from invariance.core.bench import compare, machine, register_bench
from invariance.vision.icl_select import cci_loss, topk_select

__all__ = ["bench_icl_select_retrieval", "bench_icl_select_loss"]


def _repeats(quick: bool) -> dict:
    return {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}


@register_bench("vision", "icl_select_retrieval")
def bench_icl_select_retrieval(
    *,
    device: str = "cpu",
    quick: bool = False,
    n_query: int = 697,
    n_pool: int = 3300,
    dim: int = 128,
    k: int = 7,
) -> dict:
    """Our batched cosine top-k (:func:`topk_select`) vs scikit-learn's brute-force cosine
    ``NearestNeighbors`` (the field's reference kNN), same embeddings, same k."""
    from sklearn.neighbors import NearestNeighbors

    g = torch.Generator().manual_seed(0)
    q = torch.randn(n_query, dim, generator=g)
    p = torch.randn(n_pool, dim, generator=g)
    qn, pn = q.numpy(), p.numpy()

    def ours():
        topk_select(q.to(device), p.to(device), k)

    def sklearn():
        NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(pn).kneighbors(qn)

    rows = compare(
        {"sklearn_nn_cosine": sklearn, "topk_select": ours},
        reference="sklearn_nn_cosine",
        device=device,
        label=f"{n_query} queries x {n_pool} pool, d={dim}, k={k}",
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}


@register_bench("vision", "icl_select_loss")
def bench_icl_select_loss(
    *, device: str = "cpu", quick: bool = False, batch: int = 256, dim: int = 128
) -> dict:
    """:func:`cci_loss` (forward + backward) vs ``pytorch_metric_learning``'s ``SupConLoss``
    (the field's reference SupCon; optional, timed when installed) on the same batch."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, dim, generator=g).to(device).requires_grad_(True)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    d = torch.randint(0, 3, (batch,), generator=g).to(device)
    fns = {
        "cci_loss": lambda: cci_loss(z, y, d, temperature=0.1).backward(),
        "cci_loss (no domain, = SupCon)": lambda: cci_loss(z, y, None).backward(),
    }
    ref = "cci_loss"
    try:
        from pytorch_metric_learning.losses import SupConLoss
    except ImportError:
        SupConLoss = None
    if SupConLoss is not None:
        pml = SupConLoss(temperature=0.1)
        fns = {"pml_SupConLoss": lambda: pml(z, y).backward(), **fns}
        ref = "pml_SupConLoss"
    rows = compare(
        fns, reference=ref, device=device, label=f"batch {batch}, d={dim}", **_repeats(quick)
    )
    return {"rows": rows, "machine": machine(device)}
