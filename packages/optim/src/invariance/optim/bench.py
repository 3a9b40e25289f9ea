"""Benchmarks: ``invariance-optim bench adamp`` and ``invariance-optim bench zloss``.

Both time through :func:`invariance.core.bench.compare` (interleaved ``torch.utils.benchmark``
timers, repeats, median and spread) and return flat rows. Peers that are not installed are left
out.
"""

from __future__ import annotations

import importlib.util
import statistics
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


@register_bench("optim", "adamp")
def bench_adamp(
    *,
    device: str = "cpu",
    quick: bool = False,
    threads: int = 1,
    repeats: int = 5,
    peers: bool = True,
    inductor: bool = True,
    pairs: int = 9,
) -> dict[str, Any]:
    """AdamP/SGDP step time: official ``adamp``, timm, ours (each path), torch AdamW.

    Times one ``step()`` on the parameter list of ResNet-18 (and ResNet-50 unless ``quick``) with
    real gradients from one backward pass, through :func:`invariance.core.bench.compare`
    (interleaved ``torch.utils.benchmark`` timers, ``repeats`` rounds, median and spread), against
    the official AdamP step. Rows: ``ours AdamP fused`` / ``ours SGDP fused`` (``fused=True``: on
    CPU the native kernel, elsewhere the ``torch.compile``d flat-buffer step), torch ``AdamW``
    (foreach, fused) and the official AdamP; with ``peers`` also the official SGDP, timm's AdamP
    and our foreach and for-loop paths; with ``inductor`` (CPU only) ``ours AdamP fused,
    torch.compile`` (the flat-buffer bucket step, as used off CPU). ``ratios``: each fused row
    against ``torch AdamW fused`` and against the official step. ``paired``: the same ratio
    measured ``pairs`` times, each a :func:`~invariance.core.bench.compare` of the fused row and
    ``torch AdamW fused`` alone (one round each, back to back), so that both sides of a ratio see
    the same machine load; its median, min and max. ``first_step``: the first step of
    each optimizer (state allocation; for ``torch.compile`` the compilation or its load from the
    on-disk cache). ``build``: the one-off build of the CPU kernel with the C++ compiler, timed
    into a fresh directory (the optimizers load the cached library). Peers that are not installed
    are left out.
    """
    dev = torch.device(device)
    have = {m: importlib.util.find_spec(m) is not None for m in ("adamp", "timm")}
    rows: list[dict[str, Any]] = []
    first: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    paired: list[dict[str, Any]] = []
    build = _kernel_build_time() if dev.type == "cpu" else []
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
                if peers:
                    opts["official SGDP"] = partial(adamp.SGDP, params, **sgdp_kw)
            if have["timm"] and peers:
                import timm.optim

                opts["timm AdamP"] = partial(timm.optim.AdamP, params, **adamp_kw)
            if peers:
                opts["ours AdamP foreach"] = partial(AdamP, params, **adamp_kw)
                opts["ours AdamP for-loop"] = partial(AdamP, params, foreach=False, **adamp_kw)
                opts["ours SGDP foreach"] = partial(SGDP, params, **sgdp_kw)
            fused = [("ours AdamP fused", AdamP, adamp_kw), ("ours SGDP fused", SGDP, sgdp_kw)]
            if inductor and dev.type == "cpu":
                fused.append(("ours AdamP fused, torch.compile", _no_kernel(AdamP), adamp_kw))
            for name, cls, kw in fused:  # own copies: the compiled path moves its parameters
                opts[name] = partial(cls, _own_copy(params), fused=True, **kw)
            adamw = partial(torch.optim.AdamW, params, **adamp_kw)
            opts["torch AdamW foreach"] = partial(adamw, foreach=True)
            opts["torch AdamW fused"] = partial(adamw, fused=True)
            snapshot = [p.detach().clone() for p in params]
            fns: dict[str, Callable[[], Any]] = {}
            for name, make in opts.items():
                torch.set_num_threads(threads)
                o = make()
                t0 = time.perf_counter()
                o.step()  # first step: state allocation (and compilation for torch.compile)
                _sync(dev)
                first.append(
                    {"name": name, "label": arch, "first_step_ms": 1e3 * (time.perf_counter() - t0)}
                )
                fns[name] = o.step
            ref = "official AdamP" if have["adamp"] else "ours AdamP fused"
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
            for name in [n for n, _c, _k in fused]:
                paired.append(_paired(fns, name, "torch AdamW fused", pairs, threads, dev, arch))
            with torch.no_grad():
                for p, s in zip(params, snapshot):
                    p.copy_(s)
    finally:
        torch.set_num_threads(old)
    out = {"rows": rows, "ratios": ratios, "paired": paired, "first_step": first}
    out["machine"] = machine(dev)
    if build:
        out["build"] = build
    return out


def _paired(
    fns: dict[str, Callable[[], Any]],
    name: str,
    ref: str,
    pairs: int,
    threads: int,
    dev: torch.device,
    label: str,
) -> dict[str, Any]:
    """``name``'s time over ``ref``'s, measured ``pairs`` times back to back (see bench_adamp)."""
    r = []
    for i in range(pairs):
        two = {name: fns[name], ref: fns[ref]} if i % 2 == 0 else {ref: fns[ref], name: fns[name]}
        got = {
            x["name"]: x["median_ms"]
            for x in compare(two, repeats=1, num_threads=threads, device=dev)
        }
        r.append(got[name] / got[ref])
    r.sort()
    return {
        "name": name,
        "label": label,
        f"vs {ref} (median)": round(statistics.median(r), 3),
        "min": round(r[0], 3),
        "max": round(r[-1], 3),
        "pairs": pairs,
    }


def _no_kernel(cls: type) -> Callable[..., torch.optim.Optimizer]:
    """``cls(..., fused=True)`` that skips the CPU kernel: the ``torch.compile``d bucket step."""

    def make(*a: Any, **kw: Any) -> torch.optim.Optimizer:
        opt = cls(*a, **kw)
        opt._cpu_kernel = False
        return opt

    return make


def _kernel_build_time() -> list[dict[str, Any]]:
    """The CPU kernel's build, timed into a fresh directory (``[]`` without a compiler)."""
    import tempfile
    from pathlib import Path

    from invariance.optim import _kernel

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            _kernel.build(Path(tmp))
        except _kernel.KernelUnavailable:
            return []
        return [{"name": "CPU kernel build (once per machine)", "s": time.perf_counter() - t0}]


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
