"""Plots of the ``marl_rbc`` reproduce: Nusselt series, training curves, temperature snapshots and
a GIF of the temperature field (matplotlib, imported lazily; nothing is written without it)."""

from __future__ import annotations

from typing import Any

import torch

from invariance.control.envs import RBCSetup

__all__ = ["GIF_ARMS", "animation", "plots"]


def plots(run: Any, setup: RBCSetup, series: dict, snaps: dict, curves: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import TwoSlopeNorm
    except ImportError:
        return []
    out = []
    hold = setup.hold_steps * setup.dt
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    for a, nu in series.items():
        t = hold * torch.arange(1, len(nu) + 1)
        ax[0].plot(t, nu, label=a)
    ax[0].set(xlabel="time (free-fall units)", ylabel="Nu (volume)", title="seed 0, evaluation")
    ax[0].legend(fontsize=8)
    for a, cs in curves.items():
        for i, c in enumerate(cs):
            ax[1].plot(
                range(1, len(c) + 1),
                c,
                color="C4" if a == "marl_ppo" else "C3",
                alpha=0.7,
                label=a if i == 0 else None,
            )
    ax[1].set(xlabel="CFD episode (training)", ylabel="episode-mean Nu", title="training")
    ax[1].legend(fontsize=8)
    out.append(str(run.savefig(fig, "marl_rbc_nusselt")))
    fig, axs = plt.subplots(len(snaps), 1, figsize=(7, 1.7 * len(snaps)), squeeze=False)
    for axi, (a, T) in zip(axs[:, 0], snaps.items()):
        axi.imshow(
            T.numpy(),
            origin="lower",
            cmap="RdBu_r",
            norm=TwoSlopeNorm(vmin=0.0, vcenter=0.5, vmax=1.75),
            aspect="auto",
            extent=(0, setup.lx, 0, 1),
        )
        axi.set_ylabel(a, fontsize=8)
        axi.set_xticks([])
        axi.set_yticks([])
    axs[0, 0].set_title("temperature at the end of the evaluation episode (seed 0)")
    out.append(str(run.savefig(fig, "marl_rbc_temperature")))
    return out


GIF_ARMS = ("uncontrolled", "sarl_ppo", "marl_ppo")


def animation(run: Any, setup: RBCSetup, frames: dict, series: dict) -> list[str]:
    """A GIF of the temperature field over the evaluation episode of seed 0: uncontrolled, SARL
    and MARL side by side (one frame per action); ``[]`` if matplotlib/pillow are missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.animation import FuncAnimation, PillowWriter
        from matplotlib.colors import TwoSlopeNorm
    except ImportError:
        return []
    arms = [a for a in GIF_ARMS if a in frames]
    n_frames = min(len(frames[a]) for a in arms)
    hold = setup.hold_steps * setup.dt
    fig, axs = plt.subplots(len(arms), 1, figsize=(6, 1.55 * len(arms) + 0.4), squeeze=False)
    norm = TwoSlopeNorm(vmin=0.0, vcenter=0.5, vmax=1.75)
    ims, labels = [], []
    for ax, a in zip(axs[:, 0], arms):
        ims.append(
            ax.imshow(
                frames[a][0].numpy(),
                origin="lower",
                cmap="RdBu_r",
                norm=norm,
                interpolation="bilinear",
                aspect="auto",
                extent=(0, setup.lx, 0, 1),
            )
        )
        labels.append(ax.set_title(a, fontsize=8, loc="left"))
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()

    def draw(k: int):
        for im, lab, a in zip(ims, labels, arms):
            im.set_data(frames[a][k].numpy())
            nu = f", Nu {float(series[a][k - 1]):.3f}" if k > 0 else ""
            lab.set_text(f"{a}: t = {k * hold:.1f}{nu}")
        return ims + labels

    anim = FuncAnimation(fig, draw, frames=n_frames, blit=False)
    path = run.path / "marl_rbc_temperature.gif"
    try:
        anim.save(str(path), writer=PillowWriter(fps=4), dpi=80)
    except (ImportError, RuntimeError, ValueError):
        return []
    finally:
        plt.close(fig)
    return [str(path)]
