"""The ``fused=True`` path of AdamP/SGDP (``torch.compile`` of the per-tensor step).

Parity with the golden official/timm trajectories and with our foreach path on the problem that
fires every projection view, Nesterov on and off; state_dict interchangeable between paths;
bit-exact resume; the fallback when no compiler works. The compiled graphs are shared by the tests
of one process (hyper-parameters are compile-time constants, one graph per set and per ndim);
the tests that compile are ``slow`` (``-m slow``): the default suite needs no compiler.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from invariance.optim import SGDP, AdamP, _fused
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


def _require_compiled(name):
    """Skip when the fused path fell back (no usable compiler): the parity would be vacuous."""
    kind = "adamp" if name.startswith("adamp") else "sgdp"
    if _fused._CACHE.get(kind) is None:
        pytest.skip("torch.compile is not usable here; the fused path fell back to foreach")


def _max_diff(a, b):
    return max(float((a[k].flatten() - b[k].flatten()).abs().max()) for k in a)


@pytest.mark.slow  # compiles one graph per configuration and ndim (minutes on a loaded CPU)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_parity_golden_and_foreach(name):
    ref = {
        k: torch.tensor(v, dtype=torch.float64)
        for k, v in GOLDEN["configs"][name]["params"].items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fused = run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), steps=15)
    _require_compiled(name)
    foreach = run_parity_problem(lambda ps: CONFIGS[name](ps, foreach=True), steps=15)
    assert _max_diff(ref, fused) < 1e-6  # golden: official adamp 0.3.0 / timm, float64
    assert _max_diff(foreach, fused) < 1e-6
    f32 = run_parity_problem(lambda ps: CONFIGS[name](ps, fused=True), dtype=torch.float32)
    f32_ref = run_parity_problem(lambda ps: CONFIGS[name](ps), dtype=torch.float32)
    assert _max_diff(f32_ref, f32) < 1e-5


def _steps(opt, model, x, y, n):
    for _ in range(n):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamp_nesterov", "sgdp"])
def test_fused_state_dict_interchangeable_and_exact_resume(name):
    make = CONFIGS[name]
    # uninterrupted fused run
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), fused=True)
    _steps(opt, model, x, y, 6)
    _require_compiled(name)
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
    # the same state_dict continues on the foreach path (same state keys and meaning)
    model, x, y = _problem(0, torch.float64)
    opt = make(list(model.parameters()), fused=True)
    _steps(opt, model, x, y, 3)
    sd = opt.state_dict()
    opt3 = make(list(model.parameters()), foreach=True)
    sd["param_groups"][0]["fused"] = None
    opt3.load_state_dict(sd)
    _steps(opt3, model, x, y, 3)
    got = {k: v.detach() for k, v in model.named_parameters()}
    assert _max_diff(want, got) < 1e-9  # the paths round differently (float64: ~1e-12)


def test_fused_falls_back_without_compiler(monkeypatch):
    def broken(name):
        raise _fused.CompileUnavailable("no compiler")

    monkeypatch.setattr(_fused, "compiled", broken)
    ref = run_parity_problem(lambda ps: CONFIGS["adamp"](ps), steps=5)
    got = run_parity_problem(lambda ps: CONFIGS["adamp"](ps, fused=True), steps=5)
    assert _max_diff(ref, got) == 0.0


def test_fused_first_call_failure_warns_and_falls_back(monkeypatch):
    def failing(*a, **k):
        raise RuntimeError("InductorError: C++ compile error")

    monkeypatch.setattr(_fused, "compiled", lambda name: failing)
    monkeypatch.setattr(_fused, "_CACHE", {})
    ref = run_parity_problem(lambda ps: CONFIGS["sgdp"](ps), steps=3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        got = run_parity_problem(lambda ps: CONFIGS["sgdp"](ps, fused=True), steps=3)
    assert any("fused=True" in str(w.message) for w in rec)
    assert _max_diff(ref, got) == 0.0


def test_fused_and_foreach_exclusive():
    with pytest.raises(ValueError, match="fused"):
        AdamP([torch.nn.Parameter(torch.randn(3, 3))], fused=True, foreach=True)
