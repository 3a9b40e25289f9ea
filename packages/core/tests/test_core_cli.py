import yaml

from invariance.core._toy import register_toy
from invariance.core.cli import build_cli, umbrella_main


def test_cli_train_replay_check_eval_reproduce(tmp_path, capsys):
    register_toy()
    main = build_cli("coretoy")
    assert main(["list"]) == 0
    assert "toy_norm" in capsys.readouterr().out
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    assert main(["train", "toy_norm", "--out", str(r1), "--quiet", "--cfg.steps", "20"]) == 0
    cfg = yaml.safe_load((r1 / "config.yaml").read_text())
    assert cfg["cfg"]["steps"] == 20 and "config" not in cfg
    assert (
        main(
            ["train", "toy_norm", "--config", str(r1 / "config.yaml"), "--out", str(r2), "--quiet"]
        )
        == 0
    )
    assert (r1 / "metrics.jsonl").read_text() == (r2 / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["check", "toy_norm", "--ckpt", str(r1)]) == 0
    out = capsys.readouterr().out
    assert "negative control" in out and "FAIL" not in out
    assert main(["eval", "toy_norm", "--ckpt", str(r1)]) == 0
    assert main(["reproduce", "toy_norm", "--quick", "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "REPORT.md").exists() and (
        tmp_path / "rep" / "results.json"
    ).exists()


def test_cli_bad_arguments_exit_2_with_usage(capsys):
    register_toy()
    main = build_cli("coretoy")
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "unknown command" in err
    assert main(["train", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert main([]) == 2
    try:
        main(["train", "toy_norm", "--cfg.lr", "abc"])
    except SystemExit as e:
        assert e.code == 2
    assert "cfg.lr" in capsys.readouterr().err


def test_umbrella_usage_errors(capsys):
    assert umbrella_main(["nope"]) == 2
    assert "usage: invariance" in capsys.readouterr().err
    assert umbrella_main(["check", "--domain", "nodomain"]) == 2


def test_reproduce_keeps_a_recipe_written_results_json(tmp_path):
    import json
    import time

    from invariance.core.io import RunDir
    from invariance.core.recipe import ReproduceResult
    from invariance.core.report import _keep_recipe_results, _write_reproduce

    run = RunDir(tmp_path / "r")
    started = time.time()
    run.write_results({"per_seed": [1, 2, 3]})  # what a recipe writes during reproduce
    _keep_recipe_results(run, started)
    res = ReproduceResult(
        task="t", metric="m", method="a", baseline="b", method_value=1.0, baseline_value=0.0
    )
    _write_reproduce(run, [("core", "toy", res)], title="x")
    assert json.loads((run.path / "recipe_results.json").read_text()) == {"per_seed": [1, 2, 3]}
    assert json.loads((run.path / "results.json").read_text())[0]["name"] == "toy"
    # a results.json older than the reproduce run (a previous run's) is left to be overwritten
    old = RunDir(tmp_path / "old")
    old.write_results({"stale": True})
    _keep_recipe_results(old, time.time() + 60)
    assert not (old.path / "recipe_results.json").exists()


def test_reproduce_details_prints_per_seed_values_and_tables(tmp_path, capsys):
    from invariance.core.recipe import ReproduceResult
    from invariance.core.report import reproduce_details

    res = ReproduceResult(
        task="t", metric="m", method="A", baseline="B", method_values=[0.123456, 0.5, 1.0],
        baseline_values=[0.1, 0.2, 0.3], arms={"C": [1.0, 2.0, 3.0]}, seeds=[0, 1, 2],
        details={"grid": {"A x": {"rr": "0.5 ± 0.1", "ir": 0.25}, "B x": {"rr": "0 ± 0"}},
                 "seconds": {"A": 0.5}, "steps": 3},
    )  # fmt: skip
    text = reproduce_details(res)
    assert "A: [0.1235, 0.5, 1]" in text and "C: [1, 2, 3]" in text
    lines = text.splitlines()
    head = next(i for i, s in enumerate(lines) if s.startswith("grid:"))
    assert lines[head + 1].split() == ["rr", "ir"]  # a dict of dicts is a table
    assert lines[head + 3].split()[:4] == ["A", "x", "0.5", "±"]
    assert "  A: 0.5" in lines and "steps: 3" in lines
    register_toy()
    main = build_cli("coretoy")
    assert main(["reproduce", "toy_norm", "--quick", "--details", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(baseline): [" in out and "seeds: [" in out
