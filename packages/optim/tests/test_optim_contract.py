import pytest

import invariance.optim  # noqa: F401
from invariance.core.registry import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("optim")


def test_optim_registry_complete():
    assert {m.name for m in METHODS} == {"adamp", "sgdp", "zloss", "mip"}


@pytest.mark.parametrize("info", METHODS, ids=[m.name for m in METHODS])
def test_optim_contract(info):
    run_contract(info)
