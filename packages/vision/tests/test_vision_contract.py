import pytest

import invariance.vision  # noqa: F401
from invariance.core.registry import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("vision")


def test_vision_registry_has_the_issue_methods():
    assert {m.name for m in METHODS} >= {
        "galaxy",
        "galaxy_mean",
        "bss",
        "sepc",
        "viat",
        "preludenet",
        "minima",
        "invariant_select",
        "cikd",
        "person_search",
        "invdiff",
        "sie",
        "lisgan",
    }


@pytest.mark.parametrize("info", METHODS, ids=[m.name for m in METHODS])
def test_vision_contract(info):
    run_contract(info)
