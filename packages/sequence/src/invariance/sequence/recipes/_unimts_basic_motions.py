"""UniMTS real-data check on BasicMotions (``reproduce unimts --cfg.eval basic_motions``):
zero-shot recognition of the four recorded activities from label texts, and few-shot
fine-tuning (k recordings per class) of the pretrained encoder against the same encoder from
scratch and a 1-D CNN on the same data. Imported by :mod:`invariance.sequence.recipes.unimts`."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from invariance.core import ReproduceResult, fit_recipe, make_config
from invariance.sequence.motion.basic_motions import (
    BASIC_MOTIONS_CLASSES,
    BASIC_MOTIONS_WRIST,
    basic_motions_texts,
    few_shot_indices,
    load_basic_motions_imu,
)
from invariance.sequence.motion.imu import random_rotation, rotate_joints
from invariance.sequence.motion.skeleton import N_JOINTS
from invariance.sequence.unimts import (
    FewShotClassifier,
    JointCNN,
    MiniLMEmbedder,
    UniMTS,
    fine_tune,
    zero_shot_logits,
)

__all__ = ["reproduce_basic_motions", "ARM_NAMES"]

ARM_NAMES = {
    "unimts_ft": "UniMTS pretrained, fine-tuned",
    "stgcn_scratch": "same ST-GCN from scratch",
    "cnn_scratch": "1-D CNN on the wrist, from scratch",
}


def _acc(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def _ints(s: str) -> list[int]:
    return [int(v) for v in str(s).split(",") if v.strip()]


def reproduce_basic_motions(
    recipe: Any, cfg: Any, run: Any, *, quick: bool, base: dict
) -> ReproduceResult:
    """Per seed: pre-train UniMTS (and, for zero-shot comparison, the same without rotation
    augmentation and the 1-D CNN on the wrist) on procedural motion with the preset ``base``;
    zero-shot on the 40 BasicMotions test recordings; then for every ``k`` of ``cfg.shots`` draw
    k training recordings per class and fine-tune (a) the pretrained UniMTS encoder + a linear
    head, (b) the same ST-GCN from scratch, (c) a 1-D CNN on the wrist from scratch, with the same
    schedule; test accuracy on the 40 test recordings. Metric: mean few-shot accuracy over k."""
    t0 = time.time()
    train = load_basic_motions_imu("train")  # ImportError naming the extra when aeon is missing
    test = load_basic_motions_imu("test")
    emb = MiniLMEmbedder()
    class_emb = torch.stack([emb(t) for t in basic_motions_texts()])  # (4, templates, 384)
    shots = _ints(cfg.shots)
    epochs = max(1, cfg.ft_epochs // 2) if quick else cfg.ft_epochs
    seeds = [cfg.seed + k for k in range(3)]
    zs: dict[str, list[float]] = {"unimts": [], "no_rot_aug": [], "cnn_wrist": []}
    zr: dict[str, list[float]] = {"unimts": [], "no_rot_aug": [], "cnn_wrist": []}
    fs: dict[str, dict[int, list[float]]] = {a: {k: [] for k in shots} for a in ARM_NAMES}
    fr: dict[str, dict[int, list[float]]] = {a: {k: [] for k in shots} for a in ARM_NAMES}
    # the test recordings seen through a watch worn in another orientation (one random rotation
    # per recording, fixed across arms and seeds): what the rotation augmentation is for
    g_rot = torch.Generator().manual_seed(77)
    x_rot = rotate_joints(test["x"], random_rotation(len(test["y"]), N_JOINTS, generator=g_rot))
    rot_cos: list[float] = []
    for s in seeds:
        pre = {}
        for arm, over in (
            ("unimts", {}),
            ("no_rot_aug", {"rot_aug": False}),
            ("cnn_wrist", {"model": "cnn", "joint": BASIC_MOTIONS_WRIST}),
        ):
            c = make_config(recipe, "tiny", **{**base, **over}, seed=s)
            model, _ = fit_recipe(recipe, c, progress=False)
            model.eval()
            with torch.no_grad():
                zs[arm].append(_acc(zero_shot_logits(model, test["x"], class_emb), test["y"]))
                zr[arm].append(_acc(zero_shot_logits(model, x_rot, class_emb), test["y"]))
            pre[arm] = model
        g = torch.Generator().manual_seed(9000 + s)
        with torch.no_grad():
            R = random_rotation(test["x"].shape[0], N_JOINTS, generator=g)
            a = pre["unimts"].encode_imu(test["x"])
            b = pre["unimts"].encode_imu(rotate_joints(test["x"], R))
        rot_cos.append(float((a * b).sum(-1).mean()))
        for k in shots:
            idx = few_shot_indices(
                train["y"], k, generator=torch.Generator().manual_seed(100 * s + k)
            )
            xtr, ytr = train["x"][idx], train["y"][idx]
            for arm in ARM_NAMES:
                if arm == "unimts_ft":
                    enc: nn.Module = copy.deepcopy(pre["unimts"])
                elif arm == "stgcn_scratch":
                    enc = UniMTS(3, channels=tuple(_ints(base.get("channels", cfg.channels))),
                                 strides=tuple(_ints(base.get("strides", cfg.strides))),
                                 seed=s)  # fmt: skip
                else:
                    enc = JointCNN(3, joint=BASIC_MOTIONS_WRIST, seed=s)
                clf = FewShotClassifier(enc, len(BASIC_MOTIONS_CLASSES), seed=s)
                fine_tune(clf, xtr, ytr, epochs=epochs, lr=cfg.ft_lr, seed=s, crop=cfg.ft_crop)
                with torch.no_grad():
                    fs[arm][k].append(_acc(clf(test["x"]), test["y"]))
                    fr[arm][k].append(_acc(clf(x_rot), test["y"]))
            if run is not None:
                run.log_metrics({"seed": s, "k": k, **{a: fs[a][k][-1] for a in ARM_NAMES},
                                 **{f"{a}_rotated": fr[a][k][-1] for a in ARM_NAMES}})  # fmt: skip
    mean_k = {a: [sum(fs[a][k][i] for k in shots) / len(shots) for i in range(len(seeds))]
              for a in ARM_NAMES}  # fmt: skip
    base_arm = max(("stgcn_scratch", "cnn_scratch"), key=lambda a: sum(mean_k[a]))
    arms: dict[str, list[float]] = {}
    for a, name in ARM_NAMES.items():
        for k in shots:
            arms[f"{name}, k={k}"] = fs[a][k]
    for a, name in ARM_NAMES.items():
        for k in shots:
            arms[f"{name}, k={k}, test in another watch orientation"] = fr[a][k]
    other = next(a for a in ("stgcn_scratch", "cnn_scratch") if a != base_arm)
    arms[f"{ARM_NAMES[other]}, mean over k"] = mean_k[other]
    arms["zero-shot: UniMTS"] = zs["unimts"]
    arms["zero-shot: same without rotation aug"] = zs["no_rot_aug"]
    arms["zero-shot: 1-D CNN on the wrist"] = zs["cnn_wrist"]
    arms["zero-shot: UniMTS, another watch orientation"] = zr["unimts"]
    arms["zero-shot: same without rotation aug, another watch orientation"] = zr["no_rot_aug"]
    arms["zero-shot: 1-D CNN on the wrist, another watch orientation"] = zr["cnn_wrist"]
    arms["chance"] = [1.0 / len(BASIC_MOTIONS_CLASSES)] * len(seeds)
    table = {name: sum(v) / len(v) for name, v in arms.items()}
    plots = _plot(fs, fr, zs, zr, shots, run)
    return ReproduceResult(
        task="BasicMotions (UEA; smartwatch acc on the right wrist, 4 activities, 40 test "
        f"recordings): few-shot fine-tuning, k in {shots} per class",
        metric="test accuracy (mean over k)",
        method=f"{ARM_NAMES['unimts_ft']} (pre-training: {base.get('steps')} steps on "
        "procedural motion)",
        baseline=f"{ARM_NAMES[base_arm]} (the stronger baseline)",
        method_values=mean_k["unimts_ft"],
        baseline_values=mean_k[base_arm],
        higher_is_better=True,
        invariance_error=1.0 - sum(rot_cos) / len(rot_cos),
        seconds=time.time() - t0,
        seeds=seeds,
        arms=arms,
        plots=plots,
        details={
            "mean_table": table,
            "pretraining": base,
            "fine-tuning": {
                "epochs": epochs,
                "lr": cfg.ft_lr,
                "crop_frames": cfg.ft_crop,
                "optimizer": "Adam, every parameter (official --mode full)",
            },
            "invariance_error": "1 - mean cos(f(x), f(R x)) of the pretrained UniMTS on the "
            "BasicMotions test recordings, random per-joint R",
        },  # fmt: skip
    )


def _plot(fs: dict, fr: dict, zs: dict, zr: dict, shots: list[int], run: Any) -> list[str]:
    if run is None or not getattr(run, "enabled", False):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, f, z, title in ((axes[0], fs, zs, "test recordings as worn"),
                            (axes[1], fr, zr, "watch in another orientation")):  # fmt: skip
        for j, (a, name) in enumerate(ARM_NAMES.items()):
            m = [sum(f[a][k]) / len(f[a][k]) for k in shots]
            ax.plot(shots, m, "o-", color=f"C{j}", label=name)
            for k in shots:
                ax.plot([k] * len(f[a][k]), f[a][k], ".", color=f"C{j}", alpha=0.5)
        for j, (a, name) in enumerate((("unimts", "zero-shot UniMTS"),
                                       ("cnn_wrist", "zero-shot 1-D CNN"))):  # fmt: skip
            ax.axhline(sum(z[a]) / len(z[a]), ls="--", color=f"C{j * 2}", lw=1, label=name)
        ax.axhline(1 / len(BASIC_MOTIONS_CLASSES), ls=":", color="grey", lw=1, label="chance")
        ax.set_xlabel("k (training recordings per class)")
        ax.set_xticks(shots)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("test accuracy (dots: seeds)")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return [str(run.savefig(fig, "unimts_basic_motions.png"))]
