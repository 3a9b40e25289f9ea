"""Bad-input harness over the public entry points of invariance-sequence: every derived bad call
(NaN/inf, empty, wrong rank or dtype, negative / non-finite / mistyped hyper-parameters, unknown
names) raises ValueError or TypeError naming the argument (invariance.core.testing.fuzz)."""

from pathlib import Path

import pytest
import torch

from invariance.core.testing import bad_input_summary, fuzz_bad_inputs
from invariance.sequence import (
    ConvNAT,
    EISLLoss,
    S4DKernel,
    S4Kernel,
    S4Layer,
    S4Model,
    corpus_bleu,
    eisl_loss,
    hippo,
    make_delay_task,
    make_noisy_translation,
)
from invariance.sequence.data.synthetic import corrupt


def _cases():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, generator=g)
    target = torch.randint(0, 8, (2, 5), generator=g)
    u = torch.randn(2, 10, 4, generator=g)
    dt = {"dt_min": 1e-3, "dt_max": 1e-1}
    s4d = S4Layer(4, d_state=8, seed=0)
    s4 = S4Layer(4, d_state=8, kernel="s4", l_max=10, seed=0)
    model = S4Model(2, 3, d_model=4, n_layers=1, d_state=8, seed=0)
    loss_kw = {
        "ngram": "1,2",
        "tau": 1.0,
        "clamp": -20.0,
        "ce_factor": 0.5,
        "ngram_factor": 1.0,
        "label_smoothing": 0.0,
        "ignore_index": -100,
        "pad_mode": "exclude",
    }
    # (name, fn, valid kwargs, accepted mutations: valid input)
    return [
        (
            "S4DKernel()",
            S4DKernel,
            {"d_model": 4, "d_state": 8, "init": "lin", "disc": "zoh", "channels": 1, "seed": 0}
            | dt,
            (),
        ),
        ("S4DKernel.forward", S4DKernel(4, d_state=8, seed=0), {"L": 16}, ()),
        (
            "S4Kernel()",
            S4Kernel,
            {
                "d_model": 2,
                "d_state": 8,
                "l_max": 16,
                "measure": "legs",
                "b_clip": 2.0,
                "channels": 1,
                "seed": 0,
                "step_mode": "linear",
            }
            | dt,
            (),
        ),
        ("S4Kernel.forward", S4Kernel(2, d_state=8, l_max=16, seed=0), {"L": 16}, ()),
        (
            "S4Layer()",
            S4Layer,
            {"d_model": 4, "d_state": 8, "kernel": "s4d", "dropout": 0.1, "seed": 0},
            (),
        ),
        ("S4Layer.forward (s4d)", s4d, {"u": u}, ()),
        ("S4Layer.forward (s4)", s4, {"u": u}, ()),
        ("S4Layer.forward_recurrent", s4d.forward_recurrent, {"u": u}, ()),
        (
            "S4Model()",
            S4Model,
            {
                "d_input": 2,
                "d_output": 3,
                "d_model": 4,
                "n_layers": 1,
                "d_state": 8,
                "dropout": 0.1,
                "seed": 0,
                "pool": "mean",
            },
            (),
        ),
        ("S4Model.forward", model, {"x": torch.randn(2, 10, 2, generator=g)}, ()),
        (
            "eisl_loss",
            eisl_loss,
            {"logits": logits, "target": target} | loss_kw,
            # a more negative clamp or another padding id are valid settings
            ("clamp:negative", "ignore_index:negative"),
        ),
        ("EISLLoss()", EISLLoss, loss_kw, ("clamp:negative", "ignore_index:negative")),
        ("EISLLoss.forward", EISLLoss(), {"logits": logits, "target": target}, ()),
        (
            "ConvNAT.forward",
            ConvNAT(10, d_model=8, max_len=8),
            {"src": torch.randint(0, 10, (2, 6), generator=g)},
            (),
        ),
        ("ConvNAT()", ConvNAT, {"vocab_size": 10, "d_model": 8, "max_len": 8, "hidden": 8}, ()),
        (
            "make_delay_task",
            make_delay_task,
            {"n": 4, "length": 16, "delay": 4, "seed": 0, "channels": 1},
            (),
        ),
        (
            "make_noisy_translation",
            make_noisy_translation,
            {
                "n": 4,
                "vocab": 8,
                "min_len": 3,
                "max_len": 6,
                "noise": "insert",
                "rate": 0.5,
                "seed": 0,
                "dict_seed": 1,
            },
            (),
        ),
        (
            "corrupt",
            lambda **kw: corrupt([5, 6, 7], g=torch.Generator().manual_seed(0), **kw),
            {"noise": "insert", "rate": 0.5, "vocab": 8, "window": 3},
            (),
        ),
        ("corpus_bleu", corpus_bleu, {"hyps": [[1, 2, 3]], "refs": [[1, 2, 3]], "max_n": 2}, ()),
        ("hippo.transition", hippo.transition, {"measure": "legs", "N": 8}, ()),
        (
            "hippo.nplr",
            hippo.nplr,
            {"measure": "legs", "N": 8, "rank": 1, "b_clip": 2.0},
            (),
        ),
        ("hippo.diag_init", hippo.diag_init, {"kind": "lin", "N": 8, "H": 2}, ()),
        ("hippo.init_log_dt", hippo.init_log_dt, {"H": 4} | dt, ()),
        ("hippo.timescale_range", hippo.timescale_range, {"max_len": 100, "min_len": 10}, ()),
        (
            "hippo.legs_reconstruct",
            hippo.legs_reconstruct,
            {"state": torch.randn(3, 8, generator=g), "r": torch.linspace(0, 2, 5)},
            # any leading batch shape of the state is valid input
            ("state:extra_dim", "state:fewer_dims"),
        ),
    ]


_CASES = _cases()


@pytest.mark.parametrize("case", _CASES, ids=lambda c: c[0])
def test_sequence_rejects_bad_inputs(case):
    name, fn, kwargs, accept = case
    rep = fuzz_bad_inputs(fn, kwargs, name=name, accept=accept)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_bad_input_summary():
    """These cases plus the ``ENTRY_POINTS`` the methods' own test files declare."""
    here = Path(__file__)
    extra = {n: (fn, kw, {"accept": acc}) for n, fn, kw, acc in _cases()}
    bad_input_summary(here.parent, extra=extra, exclude=(here.name,), markdown=True)


def test_sequence_specific_bad_inputs():
    """Issue 14's cases: raw logits with ``log_probs=True``, T = 0, b_clip <= 0, integer input."""
    logits = torch.randn(2, 5, 8)
    y = torch.randint(0, 8, (2, 5))
    with pytest.raises(ValueError, match="log_probs"):
        eisl_loss(logits, y, log_probs=True)
    ok = eisl_loss(torch.log_softmax(logits, -1), y, log_probs=True)["loss"]
    assert torch.allclose(ok, eisl_loss(logits, y)["loss"].new_tensor(float(ok)))
    with pytest.raises(ValueError, match="logits"):
        eisl_loss(torch.randn(2, 0, 8), torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        eisl_loss(logits, torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="b_clip"):
        S4Kernel(2, d_state=8, l_max=8, b_clip=-1.0)
    with pytest.raises(TypeError, match="u"):
        S4Layer(4, d_state=8)(torch.ones(1, 5, 4, dtype=torch.int64))
