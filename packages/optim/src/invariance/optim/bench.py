"""Benchmarks: ``invariance-optim bench adamp`` and ``invariance-optim bench zloss``.

Both time through :func:`invariance.core.bench.compare` (interleaved ``torch.utils.benchmark``
timers, repeats, median and spread) and return flat rows. Peers that are not installed are left
out.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from invariance.core.bench import compare, machine, register_bench
from invariance.optim.adamp import SGDP, AdamP
from invariance.optim.zloss import FactoredSphericalOutput

__all__ = ["bench_adamp", "bench_zloss"]


def _resnet_params(arch: str, device: torch.device) -> list[nn.Parameter]:
    """A torchvision ResNet's parameters (random init, no download) with real gradients."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=100).to(device)
    x = torch.randn(4, 3, 64, 64, device=device)
    y = torch.randint(0, 100, (4,), device=device)
    nn.functional.cross_entropy(model(x), y).backward()
    return list(model.parameters())


def _own_copy(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """The same values and gradients in new tensors (a fused optimizer keeps its parameters in
    its own flat buffers; two of them must not share parameters)."""
    out = []
    for p in params:
        q = nn.Parameter(p.detach().clone())
        q.grad = p.grad.detach().clone()
        out.append(q)
    return out


def _fresh_grads_step(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> Callable[[], None]:
    """A step after ``zero_grad(set_to_none=True)`` + backward: every ``.grad`` is a new tensor,
    so the fused path first copies the gradients into its flat buffer."""
    grads = [p.grad.detach().clone() for p in params]

    def step() -> None:
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()

    return step


@register_bench("optim", "adamp")
def bench_adamp(
    *,
    device: str = "cpu",
    quick: bool = False,
    threads: int = 1,
    repeats: int = 5,
    fused: bool = True,
    eager: bool = True,
) -> dict[str, Any]:
    """AdamP/SGDP step time: official ``adamp``, timm, ours (each path), torch AdamW.

    Times one ``step()`` on the parameter list of ResNet-18 (and ResNet-50 unless ``quick``) with
    real gradients from one backward pass, through :func:`invariance.core.bench.compare`
    (interleaved ``torch.utils.benchmark`` timers, ``repeats`` rounds, median and spread), against
    the official step. Our paths: ``foreach`` (the default), ``for-loop`` and, with ``fused``,
    ``fused`` (the flat-buffer bucket step, ``torch.compile``d), ``fused, fresh grads`` (the same
    after ``zero_grad(set_to_none=True)``: the gradients are copied into the flat buffer first) and,
    with ``eager``, ``fused, uncompiled`` (the same bucket step run op by op; without a compiler
    ``fused=True`` takes the foreach path instead, which is faster). The first step of each
    optimizer (state allocation, and compilation or a compile-cache load for the fused path) is in
    ``first_step``; the ratios of our fused steps to ``torch AdamW fused`` are in ``ratios``. Peers
    that are not installed are left out.
    """
    dev = torch.device(device)
    have = {m: importlib.util.find_spec(m) is not None for m in ("adamp", "timm")}
    rows: list[dict[str, Any]] = []
    first: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    archs = ["resnet18"] if quick else ["resnet18", "resnet50"]
    old = torch.get_num_threads()
    try:
        for arch in archs:
            params = _resnet_params(arch, dev)
            adamp_kw = dict(lr=1e-3, weight_decay=1e-2)
            sgdp_kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
            opts: dict[str, Callable[[], torch.optim.Optimizer]] = {}
            if have["adamp"]:
                import adamp

                opts["official AdamP"] = partial(adamp.AdamP, params, **adamp_kw)
                opts["official SGDP"] = partial(adamp.SGDP, params, **sgdp_kw)
            if have["timm"]:
                import timm.optim

                opts["timm AdamP"] = partial(timm.optim.AdamP, params, **adamp_kw)
            opts["ours AdamP foreach"] = partial(AdamP, params, **adamp_kw)
            opts["ours AdamP for-loop"] = partial(AdamP, params, foreach=False, **adamp_kw)
            opts["ours SGDP foreach"] = partial(SGDP, params, **sgdp_kw)
            own: dict[str, list[nn.Parameter]] = {}
            if fused:
                for name, cls, kw in (
                    ("ours AdamP fused", AdamP, adamp_kw),
                    ("ours AdamP fused, fresh grads", AdamP, adamp_kw),
                    ("ours SGDP fused", SGDP, sgdp_kw),
                ):
                    own[name] = _own_copy(params)
                    opts[name] = partial(cls, own[name], fused=True, **kw)
            if eager:
                own["ours AdamP fused, uncompiled"] = _own_copy(params)
                opts["ours AdamP fused, uncompiled"] = partial(
                    _uncompiled, AdamP, own["ours AdamP fused, uncompiled"], **adamp_kw
                )
            adamw = partial(torch.optim.AdamW, params, **adamp_kw)
            opts["torch AdamW foreach"] = partial(adamw, foreach=True)
            opts["torch AdamW fused"] = partial(adamw, fused=True)
            snapshot = [p.detach().clone() for p in params]
            fns: dict[str, Callable[[], Any]] = {}
            for name, make in opts.items():
                torch.set_num_threads(threads)
                o = make()
                t0 = time.perf_counter()
                o.step()  # first step: state allocation (and compilation for the fused paths)
                _sync(dev)
                first.append(
                    {"name": name, "label": arch, "first_step_ms": 1e3 * (time.perf_counter() - t0)}
                )
                fns[name] = o.step
                if name.endswith("fresh grads"):
                    fns[name] = _fresh_grads_step(o, own[name])
            ref = "official AdamP" if have["adamp"] else "ours AdamP foreach"
            got = compare(
                fns,
                reference=ref,
                repeats=repeats,
                num_threads=threads,
                device=dev,
                label=f"{arch} ({len(params)} tensors, {sum(p.numel() for p in params)} values)",
            )
            rows += got
            med = {r["name"]: r["median_ms"] for r in got}
            for name in med:
                if "fused" in name and name.startswith("ours"):
                    ratios.append(
                        {
                            "name": name,
                            "label": arch,
                            "vs AdamW fused": round(med[name] / med["torch AdamW fused"], 3),
                            "speedup vs official": round(med[ref] / med[name], 3),
                        }
                    )
            with torch.no_grad():
                for p, s in zip(params, snapshot):
                    p.copy_(s)
    finally:
        torch.set_num_threads(old)
    return {"rows": rows, "ratios": ratios, "first_step": first, "machine": machine(dev)}


def _uncompiled(cls: type, params: list[nn.Parameter], **kw: Any) -> torch.optim.Optimizer:
    """``cls(params, fused=True)`` whose bucket step runs uncompiled, op by op."""
    opt = cls(params, fused=True, **kw)
    opt._compile = False
    return opt


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@register_bench("optim", "zloss")
def bench_zloss(
    *,
    device: str = "cpu",
    quick: bool = False,
    threads: int = 1,
    dim: int = 64,
    batch: int = 128,
    repeats: int = 5,
) -> dict[str, Any]:
    """One training step of the output layer at ``d=dim``, batch ``batch``, for growing ``D``.

    Compares the factored Z-loss layer (forward, backward to ``h``, exact SGD update) with a dense
    ``nn.Linear`` + softmax cross-entropy + SGD step and with ``nn.AdaptiveLogSoftmaxWithLoss``
    (cutoffs D/20, D/5) + SGD step, through :func:`invariance.core.bench.compare` (interleaved,
    ``repeats`` rounds, median and spread; reference: the dense step). ``quick`` stops at
    D = 1e5, otherwise D = 1e6 is included. Separate rows (``once``): the one-off ``O(D d^2)``
    construction of the factored layer and one ``U^-1`` refresh (paid every ``refresh_every``
    steps).
    """
    dev = torch.device(device)
    Ds = [1000, 10000, 100000] + ([] if quick else [1000000])
    rows: list[dict[str, Any]] = []
    once: list[dict[str, Any]] = []
    g = torch.Generator().manual_seed(0)
    old = torch.get_num_threads()
    try:
        for D in Ds:
            torch.set_num_threads(threads)
            fns, extra = _zloss_steps(D, dim, batch, dev, g)
            rows += compare(
                fns,
                reference="dense softmax-CE",
                repeats=repeats,
                num_threads=threads,
                device=dev,
                label=f"D={D:g}, d={dim}, batch={batch}",
            )
            once += extra
    finally:
        torch.set_num_threads(old)
    return {"rows": rows, "once": once, "machine": machine(dev)}


def _zloss_steps(
    D: int, dim: int, batch: int, dev: torch.device, g: torch.Generator
) -> tuple[dict[str, Callable[[], None]], list[dict[str, Any]]]:
    h = torch.randn(batch, dim, generator=g).to(dev)
    y = torch.randint(0, D, (batch,), generator=g).to(dev)
    _sync(dev)
    t0 = time.perf_counter()
    fact = FactoredSphericalOutput(
        dim, D, loss="z", device=dev, generator=torch.Generator().manual_seed(1)
    )
    _sync(dev)
    setup = time.perf_counter() - t0  # one-off O(D d^2): random V and the Gram matrix Q
    dense = nn.Linear(dim, D, bias=False).to(dev)
    d_opt = torch.optim.SGD(dense.parameters(), lr=0.01)
    asm = nn.AdaptiveLogSoftmaxWithLoss(
        dim, D, cutoffs=[max(D // 20, 2), max(D // 5, 3)], div_value=4.0
    ).to(dev)
    a_opt = torch.optim.SGD(asm.parameters(), lr=0.01)

    def f_fact() -> None:
        hh = h.detach().requires_grad_(True)
        fact(hh, y).backward()
        fact.step(0.01)

    def f_dense() -> None:
        hh = h.detach().requires_grad_(True)
        d_opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(dense(hh), y).backward()
        d_opt.step()

    def f_asm() -> None:
        hh = h.detach().requires_grad_(True)
        a_opt.zero_grad(set_to_none=True)
        asm(hh, y).loss.backward()
        a_opt.step()

    U = fact.U.clone()
    t0 = time.perf_counter()
    for _ in range(5):
        fact.U_inv.copy_(torch.linalg.inv(U))
    _sync(dev)
    refresh = (time.perf_counter() - t0) / 5
    label = f"D={D:g}"
    extra = [
        {"name": "factored setup (once)", "label": label, "ms": round(1e3 * setup, 3)},
        {
            "name": f"factored U^-1 refresh (every {fact.refresh_every} steps)",
            "label": label,
            "ms": round(1e3 * refresh, 3),
        },
    ]
    fns = {"factored Z-loss": f_fact, "dense softmax-CE": f_dense, "adaptive softmax": f_asm}
    return fns, extra
