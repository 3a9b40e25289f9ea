import pytest

import invariance.causal  # noqa: F401  (fills the registry)
from invariance.core import make_config
from invariance.core.recipe import ConfigError
from invariance.core.registry import list_methods
from invariance.core.testing import run_contract

METHODS = list_methods("causal")


def test_causal_registry_has_every_method():
    assert {m.name for m in METHODS} == {"pac_invariance", "causal_de_finetti", "medl"}


@pytest.mark.parametrize("info", METHODS, ids=lambda m: m.name)
def test_causal_contract(info):
    run_contract(info)


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [
        ("pac_invariance", "eps", -1.0),
        ("pac_invariance", "penalty", "l3"),
        ("pac_invariance", "rank", 99),
        ("causal_de_finetti", "alpha", 1.0),
        ("causal_de_finetti", "mode", 3),
        ("medl", "schedule", "foo"),
        ("medl", "n_batches", 1),
        ("medl", "lambda_gen", float("nan")),
    ],
)
def test_causal_config_rejects_bad_values(method, field, value):
    info = next(m for m in METHODS if m.name == method)
    with pytest.raises(ConfigError, match=field):
        make_config(info.recipe(), **{field: value})


@pytest.mark.parametrize("schedule", ["alternating", "joint"])
def test_medl_optimizers_follow_cfg_optimizer(schedule):
    info = next(m for m in METHODS if m.name == "medl")
    recipe = info.recipe()
    cfg = make_config(recipe, optimizer="adamp", schedule=schedule)
    opt = recipe.optimizer(cfg, recipe.build(cfg))
    opts = [o for _, o in opt.items()] if hasattr(opt, "items") else [opt]
    assert opts and all(type(o).__name__ == "AdamP" for o in opts)
