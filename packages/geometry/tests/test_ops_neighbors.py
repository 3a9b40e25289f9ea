import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from invariance.core.groups import haar_so3
from invariance.geometry.ops import ball_query, farthest_point_sample, index_points, knn


def _cloud(n=300, b=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3) if b is None else (b, n, 3)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def test_knn_indices_equal_ckdtree():
    x = _cloud(300)
    q = _cloud(50, seed=1)
    idx, dist = knn(x, 12, q)
    d_ref, i_ref = cKDTree(x.numpy()).query(q.numpy(), 12)
    np.testing.assert_array_equal(idx.numpy(), i_ref)
    np.testing.assert_allclose(dist.numpy(), d_ref, atol=1e-12)


def test_knn_batched_and_exclude_self():
    x = _cloud(100, b=3)
    idx, _ = knn(x, 5, exclude_self=True)
    assert idx.shape == (3, 100, 5)
    assert not (idx == torch.arange(100).view(1, 100, 1)).any()
    for b in range(3):
        _, i_ref = cKDTree(x[b].numpy()).query(x[b].numpy(), 6)
        np.testing.assert_array_equal(idx[b].numpy(), i_ref[:, 1:])


def test_knn_duplicates_are_allowed_and_tie_broken_by_index():
    x = torch.zeros(5, 3, dtype=torch.float64)
    idx, dist = knn(x, 3)
    assert (dist == 0).all()
    assert idx.tolist() == [[0, 1, 2]] * 5


@pytest.mark.parametrize(
    "bad, msg",
    [
        (torch.rand(10, 2), "last dimension 3"),  # query of the wrong width
        (torch.rand(10), "shape"),
        (torch.tensor([[0.0, float("nan"), 0.0]] * 4), "NaN"),
    ],
)
def test_knn_bad_input(bad, msg):
    with pytest.raises(ValueError, match=msg):
        knn(bad, 2) if bad.dim() != 2 or bad.shape[-1] == 3 else knn(torch.rand(10, 3), 2, bad)


def test_knn_too_few_points():
    with pytest.raises(ValueError, match="exceeds the 4 available points"):
        knn(torch.rand(4, 3), 5)
    with pytest.raises(ValueError, match="self excluded"):
        knn(torch.rand(4, 3), 4, exclude_self=True)
    with pytest.raises(TypeError, match="torch.Tensor"):
        knn(np.zeros((4, 3)), 2)


def test_ball_query_pads_with_nearest():
    x = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5.0, 0, 0]])
    idx, mask = ball_query(x, x[:1], radius=0.15, k=3)
    assert idx.tolist() == [[0, 1, 0]]
    assert mask.tolist() == [[True, True, False]]
    with pytest.raises(ValueError, match="radius"):
        ball_query(x, x, radius=0.0, k=2)


def test_fps_invariant_to_rotation_translation_and_permutation():
    x = _cloud(200) * torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    idx = farthest_point_sample(x, 20)
    assert len(set(idx.tolist())) == 20
    R = haar_so3(generator=torch.Generator().manual_seed(3))
    assert farthest_point_sample(x @ R.T + 1.5, 20).tolist() == idx.tolist()
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(4))
    inv = torch.argsort(perm)
    assert perm[farthest_point_sample(x[perm], 20)].tolist() == idx.tolist()
    assert inv.shape == perm.shape
    # the official start at index 0 is not permutation-invariant (negative control)
    a = farthest_point_sample(x, 20, start=0)
    b = perm[farthest_point_sample(x[perm], 20, start=0)]
    assert a.tolist() != b.tolist()


def test_fps_batched_and_errors():
    x = _cloud(50, b=2)
    out = farthest_point_sample(x, 50)
    assert out.shape == (2, 50)
    assert all(len(set(r.tolist())) == 50 for r in out)
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 50\]"):
        farthest_point_sample(x, 51)
    with pytest.raises(ValueError, match="start"):
        farthest_point_sample(x, 5, start=99)
    dup = torch.zeros(6, 3)
    assert farthest_point_sample(dup, 3).shape == (3,)


def test_index_points():
    x = torch.arange(24.0).view(2, 4, 3)
    idx = torch.tensor([[[0, 1]], [[3, 3]]])
    out = index_points(x, idx)
    assert out.shape == (2, 1, 2, 3)
    assert torch.equal(out[1, 0, 0], x[1, 3])


def test_knn_distances_are_exact_and_self_distance_is_zero():
    """Issue 14: matrix-multiply cdist loses ~1e-3 to cancellation in float32 (||x||^2 - 2xy +
    ||y||^2 far from the origin) and gives non-zero self-distances. Both paths compute from
    coordinate differences: the float32 distances equal the float64 ones to float32 rounding."""
    g = torch.Generator().manual_seed(0)
    x64 = 100.0 + torch.rand(2, 400, 3, generator=g, dtype=torch.float64)
    x = x64.float()
    ref = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    for method in ("auto", "brute", "tree"):
        idx, dist = knn(x, 8) if method == "auto" else knn(x, 8, method=method)
        assert dist.dtype == torch.float32
        assert (dist[..., 0] == 0).all(), method  # each point is its own nearest neighbour
        assert (idx[..., 0] == torch.arange(400)).all(), method
        exact = ref.gather(-1, idx)
        assert float((dist.double() - exact).abs().max()) < 1e-5, method
        _, i_ref = cKDTree(x[0].double().numpy()).query(x[0].double().numpy(), 8)
        np.testing.assert_array_equal(idx[0].numpy(), i_ref)


def test_knn_tree_equals_brute_and_keeps_gradients():
    x = _cloud(600, b=2).requires_grad_(True)
    q = _cloud(50, b=2, seed=3)
    i_b, d_b = knn(x, 10, q, method="brute")
    i_t, d_t = knn(x, 10, q, method="tree")
    assert torch.equal(i_b, i_t)
    torch.testing.assert_close(d_b, d_t)
    d_t.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    i_e, _ = knn(x.detach(), 6, exclude_self=True, method="tree")
    assert torch.equal(i_e, knn(x.detach(), 6, exclude_self=True, method="brute")[0])
    with pytest.raises(ValueError, match="method"):
        knn(x, 3, method="kdtree")


def test_knn_duplicates_at_the_kth_neighbour_take_the_lowest_index():
    x = torch.cat([torch.zeros(1, 3), torch.ones(6, 3)]).double()
    idx, dist = knn(x, 3, x[:1], method="brute")
    assert idx.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_numpy_cpu_path_equals_torch_loop(dtype):
    """The CPU path (NumPy) picks exactly the torch loop's indices, duplicates and ties included."""
    from invariance.geometry.ops.neighbors import _fps_numpy, _fps_torch

    g = torch.Generator().manual_seed(5)
    for n_pts, n in ((300, 300), (1000, 128)):
        x = torch.randn(3, n_pts, 3, generator=g, dtype=dtype)
        x[1, ::7] = x[1, 3]  # duplicated points: exact ties in the running distances
        x[2] = (x[2] * 2).round()  # integer grid: many equal distances
        cur = torch.randint(0, n_pts, (3,), generator=g)
        a, b = _fps_numpy(x, n, cur), _fps_torch(x, n, cur)
        assert a.dtype == b.dtype == torch.long
        assert torch.equal(a, b)
