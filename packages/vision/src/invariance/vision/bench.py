"""Benchmarks of the vision package (``invariance-vision bench <name>``).

Every bench times its candidates with :func:`invariance.core.bench.compare` (torch.utils.benchmark,
interleaved, repeats, median and spread, one thread) and returns flat rows.

* ``sepc_neck``: forward+backward of the SEPC neck variants against torchvision's RetinaNet
  4-conv class/box towers on the same FPN pyramid (the head the paper replaces).
* ``bss_batch``: our batched :func:`batch_styles_standardization` against a per-image loop of
  the same operation (the way FDA-style augmentations are usually applied), same images.
* ``galaxy_views``: eval forward of :class:`GalaxyNet` (16 views) against the plain CNN.
"""

from __future__ import annotations

import torch
from torchvision.models.detection.retinanet import RetinaNetHead

from invariance.core.bench import compare, machine, register_bench
from invariance.vision.galaxy import GalaxyNet, PlainGalaxyCNN
from invariance.vision.nn.bss import batch_styles_standardization
from invariance.vision.nn.sepc import SEPC

__all__ = ["bench_sepc_neck", "bench_bss_batch", "bench_galaxy_views"]


def _pyramid(batch: int, channels: int, size: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(batch, channels, max(1, size >> i), max(1, size >> i), generator=g).to(device)
        for i in range(5)
    ]


def _repeats(quick: bool) -> dict:
    return {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}


@register_bench("vision", "sepc_neck")
def bench_sepc_neck(
    *, device: str = "cpu", quick: bool = False, batch: int = 4, channels: int = 64, size: int = 32
) -> dict:
    """SEPC neck variants vs RetinaNet's 4-conv towers (forward + backward)."""
    x = _pyramid(batch, channels, size, device)
    head = RetinaNetHead(channels, 9, 10).to(device)
    towers = [head.classification_head.conv, head.regression_head.conv]

    def run_towers():
        sum(t(f).sum() for t in towers for f in x).backward()

    fns = {"retina_towers": run_towers}
    for v in ("pconv", "sepc_lite", "sepc"):
        neck = SEPC(channels=channels, variant=v).to(device)

        def run(neck=neck):
            c, l_ = neck(x)
            (sum(t.sum() for t in c) + sum(t.sum() for t in l_)).backward()

        fns[v] = run
    label = f"batch {batch}, {channels} ch, P3 {size}x{size}, fwd+bwd"
    rows = compare(fns, reference="retina_towers", device=device, label=label, **_repeats(quick))
    return {"rows": rows, "machine": machine(device)}


@register_bench("vision", "bss_batch")
def bench_bss_batch(
    *, device: str = "cpu", quick: bool = False, batch: int = 256, size: int = 32
) -> dict:
    """Batched BSS (two FFTs per batch) vs a per-image loop of the same Fourier swap."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)

    def batched():
        batch_styles_standardization(x, r=0.1, ref_index=0)

    def loop():
        ref = x[0:1]
        for i in range(batch):
            batch_styles_standardization(torch.cat([x[i : i + 1], ref]), r=0.1, ref_index=1)

    label = f"{batch} x 3 x {size} x {size}"
    rows = compare(
        {"per_image_loop": loop, "bss_batched": batched},
        reference="per_image_loop",
        device=device,
        label=label,
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}


@register_bench("vision", "galaxy_views")
def bench_galaxy_views(
    *,
    device: str = "cpu",
    quick: bool = False,
    batch: int = 16,
    size: int = 69,
    width: float = 0.25,
) -> dict:
    """GalaxyNet (16 views, shared conv stack) vs the plain CNN, forward time in eval mode."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    part = round(size * 45 / 69)
    net = GalaxyNet(view_size=size, part_size=part, width=width, hidden=256).to(device).eval()
    plain = PlainGalaxyCNN(view_size=size, width=width, hidden=256).to(device).eval()

    def fwd(m):
        def run():
            with torch.no_grad():
                m(x)

        return run

    label = f"batch {batch}, {size} px, width {width}, eval forward"
    rows = compare(
        {"plain_cnn": fwd(plain), "galaxynet_16_views": fwd(net)},
        reference="plain_cnn",
        device=device,
        label=label,
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}
