"""Root test hygiene (applies to every package's tests): seed everything before each test, run torch
single-threaded (the suite is many tiny problems; with pytest-xdist on 2 cores intra-op threads only
oversubscribe the CPU: measured 5-30x slower under load), and fail a test that leaves the global
default dtype changed. Each setting is restored after the test."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _single_thread_session():
    """One torch thread for the whole session too, so that module- and session-scoped fixtures
    (built before the per-test fixture below runs) compute under the same thread count as the
    tests that compare against them: a CPU result can depend on the thread count in its last
    bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_threads_and_guard_dtype():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    before = torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"test changed the default dtype from {before} to {after}")
