"""Console script ``invariance-vision`` (list / train / eval / check / reproduce / bench).

Besides the core CLI's ``--cfg.<field>`` options, the galaxy recipes accept
``--backend torch|galsim`` as a short form of ``--cfg.backend``
(``invariance-vision train galaxy --backend galsim`` trains on GalSim-rendered images; needs
``pip install invariance-vision[galsim]``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import invariance.vision  # noqa: F401  (registers the methods and benches)
from invariance.core.cli import build_cli

_core_main = build_cli("vision")

#: methods whose config has a ``backend`` field, and the commands that take a config
_BACKEND_METHODS = ("galaxy", "galaxy_mean")
_CONFIG_COMMANDS = ("train", "eval", "check", "reproduce")


def _expand_short_options(args: list[str]) -> list[str]:
    """``--backend X`` / ``--backend=X`` -> ``--cfg.backend X`` for the galaxy recipes."""
    if len(args) < 2 or args[0] not in _CONFIG_COMMANDS or args[1] not in _BACKEND_METHODS:
        return args
    out = []
    for a in args:
        if a == "--backend":
            out.append("--cfg.backend")
        elif a.startswith("--backend="):
            out.append("--cfg.backend=" + a.split("=", 1)[1])
        else:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return _core_main(_expand_short_options(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
