"""Procedural data: delay task ground truth, noisy translation noises, BLEU."""

import pytest
import torch

from invariance.sequence.data.synthetic import (
    BLANK,
    PAD,
    corpus_bleu,
    corrupt,
    make_delay_task,
    make_noisy_translation,
)


def test_sequence_delay_task_ground_truth():
    d = make_delay_task(3, length=20, delay=5, seed=0)
    assert torch.equal(d["y"][:, 5:], d["x"][:, :15]) and (d["y"][:, :5] == 0).all()
    assert torch.equal(make_delay_task(3, length=20, delay=5, seed=0)["x"], d["x"])
    with pytest.raises(ValueError, match="delay"):
        make_delay_task(2, length=10, delay=10)


def test_sequence_noisy_translation():
    clean = make_noisy_translation(50, noise="none", seed=0)
    assert torch.equal(clean["tgt"], clean["noisy"])
    # the clean target is a fixed transduction of the source: dictionary + swapped pairs
    again = make_noisy_translation(50, noise="insert", rate=1.0, seed=0)
    assert torch.equal(again["tgt"], clean["tgt"]) and torch.equal(again["src"], clean["src"])
    assert (again["noisy_len"] == again["tgt_len"] + 1).all()
    dele = make_noisy_translation(50, noise="delete", rate=1.0, seed=0)
    assert (dele["noisy_len"] == dele["tgt_len"] - 1).all()
    shuf = make_noisy_translation(50, noise="shuffle", rate=0.5, seed=0)
    for a, b in zip(shuf["noisy"], shuf["tgt"]):
        assert sorted(a[a != PAD].tolist()) == sorted(b[b != PAD].tolist())  # same multiset
    g = torch.Generator().manual_seed(0)
    assert corrupt([5, 6, 7], "blank", 1.0, vocab=3, g=g) == [BLANK] * 3
    with pytest.raises(ValueError, match="noise"):
        corrupt([5], "swap", 0.1, vocab=3, g=g)


def test_sequence_bleu():
    refs = [[5, 6, 7, 8, 9], [7, 8, 9, 10, 11, 12]]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu([[5, 6]], [[7, 8, 9, 10]]) == 0.0
    assert 0 < corpus_bleu([[5, 6, 7, 8, 0]], [[5, 6, 7, 8, 9]]) < 100
