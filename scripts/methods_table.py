"""Regenerate the methods table of the root README from the registry.

usage: uv run python scripts/methods_table.py [RESULTS_JSON ...]
       ... | uv run python scripts/methods_table.py --results-json -   (what figures.py sends)

With results (the ``results.json`` written by ``invariance reproduce --quick``) the table gets the
measured quick-analog figures (mean ± sd over seeds and the noise-rule verdict); without them,
that column keeps what the README says. ``scripts/figures.py methods`` runs the quick reproduce
and calls this.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from invariance.core._table import markdown_table
from invariance.core.registry import list_methods, load_plugins

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from figures import result_cell  # noqa: E402  (sibling script)

START, END = "<!-- methods-table", "<!-- /methods-table -->"


def main(argv: list[str]) -> int:
    load_plugins()
    readme = ROOT / "README.md"
    text = readme.read_text()
    old = {}
    for line in text.splitlines():
        # split on unescaped pipes (the symmetry column may hold ``\|\|w\|\|``)
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 6 and cells[1].startswith("`"):
            old[cells[1].strip("`")] = cells[5]
    measured, machine = {}, ""
    if argv[:2] == ["--results-json", "-"]:
        payload = json.loads(sys.stdin.read())
        results, machine = payload["results"], payload.get("machine", "")
    else:
        results = [r for p in argv for r in json.loads(Path(p).read_text())]
    for r in results:
        measured[r["name"]] = result_cell(r).replace("|", "\\|")
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
    # markdown_table escapes pipes already; measured cells were escaped above, unescape once
    table = table.replace("\\\\|", "\\|")
    head = f"{START}: regenerate with `uv run python scripts/figures.py methods` -->"
    if machine:
        table += f"\n\nMeasured with `uv run invariance reproduce --quick`: {machine}."
    new = re.sub(
        rf"{re.escape(START)}.*?\n.*?{re.escape(END)}",
        lambda _m: f"{head}\n{table}\n{END}",
        text,
        flags=re.S,
    )
    readme.write_text(new)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
