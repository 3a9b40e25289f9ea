import numpy as np
import pytest
import torch

from invariance.core.groups import haar_o3, haar_so3
from invariance.geometry.ops import (
    canonical_frame,
    classical_mds,
    frame_signs,
    pca_frames,
    sign_disambiguate,
)


def _generic(n=80, b=None, seed=0):
    """Anisotropic, skewed clouds: distinct eigenvalues, non-zero third moments."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3) if b is None else (b, n, 3)
    return torch.randn(*shape, generator=g, dtype=torch.float64).exp() * torch.tensor(
        [3.0, 2.0, 1.0], dtype=torch.float64
    )


def _same_set(A, B, tol=1e-9):
    """Every frame of A (F, 3, 3) matches some frame of B and vice versa."""
    d = (A.unsqueeze(1) - B.unsqueeze(0)).abs().amax((-1, -2))
    return bool((d.min(1).values < tol).all() and (d.min(0).values < tol).all())


@pytest.mark.parametrize("group, n", [("O3", 8), ("SO3", 4)])
def test_pca_frames_are_orthogonal_and_equivariant(group, n):
    x = _generic(b=3)
    fr = pca_frames(x, group=group)
    assert fr.frames.shape == (3, n, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(fr.frames.transpose(-1, -2) @ fr.frames, eye, atol=1e-12)
    dets = torch.linalg.det(fr.frames)
    if group == "SO3":
        assert torch.allclose(dets, torch.ones_like(dets))
    else:
        assert (dets > 0).sum() == (dets < 0).sum()
    gen = torch.Generator().manual_seed(1)
    Q = (haar_o3 if group == "O3" else haar_so3)(generator=gen)
    fr2 = pca_frames(x @ Q.T + 2.0, group=group)
    assert torch.allclose(fr2.center, fr.center @ Q.T + 2.0, atol=1e-12)
    for b in range(3):
        assert _same_set(fr2.frames[b], Q @ fr.frames[b])
    assert not fr.degenerate.any()


def test_pca_frames_graph_batch_matches_dense():
    x = _generic(b=2, n=30)
    batch = torch.arange(2).repeat_interleave(30)
    fg = pca_frames(x.reshape(-1, 3), batch=batch)
    fd = pca_frames(x)
    assert torch.allclose(fg.center, fd.center) and torch.allclose(fg.eigvals, fd.eigvals)


@pytest.mark.parametrize(
    "cloud",
    [
        torch.zeros(1, 3, dtype=torch.float64),  # a single point
        torch.linspace(0, 1, 10, dtype=torch.float64).unsqueeze(-1)
        * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        torch.tensor(
            [[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
            dtype=torch.float64,
        ),
    ],
    ids=["single_point", "collinear", "octahedron"],
)
def test_degenerate_spectrum_is_flagged(cloud):
    fr = pca_frames(cloud, on_degenerate="ignore")
    assert bool(fr.degenerate)
    assert torch.isfinite(fr.frames).all()
    with pytest.warns(RuntimeWarning, match="repeated covariance eigenvalues"):
        pca_frames(cloud)
    with pytest.raises(ValueError, match="not unique"):
        pca_frames(cloud, on_degenerate="raise")


def test_pca_frames_bad_input():
    with pytest.raises(ValueError, match="group"):
        pca_frames(_generic(), group="SE3")
    with pytest.raises(ValueError, match="NaN"):
        pca_frames(torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="on_degenerate"):
        pca_frames(_generic(), on_degenerate="maybe")


def test_sign_disambiguation_removes_sign_flips():
    c = _generic() - _generic().mean(0)
    s = sign_disambiguate(c)
    flips = torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64)
    s2 = sign_disambiguate(c * flips)
    assert torch.equal(c * s, c * flips * s2)
    # centrally symmetric column -> falls back to the largest-magnitude entry
    sym = torch.cat([c, -c])
    sym[0, 0] = 50.0
    assert sign_disambiguate(sym)[0] == 1 and sign_disambiguate(-sym)[0] == -1
    with pytest.raises(ValueError, match="rule"):
        sign_disambiguate(c, rule="coin")


def test_canonical_frame_is_an_fa_frame_and_invariant():
    x = _generic(b=4)
    t, R = canonical_frame(x)
    fa = pca_frames(x).frames
    for b in range(4):
        assert min(float((R[b].flip(-1) - fa[b, k]).abs().max()) for k in range(8)) < 1e-12
    Q = haar_o3(generator=torch.Generator().manual_seed(5))
    t2, R2 = canonical_frame(x @ Q.T - 1.0)
    assert torch.allclose(
        (x - t.unsqueeze(1)) @ R, (x @ Q.T - 1.0 - t2.unsqueeze(1)) @ R2, atol=1e-10
    )


def test_classical_mds_matches_numpy_eigh_golden():
    """Golden: numpy.linalg.eigh on the double-centred matrix (spec §4 anchor)."""
    x = _generic(n=40).numpy()
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    J = np.eye(40) - 1.0 / 40
    lam, U = np.linalg.eigh(-0.5 * J @ d2 @ J)
    ref = U[:, ::-1][:, :3] * np.sqrt(lam[::-1][:3])
    ours, lam_ours = classical_mds(torch.from_numpy(d2), 3)
    np.testing.assert_allclose(lam_ours.numpy(), lam[::-1][:3], rtol=1e-10)
    np.testing.assert_allclose(
        np.abs(ours.numpy()), np.abs(ref), atol=1e-8
    )  # equal up to column signs
    d2_ours = ((ours[:, None] - ours[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2_ours.numpy(), d2, atol=1e-8)  # distance preserving


def test_classical_mds_bad_input():
    with pytest.raises(ValueError, match="square"):
        classical_mds(torch.rand(3, 4))
    with pytest.raises(ValueError, match="symmetric"):
        classical_mds(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="d must be"):
        classical_mds(torch.zeros(2, 2), 3)


@pytest.mark.parametrize("group", ["O3", "SO3"])
def test_frame_signs_give_every_frame_from_the_first(group):
    """frames[f] == frames[0] * s_f exactly: FrameAveraging frames a cloud once and flips signs."""
    fr = pca_frames(_generic(b=4), group=group)
    S = frame_signs(group, dtype=torch.float64)
    assert S.shape == (fr.frames.shape[1], 3) and bool((S.abs() == 1).all())
    assert torch.equal(fr.frames, fr.frames[:, :1] * S.view(1, -1, 1, 3))
    with pytest.raises(ValueError, match="group"):
        frame_signs("E2")
