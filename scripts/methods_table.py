"""Regenerate the methods table of the root README from the registry.

usage: uv run python scripts/methods_table.py [RESULTS_JSON ...]

With RESULTS_JSON files (the ``results.json`` written by ``invariance reproduce --quick``) the table
gets the measured quick-analog figures; without them, that column keeps what the README says.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from invariance.core._table import fmt, markdown_table
from invariance.core.registry import list_methods

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- methods-table", "<!-- /methods-table -->"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    old = {}
    for line in text.splitlines():
        # split on unescaped pipes (the symmetry column may hold ``\|\|w\|\|``)
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 6 and cells[1].startswith("`"):
            old[cells[1].strip("`")] = cells[5]
    measured = {}
    for path in sys.argv[1:]:
        for r in json.loads(Path(path).read_text()):
            if "error" in r:
                measured[r["name"]] = f"error: {r['error'][:60]}"
            else:
                arrow = "↑" if r["higher_is_better"] else "↓"
                measured[r["name"]] = (
                    f"{r['metric']} {arrow}: {r['baseline']} {fmt(r['baseline_value'])} → "
                    f"{r['method']} {fmt(r['method_value'])} ({fmt(r['seconds'])} s)"
                )
    rows = []
    for m in list_methods():
        if m.domain == "coretoy":
            continue
        paper = f"[{m.paper}]({m.arxiv_url}) ({m.year})" if m.arxiv else f"{m.paper} ({m.year})"
        rows.append(
            (
                f"invariance-{m.domain}",
                f"`{m.name}`",
                paper,
                m.symmetry,
                m.baseline,
                measured.get(m.name, old.get(m.name, "not measured yet")),
            )
        )
    table = markdown_table(
        rows,
        [
            "package",
            "method",
            "paper",
            "declared symmetry",
            "baseline",
            "quick reproduce (measured)",
        ],
    )
    new = re.sub(
        rf"{re.escape(START)}.*?\n.*?{re.escape(END)}",
        f"{START}: regenerate with `uv run python scripts/methods_table.py` -->\n{table}\n{END}",
        text,
        flags=re.S,
    )
    readme.write_text(new)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
