"""MINIMA: the data engine's exact labels, LoFTR's supervision, the pair-swap symmetry, the field's
metrics against the official LoFTR functions, a learning test and bad inputs."""

import json
import math
from pathlib import Path

import pytest
import torch
from kornia.feature.loftr.utils.supervision import spvs_coarse
from kornia.geometry.epipolar import essential_from_Rt

from invariance.core import make_config
from invariance.core.testing import assert_rejects_bad_inputs
from invariance.vision.data.minima_pairs import (
    MODALITIES,
    TEST_CLASSES,
    TRAIN_CLASSES,
    _camera_pairs,
    grid_correspondences,
    make_matching_scenes,
    make_minima_pairs,
)
from invariance.vision.minima import (
    MinimaMatcher,
    coarse_supervision,
    estimate_relative_pose,
    fine_supervision,
    loftr_config,
    loftr_loss,
    pose_auc,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from invariance.vision.recipes.minima import MinimaRecipe, matching_metrics
from invariance.vision.render import cast, project, render, world_to_camera

F64 = torch.float64
GOLDEN = json.loads((Path(__file__).parent / "golden_minima.json").read_text())


@pytest.fixture(scope="module")
def geometry():
    """Two scenes seen by three camera pairs, in float64."""
    scenes = make_matching_scenes(2, seed=5)
    g = torch.Generator().manual_seed(11)
    c0, c1 = _camera_pairs(3, g, F64)
    return scenes, c0, c1, torch.tensor([0, 1, 0])


@pytest.fixture(scope="module")
def pairs():
    return make_minima_pairs(2, size=64, modalities=MODALITIES, classes=TEST_CLASSES, seed=3)


def test_correspondences_are_exact_and_respect_occlusion(geometry):
    scenes, c0, c1, idx = geometry
    size = 64
    uv, valid = grid_correspondences(scenes, c0, c1, size=size, stride=4, scene_index=idx)
    assert valid.float().mean() > 0.2
    # cast the ray of camera 1 through the predicted pixel: it hits the same 3-D point
    pts0 = cast(scenes, c0, _grid(size, 4, 3), size=size, scene_index=idx)
    hit1 = cast(scenes, c1, uv, size=size, scene_index=idx)
    err = (hit1["points"] - pts0["points"]).norm(dim=-1)[valid]
    assert err.max() < 1e-6
    # hit but rejected points are occluded (camera 1 sees another surface first) or outside
    _, z = project(c1, pts0["points"], size)
    inside = (uv >= 0).all(-1) & (uv < size).all(-1)
    occluded = pts0["hit"] & inside & ~valid
    assert occluded.any()
    d = (hit1["points"] - pts0["points"]).norm(dim=-1)[occluded]
    assert d.min() > 1e-3
    assert bool((hit1["depth"][occluded] < z[occluded]).all())


def _grid(size, stride, b):
    r, c = torch.meshgrid(torch.arange(size // stride), torch.arange(size // stride), indexing="ij")
    return (torch.stack([c, r], -1).reshape(1, -1, 2).to(F64) * stride + 0.5).expand(b, -1, -1)


def test_coarse_ground_truth_is_a_partial_permutation_and_agrees_with_loftr(geometry):
    scenes, c0, c1, idx = geometry
    size = 64
    w0, v0 = grid_correspondences(scenes, c0, c1, size=size, stride=8, scene_index=idx)
    w1, v1 = grid_correspondences(scenes, c1, c0, size=size, stride=8, scene_index=idx)
    sup = coarse_supervision(w0, v0, w1, v1, size=size)
    gt = sup["conf_matrix_gt"]
    assert gt.sum() > 20
    assert gt.sum(2).max() == 1 and gt.sum(1).max() == 1
    # kornia's port of LoFTR's spvs_coarse, fed with rendered depth maps (pixel-index frame: K
    # shifted by half a pixel), keeps occluded cells; on the cells it finds depth-consistent in
    # both directions (its own warp check) our matches agree with it
    d0 = render(scenes, c0, size=size, scene_index=idx)["depth"][:, 0]
    d1 = render(scenes, c1, size=size, scene_index=idx)["depth"][:, 0]
    k = torch.tensor(
        [
            [size / (2 * math.tan(math.radians(c0.fov) / 2)), 0, size / 2 - 0.5],
            [0, 0, size / 2 - 0.5],
            [0, 0, 1],
        ],
        dtype=F64,
    )
    k[1, 1] = k[0, 0]
    t01 = world_to_camera(c1) @ torch.linalg.inv(world_to_camera(c0))
    data = {
        "image0": torch.zeros(3, 1, size, size, dtype=F64),
        "image1": torch.zeros(3, 1, size, size, dtype=F64),
        "depth0": d0,
        "depth1": d1,
        "T_0to1": t01,
        "T_1to0": torch.linalg.inv(t01),
        "K0": k.expand(3, 3, 3),
        "K1": k.expand(3, 3, 3),
    }
    spvs_coarse(data, {"LOFTR": {"RESOLUTION": (8, 2)}})
    ref = data["conf_matrix_gt"].to(F64)
    ours_in_ref = float((gt * ref).sum() / gt.sum())
    assert ours_in_ref >= 0.95, ours_in_ref
    extra = ref * (1 - gt)  # LoFTR's matches we drop: occluded or off-surface cells
    assert extra.sum() > 0


def test_labels_are_inherited_by_every_modality(pairs):
    for side in (0, 1):
        shapes = {tuple(pairs[f"image{side}_{m}"].shape) for m in MODALITIES}
        assert shapes == {(2, 1, 64, 64)}
    # modality images differ from RGB but are pixel-aligned: the depth image is dark exactly on
    # the background, which is white in RGB
    bg = pairs["image0_depth"] == 0
    assert bool((pairs["image0_rgb"][bg] > 0.99).all())
    again = make_minima_pairs(2, size=64, modalities=("rgb",), classes=TEST_CLASSES, seed=3)
    assert torch.equal(again["image0_rgb"], pairs["image0_rgb"])
    assert torch.equal(again["w_pt0"], pairs["w_pt0"])
    assert not set(TRAIN_CLASSES) & set(TEST_CLASSES)


def test_relative_pose_of_the_exact_matches_is_recovered(pairs):
    # exact correspondences of the coarse grid as matches: zero pose error, AUC 1
    errs = []
    for b in range(2):
        v = pairs["valid0"][b]
        k0 = _grid(64, 8, 1)[0][v].float()
        k1 = pairs["w_pt0"][b][v]
        r, t, inl = estimate_relative_pose(k0, k1, pairs["K0"][b], pairs["K1"][b], seed=0)
        errs.append(max(relative_pose_error(pairs["T_0to1"][b], r, t)))
        d = symmetric_epipolar_distance(
            k0.double(),
            k1.double(),
            pairs["T_0to1"][b].double(),
            pairs["K0"][b].double(),
            pairs["K1"][b].double(),
        )
        assert d.max() < 1e-8
    assert max(errs) < 0.05, errs
    assert pose_auc(errs) == {
        "auc@5": pytest.approx(1, abs=0.01),
        "auc@10": pytest.approx(1, abs=0.01),
        "auc@20": pytest.approx(1, abs=0.01),
    }


def test_metrics_equal_the_official_loftr_functions():
    # golden values: zju3dv/LoFTR df7ca80 src/utils/metrics.py run in a scratch venv (see the
    # "provenance" entry of golden_minima.json)
    g = GOLDEN
    errs = [float(e) for e in g["errors"]]
    ours = pose_auc(errs)
    for k, v in g["error_auc"].items():
        assert ours[k] == pytest.approx(v, abs=1e-12)
    T = torch.tensor(g["T_0to1"], dtype=F64)
    r, t = torch.tensor(g["R_est"], dtype=F64), torch.tensor(g["t_est"], dtype=F64)
    assert relative_pose_error(T, r, t) == pytest.approx(tuple(g["pose_error"]), abs=1e-10)
    assert relative_pose_error(T, r, -t) == pytest.approx(tuple(g["pose_error_neg_t"]), abs=1e-10)
    k = torch.tensor(g["K"], dtype=F64)
    k0, k1 = torch.tensor(g["kpts0"], dtype=F64), torch.tensor(g["kpts1"], dtype=F64)
    d = symmetric_epipolar_distance(k0, k1, T, k, k)
    torch.testing.assert_close(d, torch.tensor(g["epi_dist"], dtype=F64), rtol=1e-10, atol=1e-14)
    # kornia's RANSAC + cheirality on the same noisy matches with 6 outliers: at least as good as
    # the official OpenCV estimate (t/R errors 5.19 / 1.95 degrees, 34 inliers)
    r, t, inl = estimate_relative_pose(k0, k1, k, k, thresh_px=1.0, seed=0)
    assert max(relative_pose_error(T, r, t)) <= max(g["cv2_pose_error"])
    assert not bool(inl[:6].all())
    E = essential_from_Rt(
        torch.eye(3, dtype=F64)[None],
        torch.zeros(1, 3, 1, dtype=F64),
        T[None, :3, :3],
        T[None, :3, 3:],
    )
    assert E.shape == (1, 3, 3)


def test_dual_softmax_pair_swap_transposes_the_confidence_and_the_control_fails():
    r = MinimaRecipe()
    cfg = make_config(r)
    checks = r.check(None, cfg)
    assert [c.passed for c in checks] == [True, True], checks
    assert checks[0].error < 1e-12 and checks[1].error > 1e-4


def test_learning_a_few_steps_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    data = make_minima_pairs(2, size=64, seed=1)
    net = MinimaMatcher(loftr_config(width=16, coarse_layers=1, train_pad_num_gt_min=4))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    sup = coarse_supervision(data["w_pt0"], data["valid0"], data["w_pt1"], data["valid1"], size=64)
    losses = []
    for _ in range(12):
        out = net(data["image0_rgb"], data["image1_infrared"], sup)
        loss = loftr_loss(out, sup["conf_matrix_gt"], fine_supervision(out, data["w_pt0"], size=64))
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
        losses.append(float(loss["coarse"].detach()))
    assert losses[-1] < 0.85 * losses[0], losses


def test_matching_metrics_of_perfect_matches():
    data = make_minima_pairs(2, size=64, seed=2, modalities=("rgb",))
    gt = coarse_supervision(data["w_pt0"], data["valid0"], data["w_pt1"], data["valid1"], size=64)[
        "conf_matrix_gt"
    ]
    matches = []
    for b in range(2):
        i = torch.nonzero(gt[b].sum(1) > 0)[:, 0]
        j = gt[b, i].argmax(1)
        matches.append((_grid(64, 8, 1)[0][i].float(), data["w_pt0"][b][i], i, j))
    m = matching_metrics(matches, data, size=64, ransac_px=1.0, prec_px=0.01)
    assert m["prec"] == 1.0 and m["epi_prec"] == 1.0 and m["auc@10"] > 0.98
    assert m["coarse_prec"] == 1.0


@pytest.mark.parametrize("quick", [True, False])
def test_reproduce_reports_three_seeds_per_arm(monkeypatch, quick):
    import invariance.core.train as core_train

    calls = []

    def fake_fit(recipe, cfg, progress=False):
        calls.append(cfg)
        return torch.nn.Linear(1, 1), None

    def fake_eval(recipe, model, cfg, split):
        base = 0.3 if cfg.arm == "minima" else 0.1
        keys = [f"{k}_{m}" for k in ("prec", "auc@10") for m in MODALITIES]
        keys += [
            f"{k}_{g}"
            for k in ("auc@5", "auc@10", "auc@20", "prec", "coarse_prec", "epi_prec")
            for g in ("seen", "unseen")
        ]
        return {**{k: base + 0.01 * cfg.seed for k in keys}, "match_change_unseen": 0.5}

    # the reproduce loop is core's train_arms: patch the training and evaluation it calls
    monkeypatch.setattr(core_train, "fit_recipe", fake_fit)
    monkeypatch.setattr(core_train, "evaluate", fake_eval)
    r = MinimaRecipe()
    res = r.reproduce(make_config(r), None, quick=quick)
    assert res.seeds == [0, 1, 2] and len(res.method_values) == len(res.baseline_values) == 3
    assert sorted({c.arm for c in calls}) == ["minima", "rgb"] and len(calls) == 6
    preset = MinimaRecipe.presets["quick" if quick else "full"]
    assert all(getattr(c, k) == v for c in calls for k, v in preset.items())
    assert res.invariance_error == pytest.approx(0.5)
    assert bool(res.not_showable) == quick
    if not quick:
        assert res.verdict == "wins"


@pytest.mark.slow
def test_trained_match_sets_change_less_under_a_modality_swap_than_rgb_trained():
    # learned invariance: the matches of RGB-RGB pairs vs the same pairs with image 1 swapped to a
    # random modality (unseen objects); negative control: the same LoFTR trained on RGB only
    from invariance.core.train import fit_recipe
    from invariance.vision.recipes.minima import MinimaConfig, _match_set_change, match_pairs

    data = make_minima_pairs(8, size=64, classes=TEST_CLASSES, seed=4242)
    g = torch.Generator().manual_seed(0)
    mods = [("infrared", "depth", "normal")[int(i)] for i in torch.randint(3, (8,), generator=g)]
    swapped = torch.stack([data[f"image1_{m}"][b] for b, m in enumerate(mods)])
    change = {}
    for arm in ("minima", "rgb"):
        cfg = MinimaConfig(steps=150, n_train=24, batch_size=4, arm=arm)
        model, _ = fit_recipe(MinimaRecipe(), cfg, progress=False)
        base = match_pairs(model, data["image0_rgb"], data["image1_rgb"])
        change[arm] = _match_set_change(base, match_pairs(model, data["image0_rgb"], swapped))
    assert change["minima"] < change["rgb"], change


def test_bad_inputs_are_rejected_with_the_argument_named():
    net = MinimaMatcher(loftr_config(width=16, coarse_layers=1)).eval()
    a = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="image1"):
        net(a, torch.rand(1, 1, 40, 40))  # mismatched pair
    with pytest.raises(ValueError, match="image0"):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="supervision"):
        net.train()(a, a)
    net.eval()
    assert_rejects_bad_inputs(
        lambda image0, image1: net(image0, image1),
        {"image0": a, "image1": torch.rand(1, 1, 32, 32)},
        name="MinimaMatcher.forward",
    )
    k = torch.tensor(GOLDEN["K"])
    k0, k1 = torch.tensor(GOLDEN["kpts0"]), torch.tensor(GOLDEN["kpts1"])
    assert_rejects_bad_inputs(
        lambda kpts0, kpts1, K0: estimate_relative_pose(kpts0, kpts1, K0, k),
        {"kpts0": k0, "kpts1": k1, "K0": k},
        name="estimate_relative_pose",
        accept=("kpts0:empty", "kpts1:empty"),
    )
    with pytest.raises(ValueError, match="K0"):
        estimate_relative_pose(k0, k1, torch.zeros(3, 3), k)  # degenerate camera
    with pytest.raises(ValueError, match="kpts1"):
        estimate_relative_pose(k0, k1[:10], k, k)
    assert estimate_relative_pose(k0[:4], k1[:4], k, k) is None
    with pytest.raises(ValueError, match="errors"):
        pose_auc([])
    with pytest.raises(ValueError, match="errors"):
        pose_auc([1.0, float("nan")])
    w = torch.zeros(1, 64, 2)
    v = torch.ones(1, 64, dtype=torch.bool)
    with pytest.raises(ValueError, match="w_pt0"):
        coarse_supervision(w[:, :10], v, w, v, size=64)
    with pytest.raises(ValueError, match="valid1"):
        coarse_supervision(w, v, w, v.float(), size=64)
    with pytest.raises(ValueError, match="modalities"):
        make_minima_pairs(1, modalities=("thermal",))
    with pytest.raises(ValueError, match="size"):
        make_minima_pairs(1, size=60)
    with pytest.raises(ValueError, match="classes"):
        make_matching_scenes(1, classes=(12,))
    with pytest.raises(ValueError, match="width"):
        loftr_config(width=20, heads=4)


_NET = MinimaMatcher(loftr_config(width=16, coarse_layers=1)).eval()
_K = torch.tensor(GOLDEN["K"], dtype=F64)
_K0 = torch.tensor(GOLDEN["kpts0"], dtype=F64)
_K1 = torch.tensor(GOLDEN["kpts1"], dtype=F64)
_T = torch.tensor(GOLDEN["T_0to1"], dtype=F64)
_W = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(0)) * 64
_V = torch.ones(1, 64, dtype=torch.bool)


def _match(image0, image1):
    with torch.no_grad():
        return _NET(image0, image1)


ENTRY_POINTS = {
    "MinimaMatcher.forward": (
        _match,
        {"image0": torch.rand(1, 1, 32, 32), "image1": torch.rand(1, 1, 32, 32)},
        {},
    ),
    "estimate_relative_pose": (
        estimate_relative_pose,
        {"kpts0": _K0, "kpts1": _K1, "K0": _K, "K1": _K, "thresh_px": 1.0},
        {"accept": ("kpts0:empty", "kpts1:empty")},
    ),
    "relative_pose_error": (
        relative_pose_error,
        {"T_0to1": _T, "R": _T[:3, :3].clone(), "t": _T[:3, 3].clone()},
        {"accept": ("t:extra_dim",)},
    ),
    "symmetric_epipolar_distance": (
        symmetric_epipolar_distance,
        {"kpts0": _K0, "kpts1": _K1, "T_0to1": _T, "K0": _K, "K1": _K},
        {"accept": ("kpts0:empty", "kpts1:empty")},
    ),
    "pose_auc": (
        pose_auc,
        {"errors": torch.tensor([1.0, 4.0, 30.0])},
        {"accept": ("errors:inf",)},  # inf marks a failed pair
    ),
    "coarse_supervision": (
        coarse_supervision,
        {"w_pt0": _W, "valid0": _V, "w_pt1": _W.flip(1), "valid1": _V, "size": 64},
        {},
    ),
    "make_minima_pairs": (make_minima_pairs, {"n": 1, "size": 32, "modalities": ("rgb",)}, {}),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_minima_bad_inputs(name):
    from invariance.core.testing import fuzz_bad_inputs

    fn, kwargs, kw = ENTRY_POINTS[name]
    rep = fuzz_bad_inputs(fn, kwargs, name=name, **kw)
    assert rep.tried > 0 and rep.ok, "\n".join(rep.failures)
