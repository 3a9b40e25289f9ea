"""A plain training loop with metrics, checkpoints and exact resume.

``fit`` is ordinary PyTorch: draw a batch, ``step_fn(model, batch)["loss"].backward()``, optimiser
step, scheduler step. Around it:

* data order is a pure function of ``(seed, epoch)`` (a ``DistributedSampler``, also in a 1-process
  world), and the global batch is split across ranks, so a 2-process run sees the same global
  batches as a 1-process run;
* every ``log_every`` steps the rank-mean of each scalar is appended to ``metrics.jsonl``;
* every ``ckpt_every`` steps and at the end, rank 0 writes ``checkpoint/`` (safetensors + JSON:
  weights, optimiser, scheduler, step, RNG states);
* ``resume=True`` reloads that checkpoint, restores the RNG states, skips the batches already seen
  in the current epoch and continues: an interrupted run ends bit-identical to an uninterrupted one
  (CPU).

Methods whose step is not "one loss, one optimiser" (min-max games, alternating phases with their
own optimisers, as in GREA or scMEDAL) pass ``train_step_fn(model, batch, optimizer, step)``: it
does its own ``zero_grad``/``backward``/``step`` and ``fit`` only logs what it returns. Several
optimisers travel as one :class:`NamedOptimizers`, which checkpoints and resumes like a single one.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from invariance.core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from invariance.core.dist import Runtime
from invariance.core.io import RunDir
from invariance.core.seed import get_rng_state, seed_everything, set_rng_state

__all__ = [
    "fit",
    "fit_recipe",
    "evaluate",
    "train_arms",
    "build_optimizer",
    "known_optimizers",
    "ResumeError",
    "FitResult",
    "NamedOptimizers",
    "to_device",
]

log = logging.getLogger(__name__)

_TORCH_OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


class ResumeError(RuntimeError):
    """``resume=True`` without a complete checkpoint to resume from."""


def _optim_plugin() -> Any:
    """``invariance.optim`` when installed (every domain package depends on it): the shared
    optimizer factory. Looked up by name so that core itself depends on no other package."""
    try:
        return importlib.import_module("invariance.optim")
    except ImportError:
        return None


def known_optimizers() -> list[str]:
    """Names :func:`build_optimizer` accepts."""
    plug = _optim_plugin()
    if plug is not None:
        return list(plug.list_optimizers())
    return sorted(_TORCH_OPTIMIZERS)


def build_optimizer(
    model: nn.Module | Iterable, name: str = "adamw", *, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``model``: :func:`invariance.optim.create_optimizer` when
    invariance-optim is installed (AdamP, SGDP, AdamW, ... with no decay on 1-D parameters),
    else torch's AdamW/Adam/SGD over all parameters."""
    plug = _optim_plugin()
    if plug is not None:
        return plug.create_optimizer(model, name, lr=lr, weight_decay=weight_decay)
    if name not in _TORCH_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(_TORCH_OPTIMIZERS)}")
    params = model.parameters() if isinstance(model, nn.Module) else model
    return _TORCH_OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


@dataclass
class FitResult:
    """What :func:`fit` returns: the (unwrapped) model, the last step and the logged history."""

    model: nn.Module
    step: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


class NamedOptimizers:
    """Several named optimisers that :func:`fit` and the checkpoints treat as one.

    For schedules with more than one optimiser (an adversary and the rest, alternating phases):
    ``opts["adversary"].step()`` inside a recipe's ``train_step``; ``state_dict`` /
    ``load_state_dict`` cover every optimiser, so checkpoint and exact resume work unchanged.

    Example::

        opts = NamedOptimizers(main=torch.optim.Adam(enc.parameters()),
                               adversary=torch.optim.Adam(adv.parameters()))
    """

    def __init__(self, **optimizers: torch.optim.Optimizer) -> None:
        if not optimizers:
            raise ValueError("NamedOptimizers needs at least one optimiser")
        for name, o in optimizers.items():
            if not isinstance(o, torch.optim.Optimizer):
                raise TypeError(
                    f"NamedOptimizers({name}=...) must be a torch.optim.Optimizer, "
                    f"got {type(o).__name__}"
                )
        seen: dict[int, str] = {}
        for name, o in optimizers.items():
            for g in o.param_groups:
                for p in g["params"]:
                    if id(p) in seen and seen[id(p)] != name:
                        raise ValueError(
                            f"a parameter of shape {tuple(p.shape)} is in both optimisers "
                            f"{seen[id(p)]!r} and {name!r}"
                        )
                    seen[id(p)] = name
        self._opts = dict(optimizers)

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        try:
            return self._opts[name]
        except KeyError:
            raise KeyError(f"no optimiser {name!r}; have {sorted(self._opts)}") from None

    def __iter__(self):
        return iter(self._opts)

    def __len__(self) -> int:
        return len(self._opts)

    def items(self):
        return self._opts.items()

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self._opts.values() for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self._opts.values():
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self._opts.values():
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: o.state_dict() for name, o in self._opts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self._opts):
            raise ValueError(
                f"checkpoint has optimisers {sorted(state)}, this run has {sorted(self._opts)}"
            )
        for name, o in self._opts.items():
            o.load_state_dict(state[name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={type(o).__name__}" for k, o in self._opts.items())
        return f"NamedOptimizers({inner})"


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensors, PyG ``Data``/``Batch``, nested dicts/lists/tuples) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | NamedOptimizers,
    dataset: Dataset,
    step_fn: Callable[[nn.Module, Any], dict],
    *,
    steps: int,
    batch_size: int,
    collate_fn: Callable | None = None,
    scheduler: Any = None,
    runtime: Runtime | None = None,
    run: RunDir | None = None,
    ckpt_every: int = 0,
    log_every: int = 10,
    resume: bool = False,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    grad_clip: float | None = None,
    callbacks: Iterable[Callable[[str, int, dict], None]] = (),
    progress: bool = True,
    find_unused_parameters: bool = False,
    train_step_fn: Callable[[nn.Module, Any, Any, int], dict] | None = None,
) -> FitResult:
    """Train ``model`` for ``steps`` optimiser steps.

    Args:
        model: the model (moved to the runtime's device; wrapped in DDP when world > 1).
        optimizer: an optimiser over ``model``'s parameters.
        dataset: a map-style dataset; items are collated with ``collate_fn``.
        step_fn: ``step_fn(model, batch) -> dict`` with a scalar ``"loss"``; other scalars are
            logged.
        steps: number of optimiser steps.
        batch_size: the *global* batch size (split evenly over ranks).
        collate_fn: collates a list of items (default: ``torch.utils.data.default_collate``).
        scheduler: stepped once per optimiser step (default: ``None``).
        runtime: a :class:`~invariance.core.dist.Runtime` (default: 1 process on the model's
            device).
        run: where ``metrics.jsonl`` and ``checkpoint/`` go (default: ``None``, nothing written).
        ckpt_every: checkpoint period in steps; the last step is always checkpointed when ``run`` is
            given (default: ``0``).
        log_every: metrics period in steps (default: ``10``).
        resume: continue from ``run``'s checkpoint if there is one (default: ``False``).
        seed: seed of the data order (default: ``0``).
        grad_clip: max global gradient norm (default: ``None``).
        callbacks: ``cb(event, step, info)`` for events ``"log"`` and ``"checkpoint"``.
        progress: a tqdm bar on the main rank (off automatically when not a TTY).
        train_step_fn: manual optimisation. ``train_step_fn(model, batch, optimizer, step)``
            (``step`` = number of steps already taken) does its own ``zero_grad``, ``backward``
            and optimiser steps and returns the scalars to log (with ``"loss"``); ``step_fn`` is
            then unused during training. ``grad_clip`` must be ``None`` (clip inside the step).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if train_step_fn is not None and grad_clip is not None:
        raise ValueError("grad_clip is applied by fit only without train_step_fn; clip inside it")
    if train_step_fn is None and isinstance(optimizer, NamedOptimizers):
        raise ValueError(
            f"{optimizer!r} needs a train_step_fn that says which optimiser steps when"
        )
    if runtime is None:
        p = next(iter(model.parameters()), None)
        runtime = Runtime(device=p.device if p is not None else torch.device("cpu"))
    if batch_size % runtime.world_size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the world size {runtime.world_size}"
        )
    per_rank = batch_size // runtime.world_size
    collate = collate_fn or default_collate
    sampler = runtime.sampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    per_epoch = len(sampler) // per_rank
    if per_epoch < 1:
        raise ValueError(
            f"dataset of {len(dataset)} items is too small for a global batch of {batch_size} "
            f"on {runtime.world_size} process(es)"
        )
    start = 0
    if resume:
        if run is None:
            raise ResumeError("resume=True needs a run directory (run=...) to resume from")
        ck = latest_checkpoint(run.path)
        if ck is None:
            raise ResumeError(
                f"resume: no complete checkpoint in {run.path / 'checkpoint'} (train without "
                f"--resume to start a new run)"
            )
        state = load_checkpoint(ck, model, optimizer, scheduler, map_location="cpu")
        start = int(state["step"])
        if "rng" in state["extra"]:
            set_rng_state(state["extra"]["rng"])
        run.truncate_metrics(start)
        log.info("resumed from %s at step %d", ck, start)
    model = runtime.setup(model, find_unused_parameters=find_unused_parameters)
    history: list[dict] = []
    callbacks = list(callbacks)
    t0 = time.perf_counter()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=steps,
        initial=start,
        disable=None if (progress and runtime.is_main) else True,
        desc="train",
        dynamic_ncols=True,
    )
    step = start
    sums: dict[str, float] = {}
    count = 0
    while step < steps:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        for b in range(offset, per_epoch):
            if step >= steps:
                break
            idx = order[b * per_rank : (b + 1) * per_rank]
            batch = to_device(collate([dataset[i] for i in idx]), runtime.device)
            model.train()
            if train_step_fn is not None:
                out = train_step_fn(model, batch, optimizer, step)
                if not isinstance(out, dict) or "loss" not in out:
                    raise TypeError(
                        f"train_step_fn must return a dict with a 'loss', got {type(out).__name__}"
                        + (f" with keys {sorted(out)}" if isinstance(out, dict) else "")
                    )
                loss = torch.as_tensor(out["loss"]).detach()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {float(loss)} at step {step + 1}")
            else:
                out = step_fn(model, batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss {float(loss.detach())} at step {step + 1}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            bar.update(1)
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            if (log_every and step % log_every == 0) or step == steps:
                vals = torch.tensor([sums[k] / count for k in sorted(sums)], dtype=torch.float64)
                vals = runtime.all_reduce_mean(vals.to(runtime.device)).cpu()
                rec = {
                    "step": step,
                    "epoch": epoch,
                    **{k: float(v) for k, v in zip(sorted(sums), vals)},
                }
                if scheduler is not None and hasattr(scheduler, "get_last_lr"):
                    rec["lr"] = float(scheduler.get_last_lr()[0])
                history.append(rec)
                if run is not None:
                    run.log_metrics(rec)
                bar.set_postfix(loss=f"{rec.get('loss', math.nan):.4g}")
                for cb in callbacks:
                    cb("log", step, rec)
                sums, count = {}, 0
            if run is not None and ((ckpt_every and step % ckpt_every == 0) or step == steps):
                if runtime.is_main:
                    save_checkpoint(
                        run.checkpoint_dir,
                        model,
                        optimizer,
                        scheduler,
                        step,
                        extra={"rng": get_rng_state()},
                    )
                runtime.barrier()
                for cb in callbacks:
                    cb("checkpoint", step, {"path": str(run.checkpoint_dir)})
    bar.close()
    return FitResult(_unwrap(model), step, history, time.perf_counter() - t0)


def evaluate(
    recipe: Any, model: nn.Module, cfg: Any, split: str = "test", dataset: Dataset | None = None
) -> dict[str, float]:
    """``recipe.metrics`` on a split, in eval mode and without gradients."""
    data = dataset if dataset is not None else recipe.make_data(cfg, split)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return {k: float(v) for k, v in recipe.metrics(model, data).items()}
    finally:
        model.train(was)


def fit_recipe(
    recipe: Any,
    cfg: Any,
    *,
    runtime: Runtime | None = None,
    run: RunDir | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Iterable[Callable] = (),
) -> tuple[nn.Module, FitResult]:
    """Seed, make the training data, build the model and optimiser from ``recipe``, then
    :func:`fit`."""
    runtime = runtime or Runtime()
    seed_everything(cfg.seed)
    data = recipe.make_data(cfg, "train")
    model = recipe.build(cfg).to(runtime.device)
    opt = recipe.optimizer(cfg, model)
    sched = recipe.scheduler(cfg, opt)
    res = fit(
        model,
        opt,
        data,
        recipe.step,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        collate_fn=recipe.collate,
        scheduler=sched,
        runtime=runtime,
        run=run,
        ckpt_every=cfg.ckpt_every,
        log_every=cfg.log_every,
        resume=resume,
        seed=cfg.seed,
        progress=progress,
        callbacks=callbacks,
        # manual schedules (alternating players, frozen phases) leave parameters without
        # gradients on purpose: DDP must then look for unused parameters every step
        find_unused_parameters=bool(getattr(recipe, "unused_parameters", ()))
        or _manual_step(recipe) is not None,
        train_step_fn=_manual_step(recipe),
    )
    return res.model, res


def _manual_step(recipe: Any) -> Callable | None:
    """The recipe's ``train_step`` when it overrides :meth:`Recipe.train_step`, else ``None``."""
    from invariance.core.recipe import Recipe

    fn = getattr(type(recipe), "train_step", None)
    if fn is None or fn is Recipe.train_step:
        return None
    return recipe.train_step


def train_arms(
    recipe: Any,
    cfg: Any,
    arms: dict[str, dict[str, Any]],
    seeds: Iterable[int],
    *,
    run: RunDir | None = None,
    split: str = "test",
    measure: Callable[[Any, Any, Any], dict] | None = None,
) -> dict[str, list[dict]]:
    """The usual reproduce loop: for every seed and arm, train a fresh recipe on ``cfg`` with
    ``seed`` and the arm's field overrides, evaluate it on ``split`` and log ``{"arm", "seed",
    ...metrics, "seconds"}`` to ``run`` as soon as that run ends (a killed reproduce keeps its
    finished runs). ``seconds`` is the run's training + evaluation wall time. Returns
    ``{arm: [metrics per seed]}``, each with ``seconds``.

    ``measure(recipe, model, cfg) -> metrics`` replaces the evaluation on ``split`` (several
    splits, or something kept from the trained model)."""
    import dataclasses

    res: dict[str, list[dict]] = {a: [] for a in arms}
    for s in seeds:
        for arm, over in arms.items():
            c = dataclasses.replace(cfg, seed=s, **over)
            r = type(recipe)()
            t0 = time.perf_counter()
            model, _ = fit_recipe(r, c, progress=False)
            mt = dict(evaluate(r, model, c, split) if measure is None else measure(r, model, c))
            mt["seconds"] = round(time.perf_counter() - t0, 3)
            res[arm].append(mt)
            if run is not None:
                run.log_metrics({"arm": arm, "seed": s, **mt})
    return res
