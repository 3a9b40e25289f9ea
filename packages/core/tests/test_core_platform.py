"""Platform rules: noise-rule verdicts, config validation, vacuous symmetry checks, the bad-input
harness, interleaved benches, the result cache, atomic checkpoints and trustworthy CLI runs."""

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
import yaml

from invariance.core import groups as G
from invariance.core._toy import register_toy
from invariance.core.bench import compare
from invariance.core.cache import ResultCache
from invariance.core.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from invariance.core.cli import build_cli
from invariance.core.recipe import ConfigError, ReproduceResult, TrainConfig
from invariance.core.testing import (
    VacuousCheckError,
    assert_invariant,
    assert_rejects_bad_inputs,
    check_invariant,
    fuzz_bad_inputs,
    fuzz_table,
)
from invariance.core.train import ResumeError, fit

# --------------------------------------------------------------------------- verdicts


def _res(m, b, hib=True, **kw):
    return ReproduceResult("t", "m", "meth", "base", m, b, hib, **kw)


def test_verdict_follows_the_noise_rule():
    assert _res([0.9, 0.91, 0.92], [0.5, 0.52, 0.51]).verdict == "wins"
    assert _res([0.5, 0.52, 0.51], [0.9, 0.91, 0.92]).verdict == "loses"
    # the example: +0.038 with sd 0.06 over 3 seeds is noise, not a win
    assert _res([0.538, 0.478, 0.598], [0.5, 0.44, 0.56]).verdict == "within noise"
    # lower is better flips the direction
    assert _res([0.1, 0.11, 0.12], [0.5, 0.52, 0.51], hib=False).verdict == "wins"
    # fewer than 3 seeds: no noise estimate, said so
    assert _res(0.9, 0.5).verdict == "ahead (n=1)"
    assert _res([0.4, 0.41], [0.5, 0.52]).verdict == "behind (n=2)"
    r = _res([0.5, 0.5, 0.5], [0.9, 0.9, 0.9], not_showable="needs --size full")
    assert r.verdict == "not shown at this size"


def test_result_reports_mean_sd_n_and_round_trips_to_json():
    r = _res([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], arms={"strawman": [-1, -1, -1]}, seeds=[0, 1, 2])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["method_value"] == 2.0 and d["method_sd"] == 1.0 and d["n"] == 3
    assert d["method_values"] == [1.0, 2.0, 3.0] and d["arms"]["strawman"] == [-1.0] * 3
    assert math.isclose(d["stderr"], math.sqrt(1 / 3))
    assert "2 standard errors" in d["verdict_rule"]
    assert r.summary("method") == "2 ± 1 (n=3)"


def test_result_from_arms_and_bad_values():
    runs = {"m": [{"acc": 0.9}, {"acc": 0.95}, {"acc": 0.92}], "b": [{"acc": 0.5}] * 3}
    runs["weak"] = [{"acc": 0.1}] * 3
    r = ReproduceResult.from_arms(runs, method="m", baseline="b", key="acc", task="t")
    assert r.verdict == "wins" and r.arms == {"weak": [0.1] * 3}
    with pytest.raises(ValueError, match="method_values"):
        ReproduceResult("t", "m", "a", "b", [], [1.0])
    with pytest.raises(TypeError, match="method_values"):
        ReproduceResult("t", "m", "a", "b", object(), [1.0])


# --------------------------------------------------------------------------- configs


@dataclass
class _Cfg(TrainConfig):
    lam: float = 0.5
    n_layers: int = 2
    norm: str = "batch"
    ranges: ClassVar[dict] = {"lam": (0.0, 1.0)}
    choices: ClassVar[dict] = {"norm": ("batch", "layer")}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"steps": -1}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lam": 1.5}, "lam"),
        ({"n_layers": -2}, "n_layers"),
        ({"norm": "group"}, "norm"),
    ],
)
def test_config_validation_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        _Cfg(**bad)


def test_cli_invalid_config_and_device_exit_2_without_traceback(tmp_path, capsys):
    register_toy()
    main = build_cli("coretoy")
    for args in (
        ["--cfg.steps", "-5"],
        ["--cfg.dropout", "2"],
        ["--device", "tpu"],
        ["--cfg.optimizer", "nope"],
    ):
        capsys.readouterr()
        assert main(["train", "toy_norm", "--out", str(tmp_path / "x"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("usage:") and "Traceback" not in err, err


# --------------------------------------------------------------------------- vacuous checks


def test_vacuous_check_is_refused_and_a_varying_one_passes():
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    const = lambda v: 1e-6 * v.norm(dim=-1) + 0.3  # invariant, but barely varies
    with pytest.raises(VacuousCheckError, match="vary"):
        assert_invariant(const, (x,), G.SO3(), ("vector",))
    r = check_invariant("c", const, (x,), G.SO3(), ("vector",))
    assert not r.passed and "vacuous" in r.detail
    # a non-invariant function with tiny outputs would have passed without the rule
    tiny_broken = lambda v: 1e-7 * v[:, 0]
    with pytest.raises(VacuousCheckError):
        assert_invariant(tiny_broken, (x,), G.SO3(), ("vector",))
    ok = check_invariant("n", lambda v: v.norm(dim=-1), (x,), G.SO3(), ("vector",))
    assert ok.passed and ok.variation > 0.1


# --------------------------------------------------------------------------- bad inputs


def _careful(x, k=2.0):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating tensor")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be (N>0, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x has NaN/inf entries")
    if not isinstance(k, float) or not math.isfinite(k) or k <= 0:
        raise ValueError(f"k must be a positive finite float, got {k!r}")
    return x * k


def test_fuzz_harness_counts_handled_and_failures():
    rep = assert_rejects_bad_inputs(_careful, {"x": torch.randn(3, 4), "k": 2.0})
    assert rep.tried == rep.handled == 10
    sloppy = lambda x, k=2.0: x * k
    bad = fuzz_bad_inputs(sloppy, {"x": torch.randn(3, 4), "k": 2.0}, name="sloppy")
    assert bad.handled < bad.tried and any("NON-FINITE" in f for f in bad.failures)

    # an error that does not name the argument is not handled ("x" is not in "expected")
    def vague(x):
        if x.dim() != 2:
            raise ValueError("expected a matrix")
        return x

    v = fuzz_bad_inputs(vague, {"x": torch.randn(3, 4)}, only=["x"], skip=["x:nan", "x:inf"])
    assert v.outcomes["x:extra_dim"] == "unclear error"
    acc = fuzz_bad_inputs(
        vague, {"x": torch.randn(3, 4)}, accept=["x:empty", "x:int_dtype"], only=["x"]
    )
    assert acc.outcomes["x:empty"] == "accepted"
    assert "total" in fuzz_table([rep, bad])


# --------------------------------------------------------------------------- benches, cache


def test_compare_interleaves_and_returns_flat_rows():
    x = torch.randn(64, 64)
    rows = compare({"mm": lambda: x @ x, "add": lambda: x + 1}, repeats=3, min_run_time=0.01)
    assert [r["name"] for r in rows] == ["mm", "add"]
    for r in rows:
        assert all(not isinstance(v, (dict, list)) for v in r.values())
        assert r["median_ms"] > 0 and r["spread_ms"] >= 0 and r["repeats"] == 3
    assert rows[0]["speedup"] == 1.0
    with pytest.raises(ValueError, match="reference"):
        compare({"a": lambda: None}, reference="b")


def test_result_cache(tmp_path):
    c = ResultCache(tmp_path / "c")
    calls = []
    f = lambda: calls.append(1) or {"acc": 0.5}
    assert c.get_or_compute({"arm": "a", "seed": 0}, f) == {"acc": 0.5}
    assert c.get_or_compute({"seed": 0, "arm": "a"}, f) == {"acc": 0.5}
    assert len(calls) == 1 and len(c) == 1


def test_result_cache_sources_key_cells_by_code(tmp_path, monkeypatch):
    import sys

    from invariance.core import cache as cache_mod

    pkg = tmp_path / "src" / "cachedpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.delitem(sys.modules, "cachedpkg", raising=False)
    cache_mod.source_fingerprint.cache_clear()
    calls = []
    f = lambda: calls.append(1) or {"acc": len(calls)}
    c = ResultCache(tmp_path / "c", sources=("cachedpkg",))
    assert c.get_or_compute({"arm": "a"}, f) == {"acc": 1}
    assert ResultCache(tmp_path / "c", sources="cachedpkg").get({"arm": "a"}) == {"acc": 1}
    # the package's code changes: the old cell is not served, a new one is computed
    (pkg / "__init__.py").write_text("X = 2\n")
    cache_mod.source_fingerprint.cache_clear()
    c2 = ResultCache(tmp_path / "c", sources=("cachedpkg",))
    assert c2.get({"arm": "a"}) is None
    assert c2.get_or_compute({"arm": "a"}, f) == {"acc": 2} and len(c2) == 2
    # a cache without sources keys by the dict alone
    assert ResultCache(tmp_path / "c").get({"arm": "a"}) is None
    with pytest.raises(TypeError, match="package"):
        cache_mod.source_fingerprint("")
    cache_mod.source_fingerprint.cache_clear()


# --------------------------------------------------------------------------- checkpoints, runs


def test_checkpoint_is_swapped_in_as_a_set_and_corruption_names_the_file(tmp_path):
    m = torch.nn.Linear(3, 2)
    d = tmp_path / "checkpoint"
    save_checkpoint(d, m, step=1)
    save_checkpoint(d, m, step=2)
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.old").exists()
    assert load_checkpoint(d, torch.nn.Linear(3, 2))["step"] == 2
    # a kill between the two renames leaves the previous set as checkpoint.old: still resumable
    (tmp_path / "checkpoint").rename(tmp_path / "checkpoint.old")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.old"
    (tmp_path / "checkpoint.old").rename(d)
    blob = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(d, torch.nn.Linear(3, 2))
    save_checkpoint(d, m, step=3)
    (d / "trainer.json").write_text('{"__dict__": [["step"')
    with pytest.raises(CheckpointError, match="trainer.json"):
        load_checkpoint(d, torch.nn.Linear(3, 2), torch.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="does not fit"):
        save_checkpoint(d, m, step=4)
        load_checkpoint(d, torch.nn.Linear(4, 2))


def test_resume_without_a_checkpoint_fails(tmp_path):
    from torch.utils.data import TensorDataset

    from invariance.core.io import RunDir

    m = torch.nn.Linear(2, 1)
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    step = lambda mod, b: {"loss": ((mod(b[0]) - b[1]) ** 2).mean()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ResumeError, match="no complete checkpoint"):
        fit(m, opt, data, step, steps=2, batch_size=4, run=RunDir(tmp_path), resume=True)


def test_cli_runs_can_be_trusted(tmp_path, capsys):
    register_toy()
    main = build_cli("coretoy")
    run = tmp_path / "wide"
    # a non-default width trains, evaluates and checks from its own config.yaml
    args = ["--out", str(run), "--quiet", "--cfg.steps", "6", "--cfg.hidden", "24"]
    assert main(["train", "toy_norm", *args]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "toy_norm"
    assert main(["eval", "toy_norm", "--ckpt", str(run)]) == 0
    assert main(["check", "toy_norm", "--ckpt", str(run)]) == 0
    # resume with other hyper-parameters: exit 2 naming the field; more steps are fine
    capsys.readouterr()
    resume = ["train", "toy_norm", "--out", str(run), "--quiet", "--resume", "--cfg.hidden", "24"]
    assert main([*resume, "--cfg.steps", "8", "--cfg.lr", "0.5"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main([*resume, "--cfg.steps", "8"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    steps = [m["step"] for m in map(json.loads, lines) if m.get("split") != "test"]
    assert steps == sorted(set(steps)), steps  # no duplicated steps after the resume
    # resume of a run that has no checkpoint: exit 2, nothing appended
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text(yaml.safe_dump({"cfg": {}, "method": "toy_norm"}))
    assert main(["train", "toy_norm", "--out", str(empty), "--resume", "--quiet"]) == 2
    assert not (empty / "metrics.jsonl").exists()
    # a corrupt checkpoint: one line naming the file
    blob = (run / "checkpoint" / "model.safetensors").read_bytes()
    (run / "checkpoint" / "model.safetensors").write_bytes(blob[:40])
    capsys.readouterr()
    assert main(["eval", "toy_norm", "--ckpt", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0]


def test_run_of_another_method_is_refused(tmp_path, capsys):
    register_toy()
    main = build_cli("coretoy")
    run = tmp_path / "r"
    assert main(["train", "toy_norm", "--out", str(run), "--quiet", "--cfg.steps", "2"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"] = "other_method"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["eval", "toy_norm", "--ckpt", str(run)]) == 2
    assert "other_method" in capsys.readouterr().err


def test_reproduce_report_links_real_plot_files(tmp_path):
    import re

    register_toy()
    main = build_cli("coretoy")
    out = tmp_path / "rep"
    assert main(["reproduce", "toy_norm", "--quick", "--out", str(out), "--quiet"]) == 0
    report = (out / "REPORT.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links and all((out / p).exists() for p in links), links
    res = json.loads((out / "results.json").read_text())[0]
    assert res["n"] == 3 and res["verdict"] == "wins"


def test_bench_output_has_no_nested_dicts_in_table_cells():
    from invariance.core.report import _bench_text

    text = _bench_text(
        {"rows": [{"name": "a", "median_ms": 1.5}], "machine": "x", "extra": {"rows": [{"n": 2}]}}
    )
    assert "{" not in text and "median_ms" in text and "extra.rows:" in text


def test_fuzz_mutates_non_contiguous_tensors():
    x = torch.randn(4, 3).t()  # non-contiguous
    rep = fuzz_bad_inputs(_careful, {"x": x, "k": 2.0}, only=["x"])
    assert rep.tried == rep.handled
