"""EISL: reduces to CE at full length, parity with the official functions, edit robustness,
target-permutation invariance of the unigram loss (CE as negative control), gradcheck, padding,
and a tiny learning test under insertion noise."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from invariance.core.groups import Permutation
from invariance.core.testing import assert_invariant, assert_not_invariant
from invariance.sequence import EISLLoss, eisl_loss
from invariance.sequence.nn.eisl_loss import resolve_ngrams

HERE = Path(__file__).parent


def test_eisl_full_length_equals_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    target = torch.randint(0, 11, (3, 7), generator=g)
    ce = F.cross_entropy(logits.transpose(1, 2), target)
    for spec in (0, 7, "0"):
        out = eisl_loss(logits, target, ngram=spec, generator=g)
        assert torch.allclose(out["loss"], ce, atol=1e-12), spec


@pytest.mark.parametrize("case", range(4))
def test_eisl_golden_official(case):
    """Golden values recorded by running the official batch_log_EISL_cnn (provenance in the
    JSON)."""
    d = json.loads((HERE / "eisl_golden.json").read_text())
    c = d["cases"][case]
    logits = torch.tensor(c["logits"]).requires_grad_(True)
    out = eisl_loss(
        logits,
        torch.tensor(c["target"]),
        ngram=c["ngram"],
        generator=torch.Generator().manual_seed(c["gumbel_seed"]),
    )
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(c["loss"], abs=1e-5)
    assert torch.allclose(logits.grad, torch.tensor(c["grad_logits"]), atol=1e-5)


@pytest.mark.parametrize("case", range(2))
def test_eisl_golden_official_padded(case):
    """Parity of pad_mode='zero' with the official MT criterion (bleuloss.py), padded targets."""
    d = json.loads((HERE / "eisl_golden_pad.json").read_text())
    c = d["cases"][case]
    logits = torch.tensor(c["logits"]).requires_grad_(True)
    out = eisl_loss(
        logits,
        torch.tensor(c["target"]),
        ngram=c["ngram"],
        weights=c["weights"],
        ignore_index=c["pad"],
        pad_mode="zero",
        generator=torch.Generator().manual_seed(c["gumbel_seed"]),
    )
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(c["loss"], abs=1e-5)
    assert torch.allclose(logits.grad, torch.tensor(c["grad_logits"]), atol=1e-5)


def _per_row(logits, **kw):
    """Per-sample losses (B,), so that the checked outputs vary across the batch (a single scalar
    would be a vacuous check)."""
    return lambda t: torch.stack(
        [
            eisl_loss(logits[i : i + 1], t[i : i + 1], gumbel=False, ignore_index=None, **kw)[
                "loss"
            ]
            for i in range(t.shape[0])
        ]
    )


def _uni(logits):
    return _per_row(logits, ngram=1)


def test_eisl_unigram_target_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 13, generator=g, dtype=torch.float64)
    target = torch.randint(0, 13, (2, 9), generator=g)
    assert_invariant(_uni(logits), target, Permutation(dim=1), "nodes", dtype=None, trials=5)


def test_eisl_ce_not_target_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 13, generator=g, dtype=torch.float64)
    target = torch.randint(0, 13, (2, 9), generator=g)
    ce = lambda t: F.cross_entropy(logits.transpose(1, 2), t, reduction="none").mean(1)  # noqa: E731
    assert_not_invariant(ce, target, Permutation(dim=1), "nodes", dtype=None)
    # bigram EISL is order-aware too (it is edit-robust, not a bag of words)
    assert_not_invariant(_per_row(logits, ngram=2), target, Permutation(dim=1), "nodes", dtype=None)


def test_eisl_edit_robust_vs_ce():
    """Outputs confident on s; the target gets one inserted token (everything after it shifts).
    CE jumps from 0.002 to 8.0, EISL{2,3,4} (deterministic) from 0.055 to 0.77."""
    V = 7
    s = torch.tensor([[1, 3, 5, 2, 6, 4, 0, 2, 5, 1]])
    logits = 8.0 * F.one_hot(s, V).double()
    shifted = torch.cat([torch.tensor([[3]]), s[:, :-1]], 1)
    ce = lambda t: F.cross_entropy(logits.transpose(1, 2), t).item()  # noqa: E731
    ei = lambda t: eisl_loss(logits, t, ngram="2,3,4", gumbel=False)["loss"].item()  # noqa: E731
    assert ce(s) < 0.01 and ei(s) < 0.1
    assert ce(shifted) > 7.0
    assert ei(shifted) < 0.1 * ce(shifted)
    assert ce(shifted) - ce(s) > 5 * (ei(shifted) - ei(s))  # measured: 8.0 vs 0.72


def test_eisl_gradcheck():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 4), generator=g)
    target[1, 3] = -100
    f = lambda x: eisl_loss(x, target, ngram="1,2", gumbel=False, ce_factor=0.0)["loss"]  # noqa: E731
    assert torch.autograd.gradcheck(f, (logits,))


def test_eisl_padding():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    target = torch.randint(0, 9, (2, 6), generator=g)
    padded = target.clone()
    padded[1, 4:] = -100
    # exclude mode: a padded row equals the same target cut to its length, matched against the
    # whole output (the output is not masked by the target's padding)
    full = eisl_loss(logits[1:], padded[1:], ngram="1,2", gumbel=False)["loss"]
    cut = eisl_loss(logits[1:], target[1:, :4], ngram="1,2", gumbel=False)["loss"]
    assert torch.allclose(full, cut, atol=1e-12)
    # an explicit output_mask leaves the masked outputs out: their logits no longer matter
    om = padded != -100
    l2 = logits.clone()
    l2[1, 4:] += 5.0
    a = eisl_loss(logits, padded, gumbel=False, output_mask=om)["loss"]
    b = eisl_loss(l2, padded, gumbel=False, output_mask=om)["loss"]
    assert torch.allclose(a, b, atol=1e-12)
    cut_both = eisl_loss(logits[1:, :4], target[1:, :4], ngram="1,2", gumbel=False)["loss"]
    masked = eisl_loss(logits[1:], padded[1:], ngram="1,2", gumbel=False, output_mask=om[1:])
    assert torch.allclose(masked["loss"], cut_both, atol=1e-12)


def test_eisl_exclude_padding_keeps_edit_invariance():
    """Issue 14: a label that lost its first k tokens, right-padded to the output length (as
    transformers pads), must cost EISL about what the unpadded shorter label costs, not almost as
    much as CE. Before the fix the default mode masked the *output* positions where the target is
    padded, so the tail n-grams could no longer align with their true positions."""
    V, k = 9, 2
    s = torch.tensor([[1, 3, 5, 2, 6, 4, 7, 8, 5, 1]])
    logits = 8.0 * F.one_hot(s, V).double()
    lost = torch.cat([s[:, k:], torch.full((1, k), -100)], 1)  # first k tokens missing
    kw = dict(ngram="2,3", gumbel=False)
    padded = eisl_loss(logits, lost, **kw)["loss"]
    shorter = eisl_loss(logits, s[:, k:], **kw)["loss"]
    assert torch.allclose(padded, shorter, atol=1e-12)
    ce = F.cross_entropy(logits.transpose(1, 2), lost, ignore_index=-100)
    assert padded < 0.05 * ce, (float(padded), float(ce))


def test_eisl_module_and_ngram_resolution():
    assert resolve_ngrams("1,2,-1,0", 5) == ([1, 2, 4, 5], [0.25] * 4)
    assert resolve_ngrams([9], 5) == ([5], [1.0])  # empty -> full length
    assert resolve_ngrams("1,2", 5, weights=[0.8, 0.2]) == ([1, 2], [0.8, 0.2])
    crit = EISLLoss(ngram="1,2", ce_factor=0.5)
    logits = torch.randn(2, 5, 8, requires_grad=True)
    y = torch.randint(0, 8, (2, 5))
    loss = crit(logits, y)
    loss.backward()
    assert loss.dim() == 0 and set(crit.last) >= {"eisl", "ce", "loss"}
    assert torch.allclose(crit.last["loss"], crit.last["eisl"] + 0.5 * crit.last["ce"])


def test_eisl_bad_input():
    logits = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="logits"):
        eisl_loss(logits[0], torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="target must have shape"):
        eisl_loss(logits, torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer ids"):
        eisl_loss(logits, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eisl_loss(logits, torch.full((2, 5), 8))
    with pytest.raises(ValueError, match="pad_mode"):
        eisl_loss(logits, torch.zeros(2, 5, dtype=torch.long), pad_mode="drop")
    with pytest.raises(ValueError, match="comma-separated"):
        eisl_loss(logits, torch.zeros(2, 5, dtype=torch.long), ngram="a,b")
    with pytest.raises(ValueError, match="weights"):
        eisl_loss(logits, torch.zeros(2, 5, dtype=torch.long), ngram="1,2", weights=[1.0])


def test_eisl_learns_under_insertion_noise():
    """Learning test: a non-autoregressive conv translator trained on targets where 80% of the
    pairs carry one inserted token (shifting the rest) reaches a far higher clean exact match with
    EISL(1,2,3)+0.5 CE than with CE alone (3 seeds offline: see README)."""
    from invariance.core import evaluate, fit_recipe, make_config
    from invariance.sequence.eisl import EISLRecipe

    torch.set_num_threads(1)
    rec = EISLRecipe()
    res = {}
    for loss in ("eisl", "ce"):
        cfg = make_config(rec, "tiny", loss=loss, seed=0)
        model, _ = fit_recipe(rec, cfg, progress=False)
        res[loss] = evaluate(rec, model, cfg)
    assert res["eisl"]["exact_match"] > res["ce"]["exact_match"] + 0.25, res
    assert res["eisl"]["bleu"] > res["ce"]["bleu"] + 10, res


def test_eisl_two_stage_schedule():
    """The official schedule: ``pretrain_steps`` CE steps, then the n-gram loss at
    ``finetune_lr``; ``two_stage_arms`` continues every arm from the same stage-1 weights."""
    from invariance.core import fit_recipe, make_config
    from invariance.sequence.eisl import OFFICIAL_STAGE2, EISLRecipe, two_stage_arms

    torch.set_num_threads(1)
    rec = EISLRecipe()
    cfg = make_config(
        rec,
        "tiny",
        steps=6,
        pretrain_steps=4,
        lr=1e-2,
        finetune_lr=1e-3,
        n_train=64,
        n_test=16,
        batch_size=16,
        **OFFICIAL_STAGE2,
    )
    model = rec.build(cfg)
    batch = rec.collate([rec.make_data(cfg, "train")[i] for i in range(8)])
    model.train()
    keys = [set(rec.step(model, batch)) for _ in range(6)]
    assert all("eisl" not in k and "ce" in k for k in keys[:4])  # stage 1: CE only
    assert all("eisl_1" in k and "eisl_2" in k and "ce" not in k for k in keys[4:])  # no CE mix
    _, res = fit_recipe(rec, cfg, progress=False)
    lrs = [h["lr"] for h in res.history]
    assert lrs[-1] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="pretrain_steps"):
        rec.build(make_config(rec, "tiny", steps=3, pretrain_steps=5))
    out = two_stage_arms(rec, cfg, {"ce": {"loss": "ce"}, "eisl": OFFICIAL_STAGE2})
    assert set(out) == {"stage1", "ce", "eisl"}
    assert all(0.0 <= m["exact_match"] <= 1.0 for m in out.values())
