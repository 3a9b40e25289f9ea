"""Registry contract (timm pattern): every registered sequence method passes run_contract."""

import pytest

import invariance.sequence  # noqa: F401
from invariance.core import list_methods
from invariance.core.testing import run_contract


@pytest.mark.parametrize("info", list_methods("sequence"), ids=lambda i: i.name)
def test_sequence_contract(info):
    run_contract(info)


def test_sequence_registry_names():
    assert {m.name for m in list_methods("sequence")} >= {
        "s4",
        "s4d",
        "eisl",
        "speech_units",
        "unimts",
        "observatory",
        "cit",
        "dask",
    }
