"""Real IMU recordings for UniMTS's real-data check: the UEA/UCR **BasicMotions** set that ships
inside ``aeon``'s wheel (optional extra ``aeon``; imported lazily).

BasicMotions: four students wearing a smartwatch performed four activities (standing, walking,
running, playing badminton); 40 training and 40 test recordings of 10 s at 10 Hz, six channels
(accelerometer x, y, z in m/s^2, gyroscope x, y, z in rad/s). The accelerometer reads linear
acceleration: standing gives about 0 m/s^2 (gravity is removed), unlike the simulated specific
force of pre-training (``|acc| = 9.81`` at rest).

:func:`load_basic_motions_imu` prepares them as the official ``load_custom_data`` (UniMTS
``data.py``) prepares a custom data set: the device's six channels are written onto one joint of
the 22-joint skeleton (every other joint zero), each recording is resampled to 20 Hz with
``scipy.signal.resample`` (Fourier method, the official call) and cut or wrap-padded to 10 s
(200 frames); the accelerometer alone is kept by default (the official ``--gyro 0``). The
smartwatch goes on joint 21, the right wrist, where the official loader puts wrist-worn devices
(WISDM, Wharf). Label texts come from templates over the class names
(:func:`basic_motions_texts`); zero-shot averages the text features over the templates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.sequence._checks import check_int, check_tensor
from invariance.sequence.motion.skeleton import N_JOINTS

__all__ = [
    "BASIC_MOTIONS_CLASSES",
    "BASIC_MOTIONS_WRIST",
    "LABEL_PHRASES",
    "LABEL_TEMPLATES",
    "load_basic_motions_imu",
    "basic_motions_texts",
    "few_shot_indices",
]

#: class order of the labels ``y`` returned by :func:`load_basic_motions_imu`
BASIC_MOTIONS_CLASSES = ("standing", "walking", "running", "badminton")
#: the joint the smartwatch is written onto (UniMTS joint numbering: the right wrist)
BASIC_MOTIONS_WRIST = 21
#: what each class's label text says
LABEL_PHRASES = {
    "standing": "standing",
    "walking": "walking",
    "running": "running",
    "badminton": "playing badminton",
}
#: label-text templates (zero-shot text features are averaged over them)
LABEL_TEMPLATES = ("{}", "a person is {}", "someone is {}")
_RATE_HZ = 10  # BasicMotions' sampling rate
_CACHE: dict[tuple, dict] = {}


def _aeon_loader():
    try:
        from aeon.datasets import load_basic_motions
    except ImportError as e:
        raise ImportError(
            "the BasicMotions check needs aeon (its wheel ships the data): "
            "pip install 'invariance-sequence[aeon]'"
        ) from e
    return load_basic_motions


def load_basic_motions_imu(
    split: str = "test",
    *,
    joint: int = BASIC_MOTIONS_WRIST,
    gyro: bool = False,
    rate: int = 20,
    frames: int = 200,
) -> dict:
    """BasicMotions as UniMTS input: ``x`` ``(N, frames, 22, 3|6)`` float32 with the watch's
    channels on ``joint`` (others zero), resampled from 10 Hz to ``rate`` Hz and cut or
    wrap-padded to ``frames``; ``y`` ``(N,)`` indices into :data:`BASIC_MOTIONS_CLASSES`;
    ``classes``. ``split``: ``"train"`` or ``"test"`` (40 recordings each). Memoised."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_int("joint", joint, 0, N_JOINTS - 1)
    check_int("rate", rate, 1, 1000)
    check_int("frames", frames, 1)
    if not isinstance(gyro, bool):
        raise TypeError(f"gyro must be a bool, got {type(gyro).__name__}")
    key = (split, joint, gyro, rate, frames)
    if key in _CACHE:
        return _CACHE[key]
    load = _aeon_loader()
    from scipy.signal import resample  # aeon depends on scipy

    X, labels = load(split=split)  # (N, 6, 100) float64, labels as strings
    X = torch.as_tensor(X, dtype=torch.float64).transpose(1, 2)  # (N, 100, 6)
    y = torch.tensor([BASIC_MOTIONS_CLASSES.index(str(s)) for s in labels])
    n_new = int(X.shape[1] / _RATE_HZ * rate)
    Xr = torch.as_tensor(resample(X.numpy(), n_new, axis=1))
    if Xr.shape[1] < frames:  # the official np.pad(..., "wrap")
        reps = -(-frames // Xr.shape[1])
        Xr = Xr.repeat(1, reps, 1)
    Xr = Xr[:, :frames]
    c = 6 if gyro else 3
    out = torch.zeros(X.shape[0], frames, N_JOINTS, c, dtype=torch.float32)
    out[:, :, joint] = Xr[..., :c].float()
    d = {"x": out, "y": y, "classes": BASIC_MOTIONS_CLASSES}
    _CACHE[key] = d
    return d


def basic_motions_texts(classes=BASIC_MOTIONS_CLASSES) -> list[list[str]]:
    """Per class, its label text in every template of :data:`LABEL_TEMPLATES`."""
    if isinstance(classes, str) or not classes or any(c not in LABEL_PHRASES for c in classes):
        raise ValueError(f"classes must be a non-empty list from {tuple(LABEL_PHRASES)}")
    return [[t.format(LABEL_PHRASES[c]) for t in LABEL_TEMPLATES] for c in classes]


def few_shot_indices(y: Tensor, k: int, *, generator: torch.Generator | None = None) -> Tensor:
    """``k`` random indices per class of the labels ``y`` (all of a class when it has fewer),
    class by class (the official ``load_custom_data`` few-shot selection)."""
    check_tensor("y", y, ndim=1, integer=True)
    check_int("k", k, 1)
    out = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        out.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.cat(out)
