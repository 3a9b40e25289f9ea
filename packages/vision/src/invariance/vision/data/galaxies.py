"""Procedural galaxy images with simulated Galaxy Zoo 2 volunteer answers (ground truth known).

The Kaggle Galaxy Zoo 2 data (61 578 SDSS images, 37 crowd vote fractions) needs a login, so the
galaxy method is trained on a seeded, vectorised pure-torch generator instead:

* a latent morphology per galaxy (smooth / featured disk / star-or-artefact), with axis ratio,
  inclination, bulge-to-total, bar, spiral arms (count and pitch), bulge shape for edge-on disks
  and odd features (ring, lens/arc, disturbed, irregular, other, merger, dust lane);
* rendering: Sersic bulge ``I ~ exp(-b_n((r/R_e)^{1/n} - 1))`` with
  ``b_n = 2n - 1/3 + 4/(405 n)``, inclined exponential disk, logarithmic spiral arms as a
  multiplicative modulation ``1 + A cos(m(phi - ln r / tan psi))``, bar as an elongated Gaussian,
  three bands (redder bulge, bluer disk/arms), Gaussian PSF, sky + Poisson-like noise and a few
  field stars;
* a uniformly random position angle and mirror flip (or a restricted angle range, for the
  "rotated test set" experiment). The labels never depend on them, so the task is exactly
  rotation/flip invariant;
* ``n_volunteers`` simulated volunteers walk the Galaxy Zoo decision tree; at each question a
  volunteer picks ``argmax(beta * onehot(truth) + Gumbel)``, with a per-galaxy reliability ``beta``
  that drops for faint/small galaxies. Vote fractions are cumulative (divided by all volunteers),
  so they satisfy the decision-tree constraints of the official output layer exactly.

This is a modelling choice, not real Galaxy Zoo data; it is documented as such in the README.

``backend="galsim"`` renders the same latents with GalSim (optional extra
``invariance-vision[galsim]``); see :mod:`invariance.vision.data.galaxies_galsim` for what is
drawn as GalSim profiles and what is not. Latents, answers, votes and noise draws are identical
for the two backends given the seed; only the noise-free image differs.
"""

from __future__ import annotations

import math

import kornia
import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number, check_tensor
from invariance.vision.data.galaxies_galsim import import_galsim, render_galsim

__all__ = [
    "QUESTION_SLICES",
    "ANSWERS_PER_QUESTION",
    "GalaxyDataset",
    "make_galaxies",
    "simulate_votes",
    "rotate_images",
]

#: Answer slices of the 11 Galaxy Zoo 2 questions inside the 37 outputs (Kaggle column order).
QUESTION_SLICES: tuple[slice, ...] = (
    slice(0, 3),
    slice(3, 5),
    slice(5, 7),
    slice(7, 9),
    slice(9, 13),
    slice(13, 15),
    slice(15, 18),
    slice(18, 25),
    slice(25, 28),
    slice(28, 31),
    slice(31, 37),
)
ANSWERS_PER_QUESTION: tuple[int, ...] = tuple(s.stop - s.start for s in QUESTION_SLICES)

_BULGE_RGB = (1.0, 0.78, 0.55)
_DISK_RGB = (0.62, 0.78, 1.0)
_ODD_RGB = (0.85, 0.85, 0.95)


def _u(g: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    """Uniform samples in [lo, hi), shape (n,)."""
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float32)


def _gaussian_blur(img: Tensor, sigma: Tensor) -> Tensor:
    """Blur (n, C, S, S) images with a per-image isotropic Gaussian of width ``sigma`` (n,)
    (9x9 kernel, zero padding; kornia's ``gaussian_blur2d``)."""
    return kornia.filters.gaussian_blur2d(
        img, (9, 9), torch.stack([sigma, sigma], 1).to(img), border_type="constant"
    )


def rotate_images(x: Tensor, angle: Tensor, *, flip: Tensor | None = None) -> Tensor:
    """Rotate (n, C, S, S) images by ``angle`` radians (n,) about the centre (bilinear, zeros;
    kornia's ``rotate`` with ``align_corners=True``).

    ``flip`` (n,) bool mirrors the last axis first. Used for rotation augmentation and for the
    rotated test sets.
    """
    check_tensor(x, "x", dims=4, expected="(n, C, H, W)")
    check_tensor(angle, "angle", dims=1, expected="(n,)")
    if angle.shape != x.shape[:1]:
        raise ValueError(
            f"angle must be a ({x.shape[0]},) tensor, got {tuple(getattr(angle, 'shape', ()))}"
        )
    if flip is not None:
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    deg = torch.rad2deg(angle).to(device=x.device, dtype=x.dtype)
    return kornia.geometry.transform.rotate(
        x, deg, mode="bilinear", padding_mode="zeros", align_corners=True
    )


def simulate_votes(
    truth: Tensor, beta: Tensor, *, n_volunteers: int = 40, generator: torch.Generator | None = None
) -> Tensor:
    """Simulated cumulative Galaxy Zoo vote fractions.

    Args:
        truth: (n, 11) long, the true answer index of every question (defined for all questions).
        beta: (n,) volunteer reliability; a volunteer answers ``argmax(beta*onehot+Gumbel)``.
        n_volunteers: volunteers per galaxy (default: 40).

    Returns:
        (n, 37) vote fractions: answer counts divided by ``n_volunteers`` along the tree, so that
        sum(Q1) = sum(Q6) = 1, sum(Q2) = A1.2, sum(Q3..Q5) = A2.2, sum(Q7) = A1.1, sum(Q8) = A6.1,
        sum(Q9) = A2.1, sum(Q10) = sum(Q11) = A4.1.
    """
    check_tensor(truth, "truth", dims=2, floating=False, expected="(n, 11)")
    if truth.is_floating_point():
        raise TypeError(f"truth must be an integer tensor, got {truth.dtype}")
    check_tensor(beta, "beta", dims=1, expected="(n,)")
    check_int(n_volunteers, "n_volunteers")
    if truth.dim() != 2 or truth.shape[1] != 11:
        raise ValueError(f"truth must be (n, 11), got {tuple(truth.shape)}")
    if beta.shape != truth.shape[:1]:
        raise ValueError(f"beta must be ({truth.shape[0]},), got {tuple(beta.shape)}")
    if n_volunteers < 1:
        raise ValueError(f"n_volunteers must be >= 1, got {n_volunteers}")
    n = truth.shape[0]
    answers = []
    for q, k in enumerate(ANSWERS_PER_QUESTION):
        logits = (
            beta[:, None, None]
            * torch.nn.functional.one_hot(truth[:, q], k).to(beta.dtype)[:, None, :]
        )
        u = torch.rand(n, n_volunteers, k, generator=generator, dtype=beta.dtype)
        gum = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))
        answers.append((logits + gum).argmax(-1))  # (n, V)
    a = answers
    reach = [None] * 11
    reach[0] = torch.ones_like(a[0], dtype=torch.bool)
    reach[5] = reach[0]
    reach[1] = a[0] == 1
    reach[2] = reach[1] & (a[1] == 1)
    reach[3] = reach[2]
    reach[4] = reach[2]
    reach[8] = reach[1] & (a[1] == 0)
    reach[6] = a[0] == 0
    reach[7] = a[5] == 0
    reach[9] = reach[3] & (a[3] == 0)
    reach[10] = reach[9]
    cols = []
    for q, k in enumerate(ANSWERS_PER_QUESTION):
        oh = torch.nn.functional.one_hot(a[q], k).to(beta.dtype) * reach[q][..., None]
        cols.append(oh.sum(1) / n_volunteers)
    return torch.cat(cols, dim=1)


def make_galaxies(
    n: int,
    *,
    seed: int,
    size: int = 69,
    n_volunteers: int = 40,
    angle_range: tuple[float, float] = (0.0, 2 * math.pi),
    mirror: bool = True,
    noise: float = 0.02,
    dtype: torch.dtype = torch.float32,
    backend: str = "torch",
) -> dict[str, Tensor]:
    """Render ``n`` procedural galaxies with simulated Galaxy Zoo vote fractions.

    Args:
        n: number of galaxies.
        seed: seed of the private generator (the global RNG is untouched).
        size: image side in pixels (default: 69, the official view size).
        n_volunteers: simulated volunteers per galaxy (default: 40).
        angle_range: position angles are uniform in this range, radians (default: full circle).
        mirror: randomly mirror half of the galaxies (default: True).
        noise: sky noise standard deviation (default: 0.02).
        backend: ``"torch"`` (default, vectorised) or ``"galsim"`` (GalSim profiles, PSF
            convolution and pixel response; needs ``pip install invariance-vision[galsim]``). The
            latents, ``votes`` and noise realisation do not depend on the backend.

    Returns:
        dict with ``image`` (n, 3, size, size) in [0, 1], ``votes`` (n, 37), ``truth`` (n, 11)
        true answers, ``beta`` (n,), ``angle`` (n,), ``mirror`` (n,) bool and ``kind`` (n,)
        (0 smooth, 1 featured disk, 2 star/artefact).
    """
    check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=16)
    check_int(n_volunteers, "n_volunteers")
    check_number(noise, "noise", lo=0.0)
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    return _make_galaxies(
        n,
        seed=seed,
        size=size,
        n_volunteers=n_volunteers,
        angle_range=angle_range,
        mirror=mirror,
        noise=noise,
        dtype=dtype,
        backend=backend,
    )[0]


def _make_galaxies(
    n: int,
    *,
    seed: int,
    size: int,
    n_volunteers: int,
    angle_range: tuple[float, float],
    mirror: bool,
    noise: float,
    dtype: torch.dtype,
    backend: str,
) -> tuple[dict[str, Tensor], Tensor]:
    """:func:`make_galaxies`, also returning the noise-free image after the PSF (n, 3, S, S)."""
    if backend not in ("torch", "galsim"):
        raise ValueError(f"backend must be 'torch' or 'galsim', got {backend!r}")
    if backend == "galsim":
        import_galsim()  # fail early, before any work
    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float32  # rendering precision (float32 keeps generation fast on CPU)
    scale = size / 69.0
    kind = torch.multinomial(
        torch.tensor([0.45, 0.50, 0.05], dtype=f64), n, replacement=True, generator=g
    )
    smooth, disk, star = kind == 0, kind == 1, kind == 2
    angle = _u(g, n, *angle_range)
    flip = (torch.rand(n, generator=g) < 0.5) & mirror

    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=f64) - c, torch.arange(size, dtype=f64) - c, indexing="ij"
    )
    xx, yy = xx[None], yy[None]  # (1, S, S)
    ca, sa = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = ca * xx + sa * yy
    v = -sa * xx + ca * yy
    v = torch.where(flip[:, None, None], -v, v)

    truth = torch.zeros(n, 11, dtype=torch.long)
    truth[:, 0] = kind

    # Geometry of the main body.
    edge_on = disk & (torch.rand(n, generator=g) < 0.2)
    q_smooth = torch.where(
        torch.rand(n, generator=g, dtype=f64) < 0.4,
        _u(g, n, 0.8, 1.0),
        torch.where(
            torch.rand(n, generator=g, dtype=f64) < 0.5, _u(g, n, 0.5, 0.8), _u(g, n, 0.25, 0.5)
        ),
    )
    q_disk = torch.where(edge_on, _u(g, n, 0.08, 0.2), _u(g, n, 0.3, 1.0))
    q_main = torch.where(disk, q_disk, q_smooth)
    truth[:, 6] = torch.where(q_main > 0.8, 0, torch.where(q_main > 0.5, 1, 2))
    truth[:, 1] = torch.where(edge_on | (smooth & (q_main < 0.35)), 0, 1)

    re = _u(g, n, 3.0, 8.0) * scale  # bulge / smooth effective radius
    ns = torch.where(smooth, _u(g, n, 2.5, 5.0), _u(g, n, 1.0, 4.0))
    h = _u(g, n, 5.0, 10.0) * scale  # disk scale length
    bt = torch.where(disk, _u(g, n, 0.0, 0.7), torch.ones(n, dtype=f64))
    truth[:, 4] = torch.where(bt < 0.05, 0, torch.where(bt < 0.2, 1, torch.where(bt < 0.45, 2, 3)))
    boxy = edge_on & (torch.rand(n, generator=g) < 0.4)
    truth[:, 8] = torch.where(bt < 0.05, 2, torch.where(boxy, 1, 0))
    bar = disk & ~edge_on & (torch.rand(n, generator=g) < 0.35)
    truth[:, 2] = torch.where(bar, 0, 1)
    arms = disk & ~edge_on & (torch.rand(n, generator=g) < 0.6)
    truth[:, 3] = torch.where(arms, 0, 1)
    m_arms = (
        torch.multinomial(
            torch.tensor([0.1, 0.5, 0.2, 0.1, 0.1], dtype=f64), n, replacement=True, generator=g
        )
        + 1
    )  # 1..5
    pitch_cls = torch.randint(0, 3, (n,), generator=g)
    pitch = torch.tensor([0.18, 0.35, 0.6], dtype=f64)[pitch_cls] + _u(g, n, -0.05, 0.05)
    truth[:, 9] = torch.where(arms, pitch_cls, 1)
    truth[:, 10] = torch.where(arms, m_arms - 1, 5)
    odd = ~star & (torch.rand(n, generator=g) < 0.3)
    odd_type = torch.randint(0, 7, (n,), generator=g)
    truth[:, 5] = torch.where(odd, 0, 1)
    truth[:, 7] = torch.where(odd, odd_type, 4)

    # Bulge (Sersic, with boxy superellipse option for edge-on disks).
    qb = torch.where(boxy, torch.full((n,), 0.6, dtype=f64), torch.where(smooth, q_main, 0.85))
    cpow = torch.where(boxy, torch.full((n,), 4.0, dtype=f64), torch.full((n,), 2.0, dtype=f64))
    cp = cpow[:, None, None]
    rb = ((u.abs() + 1e-9) ** cp + ((v / qb[:, None, None]).abs() + 1e-9) ** cp) ** (1 / cp)
    nn_ = ns[:, None, None]
    bn = 2 * nn_ - 1 / 3 + 4 / (405 * nn_)
    bulge = torch.exp(-bn * ((rb / re[:, None, None]).clamp_min(1e-6) ** (1 / nn_) - 1))
    bulge = (0.35 * bulge).clamp(max=1.2)  # I(R_e) = 0.35, core saturates like an SDSS cutout
    if backend == "galsim":  # the elliptical (not boxy) bulge that GalSim draws analytically
        rbe = torch.sqrt(u**2 + (v / qb[:, None, None]) ** 2 + 1e-18)
        bulge_ell = (
            0.35 * torch.exp(-bn * ((rbe / re[:, None, None]).clamp_min(1e-6) ** (1 / nn_) - 1))
        ).clamp(max=1.2)
    # Disk (inclined exponential) with arms and bar.
    qd = q_disk[:, None, None]
    rd = torch.sqrt(u**2 + (v / qd) ** 2 + 1e-9)
    disk_img = torch.exp(-rd / h[:, None, None])
    disk_plain = disk_img
    phi = torch.atan2(v / qd, u)
    arm_amp = torch.where(arms, _u(g, n, 0.6, 0.95), torch.zeros(n, dtype=f64))[:, None, None]
    arm_phase = _u(g, n, 0, 2 * math.pi)[:, None, None]
    mod = 1 + arm_amp * torch.cos(
        m_arms[:, None, None]
        * (phi - torch.log(rd.clamp_min(1.0)) / torch.tan(pitch[:, None, None]))
        + arm_phase
    )
    disk_img = disk_img * mod
    bar_len = _u(g, n, 4.0, 9.0)[:, None, None] * scale
    bar_img = torch.exp(-0.5 * ((u / bar_len) ** 2 + (v / (0.25 * bar_len)) ** 2))
    bar_img = bar_img * bar[:, None, None]

    w_bulge = torch.where(disk, bt, torch.where(smooth, torch.ones(n, dtype=f64), 0.0))
    w_disk = torch.where(disk, 1 - bt, torch.zeros(n, dtype=f64))
    img = torch.zeros(n, 3, size, size, dtype=f64)
    for ch in range(3):
        img[:, ch] = (
            w_bulge[:, None, None] * bulge * _BULGE_RGB[ch]
            + w_disk[:, None, None] * disk_img * _DISK_RGB[ch]
            + 0.6 * bar_img * _BULGE_RGB[ch]
        )

    # Odd features (in the galaxy frame, so they rotate with the galaxy).
    r = torch.sqrt(u**2 + v**2)
    ang = torch.atan2(v, u)
    R = (_u(g, n, 10.0, 18.0) * scale)[:, None, None]
    ring = torch.exp(-0.5 * ((r - R) / (1.5 * scale)) ** 2)
    wrapped = torch.remainder(ang + math.pi, 2 * math.pi) - math.pi
    arc = ring * torch.exp(-0.5 * wrapped**2 / 0.3)
    lobe = torch.exp(-0.5 * (((u - 0.8 * R) / (0.5 * R)) ** 2 + (v / (0.3 * R)) ** 2))
    clumps = torch.zeros_like(r)
    clump_u, clump_v = [], []
    for _ in range(5):
        cu = (_u(g, n, -12, 12) * scale)[:, None, None]
        cv = (_u(g, n, -12, 12) * scale)[:, None, None]
        clump_u.append(cu[:, 0, 0])
        clump_v.append(cv[:, 0, 0])
        clumps = clumps + torch.exp(-0.5 * ((u - cu) ** 2 + (v - cv) ** 2) / (1.5 * scale) ** 2)
    knot = torch.exp(-0.5 * ((u - 0.6 * R) ** 2 + (v - 0.4 * R) ** 2) / (1.2 * scale) ** 2)
    merger = torch.exp(
        -bn
        * (
            (torch.sqrt((u - R) ** 2 + (v - 0.5 * R) ** 2) / (0.6 * re[:, None, None])).clamp_min(
                1e-6
            )
            ** (1 / nn_)
            - 1
        )
    )
    merger = (0.35 * merger).clamp(max=1.2)
    add = torch.stack(
        [
            0.5 * ring,
            0.6 * arc,
            0.5 * lobe,
            0.5 * clumps,
            0.8 * knot,
            0.7 * merger,
            torch.zeros_like(r),
        ],
        dim=1,
    )  # (n, 7, S, S)
    odd_add = add[torch.arange(n), odd_type] * odd[:, None, None]
    if backend == "galsim":  # the analytic part: everything but the spiral modulation, ring, arc,
        # dust lane and boxy-bulge shape, which GalSim gets as a sampled residual image
        analytic_odd = torch.where((odd_type >= 2)[:, None, None], odd_add, 0.0)
        analytic = torch.stack(
            [
                w_bulge[:, None, None] * bulge_ell * _BULGE_RGB[ch]
                + w_disk[:, None, None] * disk_plain * _DISK_RGB[ch]
                + 0.6 * bar_img * _BULGE_RGB[ch]
                + analytic_odd * _ODD_RGB[ch]
                for ch in range(3)
            ],
            dim=1,
        )
    for ch in range(3):
        img[:, ch] = img[:, ch] + odd_add * _ODD_RGB[ch]
    dust = 1 - 0.8 * torch.exp(-0.5 * (v / (1.2 * scale)) ** 2)
    is_dust = (odd & (odd_type == 6))[:, None, None, None]
    img = torch.where(is_dust, img * dust[:, None], img)

    # Stars / artefacts: a bright point source, or a diffraction-like streak.
    streak = torch.rand(n, generator=g) < 0.3
    point = torch.exp(-0.5 * r**2 / (1.2 * scale) ** 2)
    line = torch.exp(-0.5 * (v / (0.8 * scale)) ** 2) * torch.exp(-0.5 * (u / (20 * scale)) ** 2)
    star_img = torch.where(streak[:, None, None], 0.7 * line + point, point)
    img = img + (star[:, None, None] * star_img)[:, None] * 1.0
    if backend == "galsim":
        residual = img - analytic - (star[:, None, None] * star_img)[:, None]

    # Brightness, PSF, field stars, noise.
    flux = _u(g, n, 0.6, 1.2)
    img = img * flux[:, None, None, None]
    field = []
    for _ in range(2):
        px = torch.randint(0, size, (n,), generator=g)
        py = torch.randint(0, size, (n,), generator=g)
        far = ((px - c) ** 2 + (py - c) ** 2).sqrt() > 0.35 * size
        on = far & (torch.rand(n, generator=g) < 0.5)
        val = on * _u(g, n, 0.3, 1.0)
        img[torch.arange(n), :, py, px] += val[:, None]
        field.append((px, py, val))
    psf_sigma = _u(g, n, 0.7, 1.4) * scale
    img = _gaussian_blur(img, psf_sigma)
    if backend == "galsim":
        latents = {
            "angle": angle,
            "mirror": flip,
            "flux": flux,
            "psf_sigma": psf_sigma,
            "w_bulge": w_bulge,
            "re": re,
            "n_sersic": ns,
            "q_bulge": qb,
            "w_disk": w_disk,
            "h": h,
            "q_disk": q_disk,
            "bar": bar,
            "bar_len": bar_len[:, 0, 0],
            "odd": odd,
            "odd_type": odd_type,
            "R": R[:, 0, 0],
            "clump_u": clump_u,
            "clump_v": clump_v,
            "star": star,
            "streak": streak,
            "field": field,
        }
        img = render_galsim(
            latents, residual, size=size, scale=scale, colors=(_BULGE_RGB, _DISK_RGB, _ODD_RGB)
        ).to(f64)
    clean = img
    img = (
        img
        + noise * torch.randn(img.shape, generator=g, dtype=f64)
        + 0.03 * img.clamp_min(0).sqrt() * torch.randn(img.shape, generator=g, dtype=f64)
    )
    img = img.clamp(0.0, 1.0)

    # Volunteer reliability: lower for faint and small galaxies.
    beta = (
        _u(g, n, 1.5, 3.5)
        * (0.5 + 0.5 * flux.clamp(max=1.0))
        * (0.7 + 0.3 * (re / (8.0 * scale)).clamp(max=1))
    )
    votes = simulate_votes(truth, beta, n_volunteers=n_volunteers, generator=g)
    return (
        {
            "image": img.to(dtype),
            "votes": votes.to(dtype),
            "truth": truth,
            "beta": beta.to(dtype),
            "angle": angle.to(dtype),
            "mirror": flip,
            "kind": kind,
        },
        clean.to(dtype),
    )


class GalaxyDataset(torch.utils.data.Dataset):
    """Map-style dataset over the output of :func:`make_galaxies` (items are dicts of tensors)."""

    def __init__(self, data: dict[str, Tensor]) -> None:
        if "image" not in data or "votes" not in data:
            raise ValueError(f"GalaxyDataset needs 'image' and 'votes', got keys {sorted(data)}")
        self.data = data

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}
