"""A minimal distributed runtime on ``torch.distributed``: torchrun's environment, DDP only when the
world has more than one process, a sharded sampler, mean all-reduce and rank-0-only I/O.

The same command runs on one CPU, on N GPUs (``torchrun --nproc_per_node=N``) and on several nodes.
Users who want FSDP or mixed precision can wrap :func:`invariance.core.train.fit`'s loop with
accelerate or Fabric; nothing here depends on them.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["Runtime", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; ``"cuda"`` without CUDA is a clear error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if device.split(":")[0] not in {"cpu", "cuda", "mps", "xpu"}:
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return torch.device(device)


@dataclass
class Runtime:
    """Process-group facts and the four verbs a training loop needs."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @classmethod
    def from_env(cls, device: str | torch.device = "auto") -> Runtime:
        """Read torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``; initialise the process group
        (nccl on CUDA, gloo on CPU) when ``WORLD_SIZE > 1``."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device)
        if world <= 1:
            return cls(0, 0, 1, dev, False)
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        here = False
        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            here = True
        return cls(rank, local, world, dev, here)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def setup(
        self,
        model: nn.Module,
        *,
        find_unused_parameters: bool = False,
        sync_batchnorm: bool = False,
    ) -> nn.Module:
        """Move to the device; wrap in DDP only when the world has more than one process."""
        model = model.to(self.device)
        if not self.distributed:
            return model
        if sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return MethodDDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def sampler(
        self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, drop_last: bool = True
    ) -> DistributedSampler:
        """A ``DistributedSampler`` (also in a 1-process world, so the sample order is the same
        function of ``(seed, epoch)`` at every world size); call ``set_epoch`` every epoch."""
        return DistributedSampler(
            dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` over ranks (a copy; ``t`` is untouched)."""
        if not self.distributed:
            return t.detach().clone()
        y = t.detach().clone().to(self.device)
        tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
        return y / self.world_size

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs)

    def close(self) -> None:
        """Destroy the process group if this runtime created it, after a barrier: no rank tears
        the group down while another still has collectives in flight (a gloo rank was seen to
        abort at exit, once, without it)."""
        if self.initialized_here and tdist.is_initialized():
            if tdist.get_world_size() > 1:
                tdist.barrier()
            tdist.destroy_process_group()
            self.initialized_here = False


class MethodDDP(nn.parallel.DistributedDataParallel):
    """``DistributedDataParallel`` that also serves the wrapped model's own methods.

    Recipes often train through a method (``model.loss(batch)``) rather than ``forward``. Plain
    DDP has no such attribute, and calling ``ddp.module.loss`` would bypass DDP's forward, so the
    gradients would not be synchronised. Here ``ddp.loss(batch)`` runs ``module.loss`` *as* the
    forward of one DDP call (the method is bound as ``module.forward`` for that call), and any other
    attribute (a submodule, a buffer, a flag) is read from the wrapped module.
    """

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        module = super().__getattr__("module")
        attr = getattr(module, name)
        if not (inspect.ismethod(attr) and attr.__self__ is module) or name == "forward":
            return attr

        def through_ddp(*args, **kwargs):
            had = "forward" in module.__dict__
            saved = module.__dict__.get("forward")

            def restore() -> None:
                if had:
                    module.forward = saved
                else:
                    module.__dict__.pop("forward", None)

            def once(*a, **k):
                restore()  # the method may call the module's own forward (self(x)) inside
                return attr(*a, **k)

            module.forward = once
            try:
                return self(*args, **kwargs)
            finally:
                restore()

        return through_ddp
