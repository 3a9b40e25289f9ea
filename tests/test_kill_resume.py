"""A training run killed (SIGKILL) right after a checkpoint, then resumed, ends bit-identical to an
uninterrupted run (CPU; dropout on, so the RNG state must be restored too)."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("_fit_worker.py")


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run([sys.executable, str(WORKER), str(full), "25"], check=True, env=env, timeout=300)
    killed = subprocess.run(
        [sys.executable, str(WORKER), str(cut), "25", "--kill-at", "10"], env=env, timeout=300
    )
    assert killed.returncode != 0, "the worker should have been killed"
    assert not (cut / "weights-rank0.safetensors").exists()
    subprocess.run(
        [sys.executable, str(WORKER), str(cut), "25", "--resume"], check=True, env=env, timeout=300
    )
    a = load_file(str(full / "weights-rank0.safetensors"))
    b = load_file(str(cut / "weights-rank0.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (full / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()
