"""Run directories: ``config.yaml``, ``metrics.jsonl``, ``checkpoint/``, ``results.json``,
``REPORT.md`` and PNG plots. Writers are no-ops off the main rank."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RunDir", "make_run_dir", "to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tensors and numpy scalars -> JSON-friendly values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


class RunDir:
    """A run directory. ``enabled=False`` (non-main ranks) turns every write into a no-op."""

    def __init__(self, path: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    def write_config(self, config: dict) -> Path:
        p = self.path / "config.yaml"
        if self.enabled:
            p.write_text(yaml.safe_dump(to_jsonable(config), sort_keys=False))
        return p

    def log_metrics(self, metrics: dict) -> None:
        if self.enabled:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(to_jsonable(metrics)) + "\n")

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        return (
            [json.loads(line) for line in p.read_text().splitlines() if line] if p.exists() else []
        )

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines logged after ``after_step`` (used when resuming)."""
        if self.enabled and (self.path / "metrics.jsonl").exists():
            keep = [m for m in self.read_metrics() if m.get("step", 0) <= after_step]
            with open(self.path / "metrics.jsonl", "w") as f:
                f.writelines(json.dumps(m) + "\n" for m in keep)

    def write_results(self, results: Any) -> Path:
        p = self.path / "results.json"
        if self.enabled:
            p.write_text(json.dumps(to_jsonable(results), indent=2))
        return p

    def write_report(self, markdown: str) -> Path:
        p = self.path / "REPORT.md"
        if self.enabled:
            p.write_text(markdown)
        return p

    def savefig(self, fig: Any, name: str) -> str:
        """Save a matplotlib figure as ``<name>.png`` and close it; returns the path."""
        p = self.path / (name if name.endswith(".png") else name + ".png")
        if self.enabled:
            fig.savefig(p, dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        return str(p)


def make_run_dir(
    domain: str, method: str, out: str | Path | None = None, *, enabled: bool = True
) -> RunDir:
    """``out`` if given, else ``runs/<domain>-<method>-<YYYYmmdd-HHMMSS>``."""
    if out is None:
        out = Path("runs") / f"{domain}-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return RunDir(out, enabled=enabled)


def plt():
    """matplotlib.pyplot with the headless Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as pyplot

    return pyplot
