"""Machine-checked symmetry: equivariance errors, asserts, negative controls, contract tests.

This is public API: a user audits their own model with it, e.g.::

    from invariance.core import groups, testing
    testing.assert_invariant(model, (pos,), groups.SO3(), ("points",))
    testing.assert_equivariant(
        layer, (x, edge_index), groups.Permutation(), ("nodes", "edge_index"), "nodes"
    )

How it works (modelled on e3nn's ``util/test.py``): for a few random group elements ``g`` it
compares ``fn(g . x)`` with ``g . fn(x)``. The model and inputs are cast to float64 first
(``dtype=None`` keeps native dtypes), so rounding does not hide or fake a violation. The error is
the max absolute difference; a check passes when ``error <= tol * max(1, max|output|)``, with
``tol`` from :func:`default_tol` unless given.

A symmetry test must be able to fail: pair every check with :func:`assert_not_invariant` on a broken
variant (the *negative control*).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from invariance.core.contract import (
    readme_snippets,
    run_contract,
    run_readme_snippets,
    with_package,
)
from invariance.core.fuzz import (
    BadCase,
    FuzzReport,
    assert_rejects_bad_inputs,
    bad_input_cases,
    bad_input_summary,
    collect_entry_points,
    fuzz_bad_inputs,
    fuzz_table,
)
from invariance.core.groups import Group
from invariance.core.recipe import CheckResult

__all__ = [
    "SymmetryReport",
    "VacuousCheckError",
    "output_variation",
    "DEFAULT_MIN_VARIATION",
    "default_tol",
    "equivariance_error",
    "assert_invariant",
    "assert_equivariant",
    "assert_not_invariant",
    "assert_not_equivariant",
    "check_invariant",
    "check_equivariant",
    "check_not_invariant",
    "as_float64",
    "with_package",
    "run_contract",
    "readme_snippets",
    "run_readme_snippets",
    "BadCase",
    "FuzzReport",
    "bad_input_cases",
    "fuzz_bad_inputs",
    "assert_rejects_bad_inputs",
    "fuzz_table",
    "collect_entry_points",
    "bad_input_summary",
]

DEFAULT_MIN_VARIATION = 1e-3


class VacuousCheckError(AssertionError):
    """A symmetry check on outputs that barely vary across the inputs: it cannot fail, so it
    proves nothing. Feed inputs whose outputs vary (or pass ``min_variation=0`` knowingly)."""


def output_variation(y: Any) -> float:
    """``(max - min) / max(1, max|y|)`` over the elements of each tensor in ``y``; the largest."""
    best = 0.0
    for _, v in _flatten(y):
        if not isinstance(v, Tensor) or v.numel() == 0 or v.is_complex():
            continue
        v64 = v.detach().double()
        if not torch.isfinite(v64).all():
            continue
        scale = max(1.0, float(v64.abs().max()))
        best = max(best, float(v64.max() - v64.min()) / scale)
    return best


_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}


def default_tol(dtype: torch.dtype | None) -> float:
    """Tolerance (relative to ``max(1, max|output|)``) for a dtype: 1e-9 float64, 1e-4 float32."""
    return _TOL.get(dtype if dtype is not None else torch.get_default_dtype(), 1e-4)


@dataclass
class SymmetryReport:
    """Outcome of :func:`equivariance_error`.

    Attributes:
        max_error: worst absolute error over trials and outputs.
        relative_error: ``max_error / max(1, max|output|)`` for the worst output.
        per_output: worst absolute error per output name.
        worst_output: name of the output with the worst relative error.
        worst_element: description of the group element that produced it.
        scale: ``max(1, max|output|)`` of that output.
        variation: how much the reference outputs vary: ``(max - min) / max(1, max|y|)`` over
            the elements of each output, the largest over outputs. A check whose outputs barely
            vary (an untrained model with tiny output variance, a constant function) passes any
            symmetry test, so the asserts refuse it below ``min_variation``.
    """

    max_error: float
    relative_error: float
    per_output: dict[str, float] = field(default_factory=dict)
    worst_output: str = ""
    worst_element: str = ""
    scale: float = 1.0
    group: str = ""
    trials: int = 0
    variation: float = 0.0

    def __float__(self) -> float:
        return float(self.max_error)

    def __str__(self) -> str:
        return (
            f"{self.group}: max error {self.max_error:.3g} (relative {self.relative_error:.3g}) "
            f"at output {self.worst_output!r} for {self.worst_element}"
        )


# --------------------------------------------------------------------------- structure helpers


def _flatten(obj: Any, prefix: str = "out") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}[{k!r}]")
        return out
    if isinstance(obj, (tuple, list)):
        out = []
        for i, v in enumerate(obj):
            out += _flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix, obj)]


def _map_struct(obj: Any, spec: Any, fn: Callable[[Any, Any], Any], where: str) -> Any:
    """Apply ``fn(spec_leaf, leaf)`` over a tensor structure and a spec mirroring it.

    A non-structured spec (string, callable, None) is broadcast to every leaf."""
    if isinstance(obj, Mapping):
        if isinstance(spec, Mapping):
            unknown = set(spec) - set(obj)
            if unknown:
                raise ValueError(f"{where}: action given for unknown keys {sorted(unknown)}")
            return type(obj)({k: _map_struct(v, spec.get(k), fn, where) for k, v in obj.items()})
        return type(obj)({k: _map_struct(v, spec, fn, where) for k, v in obj.items()})
    if isinstance(obj, (tuple, list)):
        if isinstance(spec, (tuple, list)):
            if len(spec) != len(obj):
                raise ValueError(
                    f"{where}: {len(obj)} entries but {len(spec)} actions ({spec!r}); "
                    "give one per entry"
                )
            return type(obj)(_map_struct(v, s, fn, where) for v, s in zip(obj, spec))
        return type(obj)(_map_struct(v, spec, fn, where) for v in obj)
    return fn(spec, obj)


def _cast(x: Any, dtype: torch.dtype | None) -> Any:
    if dtype is not None and isinstance(x, Tensor) and x.is_floating_point():
        return x.to(dtype)
    return x


def _call(fn: Callable, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return fn(**inputs)
    if isinstance(inputs, tuple):
        return fn(*inputs)
    return fn(inputs)


def _tensors(inputs: Any) -> list[Tensor]:
    return [v for _, v in _flatten(inputs) if isinstance(v, Tensor)]


def as_float64(module: nn.Module) -> nn.Module:
    """A float64 deep copy of ``module`` (for checks through a lambda that closes over a model)."""
    return copy.deepcopy(module).to(torch.float64)


def _prepare(fn: Callable, dtype: torch.dtype | None) -> Callable:
    if isinstance(fn, nn.Module) and dtype is not None:
        return copy.deepcopy(fn).to(dtype)
    return fn


# --------------------------------------------------------------------------- core measurement


def equivariance_error(
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    act_out: Any = None,
    *,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Worst error between ``fn(g . x)`` and ``g . fn(x)`` over ``trials`` random group elements.

    Args:
        fn: a callable or ``nn.Module`` (modules are deep-copied and cast to ``dtype``).
        inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments.
        group: a :class:`~invariance.core.groups.Group` (samples ``g``, knows its representations).
        act_in: how ``g`` acts on the inputs, mirroring ``inputs`` (a representation name, a
            callable ``(g, x) -> x`` or ``None`` per entry; one spec applies to every entry).
        act_out: how ``g`` acts on the output; ``None`` means invariant (default: ``None``).
        trials: number of random group elements (default: ``3``).
        seed: seed of the generator that draws the group elements (default: ``0``).
        dtype: computation dtype; ``None`` keeps native dtypes (default: ``torch.float64``).
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not isinstance(group, Group):
        raise TypeError(
            f"group must be an invariance.core.groups.Group, got {type(group).__name__}"
        )
    fn = _prepare(fn, dtype)
    x = _map_struct(inputs, None, lambda _s, v: _cast(v, dtype), "inputs")
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            y = _call(fn, x)
    except RuntimeError as e:
        if dtype is not None and "dtype" in str(e).lower() and not isinstance(fn, nn.Module):
            raise TypeError(
                f"{e}\nThe checker casts inputs to {dtype}; a callable that closes over a module "
                f"must use a copy in that dtype (invariance.core.testing.as_float64(model)), or "
                f"pass dtype=None to check in the native dtype."
            ) from e
        raise
    worst = SymmetryReport(max_error=0.0, relative_error=-1.0, group=group.name, trials=trials)
    per: dict[str, float] = {}
    for _ in range(trials):
        g = group.sample(gen, _tensors(x))
        gx = _map_struct(x, act_in, lambda s, v, g=g: group.act(s, g, v), "act_in")
        with torch.no_grad():
            y_of_gx = _call(fn, gx)
        gy = _map_struct(y, act_out, lambda s, v, g=g: group.act(s, g, v), "act_out")
        a, b = _flatten(y_of_gx), _flatten(gy)
        if [k for k, _ in a] != [k for k, _ in b]:
            raise ValueError(
                f"output structure changed under the group action: {[k for k, _ in a]} vs "
                f"{[k for k, _ in b]}"
            )
        for (name, u), (_, v) in zip(a, b):
            if not isinstance(u, Tensor):
                continue
            if u.shape != v.shape:
                raise ValueError(
                    f"{name}: shape {tuple(u.shape)} after g but {tuple(v.shape)} before"
                )
            if u.numel() == 0:
                continue
            u64, v64 = u.detach().double(), v.detach().double()
            if not (torch.isfinite(u64).all() and torch.isfinite(v64).all()):
                err = float("inf")
                scale = 1.0
            else:
                err = float((u64 - v64).abs().max())
                scale = max(1.0, float(v64.abs().max()))
            per[name] = max(per.get(name, 0.0), err)
            rel = err / scale
            if rel > worst.relative_error:
                worst.relative_error = rel
                worst.max_error = err
                worst.scale = scale
                worst.worst_output = name
                worst.worst_element = group.describe(g)
    worst.per_output = per
    worst.variation = output_variation(y)
    worst.max_error = max(per.values(), default=0.0)
    worst.relative_error = max(worst.relative_error, 0.0)
    return worst


def _tol_for(dtype: torch.dtype | None, inputs: Any, tol: float | None) -> float:
    if tol is not None:
        return tol
    if dtype is None:
        floats = [t.dtype for t in _tensors(inputs) if t.is_floating_point()]
        return default_tol(floats[0] if floats else None)
    return default_tol(dtype)


def assert_equivariant(
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    act_out: Any,
    *,
    tol: float | None = None,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    min_variation: float = DEFAULT_MIN_VARIATION,
) -> SymmetryReport:
    """Assert ``fn(g . x) == g . fn(x)`` up to ``tol * max(1, max|output|)``; return the report.

    Raises :class:`VacuousCheckError` when the outputs vary by less than ``min_variation``
    (relative spread, see :class:`SymmetryReport`): such a check cannot fail."""
    __tracebackhide__ = True
    rep = equivariance_error(
        fn, inputs, group, act_in, act_out, trials=trials, seed=seed, dtype=dtype
    )
    t = _tol_for(dtype, inputs, tol)
    if rep.variation < min_variation:
        raise VacuousCheckError(
            f"vacuous check under {group.name}: the outputs vary by only {rep.variation:.3g} "
            f"(relative spread) across the inputs, below min_variation={min_variation:.1g}; a "
            f"near-constant output passes any symmetry check. Use inputs whose outputs vary."
        )
    if not rep.relative_error <= t:
        raise AssertionError(
            f"not {'invariant' if act_out is None else 'equivariant'} under {group.name}: "
            f"error {rep.max_error:.3g} (relative {rep.relative_error:.3g}) > tol {t:.1g} at "
            f"output {rep.worst_output!r}; worst group element: {rep.worst_element}"
        )
    return rep


def assert_invariant(
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    *,
    tol: float | None = None,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    min_variation: float = DEFAULT_MIN_VARIATION,
) -> SymmetryReport:
    """Assert ``fn(g . x) == fn(x)`` up to ``tol * max(1, max|output|)``; return the report
    (refuses vacuous checks like :func:`assert_equivariant`)."""
    __tracebackhide__ = True
    return assert_equivariant(
        fn,
        inputs,
        group,
        act_in,
        None,
        tol=tol,
        trials=trials,
        seed=seed,
        dtype=dtype,
        min_variation=min_variation,
    )


def assert_not_invariant(
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    act_out: Any = None,
    *,
    min_error: float = 1e-4,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
) -> SymmetryReport:
    """Negative control: assert the relative error EXCEEDS ``min_error`` (the broken variant really
    is broken, so the positive check can fail)."""
    __tracebackhide__ = True
    rep = equivariance_error(
        fn, inputs, group, act_in, act_out, trials=trials, seed=seed, dtype=dtype
    )
    if not rep.relative_error > min_error:
        raise AssertionError(
            f"negative control failed: expected a symmetry violation under {group.name} above "
            f"{min_error:.1g}, got relative error {rep.relative_error:.3g}; the check cannot tell "
            f"a broken variant from a correct one"
        )
    return rep


assert_not_equivariant = assert_not_invariant


def check_equivariant(
    name: str,
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    act_out: Any = None,
    *,
    tol: float | None = None,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    min_variation: float = DEFAULT_MIN_VARIATION,
) -> CheckResult:
    """Like :func:`assert_equivariant` (``act_out=None``: invariant) but returns a CheckResult;
    a vacuous check (outputs varying less than ``min_variation``) does not pass."""
    rep = equivariance_error(
        fn, inputs, group, act_in, act_out, trials=trials, seed=seed, dtype=dtype
    )
    t = _tol_for(dtype, inputs, tol)
    if rep.variation < min_variation:
        return CheckResult(
            name,
            rep.relative_error,
            t,
            False,
            False,
            f"vacuous: outputs vary by only {rep.variation:.3g} < {min_variation:.1g}; {rep}",
            rep.variation,
        )
    return CheckResult(
        name, rep.relative_error, t, rep.relative_error <= t, False, str(rep), rep.variation
    )


def check_invariant(name: str, fn, inputs, group, act_in, **kw) -> CheckResult:
    """Invariance version of :func:`check_equivariant`."""
    return check_equivariant(name, fn, inputs, group, act_in, None, **kw)


def check_not_invariant(
    name: str,
    fn: Callable,
    inputs: Any,
    group: Group,
    act_in: Any,
    act_out: Any = None,
    *,
    min_error: float = 1e-4,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
) -> CheckResult:
    """Negative control as a CheckResult: passes when the relative error exceeds ``min_error``."""
    rep = equivariance_error(
        fn, inputs, group, act_in, act_out, trials=trials, seed=seed, dtype=dtype
    )
    return CheckResult(
        name,
        rep.relative_error,
        min_error,
        rep.relative_error > min_error,
        True,
        str(rep),
        rep.variation,
    )
