"""Checkpoints as safetensors + JSON. Nothing here unpickles.

Any nested state (model, optimizer and scheduler ``state_dict``s, RNG states, step counters) is
split into a flat ``{path: tensor}`` map written with safetensors and a JSON skeleton that keeps
every non-tensor value and the container types (dict keys of any JSON type, tuples, lists).
"""

from __future__ import annotations

import json
import os
import shutil
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
    "CheckpointError",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or does not fit the model."""


def _read_safetensors(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=device)
    except FileNotFoundError:
        raise CheckpointError(f"missing checkpoint file {path}") from None
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"corrupt or truncated checkpoint file {path}: {e}") from None


def _read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"missing checkpoint file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint file {path}: {e}") from None


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
    tensors = _read_safetensors(st)
    skel = _read_json(js)
    try:
        return unflatten_state(skel, tensors)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {js}: {e}") from None


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
    ``trainer.safetensors/json`` (optimizer, scheduler, step, extra) into ``directory``.

    The files are written as a set: into ``<directory>.tmp`` first, then swapped in by renames
    (the previous set is kept as ``<directory>.old`` until the swap is done), so a process killed
    at any point leaves either the old or the new complete checkpoint, never a mix of steps."""
    d = Path(directory)
    tmp = d.with_name(d.name + ".tmp")
    old = d.with_name(d.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model_sd = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }
    save_file(model_sd, str(tmp / "model.safetensors"))
    state = {
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra or {},
    }
    save_state(tmp / "trainer", state)
    if d.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(d, old)
    os.replace(tmp, d)
    if old.exists():
        shutil.rmtree(old)
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
    sd = _read_safetensors(d / "model.safetensors", device=str(map_location))
    try:
        _unwrap(model).load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"{d / 'model.safetensors'} does not fit this model (was it trained with another "
            f"config?): {' '.join(first[:3])[:400]}"
        ) from None
    out: dict = {"step": 0, "extra": {}}
    if (d / "trainer.json").exists():
        state = load_state(d / "trainer")
        try:
            if optimizer is not None and state["optimizer"] is not None:
                optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"{d / 'trainer.json'}: optimizer/scheduler state does not fit this run: {e}"
            ) from None
        out = {"step": state["step"], "extra": state["extra"]}
    return out


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint directory of a run (``<run>/checkpoint``), if one is complete."""
    base = Path(run_dir)
    for d in (base / "checkpoint", base / "checkpoint.old"):
        if (d / "model.safetensors").exists() and (d / "trainer.json").exists():
            return d
    return None
