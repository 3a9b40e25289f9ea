"""Synthetic motion-IMU-text data: clips of the procedural activities with a simulated IMU at
every joint (20 Hz) and descriptions from templates and synonyms, split into training phrasings
and held-out phrasings (zero-shot on descriptions never seen in training)."""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.sequence._checks import check_float, check_int
from invariance.sequence.motion.imu import synthesize_imu
from invariance.sequence.motion.skeleton import ACTIVITIES, activity_motion

__all__ = ["DESCRIPTIONS", "descriptions", "make_motion_dataset"]

#: per activity: training phrasings first, then the held-out phrasings (the last two)
DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "walk": ("a person walks forward", "someone is walking", "a man strolls along",
             "a person takes steps at a normal pace", "a woman is out for a walk",
             "somebody ambles ahead on foot"),
    "run": ("a person runs", "someone is jogging quickly", "a man sprints forward",
            "a person is running fast", "an athlete dashes ahead",
            "somebody races along at speed"),
    "jump": ("a person jumps up and down", "someone hops in place", "a man is jumping",
             "a person leaps repeatedly", "a kid bounces on the spot",
             "somebody springs into the air again and again"),
    "squat": ("a person does squats", "someone bends the knees and stands back up",
              "a man squats down slowly", "a person lowers the hips and rises",
              "an athlete performs deep knee bends", "somebody crouches down and gets up"),
    "wave": ("a person waves a hand", "someone waves hello", "a man raises an arm and waves",
             "a person greets by waving", "a woman waves goodbye",
             "somebody lifts a hand and moves it side to side"),
    "punch": ("a person punches the air", "someone is boxing", "a man throws punches",
              "a person jabs with both fists", "a fighter strikes forward with the fists",
              "somebody hits out with alternating arms"),
    "stand": ("a person stands still", "someone is standing", "a man stays in place",
              "a person stands without moving", "a woman waits motionless",
              "somebody remains upright and idle"),
    "cycle": ("a person rides a bicycle", "someone is cycling", "a man pedals a bike",
              "a person pedals with both legs", "a cyclist pedals steadily",
              "somebody turns the pedals of an exercise bike"),
}  # fmt: skip
N_HELD_OUT = 2


def descriptions(activity: str, split: str = "train") -> list[str]:
    """The training (``"train"``) or held-out (``"test"``) phrasings of ``activity``."""
    if activity not in DESCRIPTIONS:
        raise ValueError(f"activity must be one of {tuple(DESCRIPTIONS)}, got {activity!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = DESCRIPTIONS[activity]
    return list(d[:-N_HELD_OUT] if split == "train" else d[-N_HELD_OUT:])


_CACHE: dict[tuple, dict[str, Tensor]] = {}


def make_motion_dataset(
    n_per_class: int,
    *,
    activities: tuple[str, ...] = ACTIVITIES,
    seconds: float = 3.2,
    rate: int = 20,
    gyro: bool = False,
    seed: int = 0,
    jitter: float = 1.0,
) -> dict[str, Tensor]:
    """``n_per_class`` clips of each activity: ``x`` ``(N, T, 22, 3|6)`` float32 IMU (acc in m/s^2,
    gyro in rad/s if ``gyro``) in each joint's sensor frame at ``rate`` Hz, ``y`` ``(N,)`` class
    ids (index into ``activities``). Simulated at 100 Hz, block-averaged to ``rate``. Memoised."""
    check_int("n_per_class", n_per_class, 1)
    check_float("seconds", seconds, 0.5, 30.0)
    check_int("rate", rate, 1, 100)
    check_int("seed", seed, 0)
    if 100 % rate:
        raise ValueError(f"rate must divide 100, got {rate}")
    if not activities or any(a not in ACTIVITIES for a in activities):
        raise ValueError(f"activities must be a non-empty subset of {ACTIVITIES}")
    key = (n_per_class, tuple(activities), seconds, rate, gyro, seed, jitter)
    if key in _CACHE:
        return _CACHE[key]
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, act in enumerate(activities):
        for _ in range(n_per_class):
            pos, rot = activity_motion(act, seconds + 0.04, 100.0, generator=g, jitter=jitter)
            imu = synthesize_imu(pos, rot, 100.0, decimate=100 // rate)
            n = int(round(seconds * rate))
            xs.append(imu[:n, :, : 6 if gyro else 3].float())
            ys.append(c)
    out = {"x": torch.stack(xs), "y": torch.tensor(ys)}
    _CACHE[key] = out
    return out
