"""CLI reports: the reproduce table, REPORT.md and results.json, and bench results as text.

Used by :mod:`invariance.core.cli` and :mod:`invariance.core.umbrella`; no argument parsing here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["reproduce_table", "write_reproduce", "bench_text"]


def _strip_config_key(yaml_text: str) -> str:
    import yaml

    d = yaml.safe_load(yaml_text) or {}
    d.pop("config", None)
    return yaml.safe_dump(d, sort_keys=False)


def _reproduce_rows(items: list[tuple]) -> list[tuple]:
    rows = []
    for domain, method, res in items:
        if isinstance(res, BaseException):
            rows.append(
                (domain, method, "ERROR", "", "", "", "", "", f"{type(res).__name__}: {res}")
            )
            continue
        arrow = "↑" if res.higher_is_better else "↓"
        rows.append(
            (
                domain,
                method,
                res.task,
                f"{res.metric} {arrow}",
                f"{res.baseline}: {res.summary('baseline')}",
                f"{res.method}: {res.summary('method')}",
                res.invariance_error,
                res.seconds,
                res.verdict,
            )
        )
    return rows


def _f(v: float) -> str:
    from invariance.core._table import fmt

    return fmt(float(v))


_REPRO_HEAD = [
    "domain",
    "method",
    "task",
    "metric",
    "baseline (mean ± sd, n)",
    "method (mean ± sd, n)",
    "inv. error",
    "s",
    "verdict",
]


def _reproduce_table(items: list[tuple]) -> str:
    from invariance.core._table import format_table

    return format_table(_reproduce_rows(items), _REPRO_HEAD)


def _keep_recipe_results(run: Any, since: float) -> None:
    """A recipe may write its own ``results.json`` during ``reproduce`` (per-seed tables); move it
    to ``recipe_results.json`` so the CLI's summary does not overwrite it."""
    p = Path(run.path) / "results.json"
    if getattr(run, "enabled", True) and p.exists() and p.stat().st_mtime >= since - 1:
        p.replace(p.with_name("recipe_results.json"))


def _relpath(p: str | Path, base: Path) -> str:
    """``p`` relative to ``base`` when it lies below it (report links), else as given."""
    p = Path(p)
    if not p.is_absolute():
        p = (Path.cwd() / p) if (Path.cwd() / p).exists() else base / p
    try:
        return str(p.resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


def _ensure_plot(res: Any, where: Path, name: str) -> None:
    """Every reproduce shows at least one plot: when the recipe wrote none, plot the per-seed
    values of every arm."""
    if res.plots or not Path(where).exists():
        return
    try:
        from invariance.core.plots import plot_seeds
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        return
    res.plots.append(str(plot_seeds(res, Path(where) / f"{name}-seeds.png")))


def _write_reproduce(run: Any, items: list[tuple], *, title: str) -> None:
    from invariance.core._table import markdown_table
    from invariance.core.recipe import VERDICT_RULE

    md = [
        f"# Reproduce: {title}",
        "",
        time.strftime("%Y-%m-%d %H:%M:%S"),
        "",
        markdown_table(_reproduce_rows(items), _REPRO_HEAD),
        "",
        f"Verdict rule: {VERDICT_RULE}.",
        "",
    ]
    results = []
    for domain, method, res in items:
        if isinstance(res, BaseException):
            results.append({"domain": domain, "name": method, "error": repr(res)})
            continue
        # "name" is the registry key; "method"/"baseline" are the result's display names
        results.append({"domain": domain, "name": method, **res.to_dict()})
        md += [f"## {domain} / {method}", ""]
        md.append(f"- **{res.method}**: {res.method_values}")
        md.append(f"- **{res.baseline}** (baseline): {res.baseline_values}")
        for arm, vals in res.arms.items():
            md.append(f"- **{arm}**: {vals}")
        if res.seeds is not None:
            md.append(f"- seeds: {res.seeds}")
        if res.not_showable:
            md.append(f"- **not shown at this size**: {res.not_showable}")
        for k, v in res.details.items():
            md.append(f"- **{k}**: {v}")
        md.append("")
        for p in res.plots:
            md.append(f"![{Path(p).stem}]({p})")
        md.append("")
    run.write_results(results)
    run.write_report("\n".join(md) + "\n")


def _reproduce_details(res: Any) -> str:
    """The per-seed values of every arm and the result's details as text (what ``reproduce
    --details`` prints under the summary row): a dict of dicts becomes a table, a dict of values
    ``key: value`` lines."""
    from invariance.core._table import fmt, format_table

    def txt(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(txt(x) for x in v) + "]"
        return str(fmt(v)) if isinstance(v, float) else str(_cell(v))

    out = [
        f"{res.method}: {txt(res.method_values)}",
        f"{res.baseline} (baseline): {txt(res.baseline_values)}",
    ]
    out += [f"{arm}: {txt(vals)}" for arm, vals in res.arms.items()]
    if res.seeds is not None:
        out.append(f"seeds: {res.seeds}")
    if res.not_showable:
        out.append(f"not shown at this size: {res.not_showable}")
    for k, v in res.details.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            heads: list[str] = []
            for x in v.values():
                heads += [h for h in x if h not in heads]
            rows = [[name, *(txt(x.get(h, "")) for h in heads)] for name, x in v.items()]
            out += ["", f"{k}:", format_table(rows, ["", *heads]), ""]
        elif isinstance(v, dict):
            out += [f"{k}:", *(f"  {a}: {txt(b)}" for a, b in v.items())]
        else:
            out.append(f"{k}: {txt(v)}")
    return "\n".join(out).strip()


def _check_table(rows: list[tuple]) -> str:
    from invariance.core._table import format_table

    return format_table(rows, ["method", "check", "error", "tol", "kind", "status"])


def _check_rows(name: str, results: list) -> list[tuple]:
    return [
        (
            name,
            r.name,
            r.error,
            r.tol,
            "negative control" if r.negative_control else "symmetry",
            "ok" if r.passed else "FAIL",
        )
        for r in results
    ]


def _is_rows(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(r, dict) for r in v)


def _rows_table(rows: list[dict]) -> str:
    from invariance.core._table import format_table

    heads: list[str] = []
    for r in rows:
        heads += [k for k in r if k not in heads]
    return format_table([[_cell(r.get(h)) for h in heads] for r in rows], heads)


def _cell(v: Any) -> Any:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(str(_cell(x)) for x in v)
    return v


def _bench_text(result: dict, prefix: str = "") -> str:
    """A bench result as text: every list of flat dicts as its own table (``rows`` first), scalars
    as ``key: value`` lines; nested dicts are walked, never printed inside a table cell."""
    out: list[str] = []
    scalars: list[str] = []
    items = sorted(result.items(), key=lambda kv: kv[0] != "rows")
    for k, v in items:
        name = f"{prefix}{k}"
        if _is_rows(v):
            out += [f"{name}:" if name != "rows" else "", _rows_table(v), ""]
        elif isinstance(v, dict):
            sub = _bench_text(v, f"{name}.")
            if sub:
                out.append(sub)
        else:
            from invariance.core._table import fmt

            scalars.append(f"{name}: {fmt(_cell(v))}")
    return "\n".join([line for line in out if line is not None] + scalars).strip()


# public aliases
reproduce_table = _reproduce_table
write_reproduce = _write_reproduce
reproduce_details = _reproduce_details
bench_text = _bench_text
