"""The bad-input harness: derive bad calls from one valid call and check each is rejected clearly.

Every public entry point of the toolkit (layer, loss, optimizer, data generator, metric) must raise
``ValueError`` or ``TypeError`` *naming the argument* for wrong shapes or dtypes, NaN/inf, empty or
degenerate input and out-of-range hyper-parameters. :func:`fuzz_bad_inputs` takes one valid call
``fn(**kwargs)`` and tries, per argument:

=============  ===========================================================================
kind           mutation
=============  ===========================================================================
``nan``        a floating tensor with one element set to NaN (a float scalar set to NaN)
``inf``        the same with +inf
``empty``      a tensor with a zero-length first dimension
``extra_dim``  a tensor with a leading singleton dimension added
``fewer_dims`` a tensor with its first dimension taken away (``x[0]``)
``int_dtype``  a floating tensor cast to ``int64``
``negative``   a positive number made negative (``-|v| - 1``)
``wrong_type`` a number replaced by a string
``unknown_value``  a string replaced by ``"__not_a_valid_value__"``
=============  ===========================================================================

A case is *handled* when the call raises ``ValueError`` or ``TypeError`` whose message names the
argument, or, for cases listed in ``accept`` (``"arg:kind"``: the mutation is valid input, such as
an extra batch dimension), when it returns only finite tensors. Anything else is a failure: a
silent non-finite output, an error that does not name the argument, an unrelated exception type.
A call that crashes the interpreter natively cannot be caught in-process: guard such ops and test
them in a subprocess.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "BadCase",
    "FuzzReport",
    "bad_input_cases",
    "fuzz_bad_inputs",
    "assert_rejects_bad_inputs",
    "fuzz_table",
    "collect_entry_points",
    "bad_input_summary",
    "TENSOR_KINDS",
    "NUMBER_KINDS",
]

TENSOR_KINDS = ("nan", "inf", "empty", "extra_dim", "fewer_dims", "int_dtype")
NUMBER_KINDS = ("negative", "nan", "inf", "wrong_type")
STRING_KINDS = ("unknown_value",)


@dataclass
class BadCase:
    """One derived bad call: ``fn(**kwargs)`` with argument ``arg`` mutated by ``kind``."""

    arg: str
    kind: str
    kwargs: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.arg}:{self.kind}"


@dataclass
class FuzzReport:
    """What :func:`fuzz_bad_inputs` saw: cases tried and handled, and each failure's story."""

    name: str
    tried: int = 0
    handled: int = 0
    failures: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.handled == self.tried


def _mutate_tensor(x: Tensor, kind: str) -> Tensor | None:
    if kind in ("nan", "inf"):
        if not (x.is_floating_point() or x.is_complex()) or x.numel() == 0:
            return None
        y = x.detach().clone()
        where = torch.unravel_index(torch.tensor(y.numel() // 2), y.shape)
        y[tuple(int(i) for i in where)] = float("nan") if kind == "nan" else float("inf")
        return y.requires_grad_(x.requires_grad)
    if kind == "empty":
        if x.dim() == 0 or x.shape[0] == 0:
            return None
        return x.detach()[:0].clone()
    if kind == "extra_dim":
        return x.detach().unsqueeze(0).clone()
    if kind == "fewer_dims":
        if x.dim() == 0 or x.shape[0] == 0:
            return None
        return x.detach()[0].clone()
    if kind == "int_dtype":
        if not x.is_floating_point():
            return None
        return x.detach().round().to(torch.int64)
    raise ValueError(f"unknown tensor mutation {kind!r}")


def _mutate_number(v: int | float, kind: str) -> Any:
    if kind == "negative":
        return type(v)(-abs(v) - 1)
    if kind in ("nan", "inf"):
        if not isinstance(v, float):
            return None
        return float("nan") if kind == "nan" else float("inf")
    if kind == "wrong_type":
        return "not-a-number"
    raise ValueError(f"unknown number mutation {kind!r}")


def bad_input_cases(
    kwargs: Mapping[str, Any],
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    extra: Iterable[BadCase] = (),
) -> list[BadCase]:
    """The bad calls derived from the valid ``kwargs`` (see the module docstring).

    ``skip`` holds argument names or ``"arg:kind"`` keys to leave out; ``only`` restricts the
    argument names mutated; ``extra`` appends hand-written cases."""
    skip = set(skip)
    only_set = None if only is None else set(only)
    cases: list[BadCase] = []
    for name, value in kwargs.items():
        if name in skip or (only_set is not None and name not in only_set):
            continue
        if isinstance(value, Tensor):
            kinds, mut = TENSOR_KINDS, _mutate_tensor
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float)):
            kinds, mut = NUMBER_KINDS, _mutate_number
        elif isinstance(value, str):
            kinds, mut = STRING_KINDS, (lambda v, k: "__not_a_valid_value__")
        else:
            continue
        for kind in kinds:
            if f"{name}:{kind}" in skip:
                continue
            bad = mut(value, kind)
            if bad is None:
                continue
            cases.append(BadCase(name, kind, {**kwargs, name: bad}))
    cases.extend(extra)
    return cases


def _all_finite(out: Any) -> bool:
    if isinstance(out, Tensor):
        if out.is_floating_point() or out.is_complex():
            return bool(torch.isfinite(out.detach()).all())
        return True
    if isinstance(out, float):
        return math.isfinite(out)
    if isinstance(out, Mapping):
        return all(_all_finite(v) for v in out.values())
    if isinstance(out, (list, tuple)):
        return all(_all_finite(v) for v in out)
    if hasattr(out, "__dict__") and not isinstance(out, torch.nn.Module):
        return all(_all_finite(v) for v in vars(out).values())
    return True


def _names_arg(msg: str, arg: str) -> bool:
    """``arg`` appears in ``msg`` as a whole word (``x`` is not named by "expected")."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])", msg) is not None


def fuzz_bad_inputs(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    name: str | None = None,
    accept: Iterable[str] = (),
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    extra: Iterable[BadCase] = (),
    aliases: Mapping[str, Iterable[str]] | None = None,
) -> FuzzReport:
    """Try every bad call derived from the valid call ``fn(**kwargs)``; see the module docstring.

    Args:
        fn: the entry point (a function, a module instance, a class for constructor arguments).
        kwargs: one valid call's keyword arguments. The valid call itself must succeed.
        name: the report's name (default: ``fn``'s qualified name).
        accept: ``"arg:kind"`` keys whose mutation is valid input (then finite outputs count as
            handled; an error naming the argument also does).
        skip: argument names or ``"arg:kind"`` keys not to try.
        only: restrict the mutated arguments to these names.
        extra: further hand-written :class:`BadCase` s.
        aliases: other names an error message may use for an argument (``{"x": ["input"]}``).
    """
    label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
    try:
        fn(**kwargs)
    except Exception as e:
        raise ValueError(
            f"fuzz_bad_inputs({label}): the valid call itself failed: {type(e).__name__}: {e}"
        ) from e
    accept = set(accept)
    aliases = {k: list(v) for k, v in (aliases or {}).items()}
    rep = FuzzReport(label)
    for case in bad_input_cases(kwargs, skip=skip, only=only, extra=extra):
        rep.tried += 1
        names = [case.arg, *aliases.get(case.arg, [])]
        try:
            out = fn(**case.kwargs)
        except (ValueError, TypeError) as e:
            msg = str(e)
            if any(_names_arg(msg, n) for n in names):
                rep.handled += 1
                rep.outcomes[case.key] = "rejected"
            else:
                rep.failures.append(
                    f"{label} {case.key}: {type(e).__name__} does not name {case.arg!r}: "
                    f"{msg.splitlines()[0][:160] if msg else ''}"
                )
                rep.outcomes[case.key] = "unclear error"
            continue
        except Exception as e:  # any other type is an obscure crash for a user
            rep.failures.append(
                f"{label} {case.key}: {type(e).__name__} (not a ValueError/TypeError naming "
                f"{case.arg!r}): {str(e).splitlines()[0][:160] if str(e) else ''}"
            )
            rep.outcomes[case.key] = "obscure error"
            continue
        if case.key in accept and _all_finite(out):
            rep.handled += 1
            rep.outcomes[case.key] = "accepted"
        elif case.key in accept:
            rep.failures.append(f"{label} {case.key}: accepted but returned non-finite output")
            rep.outcomes[case.key] = "non-finite output"
        else:
            finite = _all_finite(out)
            rep.failures.append(
                f"{label} {case.key}: returned "
                f"{'an output' if finite else 'a NON-FINITE output'} silently instead of "
                f"rejecting the bad {case.arg!r}"
            )
            rep.outcomes[case.key] = "silent" if finite else "silent non-finite"
    return rep


def assert_rejects_bad_inputs(fn: Callable[..., Any], kwargs: Mapping[str, Any], **kw: Any):
    """:func:`fuzz_bad_inputs`, raising ``AssertionError`` listing every failure."""
    __tracebackhide__ = True
    rep = fuzz_bad_inputs(fn, kwargs, **kw)
    if rep.failures:
        raise AssertionError(
            f"{rep.name}: {rep.tried - rep.handled} of {rep.tried} bad inputs not handled:\n  "
            + "\n  ".join(rep.failures)
        )
    return rep


def fuzz_table(reports: Iterable[FuzzReport], *, markdown: bool = False) -> str:
    """A table of entry point, cases tried, handled, and the total line."""
    from invariance.core._table import format_table, markdown_table

    reports = list(reports)
    rows = [(r.name, r.tried, r.handled) for r in reports]
    rows.append(("total", sum(r.tried for r in reports), sum(r.handled for r in reports)))
    heads = ["entry point", "bad inputs tried", "handled"]
    return markdown_table(rows, heads) if markdown else format_table(rows, heads)


_DECLARES = re.compile(r"^ENTRY_POINTS\s*(:[^=]*)?=", re.M)


def collect_entry_points(test_dir: str | Path, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Merge the module-level ``ENTRY_POINTS`` dicts of the test files ``test_*.py`` in
    ``test_dir`` (files named in ``exclude`` skipped), so that one package-wide bad-input summary
    covers the entry points each method's test file declares beside its other tests.

    A file is imported (under a private module name, once per process) only when its text defines
    ``ENTRY_POINTS`` at module level. A name declared by two files is an error."""
    out: dict[str, Any] = {}
    skip = set(exclude)
    root = Path(test_dir)
    for path in sorted(root.glob("test_*.py")):
        if path.name in skip or not _DECLARES.search(path.read_text()):
            continue
        mod_name = f"_invariance_entry_points_{root.resolve().parent.name}_{path.stem}"
        mod = sys.modules.get(mod_name)
        if mod is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
        for name, entry in mod.ENTRY_POINTS.items():
            if name in out:
                raise ValueError(f"entry point {name!r} is declared twice ({path.name})")
            out[name] = entry
    return out


def bad_input_summary(
    test_dir: str | Path,
    *,
    extra: Mapping[str, Any] | None = None,
    exclude: Iterable[str] = (),
    markdown: bool = False,
) -> list[FuzzReport]:
    """A package's bad-input summary in one call: the ``ENTRY_POINTS`` of the test files in
    ``test_dir`` (see :func:`collect_entry_points`) plus ``extra`` (``{name: (fn, kwargs,
    options)}``), each fuzzed with :func:`fuzz_bad_inputs`; prints the table of
    :func:`fuzz_table` (as markdown with ``markdown=True``) and every failure, and raises
    ``AssertionError`` if any case is not handled. Returns the reports, sorted by name."""
    entries = dict(collect_entry_points(test_dir, exclude=exclude))
    for name, entry in (extra or {}).items():
        if name in entries:
            raise ValueError(f"entry point {name!r} is declared twice (extra)")
        entries[name] = entry
    if not entries:
        raise AssertionError(f"no test file in {test_dir} declares ENTRY_POINTS")
    reports = [
        fuzz_bad_inputs(fn, kw, name=n, **opts) for n, (fn, kw, opts) in sorted(entries.items())
    ]
    print()
    print(fuzz_table(reports, markdown=markdown))
    failures = [f for r in reports for f in r.failures]
    for f in failures:
        print("  -", f)
    if failures:
        raise AssertionError(f"{len(failures)} bad inputs not handled:\n  " + "\n  ".join(failures))
    return reports
