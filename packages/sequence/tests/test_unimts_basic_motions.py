"""UniMTS real-data check: BasicMotions (aeon) prepared as the official ``load_custom_data`` does
(device channels on one joint, Fourier resampling to 20 Hz, 10 s), label texts from templates,
the few-shot selection, the fine-tuning loop (official schedule: Adam on every parameter, the
lowest-training-loss state kept) and a learning test; a clear error without the ``aeon`` extra."""

import builtins
import sys

import pytest
import torch

from invariance.core.testing import with_package
from invariance.sequence.motion import N_JOINTS
from invariance.sequence.motion.basic_motions import (
    BASIC_MOTIONS_CLASSES,
    BASIC_MOTIONS_WRIST,
    LABEL_TEMPLATES,
    basic_motions_texts,
    few_shot_indices,
    load_basic_motions_imu,
)
from invariance.sequence.unimts import FewShotClassifier, JointCNN, UniMTS, fine_tune


@with_package("aeon", "scipy")
def test_basic_motions_prepared_as_the_official_loader():
    """Shapes, one joint filled, balanced classes; the resampling equals the official call
    (``scipy.signal.resample(sequence, new_length)`` over time, UniMTS ``data.py``)."""
    from aeon.datasets import load_basic_motions
    from scipy.signal import resample

    d = load_basic_motions_imu("test")
    x, y = d["x"], d["y"]
    assert x.shape == (40, 200, N_JOINTS, 3) and x.dtype == torch.float32
    assert d["classes"] == BASIC_MOTIONS_CLASSES
    assert torch.bincount(y).tolist() == [10, 10, 10, 10]
    others = torch.ones(N_JOINTS, dtype=torch.bool)
    others[BASIC_MOTIONS_WRIST] = False
    assert x[:, :, others].abs().max() == 0 and x[:, :, BASIC_MOTIONS_WRIST].abs().max() > 1
    X, labels = load_basic_motions(split="test")
    ref = resample(X[3].T, 200)  # (100, 6) at 10 Hz -> (200, 6) at 20 Hz
    assert torch.allclose(x[3, :, BASIC_MOTIONS_WRIST], torch.tensor(ref[:, :3]).float(), atol=1e-5)
    assert BASIC_MOTIONS_CLASSES[int(y[3])] == str(labels[3])
    g = load_basic_motions_imu("train", gyro=True, joint=17)
    assert g["x"].shape == (40, 200, N_JOINTS, 6) and g["x"][:, :, 17, 3:].abs().max() > 0
    # the accelerometer reads linear acceleration: standing is near 0 m/s^2 (no gravity)
    stand = x[y == 0, :, BASIC_MOTIONS_WRIST].norm(dim=-1).mean()
    run = x[y == 2, :, BASIC_MOTIONS_WRIST].norm(dim=-1).mean()
    assert stand < 2.0 < 8.0 < run


def test_missing_aeon_names_the_extra(monkeypatch):
    from invariance.sequence.motion import basic_motions

    real_import = builtins.__import__

    def no_aeon(name, *a, **k):
        if name.startswith("aeon"):
            raise ImportError("No module named 'aeon'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_aeon)
    monkeypatch.setattr(basic_motions, "_CACHE", {})
    monkeypatch.delitem(sys.modules, "aeon.datasets", raising=False)
    with pytest.raises(ImportError, match=r"invariance-sequence\[aeon\]"):
        load_basic_motions_imu("test")


def test_label_texts_and_few_shot_selection():
    texts = basic_motions_texts()
    assert len(texts) == 4 and all(len(t) == len(LABEL_TEMPLATES) for t in texts)
    assert texts[3][1] == "a person is playing badminton"
    y = torch.tensor([0] * 10 + [1] * 10 + [2] * 3)
    idx = few_shot_indices(y, 5, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(y[idx]).tolist() == [5, 5, 3]  # all of a class that has fewer
    again = few_shot_indices(y, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again) and len(set(idx.tolist())) == len(idx)
    with pytest.raises(ValueError, match="classes"):
        basic_motions_texts(["swimming"])
    with pytest.raises(TypeError, match="y"):
        few_shot_indices(torch.zeros(3), 1)


def _toy(n=24, t=40, seed=0):
    """Two classes that differ in the wrist's oscillation frequency."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    tt = torch.arange(t).float() / 20
    f = torch.where(y == 0, 0.5, 3.0)[:, None]
    x = torch.zeros(n, t, N_JOINTS, 3)
    x[:, :, 21, 0] = 5 * torch.sin(2 * torch.pi * f * tt + torch.rand(n, 1, generator=g) * 6)
    x[:, :, 21] += 0.3 * torch.randn(n, t, 3, generator=g)
    return x, y


def test_fine_tune_learns_two_frequencies():
    torch.set_num_threads(1)
    x, y = _toy()
    xt, yt = _toy(seed=1)
    for enc in (JointCNN(3, width=8), UniMTS(3, channels=(8,), strides=(1,))):
        clf = FewShotClassifier(enc, 2, seed=0)
        fine_tune(clf, x, y, epochs=40, lr=1e-2, batch_size=8, seed=0, crop=32)
        assert not clf.training
        with torch.no_grad():
            acc = float((clf(xt).argmax(1) == yt).float().mean())
        assert acc > 0.9, (type(enc).__name__, acc)


def test_fine_tune_rejects_bad_inputs():
    clf = FewShotClassifier(JointCNN(3, width=4), 2)
    x, y = _toy(n=4)
    with pytest.raises(ValueError, match="crop"):
        fine_tune(clf, x, y, crop=41)
    with pytest.raises(ValueError, match="x and y"):
        fine_tune(clf, x, y[:3])
    with pytest.raises(TypeError, match="model"):
        fine_tune(JointCNN(3), x, y)
    with pytest.raises(TypeError, match="encoder"):
        FewShotClassifier(torch.nn.Linear(3, 3), 2)
    with pytest.raises(ValueError, match="split"):
        load_basic_motions_imu("val")
    with pytest.raises(ValueError, match="joint"):
        load_basic_motions_imu("test", joint=22)
