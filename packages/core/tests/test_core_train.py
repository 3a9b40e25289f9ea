import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from invariance.core import RunDir, fit, load_checkpoint, save_checkpoint
from invariance.core.checkpoint import load_state, save_state


def regression(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return TensorDataset(x, x @ w + 0.01 * torch.randn(n, 1, generator=g))


def mse(model, batch):
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


def model_and_opt(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 20, 0.5)
    return m, opt, sched


def test_fit_learns_and_logs(tmp_path):
    m, opt, sched = model_and_opt()
    run = RunDir(tmp_path / "run")
    res = fit(
        m,
        opt,
        regression(),
        mse,
        steps=60,
        batch_size=16,
        scheduler=sched,
        run=run,
        log_every=10,
        progress=False,
    )
    hist = run.read_metrics()
    assert [h["step"] for h in hist] == [10, 20, 30, 40, 50, 60]
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert "lr" in hist[-1] and res.step == 60
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").exists()


def test_resume_in_process_is_bit_identical(tmp_path):
    data = regression()
    m1, o1, s1 = model_and_opt()
    fit(m1, o1, data, mse, steps=30, batch_size=16, scheduler=s1, progress=False)

    run = RunDir(tmp_path / "r")
    m2, o2, s2 = model_and_opt()
    fit(m2, o2, data, mse, steps=13, batch_size=16, scheduler=s2, run=run, progress=False)
    # pretend the process died: fresh objects, global RNG disturbed
    torch.manual_seed(999)
    m3, o3, s3 = model_and_opt(seed=5)
    fit(
        m3,
        o3,
        data,
        mse,
        steps=30,
        batch_size=16,
        scheduler=s3,
        run=run,
        resume=True,
        progress=False,
    )
    for a, b in zip(m1.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_round_trip_is_safetensors_and_json(tmp_path):
    m, opt, sched = model_and_opt()
    fit(m, opt, regression(), mse, steps=5, batch_size=16, scheduler=sched, progress=False)
    save_checkpoint(tmp_path / "ck", m, opt, sched, step=5, extra={"note": "x"})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "model.safetensors",
        "trainer.json",
        "trainer.safetensors",
    ]
    json.loads((tmp_path / "ck" / "trainer.json").read_text())  # plain JSON, no pickle
    m2, opt2, sched2 = model_and_opt(seed=3)
    state = load_checkpoint(tmp_path / "ck", m2, opt2, sched2)
    assert state == {"step": 5, "extra": {"note": "x"}}
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt.state_dict()["state"][0]["exp_avg"].equal(opt2.state_dict()["state"][0]["exp_avg"])
    assert sched2.state_dict() == sched.state_dict()


def test_state_flatten_keeps_types(tmp_path):
    obj = {"a": (1, 2.5, None), 3: [torch.arange(3), {"x": torch.ones(2, 2)}], "s": "t"}
    save_state(tmp_path / "st", obj)
    back = load_state(tmp_path / "st")
    assert back["a"] == (1, 2.5, None) and back["s"] == "t"
    assert torch.equal(back[3][0], torch.arange(3)) and torch.equal(
        back[3][1]["x"], torch.ones(2, 2)
    )
    with pytest.raises(TypeError, match="cannot checkpoint"):
        save_state(tmp_path / "bad", {"f": object()})
    with pytest.raises(FileNotFoundError):
        load_state(tmp_path / "missing")


def test_fit_rejects_bad_arguments():
    m, opt, _ = model_and_opt()
    with pytest.raises(ValueError, match="batch_size"):
        fit(m, opt, regression(), mse, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="too small"):
        fit(m, opt, regression(n=4), mse, steps=1, batch_size=16)


def test_fit_stops_on_non_finite_loss():
    m, opt, _ = model_and_opt()
    with pytest.raises(FloatingPointError, match="non-finite"):
        fit(
            m,
            opt,
            regression(),
            lambda mod, b: {"loss": mod(b[0]).sum() * float("nan")},
            steps=2,
            batch_size=16,
            progress=False,
        )


def test_train_arms_runs_each_seed_and_arm(tmp_path):
    from invariance.core._toy import register_toy
    from invariance.core.recipe import make_config
    from invariance.core.train import train_arms

    cls = register_toy()
    run = RunDir(tmp_path / "arms")
    res = train_arms(
        cls(), make_config(cls, steps=5), {"small": {"hidden": 4}, "big": {}}, [0, 1], run=run
    )
    assert list(res) == ["small", "big"] and all(len(v) == 2 for v in res.values())
    logged = [(m["arm"], m["seed"]) for m in run.read_metrics()]
    assert logged == [("small", 0), ("big", 0), ("small", 1), ("big", 1)]
