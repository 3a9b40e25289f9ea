"""Root test hygiene (applies to every package's tests): seed everything before each test and fail
a test that leaves the global default dtype changed."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_guard_dtype():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"test changed the default dtype from {before} to {after}")
