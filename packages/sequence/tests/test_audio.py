"""Signal side of the speech units: UED worked example, dedup, augmentation sanity, features and
their gain invariance, k-means, word accuracy from units (collapse guard), the eSpeak NG corpus,
and the fast pitch shift against golden values of torchaudio's stock ``pitch_shift``."""

import math
import time

import pytest
import torch
import torchaudio

from invariance.core.groups import Scaling
from invariance.core.testing import assert_invariant, assert_not_invariant
from invariance.sequence.audio import (
    ESPEAK_RATE,
    KMeans,
    add_noise,
    dedup,
    log_mel,
    make_spoken_corpus,
    mfcc,
    pitch_shift,
    reverb,
    synthesize,
    synthetic_rir,
    time_stretch,
    ued_pairs,
    unit_edit_distance,
    unit_perplexity,
    word_accuracy,
)

SR = 16000


def _tone(seconds=0.3, freqs=(220.0, 440.0, 660.0, 1100.0), am=5.0, dtype=torch.float32):
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    x = sum(torch.sin(2 * math.pi * f * t) / (i + 1) for i, f in enumerate(freqs))
    return (x * (1 + 0.5 * torch.sin(2 * math.pi * am * t))).to(dtype)


def _peak_hz(y):
    n = y.shape[-1]
    spec = torch.fft.rfft(y.double() * torch.hann_window(n, dtype=torch.float64)).abs()
    return float(spec.argmax()) * SR / n


@pytest.fixture(scope="module")
def word():
    return torchaudio.functional.resample(synthesize("seven", "en-us", 160, 50), ESPEAK_RATE, SR)


# ----------------------------------------------------------------------------- UED, dedup


def test_ued_worked_example():
    """Spec example: dedup [1,2,3,4] vs [1,2,5,3,4]: one insertion over 4 units."""
    clean = [1, 1, 2, 2, 2, 3, 4, 4]
    aug = [1, 2, 2, 5, 3, 4]
    assert dedup(clean) == [1, 2, 3, 4]
    assert dedup(torch.tensor(aug)) == [1, 2, 5, 3, 4]
    assert unit_edit_distance([clean], [aug]) == pytest.approx(0.25)
    assert unit_edit_distance([clean], [clean]) == 0.0
    # normalised by the clean length: not symmetric
    assert unit_edit_distance([aug], [clean]) == pytest.approx(1 / 5)
    # repeats never count (dedup before Levenshtein)
    assert ued_pairs([[7, 7, 8]], [[7, 8, 8, 8]]) == [0.0]


# ----------------------------------------------------------------------------- augmentations


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_length_and_pitch(rate):
    x = _tone(0.5)
    y = time_stretch(x, rate)
    assert abs(y.shape[0] - x.shape[0] / rate) <= 128  # +-1 hop
    assert _peak_hz(y) == pytest.approx(220.0, abs=4.0)  # pitch kept


@pytest.mark.parametrize("steps", [2.0, -3.0])
def test_pitch_shift_keeps_length_moves_pitch(steps):
    x = _tone(0.5)
    y = pitch_shift(x, SR, steps)
    assert y.shape == x.shape
    assert _peak_hz(y) == pytest.approx(220.0 * 2 ** (steps / 12), rel=0.02)


# Golden values of the field's reference: torchaudio 2.11.0's stock
# torchaudio.functional.pitch_shift(x, 16000, n_steps) (torch 2.14.1, CPU), run in a scratch
# script (/tmp/seqa-ref/golden_pitch.py) on the signal of _tone(0.3) (float32): mean over frames
# of log(MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=40, power=2).clamp_min(1e-10))
# of the output, first 20 mel bins (below ~2 kHz, where the signal is), the output RMS and the
# peak frequency of the Hann-windowed spectrum (3.33 Hz bins).
STOCK_PITCH = {
    2: {
        "peak_hz": 246.66666666666666,
        "rms": 0.64433,
        "mean_log_mel_20": [
            -2.9588,
            -1.308,
            1.0637,
            7.4301,
            8.4043,
            6.7537,
            2.1853,
            6.2837,
            6.8597,
            3.4362,
            5.5897,
            6.6759,
            2.6592,
            -2.8182,
            -2.6903,
            4.7621,
            4.8442,
            -2.4716,
            -6.775,
            -8.7882,
        ],
    },
    -3: {
        "peak_hz": 183.33333333333334,
        "rms": 0.97014,
        "mean_log_mel_20": [
            0.8788,
            4.3675,
            8.3903,
            9.1709,
            7.1945,
            6.8111,
            7.8419,
            6.1717,
            6.8002,
            6.7305,
            2.8341,
            -2.3718,
            5.7511,
            6.5029,
            2.6322,
            -5.4596,
            -8.0224,
            -9.6403,
            -9.6469,
            -9.8801,
        ],
    },
}


@pytest.mark.parametrize("steps", [2, -3])
def test_fast_pitch_shift_matches_stock_golden(steps):
    x = _tone(0.3)
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=400, hop_length=160, n_mels=40, power=2.0)
    ref = STOCK_PITCH[steps]
    gold = torch.tensor(ref["mean_log_mel_20"])

    def lm(y):
        return mel(y).clamp_min(1e-10).log().mean(1)[:20]

    y = pitch_shift(x, SR, float(steps))
    err = float((lm(y) - gold).abs().max())
    assert err < 1.0, err
    assert float((lm(x) - gold).abs().max()) > 5.0  # the unshifted input is far (control)
    assert _peak_hz(y) == pytest.approx(ref["peak_hz"], abs=4.0)
    assert float(y.pow(2).mean().sqrt()) == pytest.approx(ref["rms"], rel=0.02)


@pytest.mark.parametrize("snr", [5.0, 10.0, 20.0])
@pytest.mark.parametrize("color", ["white", "pink"])
def test_add_noise_snr_within_0p1_db(word, snr, color):
    y = add_noise(word, snr, color=color, generator=torch.Generator().manual_seed(0))
    n = (y - word).double()
    measured = 10 * math.log10(float(word.double().pow(2).sum()) / float(n.pow(2).sum()))
    assert abs(measured - snr) < 0.1


def test_reverb_unit_norm_rir_keeps_energy(word):
    g = torch.Generator().manual_seed(0)
    for rt60 in (0.2, 0.5):
        h = synthetic_rir(SR, rt60, direct=0.7, generator=g)
        assert float(h.norm()) == pytest.approx(1.0, abs=1e-5)
        y = reverb(word, h)
        assert y.shape == word.shape
        db = 10 * math.log10(float(y.pow(2).sum()) / float(word.pow(2).sum()))
        assert abs(db) < 3.0, db
        assert float((y - word).norm() / word.norm()) > 0.1  # it does change the signal


# ----------------------------------------------------------------------------- features


def test_features_shapes_and_cmvn(word):
    f = mfcc(word)
    assert f.shape == (word.shape[0] // 160 + 1, 39)
    assert torch.allclose(f.mean(0), torch.zeros(39), atol=1e-4)
    assert log_mel(word, n_mels=24).shape[1] == 24


def test_features_gain_invariant_with_negative_control(word):
    x = word.double()
    grp = Scaling(0.1, 10.0)
    assert_invariant(lambda a: mfcc(a), x, grp, "scale", dtype=None, tol=1e-6)
    assert_invariant(lambda a: log_mel(a), x, grp, "scale", dtype=None, tol=1e-6)
    assert_not_invariant(lambda a: log_mel(a, cmvn=False), x, grp, "scale", dtype=None)


def test_kmeans_recovers_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    lab = torch.randint(3, (300,), generator=g)
    x = centers[lab] + 0.3 * torch.randn(300, 2, generator=g)
    km = KMeans(3, seed=1).fit(x)
    pred = km.predict(x)
    # a perfect clustering up to relabelling
    for c in range(3):
        assert len(set(pred[lab == c].tolist())) == 1
    assert torch.equal(KMeans(3, seed=1).fit(x).centers, km.centers)


def test_word_accuracy_and_collapse_guard():
    """Distinct unit strings per word classify perfectly; collapsed (constant) units have UED 0
    under any augmentation but classify at chance: the content metric exposes the collapse."""
    g = torch.Generator().manual_seed(0)
    protos = [torch.randint(8, (6,), generator=g).tolist() for _ in range(4)]
    tr = [p for p in protos for _ in range(5)]
    lab = torch.tensor([i for i in range(4) for _ in range(5)])
    assert word_accuracy(tr, lab, tr, lab, 8) == 1.0
    with torch.no_grad():  # evaluation contexts (the CLI's eval) disable grad
        assert word_accuracy(tr, lab, tr, lab, 8) == 1.0
    const = [[3] * 6 for _ in tr]
    assert unit_edit_distance(const, const) == 0.0
    assert word_accuracy(const, lab, const, lab, 8) <= 0.25 + 1e-6
    assert unit_perplexity(const, 8) == pytest.approx(1.0)
    assert unit_perplexity([[0, 1, 2, 3, 4, 5, 6, 7]], 8) == pytest.approx(8.0)


# ----------------------------------------------------------------------------- corpus


def test_espeak_synthesis_rate_pitch_voice():
    slow = synthesize("seven", "en-us", 120, 50)
    fast = synthesize("seven", "en-us", 200, 50)
    assert slow.dtype == torch.float32 and 0.05 < float(slow.abs().max()) <= 1.0
    assert slow.shape[0] > 1.4 * fast.shape[0]  # rate in words per minute
    hi = synthesize("seven", "en-us", 160, 90)
    lo = synthesize("seven", "en-us", 160, 10)
    n = min(hi.shape[0], lo.shape[0])
    assert float((hi[:n] - lo[:n]).abs().max()) > 0.05  # pitch changes the waveform
    with pytest.raises(ValueError, match="voice"):
        synthesize("seven", "no-such-voice")


def test_spoken_corpus_ground_truth_and_cache(tmp_path):
    kw = dict(words=["one", "two"], voices=["en-us", "en+f3"], rates=[140], pitches=[40, 60])
    c = make_spoken_corpus(**kw, cache_dir=tmp_path)
    assert len(c["audio"]) == 8 and c["sample_rate"] == 16000
    assert c["word"].tolist() == [0, 1] * 4
    assert c["voice"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert c["pitch"].tolist() == [40, 40, 60, 60] * 2
    assert all(0.15 < a.shape[0] / 16000 < 1.5 for a in c["audio"])
    assert len(list(tmp_path.glob("corpus-*.npz"))) == 1
    t0 = time.perf_counter()
    again = make_spoken_corpus(**kw, cache_dir=tmp_path)  # from the cache
    assert time.perf_counter() - t0 < 2.0
    assert all(torch.equal(a, b) for a, b in zip(c["audio"], again["audio"]))
