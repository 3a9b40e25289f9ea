"""Bad-input harness over the public entry points of the speech units (audio side and method):
every derived bad call raises ValueError/TypeError naming the argument; plus the issue's cases
(empty or silent audio, wrong sample rate)."""

import pytest
import torch

from invariance.core.testing import fuzz_bad_inputs, fuzz_table
from invariance.sequence.audio import (
    KMeans,
    add_noise,
    bag_of_units,
    dedup,
    log_mel,
    make_spoken_corpus,
    mfcc,
    pitch_shift,
    reverb,
    synthesize,
    synthetic_rir,
    time_stretch,
    unit_edit_distance,
    unit_perplexity,
    word_accuracy,
)
from invariance.sequence.speech_units import (
    MFCCUnits,
    SpeechUnits,
    UnitEncoder,
    ctc_unit_loss,
    pad_features,
)


def _wave(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return (torch.sin(2 * torch.pi * 300 * t) + 0.1 * torch.randn(n, generator=g)).float()


def speech_cases():
    g = torch.Generator().manual_seed(0)
    x = _wave()
    rir = synthetic_rir(16000, 0.2, generator=torch.Generator().manual_seed(0))
    km = KMeans(4, seed=0).fit(torch.randn(50, 3, generator=g))
    su = SpeechUnits(4, hidden=8, layers=2).fit_codebook([_wave(4000, 1), _wave(4000, 2)])
    base = MFCCUnits(4).fit([_wave(4000, 1), _wave(4000, 2)])
    enc = UnitEncoder(5, 4, hidden=8, layers=2)
    seqs = [[0, 1, 2], [2, 3, 1, 0]]
    labels = torch.tensor([0, 1])
    return [
        (
            "time_stretch",
            time_stretch,
            {"x": x, "rate": 1.2, "n_fft": 512, "hop_length": 128},
            ("x:extra_dim",),
        ),
        (
            "pitch_shift",
            pitch_shift,
            {"x": x, "sample_rate": 16000, "n_steps": 2.0},
            ("n_steps:negative", "x:extra_dim"),
        ),
        (
            "synthetic_rir",
            synthetic_rir,
            {"sample_rate": 16000, "rt60": 0.2, "direct": 1.0},
            ("direct:zero",),
        ),
        ("reverb", reverb, {"x": x, "rir": rir}, ("x:extra_dim",)),
        (
            "add_noise",
            add_noise,
            {"x": x, "snr_db": 10.0, "color": "white"},
            ("snr_db:negative", "x:extra_dim"),
        ),
        ("log_mel", log_mel, {"x": x, "sample_rate": 16000, "n_mels": 40}, ()),
        ("mfcc", mfcc, {"x": x, "sample_rate": 16000, "n_mfcc": 13, "n_mels": 40}, ()),
        ("KMeans()", KMeans, {"k": 4, "iters": 5, "seed": 0}, ()),
        ("KMeans.fit", KMeans(4).fit, {"x": torch.randn(30, 3, generator=g)}, ()),
        ("KMeans.predict", km.predict, {"x": torch.randn(10, 3, generator=g)}, ()),
        ("dedup", dedup, {"units": torch.tensor([1, 1, 2, 3, 3])}, ()),
        ("bag_of_units", bag_of_units, {"seqs": seqs, "k": 4}, ()),
        ("unit_perplexity", unit_perplexity, {"seqs": seqs, "k": 4}, ()),
        (
            "word_accuracy",
            word_accuracy,
            {
                "train_units": seqs,
                "train_labels": labels,
                "test_units": seqs,
                "test_labels": labels,
                "k": 4,
                "steps": 5,
            },
            (),
        ),
        (
            "synthesize",
            synthesize,
            {"text": "one", "voice": "en-us", "rate": 160, "pitch": 50},
            ("text:unknown_value",),  # any text is speakable
        ),
        (
            "UnitEncoder()",
            UnitEncoder,
            {"n_in": 5, "n_units": 4, "hidden": 8, "layers": 2, "kernel": 3},
            (),
        ),
        ("UnitEncoder.forward", enc, {"x": torch.randn(2, 7, 5, generator=g)}, ()),
        (
            "ctc_unit_loss",
            ctc_unit_loss,
            {
                "logits": torch.randn(2, 7, 5, generator=g),
                "input_lengths": torch.tensor([7, 5]),
                "targets": [[0, 1], [3]],
            },
            (),
        ),
        (
            "SpeechUnits()",
            SpeechUnits,
            {"k": 4, "n_mels": 40, "hidden": 8, "layers": 2, "seed": 0},
            (),
        ),
        ("SpeechUnits.features", su.features, {"x": x, "sample_rate": 16000}, ()),
        ("SpeechUnits.units", su.units, {"audio": x, "sample_rate": 16000}, ()),
        ("MFCCUnits.units", base.units, {"audio": x, "sample_rate": 16000}, ()),
    ]


#: the same cases for the package summary (collected by test_sequence_bad_inputs.py)
ENTRY_POINTS = {n: (fn, kw, {"accept": acc}) for n, fn, kw, acc in speech_cases()}


@pytest.mark.parametrize("case", speech_cases(), ids=lambda c: c[0])
def test_speech_rejects_bad_inputs(case):
    name, fn, kwargs, accept = case
    rep = fuzz_bad_inputs(fn, kwargs, name=name, accept=accept)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_speech_bad_input_summary():
    reports = [fuzz_bad_inputs(fn, kw, name=n, accept=a) for n, fn, kw, a in speech_cases()]
    print()
    print(fuzz_table(reports, markdown=True))
    assert all(r.ok for r in reports)


def test_speech_issue_cases():
    """Empty or silent audio and a wrong sample rate get clear errors naming the argument."""
    su = SpeechUnits(4, hidden=8, layers=2)
    with pytest.raises(ValueError, match="sample_rate"):
        su.features(_wave(), sample_rate=22050)
    with pytest.raises(ValueError, match="sample_rate"):
        mfcc(_wave(), 8000)
    with pytest.raises(ValueError, match="silent"):
        log_mel(torch.zeros(4000))
    with pytest.raises(ValueError, match="x"):
        log_mel(torch.zeros(0))
    with pytest.raises(ValueError, match="silent"):
        pitch_shift(torch.zeros(4000), 16000, 2.0)
    with pytest.raises(ValueError, match="audio"):
        su.units([])
    with pytest.raises(ValueError, match="text"):
        synthesize("   ")
    with pytest.raises(ValueError, match="words"):
        make_spoken_corpus(words=[])
    with pytest.raises(ValueError, match="targets"):
        ctc_unit_loss(torch.randn(1, 5, 4), torch.tensor([5]), [[]])
    with pytest.raises(ValueError, match="clean"):
        unit_edit_distance([], [])
    with pytest.raises(ValueError, match="augmented"):
        unit_edit_distance([[1, 2]], [[1], [2]])
    with pytest.raises(ValueError, match="clean"):
        unit_edit_distance([[]], [[1]])
    with pytest.raises(ValueError, match="feats"):
        pad_features([torch.randn(4, 3), torch.randn(6, 2)])
    with pytest.raises(ValueError, match="feats"):
        pad_features([torch.randn(4, 3), torch.full((6, 3), float("nan"))])
