import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from invariance.core import NamedOptimizers, RunDir, fit, load_checkpoint, save_checkpoint
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
    assert all(m["seconds"] > 0 for v in res.values() for m in v)


# --------------------------------------------------------------------------- manual optimisation
def two_part_model(seed=0):
    torch.manual_seed(seed)
    m = nn.ModuleDict({"body": nn.Linear(4, 8), "head": nn.Linear(8, 1)})
    opts = NamedOptimizers(
        body=torch.optim.Adam(m["body"].parameters(), lr=1e-2),
        head=torch.optim.SGD(m["head"].parameters(), lr=1e-2, momentum=0.9),
    )
    return m, opts


def alternating(model, batch, opts, step):
    """Even steps move the body, odd steps the head (each with its own optimiser)."""
    x, y = batch
    loss = ((model["head"](torch.relu(model["body"](x))) - y) ** 2).mean()
    name = "body" if step % 2 == 0 else "head"
    opts.zero_grad()
    loss.backward()
    opts[name].step()
    return {"loss": loss.detach(), "phase": torch.tensor(float(step % 2))}


def test_manual_step_alternates_optimisers_and_learns():
    m, opts = two_part_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = fit(
        m,
        opts,
        regression(),
        None,
        steps=1,
        batch_size=16,
        progress=False,
        train_step_fn=alternating,
        log_every=1,
    )
    # one step: only the body moved
    assert not torch.equal(before["body.weight"], m["body"].weight)
    assert torch.equal(before["head.weight"], m["head"].weight)
    m, opts = two_part_model()
    res = fit(
        m,
        opts,
        regression(),
        None,
        steps=80,
        batch_size=16,
        progress=False,
        train_step_fn=alternating,
        log_every=10,
    )
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert {"loss", "phase"} <= set(res.history[-1])


def test_manual_step_resume_is_bit_identical(tmp_path):
    import shutil

    data = regression()
    m1, o1 = two_part_model()
    fit(m1, o1, data, None, steps=30, batch_size=16, progress=False, train_step_fn=alternating)
    run = RunDir(tmp_path / "r")
    m2, o2 = two_part_model()
    fit(
        m2,
        o2,
        data,
        None,
        steps=13,
        batch_size=16,
        run=run,
        progress=False,
        train_step_fn=alternating,
    )
    shutil.copytree(tmp_path / "r", tmp_path / "r_copy")
    torch.manual_seed(999)
    m3, o3 = two_part_model(seed=5)
    fit(
        m3,
        o3,
        data,
        None,
        steps=30,
        batch_size=16,
        run=run,
        resume=True,
        progress=False,
        train_step_fn=alternating,
    )
    for a, b in zip(m1.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b)

    # negative control: a resume that drops the head optimiser's momentum ends elsewhere
    class BodyOnly(NamedOptimizers):
        def load_state_dict(self, state):
            self["body"].load_state_dict(state["body"])

    m4, o4 = two_part_model(seed=5)
    o4 = BodyOnly(body=o4["body"], head=o4["head"])
    fit(
        m4,
        o4,
        data,
        None,
        steps=30,
        batch_size=16,
        run=RunDir(tmp_path / "r_copy"),
        resume=True,
        progress=False,
        train_step_fn=alternating,
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m4.state_dict().values())
    )


def test_named_optimizers_errors():
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="at least one"):
        NamedOptimizers()
    with pytest.raises(TypeError, match="must be a torch.optim.Optimizer"):
        NamedOptimizers(a=lin)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) is in both"):
        NamedOptimizers(
            a=torch.optim.SGD(lin.parameters(), lr=1), b=torch.optim.SGD([lin.weight], lr=1)
        )
    opts = NamedOptimizers(a=torch.optim.SGD(lin.parameters(), lr=1))
    with pytest.raises(KeyError, match="no optimiser 'b'"):
        opts["b"]
    with pytest.raises(ValueError, match="checkpoint has optimisers"):
        opts.load_state_dict({"b": {}})
    with pytest.raises(ValueError, match="needs a train_step_fn"):
        fit(lin, opts, regression(), mse, steps=1, batch_size=4, progress=False)
    m, o = two_part_model()
    with pytest.raises(ValueError, match="grad_clip"):
        fit(
            m,
            o,
            regression(),
            None,
            steps=1,
            batch_size=4,
            progress=False,
            train_step_fn=alternating,
            grad_clip=1.0,
        )
    with pytest.raises(TypeError, match="with a 'loss'"):
        fit(
            m,
            o,
            regression(),
            None,
            steps=1,
            batch_size=4,
            progress=False,
            train_step_fn=lambda *a: {"x": torch.tensor(1.0)},
        )


def test_fit_recipe_uses_train_step_when_overridden():
    from invariance.core import Recipe, TrainConfig, fit_recipe

    calls = []

    class Alt(Recipe):
        def make_data(self, cfg, split):
            return regression()

        def build(self, cfg):
            return two_part_model()[0]

        def optimizer(self, cfg, model):
            return NamedOptimizers(
                body=torch.optim.Adam(model["body"].parameters(), lr=1e-2),
                head=torch.optim.Adam(model["head"].parameters(), lr=1e-2),
            )

        def step(self, model, batch):
            x, y = batch
            return {"loss": ((model["head"](torch.relu(model["body"](x))) - y) ** 2).mean()}

        def train_step(self, model, batch, opts, step):
            calls.append(step)
            return alternating(model, batch, opts, step)

    cfg = TrainConfig(steps=5, batch_size=16)
    fit_recipe(Alt(), cfg, progress=False)
    assert calls == [0, 1, 2, 3, 4]
