"""Checkpoints as safetensors + JSON. Nothing here unpickles.

Any nested state (model, optimizer and scheduler ``state_dict``s, RNG states, step counters) is
split into a flat ``{path: tensor}`` map written with safetensors and a JSON skeleton that keeps
every non-tensor value and the container types (dict keys of any JSON type, tuples, lists).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "flatten_state",
    "unflatten_state",
    "save_state",
    "load_state",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
]


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "s"):
    """Split ``obj`` into (JSON skeleton, {key: tensor})."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}#{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}, tensors
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot checkpoint a dict key of type {type(k).__name__}")
            sk, _ = flatten_state(v, tensors, f"{prefix}.{k}")
            items.append([k, sk])
        return {"__dict__": items}, tensors
    if isinstance(obj, tuple):
        return {
            "__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)]
        }, tensors
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {prefix}")


def unflatten_state(skel: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__dict__" in skel:
            return {k: unflatten_state(v, tensors) for k, v in skel["__dict__"]}
        if "__tuple__" in skel:
            return tuple(unflatten_state(v, tensors) for v in skel["__tuple__"])
        raise ValueError(f"corrupt checkpoint skeleton: {sorted(skel)}")
    if isinstance(skel, list):
        return [unflatten_state(v, tensors) for v in skel]
    return skel


def save_state(path: str | Path, state: Any) -> None:
    """Write ``state`` to ``path.safetensors`` + ``path.json`` (atomically, via rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skel, tensors = flatten_state(state)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    save_file(tensors, str(st) + ".tmp")
    js_tmp = str(js) + ".tmp"
    with open(js_tmp, "w") as f:
        json.dump(skel, f)
    os.replace(str(st) + ".tmp", st)
    os.replace(js_tmp, js)


def load_state(path: str | Path) -> Any:
    """Read what :func:`save_state` wrote."""
    path = Path(path)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not st.exists() or not js.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected {st.name} and {js.name})")
    tensors = load_file(str(st))
    with open(js) as f:
        skel = json.load(f)
    return unflatten_state(skel, tensors)


def _unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` (weights only, loadable by any safetensors reader) and
    ``trainer.safetensors/json`` (optimizer, scheduler, step, extra) into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model_sd = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }
    save_file(model_sd, str(d / "model.safetensors.tmp"))
    os.replace(d / "model.safetensors.tmp", d / "model.safetensors")
    state = {
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra or {},
    }
    save_state(d / "trainer", state)
    return d


def load_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Load what :func:`save_checkpoint` wrote; returns ``{"step", "extra"}``."""
    d = Path(directory)
    if not (d / "model.safetensors").exists():
        raise FileNotFoundError(f"no model.safetensors in {d}")
    sd = load_file(str(d / "model.safetensors"), device=str(map_location))
    _unwrap(model).load_state_dict(sd)
    out: dict = {"step": 0, "extra": {}}
    if (d / "trainer.json").exists():
        state = load_state(d / "trainer")
        if optimizer is not None and state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        out = {"step": state["step"], "extra": state["extra"]}
    return out


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint directory of a run (``<run>/checkpoint``), if one is complete."""
    d = Path(run_dir) / "checkpoint"
    return d if (d / "model.safetensors").exists() and (d / "trainer.json").exists() else None
