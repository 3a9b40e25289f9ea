import pytest

import invariance.control  # noqa: F401  (fills the registry)
from invariance.core.registry import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("control")


def test_control_registry_has_every_method():
    assert {m.name for m in METHODS} == {"marl_rbc"}


@pytest.mark.parametrize("info", METHODS, ids=lambda m: m.name)
def test_control_contract(info):
    run_contract(info)
