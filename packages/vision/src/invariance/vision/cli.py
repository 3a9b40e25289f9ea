"""Console script ``invariance-vision`` (list / train / eval / check / reproduce / bench).

Besides the core CLI's ``--cfg.<field>`` options, the galaxy recipes accept
``--backend torch|galsim`` as a short form of ``--cfg.backend``
(``invariance-vision train galaxy --backend galsim`` trains on GalSim-rendered images; needs
``pip install invariance-vision[galsim]``), and ``invdiff`` accepts ``--backbone class|cond``
for ``--cfg.backbone`` (``UNet2DModel`` with class embeddings or ``UNet2DConditionModel`` with
cross-attention).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import invariance.vision  # noqa: F401  (registers the methods and benches)
from invariance.core.cli import build_cli

_core_main = build_cli("vision")

#: short options (``--NAME X`` -> ``--cfg.NAME X``) and the methods whose config has the field
_SHORT_OPTIONS = {"backend": ("galaxy", "galaxy_mean"), "backbone": ("invdiff",)}
_CONFIG_COMMANDS = ("train", "eval", "check", "reproduce")


def _expand_short_options(args: list[str]) -> list[str]:
    """``--backend X`` (galaxy recipes) / ``--backbone X`` (invdiff), also with ``=``, become
    ``--cfg.<name> X``."""
    if len(args) < 2 or args[0] not in _CONFIG_COMMANDS:
        return args
    names = [n for n, methods in _SHORT_OPTIONS.items() if args[1] in methods]
    out = []
    for a in args:
        for n in names:
            if a == f"--{n}":
                a = f"--cfg.{n}"
            elif a.startswith(f"--{n}="):
                a = f"--cfg.{n}=" + a.split("=", 1)[1]
        out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return _core_main(_expand_short_options(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
