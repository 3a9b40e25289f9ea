"""CIT: span corruption, the CIT penalty's properties, the FiD reader's passage-permutation
equivariance (negative control: one concatenated sequence), the synthetic versioned KB, bad
inputs, and the learning test (closed-book memorisation vs open-book accuracy).

Golden values: CIT has no public code (searched GitHub and the paper page), so there is nothing
official to run; the tests pin the properties the paper states instead."""

import pytest
import torch

from invariance.core.groups import Permutation
from invariance.core.testing import (
    assert_equivariant,
    assert_not_invariant,
    assert_rejects_bad_inputs,
)
from invariance.sequence.cit import (
    CorpusInvariantTuning,
    FiDReader,
    cit_penalty,
    exact_match,
    span_corrupt,
)
from invariance.sequence.text.facts import make_kb, passage, qa_examples
from invariance.sequence.text.models import seq2seq_tokenizer, tiny_t5


def _reader(vocab=60, seed=0):
    return FiDReader(tiny_t5(vocab, d_model=32, layers=1, heads=2, seed=seed))


def _uncorrupt(inp, tgt, sentinels, eos):
    """Put the spans of ``tgt`` back into ``inp``."""
    spans, cur = {}, None
    for t in tgt[:-1]:
        if t in sentinels:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    out = []
    for t in inp[:-1]:
        out += spans[t] if t in sentinels else [t]
    return out


@pytest.mark.parametrize("n", [1, 2, 5, 9, 20])
def test_span_corrupt_reconstructs(n):
    sent = list(range(100, 110))
    for seed in range(5):
        ids = list(range(10, 10 + n))
        inp, tgt = span_corrupt(ids, sent, 1, noise_density=0.3, seed=seed)
        assert inp[-1] == 1 and tgt[-1] == 1 and tgt[0] == 100
        assert _uncorrupt(inp, tgt, set(sent), 1) == ids
        n_noise = len([t for t in tgt[:-1] if t not in sent])
        assert n_noise >= 1 and (n == 1 or n_noise < n)


def test_cit_penalty_properties():
    init = torch.tensor([2.0, 3.0, 1.5])
    cur = init.clone().requires_grad_(True)
    p = cit_penalty(cur, init)
    assert float(p) == 0.0  # zero at initialisation
    p.backward()
    assert cur.grad.abs().max() == 0  # no gradient while the constraint is inactive
    cur2 = torch.tensor([1.0, 3.5, 1.0], requires_grad=True)  # likelihood rose on 2 passages
    p2 = cit_penalty(cur2, init)
    assert float(p2) == pytest.approx((1.0 + 0.5) / 3)
    p2.backward()
    assert cur2.grad.tolist() == pytest.approx([-1 / 3, 0.0, -1 / 3])
    assert float(cit_penalty(torch.tensor([0.5, 3.0]), form="threshold", tau=1.0)) == 0.25
    assert float(cit_penalty(torch.rand(7) * 5, torch.rand(7) * 5)) >= 0


def test_fid_passage_permutation_equivariant_concat_not():
    reader = _reader().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 60, (2, 3, 6), generator=g)
    K, L = 3, 6

    def fused(x):
        return reader.encode(x, torch.ones_like(x))[0].reshape(x.shape[0], K, L, -1)

    def concat(x):
        flat = x.reshape(x.shape[0], 1, K * L)
        return reader.encode(flat, torch.ones_like(flat))[0][:, :L]

    assert_equivariant(fused, (ids,), Permutation(1), "nodes", "nodes", dtype=None, tol=1e-5)
    assert_not_invariant(concat, (ids,), Permutation(1), "nodes", dtype=None)


def test_kb_versions_and_examples():
    kb = make_kb(10, change_frac=0.5, n_new=4, seed=1)
    assert len(kb.v1) == len(kb.v2) == 40 and len(kb.new_domain) == 16
    for f1, f2, c in zip(kb.v1, kb.v2, kb.changed):
        assert (f1.entity, f1.relation) == (f2.entity, f2.relation)
        assert (f1.value != f2.value) == c
    assert 5 <= sum(kb.changed) <= 35
    ex = qa_examples(kb.v1, 3, seed=0, templates="one")
    for (q, ps, a), f in zip(ex, kb.v1):
        assert f.entity in q and passage(f) in ps and a == f.value and len(ps) == 3
    cb = qa_examples(kb.v1, 3, seed=0, gold=False, templates="one")
    for (_, ps, _), f in zip(cb, kb.v1):
        assert passage(f) not in ps  # closed-book probe: no gold passage
    new = qa_examples(kb.new_domain, 2, seed=0, new_domain=True, templates="new")
    train_q = {q for q, _, _ in qa_examples(kb.new_domain, 2, seed=0)}
    assert not {q for q, _, _ in new} & train_q  # unseen question templates
    tok = seq2seq_tokenizer(kb.words)
    assert tok.unk_token_id not in tok(ex[0][0] + " " + ex[0][1][0])["input_ids"]


def test_cit_objective_and_bad_inputs():
    reader = _reader()
    obj = CorpusInvariantTuning(reader, lam=1.0, n_passages=4)
    g = torch.Generator().manual_seed(0)
    msp_in = torch.randint(3, 60, (4, 7), generator=g)
    msp_lab = torch.randint(3, 60, (4, 3), generator=g)
    obj.cache_initial(msp_in, msp_lab)
    assert torch.isfinite(obj.initial_msp).all() and obj.initial_msp.min() > 0
    ids = torch.randint(3, 60, (2, 2, 5), generator=g)
    out = obj(
        ids,
        torch.ones_like(ids),
        torch.randint(3, 60, (2, 2), generator=g),
        passage_ids=torch.tensor([0, 1, 2, 3]),
        msp_inputs=msp_in,
        msp_labels=msp_lab,
    )
    assert float(out["cit"]) == pytest.approx(0.0, abs=1e-6)  # theta = theta_0
    plain = CorpusInvariantTuning(reader, lam=0.0, n_passages=4)  # negative control: lam = 0
    lab = torch.randint(3, 60, (2, 2), generator=g)
    o0 = plain(
        ids,
        torch.ones_like(ids),
        lab,
        passage_ids=torch.tensor([0, 1, 2, 3]),
        msp_inputs=msp_in,
        msp_labels=msp_lab,
    )
    assert torch.equal(o0["loss"], reader(ids, torch.ones_like(ids), lab))
    assert_rejects_bad_inputs(
        cit_penalty,
        {"current": torch.rand(3) + 1, "initial": torch.rand(3) + 1},
        name="cit_penalty",
    )
    assert_rejects_bad_inputs(
        reader.encode,
        {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
        name="FiDReader.encode",
        skip=("attention_mask",),
    )
    with pytest.raises(ValueError, match="lam"):
        CorpusInvariantTuning(reader, lam=-1.0)
    with pytest.raises(ValueError, match="form"):
        CorpusInvariantTuning(reader, form="ascent")
    with pytest.raises(TypeError, match="reader"):
        CorpusInvariantTuning(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ids"):
        span_corrupt([], [5], 1)
    with pytest.raises(ValueError, match="pred"):
        exact_match([], [])
    with pytest.raises(ValueError, match="n_entities"):
        make_kb(0)


def test_cit_keeps_passage_likelihood_and_lam0_is_plain():
    """Learning test (tiny preset, seconds on an idle machine): plain tuning raises the reader's
    likelihood of its training passages (memorisation, measured by salient-span MSP); CIT keeps it
    at its pre-tuning value; lam = 0 (the negative control) is plain tuning exactly."""
    from invariance.core import fit_recipe, make_config
    from invariance.sequence.recipes.cit import (
        CITRecipe,
        build_cit_data,
        passage_likelihood_rise,
    )

    recipe = CITRecipe()
    rise = {}
    for lam in (0.0, 5.0):
        cfg = make_config(recipe, lam=lam, steps=60, pretrain_steps=30)
        model, _ = fit_recipe(recipe, cfg, progress=False)
        rise[lam] = passage_likelihood_rise(model, build_cit_data(cfg))
    assert rise[0.0] > 0.2  # plain tuning memorises its corpus
    assert rise[5.0] < 0.25 * rise[0.0]  # CIT keeps the passage likelihood from rising
