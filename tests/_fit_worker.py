"""Worker script for the root integration tests (not a test module).

usage: python _fit_worker.py OUT_DIR STEPS [--kill-at STEP] [--resume] [--no-dropout]
                             [--method | --bypass-ddp]
Trains a small regression model with ``invariance.core.fit`` (under torchrun when launched by it)
and writes the final weights of every rank to OUT_DIR/weights-rank<R>.safetensors.
``--method``: the step calls the model's ``loss`` method (``model.loss(batch)``) instead of
``forward``; ``--bypass-ddp``: the same method called on the unwrapped module (``model.module``),
i.e. outside DDP's forward (the negative control: gradients are not synchronised).
"""

import os
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from invariance.core import RunDir, Runtime, fit


class Regressor(nn.Sequential):
    def loss(self, batch):
        x, y = batch
        return {"loss": ((self(x) - y) ** 2).mean()}


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    kill_at = int(sys.argv[sys.argv.index("--kill-at") + 1]) if "--kill-at" in sys.argv else None
    resume = "--resume" in sys.argv
    rt = Runtime.from_env("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 5, generator=g)
    y = torch.sin(x @ torch.randn(5, 1, generator=g))
    torch.manual_seed(0)
    model = Regressor(nn.Linear(5, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 1))
    if "--no-dropout" in sys.argv:  # dropout masks differ per rank: the DDP equivalence test
        model[2].p = 0.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def step(m, b):
        if "--method" in sys.argv:
            return m.loss(b)
        if "--bypass-ddp" in sys.argv:
            return getattr(m, "module", m).loss(b)
        return {"loss": ((m(b[0]) - b[1]) ** 2).mean()}

    def killer(event, s, info):
        if event == "checkpoint" and s == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    res = fit(
        model,
        opt,
        TensorDataset(x, y),
        step,
        steps=steps,
        batch_size=32,
        runtime=rt,
        run=RunDir(out, enabled=rt.is_main),
        ckpt_every=5,
        log_every=5,
        resume=resume,
        callbacks=[killer],
        progress=False,
    )
    save_file(
        {k: v.contiguous() for k, v in res.model.state_dict().items()},
        str(out / f"weights-rank{rt.rank}.safetensors"),
    )
    rt.close()


if __name__ == "__main__":
    main()
