"""The ``fused=True`` path of AdamP/SGDP: the CPU kernel and the flat-buffer bucket step.

On CPU ``fused=True`` runs the native kernel (:mod:`invariance.optim._kernel`, built with the C++
compiler; its tests skip where there is none); elsewhere the flat-buffer bucket step, one function
run compiled (``torch.compile``) or uncompiled, op by op. The default suite checks the kernel and
the uncompiled bucket step (seconds; the ``path`` fixture): parity with the golden official/timm
trajectories and with the foreach path on the problem that fires every projection view, Nesterov on
and off; state_dict interchangeable between paths and bit-exact resume; the layout (parameters,
gradients and state become views of the flat buffers, fresh gradients and loaded state are taken in,
parameters of one shape with different step counts, several groups, channels-last weights, a layout
it cannot hold); the drop-in behaviour (Tensor lr, lr = 0, ``p.grad`` unchanged). The tests that
compile are ``slow`` (``-m slow``): the compiled graphs are shared by the tests of one process.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from invariance.optim import SGDP, AdamP, _fused, _kernel
from invariance.optim._projection import _ProjectedBase
from invariance.optim._testing import _problem, run_parity_problem

GOLDEN = json.loads((Path(__file__).parent / "golden" / "adamp_parity.json").read_text())
CONFIGS = {
    "adamp": lambda ps, **k: AdamP(ps, lr=1e-2, weight_decay=1e-2, **k),
    "adamp_nesterov": lambda ps, **k: AdamP(ps, lr=1e-2, weight_decay=1e-2, nesterov=True, **k),
    "sgdp": lambda ps, **k: SGDP(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, **k),
    "sgdp_nesterov": lambda ps, **k: SGDP(
        ps, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True, **k
    ),
    "timm_sgdp": lambda ps, **k: SGDP(
        ps, lr=0.1, momentum=0.9, weight_decay=1e-3, project_buffer=False, **k
    ),
}


@pytest.fixture
def eager(monkeypatch):
    """Run the fused bucket step uncompiled, op by op (the arithmetic without a compiler)."""
    monkeypatch.setattr(_ProjectedBase, "_compile", False)


def _need_kernel():
    try:
        _kernel.load()
    except _kernel.KernelUnavailable as e:
        pytest.skip(f"the CPU kernel cannot be built here: {e}")


@pytest.fixture(params=["kernel", "eager"])
def path(request, monkeypatch):
    """``kernel``: the CPU kernel (skips without a C++ compiler); ``eager``: the flat-buffer
    bucket step run uncompiled."""
    if request.param == "eager":
        monkeypatch.setattr(_ProjectedBase, "_compile", False)
    else:
        _need_kernel()
    return request.param


@pytest.fixture
def inductor(monkeypatch):
    """CPU tensors take the ``torch.compile``d flat-buffer step instead of the kernel."""
    monkeypatch.setattr(_ProjectedBase, "_cpu_kernel", False)


def _require_compiled(name):
    """Skip when no compiler works here (the check would be vacuous); fail when the compiler
    works but the fused step fell back (e.g. dynamo's recompile limit)."""
    kind = "adamp" if name.startswith("adamp") else "sgdp"
    if _fused._CACHE.get(kind) is None:
        try:
            torch.compile(lambda t: t * 2 + 1, dynamic=False)(torch.ones(3))
        except Exception:  # noqa: BLE001
            pytest.skip("torch.compile is not usable here; the fused path ran eagerly")
        pytest.fail("torch.compile works but the fused step fell back to eager")


def _max_diff(a, b):
    return max(float((a[k].flatten() - b[k].flatten()).abs().max()) for k in a)


def _golden(name):
    return {
        k: torch.tensor(v, dtype=torch.float64)
        for k, v in GOLDEN["configs"][name]["params"].items()
    }


def _check_parity(name):
    fused = run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), steps=15)
    foreach = run_parity_problem(lambda ps: CONFIGS[name](ps, foreach=True), steps=15)
    assert _max_diff(_golden(name), fused) < 1e-6  # golden: official adamp 0.3.0 / timm, float64
    assert _max_diff(foreach, fused) < 1e-6
    f32 = run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), dtype=torch.float32)
    f32_ref = run_parity_problem(lambda ps: CONFIGS[name](ps), dtype=torch.float32)
    assert _max_diff(f32_ref, f32) < 1e-5


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_parity_golden_and_foreach(name, path):
    _check_parity(name)


@pytest.mark.slow  # compiles a few graphs per configuration (minutes on a loaded CPU)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_compiled_parity_golden_and_foreach(name, inductor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), steps=1)
    _require_compiled(name)
    _check_parity(name)


def _steps(opt, model, x, y, n, set_to_none=True):
    for _ in range(n):
        opt.zero_grad(set_to_none=set_to_none)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def _check_resume(name):
    make = CONFIGS[name]
    # uninterrupted fused run
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), fused=True)
    _steps(opt, model, x, y, 6)
    want = {k: v.detach().clone() for k, v in model.named_parameters()}
    # 3 fused steps, resume from the state_dict in a fresh fused optimizer: bit-exact
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), fused=True)
    _steps(opt, model, x, y, 3)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["fused"] is True
    opt2 = make(list(model.parameters()), fused=True)
    opt2.load_state_dict(sd)
    _steps(opt2, model, x, y, 3)
    got = {k: v.detach() for k, v in model.named_parameters()}
    assert all(torch.equal(got[k], want[k]) for k in want)
    # the same state_dict continues on the foreach path (same state keys and meaning) ...
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), fused=True)
    _steps(opt, model, x, y, 3)
    sd = opt.state_dict()
    opt3 = make(list(model.parameters()), foreach=True)
    sd["param_groups"][0]["fused"] = None
    opt3.load_state_dict(sd)
    _steps(opt3, model, x, y, 3)
    got = {k: v.detach() for k, v in model.named_parameters()}
    assert _max_diff(want, got) < 1e-9  # the paths round differently (float64: ~1e-15)
    # ... and a foreach state_dict continues on the fused path
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), foreach=True)
    _steps(opt, model, x, y, 3)
    sd = opt.state_dict()
    opt4 = make(list(model.parameters()), fused=True)
    sd["param_groups"][0]["fused"] = True
    sd["param_groups"][0]["foreach"] = None
    opt4.load_state_dict(sd)
    _steps(opt4, model, x, y, 3)
    got = {k: v.detach() for k, v in model.named_parameters()}
    assert _max_diff(want, got) < 1e-9


@pytest.mark.parametrize("name", ["adamp_nesterov", "sgdp"])
def test_fused_state_dict_interchangeable_and_exact_resume(name, path):
    _check_resume(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamp_nesterov", "sgdp"])
def test_fused_compiled_state_dict_interchangeable_and_exact_resume(name, inductor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), steps=1)
    _require_compiled(name)
    _check_resume(name)


def _storage(t):
    return t.untyped_storage().data_ptr()


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_fused_layout_views_and_fresh_grads(name, eager):
    model, x, y = _problem(0, torch.float64)
    ps = list(model.parameters())
    opt = CONFIGS[name](ps, fused=True)
    _steps(opt, model, x, y, 2, set_to_none=False)
    keys = ("exp_avg", "exp_avg_sq") if name == "adamp" else ("momentum",)
    # one buffer per role (parameters, gradients, each state tensor) holds every tensor
    for role in [lambda p: p, lambda p: p.grad] + [lambda p, k=k: opt.state[p][k] for k in keys]:
        assert len({_storage(role(p)) for p in ps}) == 1
    ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in ps]
    _steps(opt, model, x, y, 2, set_to_none=False)  # gradients accumulate into their views
    assert ptrs == [(p.data_ptr(), p.grad.data_ptr()) for p in ps]
    # fresh gradients (set_to_none) are taken in; the result equals the foreach path's
    _steps(opt, model, x, y, 2, set_to_none=True)
    model2, _, _ = _problem(0, torch.float64)
    ref = CONFIGS[name](list(model2.parameters()), foreach=True)
    _steps(ref, model2, x, y, 6)
    a = dict(model.named_parameters())
    b = dict(model2.named_parameters())
    assert _max_diff(a, b) < 1e-12
    # a parameter replaced behind the optimizer's back (p.data = ...) is taken in too
    with torch.no_grad():
        model.conv.weight.data = model.conv.weight.detach().clone()
        model2.conv.weight.data = model2.conv.weight.detach().clone()
    _steps(opt, model, x, y, 2)
    _steps(ref, model2, x, y, 2)
    assert _max_diff(dict(model.named_parameters()), dict(model2.named_parameters())) < 1e-12


def _mixed_params(seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    conv = [torch.randn(4, 3, 3, 3, generator=g) for _ in range(3)]
    if channels_last:
        conv = [c.contiguous(memory_format=torch.channels_last) for c in conv]
    return [nn.Parameter(t) for t in conv] + [
        nn.Parameter(torch.randn(5, 6, generator=g)),
        nn.Parameter(torch.randn(6, generator=g)),
        nn.Parameter(torch.randn(6, generator=g)),
        nn.Parameter(torch.randn((), generator=g)),
        nn.Parameter(torch.randn(0, 3, generator=g)),  # empty: state only, never moves
    ]


def _mixed_run(ps, opt, steps=6):
    """Random gradients; parameter 1 and 5 skip some steps (their step counts fall behind)."""
    for t in range(steps):
        g = torch.Generator().manual_seed(100 + t)
        for i, p in enumerate(ps):
            gr = torch.randn(p.shape, generator=g)
            if p.ndim == 4:  # gradient in the parameter's memory format
                gr = (
                    gr.contiguous(memory_format=torch.channels_last) if ps[0].stride(1) == 1 else gr
                )
            p.grad = None if (i in (1, 5) and t % 3 == 1) else gr
        opt.step()
    return [p.detach().clone() for p in ps]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_mixed_steps_groups_and_layouts(name, channels_last, path):
    def make(ps, **k):
        # two groups with their own hyper-parameters
        opt = CONFIGS[name]([{"params": ps[:4]}, {"params": ps[4:], "lr": 3e-3}], **k)
        return opt

    a = _mixed_params(0, channels_last)
    b = _mixed_params(0, channels_last)
    want = _mixed_run(a, make(a, foreach=True))
    opt = make(b, fused=True)
    got = _mixed_run(b, opt)
    for x, y in zip(want, got):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)
    steps = [opt.state[p].get("step") for p in b]
    if name.startswith("adamp"):
        assert steps[0] == 6 and steps[1] == 4  # one bucket, two step counts
    assert all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in b[:3])


def test_fused_layout_it_cannot_hold_takes_the_foreach_path(path):
    # a transposed parameter is neither contiguous nor channels-last: the group runs foreach
    def params():
        g = torch.Generator().manual_seed(0)
        return [
            nn.Parameter(torch.randn(6, 5, generator=g).t()),
            nn.Parameter(torch.randn(4, generator=g)),
        ]

    a, b = params(), params()
    want = _mixed_run(a, AdamP(a, lr=1e-2, weight_decay=0.1, foreach=True), steps=3)
    got = _mixed_run(b, AdamP(b, lr=1e-2, weight_decay=0.1, fused=True), steps=3)
    assert all(torch.equal(x, y) for x, y in zip(want, got))
    assert not b[0].is_contiguous()


@pytest.mark.parametrize("cls,kw", [(AdamP, {"nesterov": True}), (SGDP, {"momentum": 0.9})])
def test_fused_drop_in(cls, kw, path):
    # Tensor lr equals float lr; lr = 0 leaves the parameters untouched; p.grad unchanged
    lrs = [1e-2, 5e-3, 0.0, 0.0, 2e-3]

    def run(lr, set_lr):
        g = torch.Generator().manual_seed(0)
        ps = [
            nn.Parameter(torch.randn(16, 8, generator=g)),
            nn.Parameter(torch.randn(8, generator=g)),
        ]
        opt = cls(ps, lr=lr, weight_decay=0.1, fused=True, **kw)
        out = []
        for t in range(5):
            set_lr(opt, t)
            grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(t)) for p in ps]
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            before = [p.detach().clone() for p in ps]
            opt.step()
            assert all(torch.equal(p.grad, gr) for p, gr in zip(ps, grads))
            if lrs[t] == 0.0:
                assert all(torch.equal(p, q) for p, q in zip(ps, before))
            out.append([p.detach().clone() for p in ps])
        return out

    want = run(lrs[0], lambda o, t: o.param_groups[0].__setitem__("lr", lrs[t]))
    lr = torch.tensor(lrs[0])
    got = run(lr, lambda o, t: lr.fill_(lrs[t]))
    for a, b in zip(want, got):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_fused_without_compiler_takes_the_foreach_path(monkeypatch):
    def unavailable(name):
        raise _fused.CompileUnavailable("no compiler")

    def no_kernel():
        raise _kernel.KernelUnavailable("no C++ compiler found")

    monkeypatch.setattr(_fused, "compiled", unavailable)
    monkeypatch.setattr(_kernel, "load", no_kernel)
    monkeypatch.setattr(_kernel, "_LIB", {})
    ref = run_parity_problem(lambda ps: CONFIGS["adamp"](ps, foreach=True), steps=5)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = run_parity_problem(lambda ps: CONFIGS["adamp"](ps, fused=True), steps=5)
    assert _max_diff(ref, got) == 0.0
    assert sum("CPU kernel is not usable" in str(w.message) for w in rec) == 1  # warned once


def test_fused_first_call_failure_warns_and_falls_back(monkeypatch, inductor):
    def failing(*a, **k):
        raise RuntimeError("InductorError: C++ compile error")

    monkeypatch.setattr(_fused, "_CACHE", {})
    ref = run_parity_problem(lambda ps: CONFIGS["sgdp"](ps, foreach=True), steps=3)
    monkeypatch.setattr(_fused, "compiled", lambda name: failing)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = run_parity_problem(lambda ps: CONFIGS["sgdp"](ps, fused=True), steps=3)
    assert any("fused=True" in str(w.message) for w in rec)
    assert _max_diff(ref, got) < 1e-12


def test_fused_and_foreach_exclusive():
    with pytest.raises(ValueError, match="fused"):
        AdamP([torch.nn.Parameter(torch.randn(3, 3))], fused=True, foreach=True)


def test_kernel_steps_in_place_with_one_call_per_dtype(monkeypatch):
    # the kernel leaves parameters, gradients and state where they are, one native call per dtype
    _need_kernel()
    calls = []
    real = _kernel.run
    monkeypatch.setattr(_kernel, "run", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    ps = _mixed_params(0)[:7]
    ps[5] = nn.Parameter(ps[5].detach().double())
    ptrs = [p.data_ptr() for p in ps]
    opt = AdamP(ps, lr=1e-2, weight_decay=0.1, fused=True)
    for _ in range(2):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
    assert ptrs == [p.data_ptr() for p in ps]
    assert sorted(calls, key=str) == sorted([torch.float32, torch.float64] * 2, key=str)
    assert not getattr(opt, "_flat_layouts", None)  # no flat buffers on CPU


@pytest.mark.parametrize("name", ["adamp", "sgdp_nesterov"])
def test_kernel_threads_give_the_same_result(name):
    # tensors are split over threads; each tensor's arithmetic is the same: bit-equal
    _need_kernel()
    old = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            ps = _mixed_params(1)
            runs.append(_mixed_run(ps, CONFIGS[name](ps, fused=True)))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_kernel_group_with_a_tensor_it_cannot_hold(monkeypatch):
    # a transposed weight (rows not dense) and a bfloat16 one go to the foreach path, the rest
    # to the kernel, in one group
    _need_kernel()
    monkeypatch.setattr(
        _fused, "compiled", lambda name: (_ for _ in ()).throw(_fused.CompileUnavailable("off"))
    )

    def params():
        ps = _mixed_params(2)[:6]
        ps.append(nn.Parameter(torch.randn(6, 5, generator=torch.Generator().manual_seed(3)).t()))
        return ps

    a, b = params(), params()
    want = _mixed_run(a, AdamP(a, lr=1e-2, weight_decay=0.1, foreach=True))
    got = _mixed_run(b, AdamP(b, lr=1e-2, weight_decay=0.1, fused=True))
    for x, y in zip(want, got):
        assert torch.allclose(x, y, rtol=0, atol=1e-6)
