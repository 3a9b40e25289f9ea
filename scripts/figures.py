"""Regenerate every measured figure in the READMEs.

usage:
  uv run python scripts/figures.py list                    the figure blocks and their commands
  uv run python scripts/figures.py run [--only ID ...]     re-run the commands, rewrite the blocks
  uv run python scripts/figures.py methods [--results F]   the methods tables from `invariance
                                                           reproduce --quick` (run now, or F)
  uv run python scripts/figures.py all                     methods, then every other block

A figure block in README.md or packages/*/README.md looks like::

    <!-- figure: optim-adamp-bench -->
    <!-- command: uv run invariance-optim bench adamp --quick -->
    ...generated...
    <!-- /figure -->

``run`` executes the command from the repository root and writes its output into the block with
the machine (CPUs, load average before and after), the commit and the date. A block whose command
is ``uv run invariance reproduce --quick --domain D`` is rendered from the quick results that
``methods`` produced in the same invocation (one quick run feeds every table). The root methods
table between ``<!-- methods-table`` and ``<!-- /methods-table -->`` is rebuilt from the registry
and those results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(<!-- figure: (?P<id>[\w.-]+) -->\n<!-- command: (?P<cmd>.+?) -->\n)"
    r"(?P<body>.*?)(<!-- /figure -->)",
    re.S,
)
QUICK = re.compile(r"^uv run invariance reproduce --quick(?: --domain (?P<domain>\w+))?$")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def readmes() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]


def blocks() -> list[tuple[Path, str, str]]:
    out = []
    for p in readmes():
        for m in BLOCK.finditer(p.read_text()):
            out.append((p, m["id"], m["cmd"].strip()))
    return out


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def _commit() -> str:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    # a figure block this script has just rewritten (an edited README) does not change what
    # the next command measures: only changes to other files mark the commit as modified
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return sha + ("+local changes" if dirty else "")


def machine_line(load_before: str, seconds: float) -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    return (
        f"{os.cpu_count()} CPUs{f', OMP_NUM_THREADS={threads}' if threads else ''}, "
        f"load {load_before} -> {_load()}, {seconds:.0f} s, "
        f"commit {_commit()}, {time.strftime('%Y-%m-%d')}"
    )


def _clean(text: str) -> str:
    lines = []
    skipping = False
    for line in ANSI.sub("", text).splitlines():
        line = line.split("\r")[-1].rstrip()
        if re.search(r"\d+%\|", line) or "Bytecode compiled" in line:
            continue  # progress bars and installer chatter
        if re.match(r"=+ warnings summary =+", line):
            skipping = True  # pytest's warnings section is noise in a figure
            continue
        if skipping:
            if line.startswith("-- Docs:"):
                skipping = False
            continue
        lines.append(line)
    return "\n".join(lines).strip()


class CommandFailed(RuntimeError):
    """A figure's command exited non-zero: its block keeps what it had."""


def run_command(cmd: str, timeout: int) -> tuple[str, str]:
    before = _load()
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    secs = time.perf_counter() - t0
    out = _clean(proc.stdout)
    if proc.returncode != 0:
        raise CommandFailed(
            f"exit code {proc.returncode}\n{out[-1500:]}\n{_clean(proc.stderr)[-2000:]}"
        )
    return out, machine_line(before, secs)


def write_block(path: Path, fig_id: str, body: str) -> None:
    text = path.read_text()

    def repl(m: re.Match) -> str:
        if m["id"] != fig_id:
            return m.group(0)
        return m.group(1) + body.rstrip() + "\n" + m.group(5)

    path.write_text(BLOCK.sub(repl, text))


def _fmt(v: float) -> str:
    sys.path.insert(0, str(ROOT / "packages" / "core" / "src"))
    from invariance.core._table import fmt

    return fmt(float(v))


def _mean_sd(vals: list[float]) -> str:
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return f"{_fmt(mean)} (n=1)"
    sd = (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5
    return f"{_fmt(mean)} ± {_fmt(sd)} (n={n})"


def result_cell(r: dict) -> str:
    """One result as the methods tables show it."""
    if "error" in r:
        return f"error: {r['error'][:60]}"
    arrow = "↑" if r["higher_is_better"] else "↓"
    cell = (
        f"{r['metric']} {arrow}: {r['baseline']} {_mean_sd(r['baseline_values'])} → "
        f"{r['method']} {_mean_sd(r['method_values'])}: **{r['verdict']}** "
        f"({_fmt(r['seconds'])} s)"
    )
    if r.get("not_showable"):
        cell += f"; {r['not_showable']}"
    return cell


def domain_table(results: list[dict], domain: str) -> str:
    sys.path.insert(0, str(ROOT / "packages" / "core" / "src"))
    from invariance.core._table import markdown_table

    rows = []
    for r in results:
        if r.get("domain") != domain:
            continue
        if "error" in r:
            rows.append((f"`{r['name']}`", "", "", "", "", "", f"error: {r['error'][:60]}"))
            continue
        rows.append(
            (
                f"`{r['name']}`",
                r["metric"] + (" ↑" if r["higher_is_better"] else " ↓"),
                f"{r['baseline']}: {_mean_sd(r['baseline_values'])}",
                f"{r['method']}: {_mean_sd(r['method_values'])}",
                "" if r.get("invariance_error") is None else _fmt(r["invariance_error"]),
                _fmt(r["seconds"]),
                r["verdict"] + (f" ({r['not_showable']})" if r.get("not_showable") else ""),
            )
        )
    return markdown_table(
        rows, ["method", "metric", "baseline", "method", "inv. error", "s", "verdict"]
    )


def quick_results(path: str | None, timeout: int) -> tuple[list[dict], str]:
    if path is None:
        out = ROOT / "runs" / "figures-quick"
        shutil.rmtree(out, ignore_errors=True)  # no cached cells: every row is measured now
        cmd = f"uv run invariance reproduce --quick --quiet --out {shlex.quote(str(out))}"
        print(f"$ {cmd}", flush=True)
        try:
            _, line = run_command(cmd, timeout)
        except CommandFailed as e:  # a method that errored is a row of its own; keep the rest
            print(f"reproduce --quick exited non-zero:\n{e}", flush=True)
            line = f"{os.cpu_count()} CPUs, commit {_commit()}, {time.strftime('%Y-%m-%d')}"
            if not (out / "results.json").exists():
                raise
        path = str(out / "results.json")
        (out / "machine.txt").write_text(line)
    else:
        side = Path(path).with_name("machine.txt")
        line = side.read_text().strip() if side.exists() else f"read from {path}"
    return json.loads(Path(path).read_text()), line


def methods_table(results: list[dict], line: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "methods_table.py"), "--results-json", "-"],
        input=json.dumps({"results": results, "machine": line}),
        text=True,
        check=True,
        cwd=ROOT,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["list", "run", "methods", "all"])
    ap.add_argument("--only", nargs="*", default=None, help="figure ids to regenerate")
    ap.add_argument("--results", default=None, help="a results.json of reproduce --quick")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per command")
    a = ap.parse_args(argv)
    found = blocks()
    if a.what == "list":
        for p, fid, cmd in found:
            print(f"{p.relative_to(ROOT)}  {fid}  $ {cmd}")
        return 0
    results: list[dict] | None = None
    line = ""
    if a.what in ("methods", "all"):
        results, line = quick_results(a.results, a.timeout)
        methods_table(results, line)
    if a.what == "methods":
        found = [b for b in found if QUICK.match(b[2])]
    elif a.only is not None:
        found = [b for b in found if b[1] in set(a.only)]
    failed: list[str] = []
    for p, fid, cmd in found:
        q = QUICK.match(cmd)
        if q and results is not None:
            body = domain_table(results, q["domain"]) if q["domain"] else ""
            write_block(
                p,
                fid,
                f"{body}\n\nMeasured in one `uv run invariance reproduce --quick` of every "
                f"method (`{cmd}` runs this domain alone): {line}.\n",
            )
            print(f"{fid}: from the quick results")
            continue
        print(f"$ {cmd}", flush=True)
        try:
            out, mline = run_command(cmd, a.timeout)
        except (CommandFailed, subprocess.TimeoutExpired) as e:
            failed.append(fid)
            print(f"{fid}: FAILED, block left as it was\n{e}", flush=True)
            continue
        write_block(p, fid, f"```text\n{out}\n```\n\nMeasured with `{cmd}`: {mline}.\n")
        print(out[-1500:])
    if failed:
        print(f"failed (blocks unchanged): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
