import pytest

import invariance.geometry  # noqa: F401  (populates the registry)
from invariance.core import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("geometry")


def test_geometry_registry_is_complete():
    assert {m.name for m in METHODS} >= {
        "frame_averaging",
        "fa_normals",
        "tinvnn",
        "eqmotion",
        "risurconv",
        "affine_gresnet",
    }


@pytest.mark.parametrize("info", METHODS, ids=[m.name for m in METHODS])
def test_geometry_contract(info):
    run_contract(info)
