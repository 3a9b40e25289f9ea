"""Bad-input harness over the UniMTS / motion entry points (NaN IMU, wrong joint counts, unknown
joint ids, bad hyper-parameters): ValueError/TypeError naming the argument."""

import importlib.util

import pytest
import torch

from invariance.core.testing import fuzz_bad_inputs, fuzz_table
from invariance.sequence.motion import (
    STGCN,
    activity_motion,
    make_motion_dataset,
    mask_joints,
    rotate_joints,
    synthesize_imu,
)
from invariance.sequence.motion.basic_motions import (
    few_shot_indices,
    load_basic_motions_imu,
)
from invariance.sequence.unimts import (
    FewShotClassifier,
    JointCNN,
    UniMTS,
    fine_tune,
    unimts_loss,
)


def motion_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 22, 3, generator=g)
    pos, rot = activity_motion("walk", seconds=0.2, generator=torch.Generator().manual_seed(0))
    net = STGCN(3, channels=(4, 4), strides=(1, 2)).eval()
    model = UniMTS(3, channels=(4, 4), strides=(1, 2)).eval()
    return [
        ("rotate_joints", rotate_joints, {"x": x}, ()),
        ("mask_joints", mask_joints, {"x": x, "max_joints": 5}, ()),
        (
            "synthesize_imu",
            synthesize_imu,
            {"pos": pos, "rot": rot, "fs": 100.0, "decimate": 2},
            (),
        ),
        ("activity_motion", activity_motion, {"activity": "run", "seconds": 0.5, "fs": 50.0}, ()),
        ("make_motion_dataset", make_motion_dataset, {"n_per_class": 1, "rate": 20, "seed": 0}, ()),
        ("STGCN.forward", net, {"x": x}, ()),
        ("UniMTS.forward", model, {"x": x, "text_emb": torch.randn(2, 384, generator=g)}, ()),
        ("JointCNN()", JointCNN, {"in_channels": 3, "joint": 21, "width": 8}, ()),
        ("unimts_loss", unimts_loss, {"logits_per_imu": torch.randn(3, 3), "temperature": 0.1}, ()),
        ("few_shot_indices", few_shot_indices, {"y": torch.tensor([0, 0, 1, 1]), "k": 1}, ()),
        (
            "FewShotClassifier()",
            FewShotClassifier,
            {"encoder": JointCNN(3, width=4), "n_classes": 2, "seed": 0},
            (),
        ),  # fmt: skip
        (
            "fine_tune",
            fine_tune,
            {
                "model": FewShotClassifier(JointCNN(3, width=4), 2),
                "x": torch.randn(4, 16, 22, 3, generator=g),
                "y": torch.tensor([0, 1, 0, 1]),
                "epochs": 1,
                "lr": 1e-3,
                "batch_size": 4,
                "seed": 0,
                "crop": 8,
            },
            (),
        ),
    ] + _aeon_cases()


def _aeon_cases():
    if importlib.util.find_spec("aeon") is None:
        return []
    kw = {"split": "test", "joint": 21, "gyro": False, "rate": 20, "frames": 200}
    return [("load_basic_motions_imu", load_basic_motions_imu, kw, ())]


#: the same cases for the package summary (collected by test_sequence_bad_inputs.py)
ENTRY_POINTS = {n: (fn, kw, {"accept": acc}) for n, fn, kw, acc in motion_cases()}


@pytest.mark.parametrize("case", motion_cases(), ids=lambda c: c[0])
def test_motion_rejects_bad_inputs(case):
    name, fn, kwargs, accept = case
    rep = fuzz_bad_inputs(fn, kwargs, name=name, accept=accept)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_motion_bad_input_summary():
    reports = [fuzz_bad_inputs(fn, kw, name=n, accept=a) for n, fn, kw, a in motion_cases()]
    print()
    print(fuzz_table(reports, markdown=True))
    assert all(r.ok for r in reports)


def test_unknown_joint_ids_and_nan_imu():
    with pytest.raises(ValueError, match="joint"):
        JointCNN(3, joint=22)
    with pytest.raises(ValueError, match="x"):
        UniMTS(3, channels=(4,), strides=(1,))(
            torch.full((1, 8, 22, 3), float("nan")), torch.randn(1, 384)
        )
