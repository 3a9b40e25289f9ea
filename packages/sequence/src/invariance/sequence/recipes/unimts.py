"""Recipe of UniMTS: config, the registered ``unimts`` recipe (contrastive IMU -> text
pre-training on synthetic motion with placement masking and per-joint rotation augmentation),
zero-shot evaluation on held-out descriptions under random sensor orientation and placement, the
reproduce (3 seeds; ``--cfg.eval basic_motions``: the real-data check of
:mod:`invariance.sequence.recipes._unimts_basic_motions`) and the ST-GCN bench. The mechanism is
in :mod:`invariance.sequence.unimts`.

Sizes (CPU): quick = ST-GCN "8,16,16" with a first temporal stride of 4, 120 steps, 16 training
clips per activity, a CNN baseline of width 32; full = ST-GCN "8,16,16" (stride 2), 450 steps, 32
training clips per activity. Both test on one fixed held-out set of 32 clips per activity. The
official ST-GCN-18 (checked by the parity test) is far beyond a 2-core CPU budget for 3 seeds x 3
arms."""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    evaluate,
    fit_recipe,
    make_config,
    register,
)
from invariance.core.bench import compare, machine, register_bench
from invariance.core.groups import Group
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.sequence.motion.data import descriptions, make_motion_dataset
from invariance.sequence.motion.imu import mask_joints, random_rotation, rotate_joints
from invariance.sequence.motion.skeleton import ACTIVITIES, N_JOINTS
from invariance.sequence.motion.stgcn import STGCN, load_official_state_dict
from invariance.sequence.recipes._unimts_basic_motions import reproduce_basic_motions
from invariance.sequence.unimts import (
    JointCNN,
    MiniLMEmbedder,
    UniMTS,
    _class_features,
    unimts_loss,
)

__all__ = ["UniMTSConfig", "UniMTSRecipe", "PerJointSO3", "PLACEMENTS", "zero_shot_metrics"]

#: joints a device is worn at in the test (wrists, chest, pelvis, ankles, head)
PLACEMENTS = (21, 17, 11, 0, 7, 3, 13)
TEST_SEED = 4321
#: seed of the held-out test clips (the same for every training seed)
TEST_DATA_SEED = 10_000


class PerJointSO3(Group):
    """An independent rotation per sample and joint acting on ``(B, T, 22, 3|6)`` IMU tensors
    (representation ``"imu"``: :func:`~invariance.sequence.motion.imu.rotate_joints`)."""

    name, reps = "SO(3)^22", ("imu",)

    def sample(self, generator, inputs=()):
        b = inputs[0].shape[0] if inputs else 1
        return random_rotation(b, N_JOINTS, generator=generator)

    def _act(self, rep, g, x):
        return rotate_joints(x, g.to(x.dtype))

    def describe(self, g):
        return f"per-joint rotations {tuple(g.shape)}"


@dataclass
class UniMTSConfig(TrainConfig):
    """Synthetic motion -> IMU -> text contrastive pre-training (defaults = tiny preset).

    Args:
        model: ``"stgcn"`` (UniMTS) or ``"cnn"`` (1-D CNN on the ``joint`` signals; baseline).
        rot_aug: per-joint random rotation augmentation (default: True).
        mask: keep ``k ~ U{1..max_joints}`` random joints per sample (ST-GCN only) (default: True).
        max_joints: upper bound of ``k`` (default: 5).
        joint: the joint the CNN baseline reads (default: 21, a wrist).
        cnn_width: the CNN baseline's width (its features are ``2 cnn_width``) (default: 64).
        n_per_class / n_test_per_class: clips per activity (default: 16 / 8); the test clips
            are the same for every seed (a fixed held-out set, :data:`TEST_DATA_SEED`).
        channels / strides: ST-GCN widths and strides, comma lists (default: "16,32,32" /
            "2,1,1"; ST-GCN-18 is "64,64,64,64,128,128,128,256,256,512" / "1,1,1,1,2,1,1,2,1,1").
        temperature: the loss's extra temperature (default: 0.1).
        eval: what ``reproduce`` measures: ``"synthetic"`` (zero-shot on held-out descriptions
            under random orientation and placement) or ``"basic_motions"`` (real recordings:
            zero-shot and few-shot fine-tuning; needs the ``aeon`` extra) (default: synthetic).
        shots / ft_epochs / ft_lr / ft_crop: the few-shot fine-tuning of ``basic_motions``:
            recordings per class (comma list), epochs (halved by ``--quick``), Adam learning
            rate and random training-window length in frames (0: whole recordings) (defaults:
            "1,2,5" / 200 / 1e-3 / 64).
    """

    steps: int = 40
    batch_size: int = 32
    lr: float = 3e-3
    model: str = "stgcn"
    rot_aug: bool = True
    mask: bool = True
    max_joints: int = 5
    joint: int = 21
    cnn_width: int = 64
    n_per_class: int = 16
    n_test_per_class: int = 8
    channels: str = "16,32,32"
    strides: str = "2,1,1"
    temperature: float = 0.1
    eval: str = "synthetic"
    shots: str = "1,2,5"
    ft_epochs: int = 200
    ft_lr: float = 1e-3
    ft_crop: int = 64

    ranges: ClassVar[dict] = {
        "max_joints": (1, N_JOINTS),
        "joint": (0, N_JOINTS - 1),
        "cnn_width": (1, None),
        "n_per_class": (1, None),
        "n_test_per_class": (1, None),
        "temperature": (1e-4, 10.0),
        "ft_epochs": (1, None),
        "ft_lr": (1e-6, 1.0),
        "ft_crop": (0, 200),
    }
    choices: ClassVar[dict] = {"model": ("stgcn", "cnn"), "eval": ("synthetic", "basic_motions")}

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        try:
            ch, st = _ints(self.channels), _ints(self.strides)
        except ValueError:
            raise ConfigError(f"{name}.channels/strides must be comma lists of ints") from None
        if not ch or len(ch) != len(st) or min(ch) < 1 or min(st) < 1:
            raise ConfigError(f"{name}.channels and strides must be equal-length positive lists")
        try:
            shots = _ints(self.shots)
        except ValueError:
            raise ConfigError(f"{name}.shots must be a comma list of ints") from None
        if not shots or min(shots) < 1 or max(shots) > 10:
            raise ConfigError(f"{name}.shots must list ints in [1, 10] (10 per class exist)")
        if self.seed == TEST_DATA_SEED:
            raise ConfigError(f"{name}.seed {TEST_DATA_SEED} is the held-out test clips' seed")


def _ints(s: str) -> list[int]:
    return [int(v) for v in str(s).split(",") if v.strip()]


class _Clips(Dataset):
    def __init__(self, d: dict[str, Tensor]) -> None:
        self.d = d

    def __len__(self) -> int:
        return self.d["x"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.d["x"][i], "y": self.d["y"][i]}


def _class_texts(split: str) -> list[list[str]]:
    return [descriptions(a, split) for a in ACTIVITIES]


def zero_shot_metrics(model: nn.Module, x: Tensor, y: Tensor, *, seed: int = TEST_SEED) -> dict:
    """Zero-shot accuracy with the held-out descriptions: ``acc_canonical`` (sensor frames as
    simulated; ST-GCN: every joint), ``acc_rotated`` (random rotation per joint), ``acc_rot_place``
    (random rotation and one device at a random joint of :data:`PLACEMENTS`; the CNN reads its
    own joint) and ``acc_train_text`` (rotated + placed, training phrasings)."""
    return _zero_shot(model, x, y, seed)[0]


def _zero_shot(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> tuple[dict, Tensor]:
    """:func:`zero_shot_metrics` and the IMU features of ``x`` (each input is encoded once)."""
    emb = MiniLMEmbedder()
    test_t = torch.stack([emb(t) for t in _class_texts("test")])
    train_t = torch.stack([emb(t) for t in _class_texts("train")])
    g = torch.Generator().manual_seed(seed)
    xr = rotate_joints(x, random_rotation(x.shape[0], N_JOINTS, generator=g))
    place = torch.tensor(PLACEMENTS)[torch.randint(len(PLACEMENTS), (x.shape[0],), generator=g)]
    keep = nn.functional.one_hot(place, N_JOINTS).to(x.dtype)
    if isinstance(model, JointCNN):
        xp = xr  # the CNN's device sits at its own joint
    else:
        xp = xr * keep[:, None, :, None]
    out = {}
    with torch.no_grad():
        test_c, train_c = _class_features(model, test_t), _class_features(model, train_t)
        f = {"x": model.encode_imu(x), "xr": model.encode_imu(xr)}
        f["xp"] = f["xr"] if xp is xr else model.encode_imu(xp)
        for name, inp, c in (
            ("acc_canonical", "x", test_c),
            ("acc_rotated", "xr", test_c),
            ("acc_rot_place", "xp", test_c),
            ("acc_train_text", "xp", train_c),
        ):
            pred = (f[inp] @ c.T).argmax(1)
            out[name] = float((pred == y).float().mean())
    return out, f["x"]


def rotation_consistency(
    model: nn.Module, x: Tensor, *, seed: int = TEST_SEED, features: Tensor | None = None
) -> float:
    """Mean cosine between IMU features of ``x`` and of ``x`` with random per-joint rotations
    (``features``: the normalised features of ``x`` when already computed)."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        a = model.encode_imu(x) if features is None else features
        b = model.encode_imu(rotate_joints(x, random_rotation(x.shape[0], N_JOINTS, generator=g)))
    return float((a * b).sum(-1).mean())


@register(
    "unimts",
    domain="sequence",
    paper="UniMTS: Unified Pre-training for Motion Time Series",
    authors="Zhang, Xu, Li, Ma, Zheng, Qi",
    year=2024,
    arxiv="2410.19818",
    code_url="https://github.com/xiyuanzh/UniMTS",
    symmetry="sensor orientation per joint (learned by rotation augmentation; the augmentation "
    "preserves per-joint norms exactly)",
    baseline="same model without rotation augmentation; 1-D CNN on one joint",
    tags=("imu", "motion", "contrastive", "zero-shot", "graph"),
)
class UniMTSRecipe(Recipe):
    """IMU -> text contrastive pre-training on procedural motion; zero-shot activity recognition."""

    Config = UniMTSConfig
    presets = {
        "tiny": {},
        "full": {
            "steps": 450,
            "n_per_class": 32,
            "n_test_per_class": 32,
            "channels": "8,16,16",
            "strides": "2,1,1",
        },
    }

    def make_data(self, cfg: UniMTSConfig, split: str) -> Dataset:
        if split == "train":
            return _Clips(make_motion_dataset(cfg.n_per_class, seed=cfg.seed))
        # one held-out test set for every seed: seeds vary the training clips, the
        # initialisation and the augmentation draws, and the arms are compared on the same clips
        return _Clips(make_motion_dataset(cfg.n_test_per_class, seed=TEST_DATA_SEED))

    def build(self, cfg: UniMTSConfig) -> nn.Module:
        if cfg.model == "cnn":
            m: nn.Module = JointCNN(3, joint=cfg.joint, width=cfg.cnn_width, seed=cfg.seed)
        else:
            m = UniMTS(3, channels=tuple(_ints(cfg.channels)), strides=tuple(_ints(cfg.strides)),
                       seed=cfg.seed)  # fmt: skip
        m.cfg = {"rot_aug": cfg.rot_aug, "mask": cfg.mask and cfg.model == "stgcn",
                 "max_joints": cfg.max_joints, "temperature": cfg.temperature}  # fmt: skip
        return m

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        c = getattr(model, "cfg", {"rot_aug": True, "mask": True, "max_joints": 5,
                                   "temperature": 0.1})  # fmt: skip
        x, y = batch["x"], batch["y"]
        texts = [(t := descriptions(ACTIVITIES[int(k)]))[int(torch.randint(len(t), ()))] for k in y]
        emb = MiniLMEmbedder()(texts)
        if c["mask"]:
            x, _ = mask_joints(x, max_joints=c["max_joints"])
        if c["rot_aug"]:
            x = rotate_joints(x)
        loss = unimts_loss(model(x, emb), c["temperature"])
        return {"loss": loss}

    def metrics(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        d = dataset.d  # type: ignore[attr-defined]
        out, feats = _zero_shot(model, d["x"], d["y"], TEST_SEED)
        out["rot_cos"] = rotation_consistency(model, d["x"], features=feats)
        return out

    def check(self, model: nn.Module, cfg: UniMTSConfig) -> list[CheckResult]:
        """The rotation augmentation acts on each joint's sensor frame: per-joint, per-time-step
        acceleration norms are invariant under it (float64); the raw signals are not (negative
        control)."""
        x = make_motion_dataset(2, seed=cfg.seed + 20_000)["x"][::5].double()
        grp = PerJointSO3()

        def norms(v: Tensor) -> Tensor:
            return v.norm(dim=-1)

        return [
            check_invariant("per_joint_norms", norms, x, grp, "imu", dtype=None),
            check_not_invariant("raw_signals", lambda v: v, x, grp, "imu", dtype=None),
        ]

    def reproduce(self, cfg: UniMTSConfig, run: Any, *, quick: bool) -> ReproduceResult:
        return _reproduce(self, cfg, run, quick=quick)


#: quick: a small ST-GCN whose first block strides 4 in time (64 -> 16 frames), 120 steps, a
#: CNN baseline of width 32
QUICK = dict(
    steps=120, n_per_class=16, n_test_per_class=32, channels="8,16,16", strides="4,1,1",
    cnn_width=32,
)  # fmt: skip
FULL = dict(UniMTSRecipe.presets["full"])


def _reproduce(
    recipe: UniMTSRecipe, cfg: UniMTSConfig, run: Any, *, quick: bool
) -> ReproduceResult:
    """UniMTS (ST-GCN + masking + per-joint rotation augmentation) vs the same without rotation
    augmentation vs a 1-D CNN on one wrist (rotation-augmented) vs chance; zero-shot accuracy on
    held-out descriptions with random sensor orientation and placement; 3 seeds."""
    t0 = time.time()
    seeds = [cfg.seed + k for k in range(3)]
    base = QUICK if quick else FULL
    if cfg.eval == "basic_motions":
        return reproduce_basic_motions(recipe, cfg, run, quick=quick, base=base)
    arms = {
        "unimts": {},
        "no_rot_aug": {"rot_aug": False},
        "cnn_wrist": {"model": "cnn"},
    }
    per: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    for s in seeds:
        for arm, over in arms.items():
            c = make_config(recipe, "tiny", **{**base, **over}, seed=s)
            model, _ = fit_recipe(recipe, c, progress=False)
            m = evaluate(recipe, model, c, "test")
            per[arm].append(m)
            if run is not None:
                run.log_metrics({"arm": arm, "seed": s, **m})
    vals = {a: {k: [r[k] for r in rows] for k in rows[0]} for a, rows in per.items()}
    chance = 1.0 / len(ACTIVITIES)
    other = {f"{a} ({k})": v[k] for a, v in vals.items() for k in v
             if not (a in ("unimts", "no_rot_aug") and k == "acc_rot_place")}  # fmt: skip
    other["chance"] = [chance] * len(seeds)
    inv = 1.0 - sum(vals["unimts"]["rot_cos"]) / len(seeds)
    table = {a: {k: sum(v) / len(v) for k, v in mv.items()} for a, mv in vals.items()}
    return ReproduceResult(
        task=f"zero-shot activity recognition ({len(ACTIVITIES)} procedural activities), "
        "held-out descriptions, random sensor orientation and placement",
        metric="zero-shot accuracy",
        method="UniMTS (ST-GCN, masking + per-joint rotation augmentation)",
        baseline="same without rotation augmentation",
        method_values=vals["unimts"]["acc_rot_place"],
        baseline_values=vals["no_rot_aug"]["acc_rot_place"],
        higher_is_better=True,
        invariance_error=inv,
        seconds=time.time() - t0,
        seeds=seeds,
        arms=other,
        details={
            "mean_table": table,
            "setup": base,
            "invariance_error": "1 - mean cos(f(x), f(R x)), random per-joint R, UniMTS arm",
        },
    )


@register_bench("sequence", "stgcn")
def bench_stgcn(*, device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Forward time of our ST-GCN-18 vs the official ``ST_GCN_18`` (when its ``model.py`` is on
    the path as ``UNIMTS_MODEL_PY``) on the same weights; without it only ours is timed."""
    rows = []
    x = torch.randn(4 if quick else 16, 60, N_JOINTS, 3, generator=torch.Generator().manual_seed(0))
    ours = STGCN(3).eval()
    fns: dict[str, Any] = {"ours": lambda: ours(x)}
    path = os.environ.get("UNIMTS_MODEL_PY", "")
    if path and os.path.exists(path):
        spec = importlib.util.spec_from_file_location("unimts_official_model", path)
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        off = mod.ST_GCN_18(in_channels=3).eval()
        load_official_state_dict(ours, off.state_dict())
        xo = x.permute(0, 3, 1, 2).unsqueeze(-1).contiguous()
        fns = {"official": lambda: off(xo), "ours": lambda: ours(x)}
    with torch.no_grad():
        rows = compare(fns, repeats=3 if quick else 5, min_run_time=0.1, label=f"B={x.shape[0]}")
    return {"rows": rows, "machine": machine(device)}
