"""Bad-input contract of the geometry package's public entry points (CONTRIBUTING.md, "Bad input").

Each entry point gets one valid call; :func:`invariance.core.testing.fuzz_bad_inputs` derives the
bad calls (NaN/Inf, empty, extra/fewer dimensions, integer dtype for tensors; negative, NaN, Inf,
wrong type for numbers; unknown values for strings) and checks that every one raises a
``ValueError``/``TypeError`` naming the argument, or (for the listed ``accept`` keys: valid input,
e.g. an extra batch dimension) returns finite outputs.
"""

from __future__ import annotations

import functools

import pytest
import torch

from invariance.core.testing import fuzz_bad_inputs, fuzz_table
from invariance.geometry import (
    EqMotion,
    FrameAveraging,
    PARENet,
    PointNet,
    PointNetSeg,
    RISurConvNet,
    RoITr,
    TinvNN,
    TrajectoryGNN,
    TrajectoryMLP,
    constant_velocity,
    eqmotion_loss,
    normal_error,
    risp_features,
    tinvnn_coordinates,
    tinvnn_from_distances,
)
from invariance.geometry.data import make_nbody, make_shape_classes, sample_mesh
from invariance.geometry.ops import (
    ball_query,
    canonical_frame,
    classical_mds,
    estimate_normals,
    farthest_point_sample,
    index_points,
    knn,
    pca_frames,
    point_pair_features,
)
from invariance.geometry.pare_net import feature_hypotheses
from invariance.geometry.registration import (
    inlier_ratio,
    log_optimal_transport,
    make_pair,
    ransac,
    registration_metrics,
    weighted_procrustes,
)
from invariance.geometry.registration.matching import (
    dual_normalized_scores,
    mutual_topk,
    point_to_node,
)


def _gen(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * torch.tensor([3.0, 2.0, 1.0])


def _cases():
    torch.manual_seed(0)
    pos = _gen(2, 32, 3)
    nrm = torch.nn.functional.normalize(_gen(2, 32, 3, seed=1), dim=-1)
    pn = PointNet(num_classes=3, hidden=8, global_dim=8).eval()
    seg = PointNetSeg(out_channels=3, hidden=8, global_dim=8).eval()
    fa = FrameAveraging(pn, on_degenerate="ignore").eval()
    tv = TinvNN(pn, on_degenerate="ignore").eval()
    ris = RISurConvNet(
        num_classes=3, npoints=(8,), nsamples=(4,), channels=(8,), global_channels=16,
        transformer_layers=1, heads=2, embed_channels=(4, 8),
    ).eval()  # fmt: skip
    nb = make_nbody(2, past=4, future=3, n_balls=3, sample_freq=10, seed=0)
    eqm = EqMotion(past=4, future=3, hidden=8, channels=4, layers=1).eval()
    V = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    F = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    d2 = torch.cdist(pos[0], pos[0]).pow(2)
    xi, ni = _gen(2, 4, 6, 3), torch.nn.functional.normalize(_gen(2, 4, 6, 3, seed=2), dim=-1)
    n_p = torch.nn.functional.normalize(_gen(2, 4, 3, seed=3), dim=-1)
    rp = make_pair(0, n_points=96, split="full")
    roitr = RoITr(
        widths=(8, 8, 8), k=(6, 6, 6), coarse_dim=8, fine_dim=8, patch_k=8, num_coarse=4
    ).eval()
    pare = PARENet(
        channels=(4, 4, 8), out_channels=8, k=6, coarse_dim=8, fine_dim=8, patch_k=8, num_coarse=4
    ).eval()
    clouds = {
        "src": rp.src,
        "src_normals": rp.src_normals,
        "tgt": rp.tgt,
        "tgt_normals": rp.tgt_normals,
    }
    fv = _gen(16, 4, 3, seed=4)
    return [
        # registration toolkit and matchers
        ("make_pair", make_pair,
         {"seed": 0, "n_points": 32, "split": "normal", "rotation": "so3", "noise": 0.01,
          "translation_std": 1.0, "tau": 0.05}, ()),
        ("weighted_procrustes", weighted_procrustes,
         {"src": rp.src[:32], "tgt": rp.tgt[:32], "weights": torch.rand(32)},
         ("src:extra_dim", "tgt:extra_dim")),
        ("ransac", ransac,
         {"src": rp.src[:32], "tgt": rp.tgt[:32], "threshold": 0.1, "iterations": 20}, ()),
        ("log_optimal_transport", log_optimal_transport,
         {"scores": _gen(2, 5, 3), "alpha": 1.0, "iters": 5},
         ("scores:fewer_dims", "alpha:negative")),
        ("log_optimal_transport (masks)", log_optimal_transport,
         {"scores": _gen(1, 5, 3), "alpha": 1.0, "iters": 5,
          "row_mask": torch.ones(1, 5, dtype=torch.bool),
          "col_mask": torch.ones(1, 3, dtype=torch.bool)},
         ("scores:fewer_dims", "alpha:negative")),
        ("registration_metrics", registration_metrics,
         {"src": rp.src, "R_est": rp.R, "t_est": rp.t, "R_gt": rp.R.T, "t_gt": -rp.t}, ()),
        ("inlier_ratio", inlier_ratio,
         {"src_corr": rp.src[:32], "tgt_corr": rp.tgt[:32], "R_gt": rp.R, "t_gt": rp.t,
          "tau1": 0.05}, ()),
        ("point_to_node", point_to_node, {"points": rp.src, "nodes": rp.src[:8], "k": 4}, ()),
        ("dual_normalized_scores", dual_normalized_scores,
         {"fx": _gen(5, 3), "fy": _gen(6, 3, seed=1)}, ()),
        ("mutual_topk", mutual_topk, {"scores": torch.rand(5, 6), "k": 2, "threshold": 0.01},
         ("threshold:negative",)),
        ("feature_hypotheses", feature_hypotheses,
         {"src": rp.src[:16], "ref": rp.tgt[:16], "f_src": fv, "f_ref": fv.flip(0),
          "voters_src": rp.src[:20], "voters_ref": rp.tgt[:20], "radius": 0.1,
          "refine_steps": 2, "max_hypotheses": 8}, ()),
        ("RoITr.forward", roitr, clouds, ()),
        ("RoITr.register", roitr.register, {**clouds, "iterations": 50, "threshold": 0.1}, ()),
        ("RoITr.loss", roitr.loss, {**clouds, "R": rp.R, "t": rp.t, "radius": 0.1}, ()),
        ("PARENet.encode", pare.encode, {"pos": rp.src}, ()),
        ("PARENet.register", pare.register,
         {"src": rp.src, "tgt": rp.tgt, "num": 32, "radius": 0.1}, ()),
        ("PARENet.loss", pare.loss, {"src": rp.src, "tgt": rp.tgt, "R": rp.R, "t": rp.t,
                                     "radius": 0.1}, ()),
        # ops
        ("knn", knn, {"x": pos, "k": 4}, ("x:extra_dim", "x:fewer_dims")),
        ("knn (query)", knn, {"x": pos, "k": 4, "query": pos[:, :5]}, ()),
        ("ball_query", ball_query, {"x": pos, "query": pos[:, :5], "radius": 1.0, "k": 4}, ()),
        ("farthest_point_sample", farthest_point_sample, {"x": pos, "n": 8},
         ("x:extra_dim", "x:fewer_dims")),
        ("index_points", index_points, {"x": pos, "idx": torch.zeros(2, 5, dtype=torch.long)},
         ()),
        ("estimate_normals", estimate_normals, {"pos": pos, "k": 8},
         ("pos:extra_dim", "pos:fewer_dims")),
        ("point_pair_features", point_pair_features,
         {"pos_i": pos, "pos_j": pos.flip(1), "normal_i": nrm, "normal_j": nrm.flip(1)},
         ("pos_i:extra_dim", "pos_j:extra_dim", "normal_i:extra_dim", "normal_j:extra_dim",
          "pos_i:fewer_dims", "pos_j:fewer_dims", "normal_i:fewer_dims", "normal_j:fewer_dims")),
        ("pca_frames", pca_frames, {"pos": pos, "on_degenerate": "ignore"},
         ("pos:extra_dim", "pos:fewer_dims")),
        ("canonical_frame", canonical_frame, {"pos": pos, "on_degenerate": "ignore"},
         ("pos:fewer_dims",)),
        ("classical_mds", classical_mds, {"dist2": d2, "d": 3}, ("dist2:extra_dim",)),
        # methods
        ("FrameAveraging", FrameAveraging,
         {"backbone": pn, "group": "O3", "output": "invariant", "on_degenerate": "warn",
          "frames_per_pass": 2, "auto_points": 4096}, ()),
        ("FrameAveraging.forward", fa, {"pos": pos}, ("pos:fewer_dims",)),
        ("TinvNN", TinvNN,
         {"backbone": pn, "method": "pca", "sign": "third_moment", "output": "invariant",
          "on_degenerate": "warn"}, ()),
        ("TinvNN.forward", tv, {"pos": pos}, ()),
        ("tinvnn_coordinates", tinvnn_coordinates,
         {"pos": pos, "method": "pca", "sign": "third_moment", "on_degenerate": "ignore"},
         ("pos:fewer_dims",)),
        ("tinvnn_from_distances", tinvnn_from_distances, {"dist2": d2, "d": 3},
         ("dist2:extra_dim",)),
        ("RISurConvNet", RISurConvNet,
         {"num_classes": 3, "global_channels": 16, "heads": 2, "dropout": 0.1, "normal_k": 8},
         ()),
        ("RISurConvNet.forward", ris, {"pos": pos, "normal": nrm}, ()),
        ("risp_features", risp_features, {"xi": xi, "ni": ni, "n_p": n_p, "shift": 1}, ()),
        ("EqMotion", EqMotion,
         {"past": 4, "future": 3, "hidden": 8, "channels": 4, "layers": 1, "categories": 2,
          "tau": 1.0}, ()),
        ("EqMotion.forward", eqm, {"loc": nb.loc, "vel": nb.vel}, ()),
        ("eqmotion_loss", eqmotion_loss, {"pred": nb.target, "target": nb.target.flip(1)},
         ("pred:extra_dim", "target:extra_dim")),
        ("normal_error", normal_error, {"pred": nrm, "normal": nrm.flip(1)}, ()),
        # baselines
        ("PointNet", PointNet, {"num_classes": 3, "in_channels": 3, "hidden": 8,
                                "global_dim": 8}, ()),
        ("PointNet.forward", pn, {"pos": pos}, ()),
        ("PointNetSeg.forward", seg, {"pos": pos}, ()),
        ("TrajectoryMLP.forward", TrajectoryMLP(past=4, future=3, hidden=8),
         {"loc": nb.loc, "vel": nb.vel}, ()),
        ("TrajectoryGNN.forward", TrajectoryGNN(past=4, future=3, hidden=8),
         {"loc": nb.loc, "vel": nb.vel}, ()),
        ("constant_velocity", constant_velocity, {"loc": nb.loc, "future": 3}, ()),
        # data
        ("make_shape_classes", make_shape_classes,
         {"n_per_class": 1, "n_points": 16, "seed": 0, "classes": ["cone", "torus"],
          "rotation": "so3", "jitter": 0.2, "noise": 0.01}, ()),
        ("make_nbody", make_nbody,
         {"n_sims": 1, "past": 3, "future": 2, "n_balls": 3, "sample_freq": 5, "dt": 1e-3,
          "seed": 0}, ()),
        ("sample_mesh", sample_mesh, {"vertices": V, "faces": F, "n": 8, "seed": 0}, ()),
    ]  # fmt: skip


CASES = _cases()


@functools.cache
def _report(i: int):
    name, fn, kwargs, accept = CASES[i]
    # the harness mutates tensors with .view(-1): give it contiguous ones
    kwargs = {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with torch.no_grad():
        return fuzz_bad_inputs(fn, kwargs, name=name, accept=accept)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_bad_inputs_are_rejected(i):
    rep = _report(i)
    assert rep.tried > 0
    assert not rep.failures, "\n".join(rep.failures)


def test_bad_input_summary():
    reports = [_report(i) for i in range(len(CASES))]
    print()
    print(fuzz_table(reports))
    assert all(r.tried > 0 for r in reports)
