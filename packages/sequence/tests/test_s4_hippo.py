"""HiPPO matrices: closed forms (HTTYH), NPLR/DPLR forms, diagonal inits, history reconstruction."""

import math

import pytest
import torch

from invariance.sequence import S4Kernel, hippo


def _impulse(measure, N, ts):
    A, B = hippo.transition(measure, N)
    return torch.stack([torch.linalg.matrix_exp(t * A) @ B for t in ts], -1)


def test_hippo_legs_is_exp_warped_legendre():
    # HTTYH Thm: e_n^T exp(tA) B = sqrt(2n+1) P_n(2 e^{-t} - 1) e^{-t}
    ts = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    K = _impulse("legs", 16, ts)
    assert (K - hippo.basis("legs", 16, ts)).abs().max() < 1e-8
    # spot value: n=1, t=1: sqrt3 * (2/e - 1) / e
    assert abs(K[1, 2].item() - math.sqrt(3) * (2 / math.e - 1) / math.e) < 1e-10


def test_hippo_legt_fout_lagt_bases():
    ts = torch.tensor([0.3, 0.7, 1.2, 1.6, 2.5], dtype=torch.float64)
    lagt = _impulse("lagt", 8, ts)
    assert (lagt - hippo.basis("lagt", 8, ts)).abs().max() < 1e-10  # exact
    for m in ("legt", "fout"):  # windowed bases: approximate at finite N, ~0 after the window
        K = _impulse(m, 128, ts)
        ref = hippo.basis(m, 128, ts)
        assert (K[:6] - ref[:6]).abs().max() < 0.05, m
        assert K[:6, -1].abs().max() < 0.01, m  # t = 2.5 is outside the window [0, 2)


def test_hippo_matrix_entries_closed_form():
    A, B = hippo.transition("legs", 4)
    s = math.sqrt
    expect = torch.tensor(
        [[-1, 0, 0, 0], [-s(3), -2, 0, 0], [-s(5), -s(15), -3, 0], [-s(7), -s(21), -s(35), -4]],
        dtype=torch.float64,
    )
    assert torch.allclose(A, expect) and torch.allclose(
        B, torch.tensor([1, s(3), s(5), s(7)], dtype=torch.float64)
    )
    A, B = hippo.transition("fout", 6)
    assert A[2, 3] == pytest.approx(-math.pi - 0.0) and A[3, 2] == pytest.approx(math.pi)
    assert A[0, 0] == pytest.approx(-1.0) and A[2, 2] == pytest.approx(-2.0)  # minus B B^T
    assert torch.allclose(B, torch.tensor([1, 0, s(2), 0, s(2), 0], dtype=torch.float64))


@pytest.mark.parametrize(
    "measure", ["legs", "legt", "lagt", "fout", "foud", "fourier_decay", "legsd"]
)
def test_hippo_nplr_reconstructs_matrices(measure):
    N = 16
    rank = 2 if measure == "legt" else 1
    f = hippo.nplr(measure, N, rank=rank, b_clip=None, dtype=torch.complex128)
    A, B = hippo.transition(measure, N)
    Vf = torch.cat([f.V, f.V.conj()], 1)
    assert (Vf.conj().T @ Vf - torch.eye(N)).abs().max() < 1e-10  # unitary
    wf, Pf = torch.cat([f.w, f.w.conj()]), torch.cat([f.P, f.P.conj()], 1)
    A_rec = Vf @ (torch.diag(wf) - Pf.T @ Pf.conj()) @ Vf.conj().T
    assert (A_rec - A).abs().max() < 1e-10
    assert (Vf @ torch.cat([f.B, f.B.conj()]) - B).abs().max() < 1e-10
    P = hippo.rank_correction(measure, N, rank=rank)
    AP = A + P.T @ P
    S = AP + AP.T
    assert (S - S[0, 0] * torch.eye(N, dtype=S.dtype)).abs().max() < 1e-10  # scalar + skew


def test_hippo_nplr_b_clip_and_eigs():
    f = hippo.nplr("legs", 8, dtype=torch.complex128)
    assert torch.allclose(f.w.real, torch.full((4,), -0.5, dtype=torch.float64))
    assert f.B.imag.abs().max() <= 2.0 + 1e-12
    exact = hippo.nplr("legs", 8, b_clip=None, dtype=torch.complex128)
    assert exact.B.imag.abs().max() > 2.0  # clipping really changes B for N >= 8 (official default)
    with pytest.raises(ValueError, match="rank"):
        hippo.nplr("legt", 8, rank=1)


def test_hippo_diag_inits():
    N = 8
    A, B = hippo.diag_init("lin", N, H=2)
    assert A.shape == (2, 4) and torch.allclose(A.real, torch.full((2, 4), -0.5))
    assert torch.allclose(A.imag[0], -math.pi * torch.arange(4.0))
    A, _ = hippo.diag_init("inv", N)
    n = torch.arange(4.0)
    assert torch.allclose(-A.imag[0], N / math.pi * (N / (2 * n + 1) - 1))
    A, B = hippo.diag_init("legs", N)
    assert torch.allclose(A.real, torch.full((1, 4), -0.5)) and B.abs().max() > 0
    A, _ = hippo.diag_init("random", N, H=3, generator=torch.Generator().manual_seed(0))
    assert A.shape == (3, 4) and (A.imag < 0).all()
    with pytest.raises(ValueError, match="init"):
        hippo.diag_init("nope", N)


def test_hippo_timescale():
    assert hippo.timescale_range(1000) == (1e-3, 0.1)
    g = torch.Generator().manual_seed(0)
    ld = hippo.init_log_dt(1000, 1e-3, 1e-1, generator=g)
    assert ld.min() >= math.log(1e-3) and ld.max() <= math.log(1e-1)
    with pytest.raises(ValueError, match="dt_min"):
        hippo.init_log_dt(4, 0.1, 0.01)


def test_hippo_legs_reconstructs_history():
    """HTTYH's central result: the TI-LegS state holds the history projected onto exp-warped
    Legendre polynomials, so u(T - r) is read back from x(T)."""
    N, dt, T = 64, 1e-3, 6.0
    A, B = hippo.transition("legs", N)
    steps = int(T / dt)
    eye = torch.eye(N, dtype=torch.float64)
    dA = torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A)  # bilinear, fine step
    dB = torch.linalg.solve(eye - dt / 2 * A, dt * B)
    t = torch.arange(steps, dtype=torch.float64) * dt
    u = torch.sin(2.0 * t) + 0.5 * torch.cos(5.0 * t + 1.0)  # smooth signal
    x = torch.zeros(N, dtype=torch.float64)
    for k in range(steps):
        x = dA @ x + dB * u[k]
    r = torch.linspace(0.0, 2.0, 21, dtype=torch.float64)
    rec = hippo.legs_reconstruct(x, r)
    truth = torch.sin(2.0 * (T - dt - r)) + 0.5 * torch.cos(5.0 * (T - dt - r) + 1.0)
    assert (rec - truth).pow(2).mean() < 1e-2
    # fewer basis functions -> worse reconstruction (the projection converges with N)
    rec8 = hippo.legs_reconstruct(x[:8], r)
    assert (rec8 - truth).pow(2).mean() > (rec - truth).pow(2).mean()


def test_hippo_bad_input():
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        hippo.transition("legx", 4)
    with pytest.raises(ValueError, match="positive int"):
        hippo.transition("legs", 0)
    with pytest.raises(ValueError, match="even"):
        hippo.nplr("legs", 5)


def test_hippo_nplr_canonical_sign():
    """Each NPLR eigenvector's sign is canonical: Re(B~_n) > 0, or Im(B~_n) > 0 where the real
    part vanishes (FouT's zero mode) (the official float32 ``eig``
    leaves it to LAPACK, so the sign of a mode, and of the S4D-LegS kernel with C = 1, varied)."""
    for measure in ("legs", "fout", "lagt"):
        f = hippo.nplr(measure, 16, b_clip=None, dtype=torch.complex128)
        re, im = f.B.real, f.B.imag
        assert ((re > 1e-12) | ((re.abs() <= 1e-12) & (im > 0))).all(), measure
    _, B = hippo.diag_init("legs", 16)
    assert (B.real > 0).all()


def test_hippo_nplr_rejects_bad_b_clip():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="b_clip"):
            hippo.nplr("legs", 8, b_clip=bad)
    with pytest.raises(TypeError, match="b_clip"):
        hippo.nplr("legs", 8, b_clip="2")
    with pytest.raises(ValueError, match="b_clip"):
        S4Kernel(2, d_state=8, l_max=8, b_clip=0.0)
