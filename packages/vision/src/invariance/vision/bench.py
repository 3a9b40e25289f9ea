"""Benchmarks of the vision package (``invariance-vision bench <name>``).

Every bench times its candidates with :func:`invariance.core.bench.compare` (torch.utils.benchmark,
interleaved, repeats, median and spread, one thread) and returns flat rows.

* ``sepc_neck``: forward+backward of the SEPC neck variants against torchvision's RetinaNet
  4-conv class/box towers on the same FPN pyramid (the head the paper replaces).
* ``bss_batch``: our batched :func:`batch_styles_standardization` against a per-image loop of
  the same operation (the way FDA-style augmentations are usually applied), same images.
* ``galaxy_views``: eval forward of :class:`GalaxyNet` (16 views) against the plain CNN.
* ``invdiff_guidance`` / ``invdiff_grouper``: a guidance training step of
  :class:`DeltaGuidedUNet` (``--backbone class|cond``) and the group inference, against the
  official ``EpsilonWithDelta`` / ``optimize_weights`` when ``INVDIFF_OFFICIAL_REPO`` names a
  checkout of https://github.com/Hundredl/InvDiff.
* ``lisgan_step`` / ``lisgan_cascade``: a LisGAN training step (5 critic + 1 generator updates)
  and the two-stage recognition, against the official ``lisgan.py`` step and
  ``classifier2.CLASSIFIER`` when ``LISGAN_OFFICIAL_REPO`` names a checkout of
  https://github.com/lijin118/LisGAN (the official code is executed from that checkout, never
  copied here); without it, against our f-CLSWGAN step / stage-1 classifier. They live in
  :mod:`invariance.vision.lisgan_bench`, which the package imports to register them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from pathlib import Path

import torch
from torchvision.models.detection.retinanet import RetinaNetHead

from invariance.core.bench import compare, machine, register_bench
from invariance.vision.galaxy import GalaxyNet, PlainGalaxyCNN
from invariance.vision.invdiff import DeltaGuidedUNet, infer_groups
from invariance.vision.nn.bss import batch_styles_standardization
from invariance.vision.nn.diffusion import class_unet, cond_class_unet
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


# ----------------------------------------------------------------------------- InvDiff


def _official_repo() -> Path | None:
    """A local checkout of the official InvDiff repository, from ``INVDIFF_OFFICIAL_REPO``."""
    p = os.environ.get("INVDIFF_OFFICIAL_REPO", "")
    return Path(p) if p and (Path(p) / "src" / "model" / "epsilon_with_delta.py").exists() else None


def _official_function(path: Path, name: str, **globals_) -> object:
    """Run the official source file's definition of ``name`` (ast-extracted, not imported: the
    official scripts run their argument parsing at import)."""
    import ast

    src = path.read_text()
    node = next(n for n in ast.parse(src).body if getattr(n, "name", None) == name)
    ns: dict = {"torch": torch, **globals_}
    exec(compile(ast.get_source_segment(src, node), str(path), "exec"), ns)  # noqa: S102
    return ns[name]


def _repeats(quick: bool) -> dict:
    return {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}


@register_bench("vision", "invdiff_guidance")
def bench_invdiff_guidance(
    *,
    device: str = "cpu",
    quick: bool = False,
    batch: int = 64,
    size: int = 8,
    backbone: str = "class",
) -> dict:
    """One guidance training step (frozen base forward + delta forward/backward) of our
    :class:`DeltaGuidedUNet` vs a plain step of the base alone (the floor) and, with
    ``INVDIFF_OFFICIAL_REPO`` set to a checkout, the official ``EpsilonWithDelta`` on the same two
    UNets. ``backbone``: ``class`` (``UNet2DModel``) or ``cond`` (``UNet2DConditionModel`` with
    cross-attention on class tokens, :func:`cond_class_unet`)."""
    if backbone not in ("class", "cond"):
        raise ValueError(f"backbone must be 'class' or 'cond', got {backbone!r}")
    make = cond_class_unet if backbone == "cond" else class_unet
    torch.manual_seed(0)
    base, delta = make(size, 16).to(device), make(size, 8).to(device)
    ours = DeltaGuidedUNet(base, delta).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    c = torch.randint(0, 2, (batch,), generator=g).to(device)
    plain = make(size, 16).to(device)
    floor = "UNet2DConditionModel base step" if backbone == "cond" else "UNet2DModel base step"

    def step(m):
        def run():
            out = m(x, t, class_labels=c)
            out = out[0] if isinstance(out, tuple) else getattr(out, "sample", out)
            out.pow(2).mean().backward()

        return run

    fns = {floor: step(plain), "DeltaGuidedUNet (ours)": step(ours)}
    repo = _official_repo()
    if repo is not None:
        spec = importlib.util.spec_from_file_location(
            "invdiff_official_ewd", repo / "src" / "model" / "epsilon_with_delta.py"
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        tiny = dict(
            block_out_channels=(8, 8),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8,
            norm_num_groups=8,
            layers_per_block=1,
            attention_head_dim=2,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            off = mod.EpsilonWithDelta(pretrain_unet=base, delta=delta, delta_ratio=-1, **tiny)
        fns["official EpsilonWithDelta"] = step(off.to(device))
    rows = compare(
        fns,
        reference="official EpsilonWithDelta" if repo else floor,
        device=device,
        label=f"batch {batch}, {size}x{size}, {backbone} base (16,32) + delta (8,16), fwd+bwd",
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}


@register_bench("vision", "invdiff_grouper")
def bench_invdiff_grouper(
    *, device: str = "cpu", quick: bool = False, n: int = 720, n_groups: int = 8
) -> dict:
    """Group inference (500 Adam steps on ``n`` per-sample losses): our :func:`infer_groups` vs
    the official ``optimize_weights`` (with ``INVDIFF_OFFICIAL_REPO`` set to a checkout)."""
    import contextlib
    import io

    g = torch.Generator().manual_seed(0)
    losses = torch.rand(n, generator=g)
    fns = {"infer_groups (ours)": lambda: infer_groups(losses, n_groups, generator=g)}
    repo = _official_repo()
    if repo is not None:
        off = _official_function(
            repo / "src" / "group" / "train_group.py", "optimize_weights", loss_not_zero_weight=0
        )

        def official():
            with contextlib.redirect_stdout(io.StringIO()):
                off(losses.reshape(-1, 1), n_groups, device=device)

        fns["official optimize_weights"] = official
    rows = compare(
        fns,
        reference="official optimize_weights" if repo else "infer_groups (ours)",
        device=device,
        label=f"{n} samples, {n_groups} groups, 500 steps",
        **_repeats(quick),
    )
    return {"rows": rows, "machine": machine(device)}
