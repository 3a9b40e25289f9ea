import dataclasses

import pytest

from invariance.core import MethodInfo, Recipe, get_method, list_methods, register
from invariance.core._toy import register_toy
from invariance.core.recipe import make_config
from invariance.core.testing import run_contract


def test_register_get_list_and_frozen_metadata():
    cls = register_toy()
    info = get_method("toy_norm")
    assert info.recipe is cls and info.domain == "coretoy"
    assert info in list_methods("coretoy", load=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"
    assert isinstance(info, MethodInfo)


def test_unknown_method_lists_known_ones():
    register_toy()
    with pytest.raises(KeyError, match="toy_norm"):
        get_method("does_not_exist")


def test_register_validates():
    with pytest.raises(ValueError, match="lowercase"):
        register("Bad Name", domain="x", paper="p")
    with pytest.raises(TypeError, match="Recipe subclass"):
        register("ok_name", domain="x", paper="p")(object)


def test_make_config_presets_and_unknown_fields():
    cls = register_toy()
    assert make_config(cls, "full").steps == 200
    assert make_config(cls, "tiny", lr=0.5).lr == 0.5
    with pytest.raises(ValueError, match="no field"):
        make_config(cls, "tiny", nope=1)
    with pytest.raises(ValueError, match="unknown size"):
        make_config(cls, "huge")


def test_contract_passes_for_toy_and_catches_dead_parameters():
    register_toy()
    run_contract(get_method("toy_norm"))

    class Dead(get_method("toy_norm").recipe):
        def build(self, cfg):
            import torch

            class WithDead(torch.nn.Module):
                def __init__(self, net):
                    super().__init__()
                    self.net, self.extra = net, torch.nn.Linear(2, 2)  # extra: never used

                def forward(self, x):
                    return self.net(x)

            return WithDead(super().build(cfg))

    info = dataclasses.replace(get_method("toy_norm"), recipe=Dead)
    with pytest.raises(AssertionError, match="no gradient reaches"):
        run_contract(info)


def test_entry_points_discover_installed_domains():
    from invariance.core.registry import domains

    pytest.importorskip("invariance.causal", reason="the whole workspace is not installed")
    assert {"optim", "geometry", "sequence", "graph", "vision", "causal"} <= set(domains())


def test_recipe_base_reports_missing_parts():
    with pytest.raises(NotImplementedError, match="make_data"):
        Recipe().make_data(None, "train")
