import pytest

import invariance.causal  # noqa: F401  (fills the registry)
from invariance.core.registry import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("causal")


def test_causal_registry_has_every_method():
    assert {m.name for m in METHODS} == {"pac_invariance", "causal_de_finetti", "medl"}


@pytest.mark.parametrize("info", METHODS, ids=lambda m: m.name)
def test_causal_contract(info):
    run_contract(info)
