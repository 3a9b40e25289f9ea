import json
from pathlib import Path

import pytest
import torch

from invariance.core import groups as G
from invariance.core import make_config
from invariance.core.testing import assert_equivariant, assert_invariant, assert_not_invariant
from invariance.vision import BSS, batch_styles_standardization
from invariance.vision.bss import SSLAugment, nt_xent_loss
from invariance.vision.nn.bss import low_frequency_mask
from invariance.vision.recipes.bss import BSSRecipe

GOLDEN = json.loads((Path(__file__).parent / "golden_bss_fda.json").read_text())


def _x(n=6, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, s, s, dtype=torch.float64, generator=g)


def test_bss_reference_unchanged_and_phase_kept():
    x = _x()
    y, info = batch_styles_standardization(x, r=0.2, ref_index=2, clip=False, return_info=True)
    assert info["max_imag"] < 1e-10  # Hermitian spectrum -> real output
    assert (y[2] - x[2]).abs().max() < 1e-12  # reference image unchanged
    fx, fy = torch.fft.fft2(x), torch.fft.fft2(y)
    ok = fx.abs() > 1e-8
    dphi = torch.angle(fy * fx.conj())[ok]
    assert dphi.abs().max() < 1e-8  # phase of every image kept
    mask = torch.fft.ifftshift(low_frequency_mask(16, 16, 0.2), dim=(-2, -1))
    amp_ref = fx[2].abs()
    assert (fy.abs()[:, :, mask] - amp_ref[:, mask]).abs().max() < 1e-9  # style = reference's
    assert (fy.abs()[:, :, ~mask] - fx.abs()[:, :, ~mask]).abs().max() < 1e-9  # rest kept
    # r = 0: the (inclusive) window is the DC bin alone, so only the mean (brightness) moves
    d = batch_styles_standardization(x, r=0.0, ref_index=0, clip=False) - x
    assert (d - d.mean((-2, -1), keepdim=True)).abs().max() < 1e-12


def test_bss_dc_bin_even_sizes():
    x = _x(s=32)
    for r in (0.0, 0.001, 0.05):
        y = batch_styles_standardization(x, r=r, ref_index=1, clip=False)
        # the DC bin is in the window: every spatial mean equals the reference's
        assert (y.mean((-2, -1)) - x[1].mean((-2, -1))).abs().max() < 1e-12
    # albumentations' FDA window (centre (H-1)/2) misses the DC bin on even sizes
    fda = low_frequency_mask(32, 32, 0.05, window="fda")
    assert fda.any() and not fda[16, 16]
    assert low_frequency_mask(32, 32, 0.05)[16, 16]


def _restyle(g, imgs):
    out = imgs.clone()
    out[1:] = imgs[1:] * g
    return out


def _blur_style(g, imgs):
    # zero-phase (symmetric, positive-spectrum) blur of every non-reference image
    k = torch.tensor([0.25, 0.5, 0.25], dtype=imgs.dtype) * 0 + torch.tensor(
        [g / (1 + 2 * g), 1 / (1 + 2 * g), g / (1 + 2 * g)], dtype=imgs.dtype
    )
    f = torch.fft.fft2(imgs)
    h = imgs.shape[-1]
    kk = torch.zeros(h, dtype=imgs.dtype)
    kk[0], kk[1], kk[-1] = k[1], k[0], k[2]
    spec = torch.fft.fft(kk).real  # real, > 0 for g < 1/2... use |.| to keep it phase-free
    spec = spec.abs() + 1e-3
    out = torch.fft.ifft2(f * spec[:, None] * spec[None, :]).real
    res = imgs.clone()
    res[1:] = out[1:]
    return res


def test_bss_style_invariance():
    x = _x()
    full = lambda v: batch_styles_standardization(v, r=1.0, ref_index=0, clip=False)
    assert_invariant(full, (x,), G.Scaling(0.2, 5.0), (_restyle,))
    assert_invariant(full, (x,), G.Scaling(0.05, 0.45), (_blur_style,))
    # negative controls: a small window keeps the high-frequency style; per-image references
    low = lambda v: batch_styles_standardization(v, r=0.05, ref_index=0, clip=False)
    assert_not_invariant(low, (x,), G.Scaling(0.2, 5.0), (_restyle,))
    per = lambda v: batch_styles_standardization(
        v, r=1.0, per_image=True, clip=False, generator=torch.Generator().manual_seed(3)
    )
    assert_not_invariant(per, (x,), G.Scaling(0.2, 5.0), (_restyle,))


def test_bss_idempotent():
    x = _x()
    for mode in ("swap", "mix"):
        y = batch_styles_standardization(x, r=0.3, ref_index=4, mode=mode, lam=1.0, clip=False)
        z = batch_styles_standardization(y, r=0.3, ref_index=4, mode=mode, lam=1.0, clip=False)
        assert (z - y).abs().max() < 1e-12
    # amplitude mix with lambda < 1 only moves part of the way: not idempotent
    y = batch_styles_standardization(x, r=0.3, ref_index=4, mode="mix", lam=0.5, clip=False)
    z = batch_styles_standardization(y, r=0.3, ref_index=4, mode="mix", lam=0.5, clip=False)
    assert (z - y).abs().max() > 1e-6


def test_bss_batch_permutation_equivariant():
    x = _x()
    ref = x[0].clone()

    def fn(v):
        j = int(((v - ref).abs().flatten(1).sum(1)).argmin())  # follow the reference image
        return batch_styles_standardization(v, r=0.2, ref_index=j, clip=False)

    assert_equivariant(fn, (x,), G.Permutation(dim=0), ("nodes",), "nodes")
    fixed = lambda v: batch_styles_standardization(v, r=0.2, ref_index=0, clip=False)
    assert_not_invariant(fixed, (x,), G.Permutation(dim=0), ("nodes",), "nodes")


def test_bss_fda_parity():
    for case in GOLDEN["cases"]:
        img = torch.tensor(case["img"], dtype=torch.float32).permute(2, 0, 1)
        trg = torch.tensor(case["target"], dtype=torch.float32).permute(2, 0, 1)
        ref = torch.tensor(case["out"], dtype=torch.float32).permute(2, 0, 1)
        ours = batch_styles_standardization(
            torch.stack([img, trg]), r=case["beta"], ref_index=1, window="fda", clip=True
        )[0]
        assert (ours - ref).abs().max() < 1e-5, case["size"]


def test_bss_transform_and_errors():
    t = BSS(r_range=(0.1, 0.2))
    x = _x().float()
    y = t(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.equal(y, x) and torch.equal(x, _x().float())  # input not mutated
    assert "BSS(r_range=(0.1, 0.2)" in repr(t)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        batch_styles_standardization(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="r_range"):
        BSS(r_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="ref_index"):
        batch_styles_standardization(x, ref_index=10)
    with pytest.raises(TypeError, match="real floating"):
        batch_styles_standardization(torch.ones(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mode"):
        BSS(mode="mixup")


def test_bss_rejects_out_of_range_images_lam_and_empty_batches():
    x = _x()
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\]"):
        batch_styles_standardization(x * 2, r=0.1)  # was clipped silently
    with pytest.raises(ValueError, match=r"x must hold images in \[0, 1\]"):
        batch_styles_standardization(x - 0.5, r=0.1)
    out = batch_styles_standardization(x * 2, r=0.1, clip=False)  # any range without clipping
    assert out.max() > 1
    for lam in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lam"):
            batch_styles_standardization(x, mode="mix", lam=lam)
    with pytest.raises(ValueError, match="lam_range"):
        batch_styles_standardization(x, mode="mix", lam_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="lam_range"):
        BSS(mode="mix", lam_range=(-1.0, 0.5))
    with pytest.raises(ValueError, match="non-empty"):
        batch_styles_standardization(x[:0], r=0.1)
    with pytest.raises(ValueError, match="NaN"):
        batch_styles_standardization(torch.where(x > 0.99, float("nan"), x), r=0.1)
    with pytest.raises(ValueError, match=r"\br\b"):
        batch_styles_standardization(x, r=1.5)


def test_bss_batchwise_jitter_shares_parameters():
    # identical constant images: resized crops keep them constant, so after the colour jitter
    # the images differ only by their jitter draws (and the per-image grayscale)
    x = torch.rand(1, 3, 1, 1, generator=torch.Generator().manual_seed(3)).expand(32, 3, 8, 8)
    x = x.contiguous()

    def colours(batchwise):
        y = SSLAugment(batchwise=batchwise)(x, generator=torch.Generator().manual_seed(0))
        assert y.shape == x.shape
        c = y.mean((-2, -1))
        return c[c.std(1) > 1e-6]  # drop the grayscaled images

    shared, own = colours(True), colours(False)
    assert len(shared) > 10 and len(own) > 10
    assert float((shared - shared[0]).abs().max()) < 1e-5  # one draw for the whole batch
    assert float((own - own[0]).abs().max()) > 1e-2
    # the seed of the caller's generator fixes the draws
    a = SSLAugment()(x, generator=torch.Generator().manual_seed(1))
    b = SSLAugment()(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    loss = nt_xent_loss(torch.randn(8, 4), torch.randn(8, 4))
    assert loss["loss"] > 0 and 0 <= loss["acc"] <= 1


def _style_features(x):
    # per-channel mean and std: the colour "style" statistics of each image
    return torch.cat([x.mean((-2, -1)), x.std((-2, -1))], 1)


def test_bss_removes_style_shortcut():
    # Learning-relevant property (default suite). The paper's rationale: inside a view-batch
    # all images share one style, so SSL negatives cannot be separated by style. Train a small
    # MLP on style statistics ONLY (no shape information) with NT-Xent: with SimCLR
    # augmentations it learns to find the positive from style alone; with batch-wise jitter +
    # BSS it stays at chance (1/127). No fast "BSS beats SimCLR on unseen domains" test exists:
    # at CPU budgets BSS loses (README, "Measured results").
    # 3 seeds (40 steps, batch 64, 16 px digits of domains B and C): contrastive accuracy
    # SimCLR 0.134 / 0.166 / 0.158, BSS 0.008 / 0.005 / 0.013 -> assert on seed 0.
    from invariance.vision.data.digit_styles import make_digit_styles

    def run(variant):
        torch.manual_seed(0)
        data = torch.cat([make_digit_styles(64, seed=0, domain=d, size=16)["image"] for d in "BC"])
        bss = BSS(r_range=(0.0, 0.02)) if variant == "bss" else None
        aug = SSLAugment(batchwise=variant == "bss", bss=bss)
        head = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        pair = lambda x: nt_xent_loss(
            head(_style_features(aug(x, generator=g))), head(_style_features(aug(x, generator=g)))
        )
        for _ in range(40):
            out = pair(data[torch.randint(0, len(data), (64,), generator=g)])
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        with torch.no_grad():
            return (
                sum(
                    float(pair(data[torch.randint(0, len(data), (64,), generator=g)])["acc"])
                    for _ in range(5)
                )
                / 5
            )

    simclr, bss = run("simclr"), run("bss")
    assert simclr > 0.08 and bss < 0.03, (simclr, bss)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="not reproduced at CPU budgets: 200 steps (3 seeds) and "
    "1000 steps (seed 0), BSS below SimCLR on the unseen domains (README, "
    "Measured results)",
)
def test_bss_learns_unseen_domain():
    from invariance.core.train import evaluate, fit_recipe

    accs = {}
    for variant in ("bss", "simclr"):
        r = BSSRecipe()
        cfg = make_config(r, variant=variant, steps=200, lr=3e-3, seed=0)
        model, _ = fit_recipe(r, cfg, progress=False)
        accs[variant] = evaluate(r, model, cfg)["acc"]
    assert accs["bss"] > accs["simclr"] + 0.02, accs
