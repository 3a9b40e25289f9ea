import pytest

import invariance.graph  # noqa: F401
from invariance.core import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("graph")


def test_graph_registry_has_methods():
    assert {m.name for m in METHODS} >= {"igt", "igt_vn", "grea", "hei"}


@pytest.mark.parametrize("info", METHODS, ids=[m.name for m in METHODS])
def test_graph_contract(info):
    run_contract(info)
