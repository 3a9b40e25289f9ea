"""GalSim rendering backend for the procedural galaxies (``make_galaxies(..., backend="galsim")``).

GalSim (https://github.com/GalSim-developers/GalSim, Rowe et al. 2015) is the field's standard
galaxy image simulator; it is an optional dependency: ``pip install invariance-vision[galsim]``.

The torch generator in :mod:`invariance.vision.data.galaxies` samples every latent and every noise
draw; this module only redraws the noise-free image from the same latents, so the 37 vote
fractions, the true answers and the noise realisation are identical for both backends.

**Drawn as GalSim profiles** (exact analytic surface brightness, in the galaxy frame, then
mirrored and rotated by the position angle with ``transform``/``rotate``):

* the bulge / smooth galaxy: elliptical ``Sersic`` with the same index, effective radius and
  axis ratio. The torch generator saturates the core at 1.2 (like an SDSS cutout); that clamp is
  represented exactly as ``Sersic - Sersic(trunc=r_c) + TopHat(r_c)``, where ``r_c`` is the radius
  at which the profile reaches 1.2;
* the disk: inclined (projected, thin) ``Exponential`` with the disk axis ratio;
* the bar (elongated ``Gaussian``), the odd features lobe, clumps, knot (``Gaussian``) and merger
  (clamped ``Sersic`` as above), the star / artefact (``Gaussian`` point and streak) and the two
  field stars (``DeltaFunction``);
* the PSF (``Gaussian`` of the same per-galaxy width) and the pixel response (``method="auto"``,
  which the torch generator does not model: it samples at pixel centres and blurs with a discrete
  kernel truncated at 4 px).

**Not expressible as GalSim profiles** and passed to GalSim as a sampled residual image
(``InterpolatedImage`` of the torch-sampled difference, convolved with the same GalSim PSF and
pixel): the logarithmic spiral-arm modulation ``1 + A cos(m(phi - ln r / tan psi) + phi0)`` of the
disk, the ring and arc odd features, the multiplicative dust lane, and the difference between the
boxy (superellipse) bulge of edge-on disks and the elliptical Sersic. Leaving them out would make
the images disagree with the votes (a galaxy voted "spiral" without arms), so they are kept; the
README gives the measured fraction of flux they carry.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["import_galsim", "render_galsim"]


def import_galsim():
    """Import GalSim lazily, with an install hint when it is missing."""
    try:
        import galsim
    except ImportError as e:  # pragma: no cover - exercised only without galsim
        raise ImportError(
            "backend='galsim' needs GalSim: pip install invariance-vision[galsim]"
        ) from e
    return galsim


def _clamped_sersic(galsim, n: float, re: float, amp: float, cap: float):
    """Circular ``min(amp * exp(-b_n((r/re)^(1/n) - 1)), cap)`` as a sum of GalSim profiles.

    ``b_n = 2n - 1/3 + 4/(405 n)`` (the torch generator's approximation), so the profile is a
    Sersic of scale radius ``re / b_n**n``.
    """
    bn = 2 * n - 1 / 3 + 4 / (405 * n)
    a = amp * math.exp(bn)  # central surface brightness
    r0 = re / bn**n
    flux = a * 2 * math.pi * n * r0**2 * math.gamma(2 * n)
    obj = galsim.Sersic(n, scale_radius=r0, flux=flux)
    if a > cap:
        rc = re * (math.log(a / cap) / bn) ** n
        inner = galsim.Sersic(n, scale_radius=r0, flux=-flux, trunc=rc, flux_untruncated=True)
        obj = obj + inner + galsim.TopHat(radius=rc, flux=cap * math.pi * rc**2)
    return obj


def _gauss(galsim, amp: float, su: float, sv: float):
    """``amp * exp(-u^2/(2 su^2) - v^2/(2 sv^2))``."""
    return galsim.Gaussian(sigma=su, flux=amp * 2 * math.pi * su * su).transform(1, 0, 0, sv / su)


def render_galsim(lat: dict, residual: Tensor, *, size: int, scale: float, colors: tuple) -> Tensor:
    """Draw the noise-free, PSF-convolved galaxies with GalSim.

    Args:
        lat: per-galaxy latents collected by the torch generator (angle, mirror, flux, PSF width,
            component weights and shapes, odd feature, star, field stars).
        residual: (n, 3, S, S) torch-sampled part that GalSim profiles cannot express (before the
            overall flux factor).
        size: image side S in pixels (pixel scale 1).
        scale: ``size / 69`` (the generator's length unit).
        colors: RGB weights of (bulge, disk, odd features).

    Returns:
        (n, 3, S, S) float64 images.
    """
    galsim = import_galsim()
    bulge_rgb, disk_rgb, odd_rgb = colors
    n = residual.shape[0]
    c = (size - 1) / 2.0
    out = torch.zeros(n, 3, size, size, dtype=torch.float64)
    f = lambda k, i: float(lat[k][i])  # noqa: E731
    for i in range(n):
        ns, re, R = f("n_sersic", i), f("re", i), f("R", i)
        comps = []  # (profile in the galaxy frame, RGB)
        if f("w_bulge", i) > 0:
            b = _clamped_sersic(galsim, ns, re, 0.35, 1.2).transform(1, 0, 0, f("q_bulge", i))
            comps.append((f("w_bulge", i) * b, bulge_rgb))
        if f("w_disk", i) > 0:
            h, q = f("h", i), f("q_disk", i)
            d = galsim.Exponential(scale_radius=h, flux=2 * math.pi * h * h).transform(1, 0, 0, q)
            comps.append((f("w_disk", i) * d, disk_rgb))
        if bool(lat["bar"][i]):
            L = f("bar_len", i)
            comps.append((_gauss(galsim, 0.6, L, 0.25 * L), bulge_rgb))
        if bool(lat["odd"][i]):
            t = int(lat["odd_type"][i])
            if t == 2:  # lobe
                comps.append((_gauss(galsim, 0.5, 0.5 * R, 0.3 * R).shift(0.8 * R, 0.0), odd_rgb))
            elif t == 3:  # clumps
                for cu, cv in zip(lat["clump_u"], lat["clump_v"]):
                    s = 1.5 * scale
                    comps.append(
                        (_gauss(galsim, 0.5, s, s).shift(float(cu[i]), float(cv[i])), odd_rgb)
                    )
            elif t == 4:  # knot
                s = 1.2 * scale
                comps.append((_gauss(galsim, 0.8, s, s).shift(0.6 * R, 0.4 * R), odd_rgb))
            elif t == 5:  # merger: a smaller clamped Sersic companion
                m = _clamped_sersic(galsim, ns, 0.6 * re, 0.35, 1.2).shift(R, 0.5 * R)
                comps.append((0.7 * m, odd_rgb))
        if bool(lat["star"][i]):
            comps.append((_gauss(galsim, 1.0, 1.2 * scale, 1.2 * scale), (1.0, 1.0, 1.0)))
            if bool(lat["streak"][i]):
                comps.append((_gauss(galsim, 0.7, 20 * scale, 0.8 * scale), (1.0, 1.0, 1.0)))
        field = [
            galsim.DeltaFunction(flux=float(val[i])).shift(float(px[i]) - c, float(py[i]) - c)
            for px, py, val in lat["field"]
            if float(val[i]) > 0
        ]
        psf = galsim.Gaussian(sigma=f("psf_sigma", i))
        flux, angle = f("flux", i), f("angle", i)
        for ch in range(3):
            parts = [rgb[ch] * p for p, rgb in comps]
            obj = None
            if parts:
                obj = galsim.Add(parts) if len(parts) > 1 else parts[0]
                if bool(lat["mirror"][i]):
                    obj = obj.transform(1, 0, 0, -1)
                obj = flux * obj.rotate(angle * galsim.radians)
            res = residual[i, ch].double().numpy()
            if abs(res).max() > 1e-12:
                ii = galsim.InterpolatedImage(
                    galsim.Image(res * flux, scale=1.0),
                    x_interpolant="lanczos3",
                    calculate_stepk=False,
                    calculate_maxk=False,
                )
                obj = ii if obj is None else obj + ii
            for fs in field:
                obj = fs if obj is None else obj + fs
            if obj is None:
                continue
            img = galsim.Convolve(obj, psf).drawImage(nx=size, ny=size, scale=1.0)
            out[i, ch] = torch.from_numpy(img.array.astype("float64"))
    return out
