"""Benchmarks of the vision package (``invariance-vision bench <name>``).

* ``sepc_neck``: forward+backward time of the SEPC neck (4 PConv + cconv/lconv) against
  torchvision's RetinaNet 4-conv class/box towers on the same FPN pyramid (the head the paper
  replaces), per variant.
* ``bss_batch``: our batched :func:`batch_styles_standardization` against a per-image loop of
  the same operation (the way FDA-style augmentations are usually applied), same images.
* ``galaxy_views``: forward time of :class:`GalaxyNet` (16 views) against the plain CNN.
"""

from __future__ import annotations

import torch

from invariance.core.bench import register_bench, time_fn

__all__ = ["bench_sepc_neck", "bench_bss_batch", "bench_galaxy_views"]


def _pyramid(batch: int, channels: int, size: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, channels, max(1, size >> i), max(1, size >> i), generator=g).to(
        device) for i in range(5)]


@register_bench("vision", "sepc_neck")
def bench_sepc_neck(*, device: str = "cpu", quick: bool = False, batch: int = 4,
                    channels: int = 64, size: int = 32) -> dict:
    """SEPC neck variants vs RetinaNet's 4-conv towers (forward + backward, seconds)."""
    from torchvision.models.detection.retinanet import RetinaNetHead

    from invariance.vision.nn.sepc import SEPC

    x = _pyramid(batch, channels, size, device)
    rep = 3 if quick else 10
    out: dict = {"batch": batch, "channels": channels, "P3_size": size}
    head = RetinaNetHead(channels, 9, 10).to(device)
    towers = [head.classification_head.conv, head.regression_head.conv]

    def run_towers():
        s = sum(t(f).sum() for t in towers for f in x)
        s.backward()

    out["retina_towers_s"] = time_fn(run_towers, warmup=1, repeat=rep, device=device)["median_s"]
    for v in ("pconv", "sepc_lite", "sepc"):
        neck = SEPC(channels=channels, variant=v).to(device)

        def run(neck=neck):
            c, l_ = neck(x)
            (sum(t.sum() for t in c) + sum(t.sum() for t in l_)).backward()

        out[f"{v}_s"] = time_fn(run, warmup=1, repeat=rep, device=device)["median_s"]
    return out


@register_bench("vision", "bss_batch")
def bench_bss_batch(*, device: str = "cpu", quick: bool = False, batch: int = 256,
                    size: int = 32) -> dict:
    """Batched BSS (two FFTs per batch) vs a per-image loop of the same Fourier swap."""
    from invariance.vision.nn.bss import batch_styles_standardization

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    rep = 3 if quick else 10

    def batched():
        batch_styles_standardization(x, r=0.1, ref_index=0)

    def loop():
        ref = x[0:1]
        for i in range(batch):
            batch_styles_standardization(torch.cat([x[i:i + 1], ref]), r=0.1, ref_index=1)

    b = time_fn(batched, warmup=1, repeat=rep, device=device)["median_s"]
    lp = time_fn(loop, warmup=1, repeat=max(1, rep // 3), device=device)["median_s"]
    return {"batch": batch, "size": size, "bss_batched_s": b, "per_image_loop_s": lp,
            "speedup": lp / b if b > 0 else float("nan")}


@register_bench("vision", "galaxy_views")
def bench_galaxy_views(*, device: str = "cpu", quick: bool = False, batch: int = 16,
                       size: int = 69, width: float = 0.25) -> dict:
    """GalaxyNet (16 views, shared conv stack) vs the plain CNN, forward time in eval mode."""
    from invariance.vision.galaxy import GalaxyNet, PlainGalaxyCNN

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    rep = 3 if quick else 10
    part = round(size * 45 / 69)
    net = GalaxyNet(view_size=size, part_size=part, width=width, hidden=256).to(device).eval()
    plain = PlainGalaxyCNN(view_size=size, width=width, hidden=256).to(device).eval()
    with torch.no_grad():
        a = time_fn(lambda: net(x), warmup=1, repeat=rep, device=device)["median_s"]
        b = time_fn(lambda: plain(x), warmup=1, repeat=rep, device=device)["median_s"]
    return {"batch": batch, "size": size, "galaxynet_s": a, "plain_s": b, "ratio": a / b}
