"""Record AdamP/SGDP golden values by running the reference packages (adamp 0.3.0, timm)."""

import json
import sys
from importlib.metadata import version

import adamp
import timm.optim as to
import torch

from invariance.optim._testing import run_parity_problem, which_views_fire

CFGS = {
    "adamp": ("adamp", "AdamP", dict(lr=1e-2, weight_decay=1e-2)),
    "adamp_nesterov": ("adamp", "AdamP", dict(lr=1e-2, weight_decay=1e-2, nesterov=True)),
    "sgdp": ("adamp", "SGDP", dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "sgdp_nesterov": (
        "adamp",
        "SGDP",
        dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    ),
    "timm_adamp": ("timm", "AdamP", dict(lr=1e-2, weight_decay=1e-2)),
    "timm_sgdp": ("timm", "SGDP", dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
}
out = {
    "provenance": {
        "packages": {
            "adamp": version("adamp"),
            "timm": version("timm"),
            "torch": torch.__version__,
        },
        "command": "/work/main/.venv/bin/python /work/scratch/optim/record_adamp_golden.py",
        "problem": "invariance.optim._testing.run_parity_problem(seed=0, steps=15, dtype=float64)",
        "views_at_step_1": which_views_fire(),
    },
    "configs": {},
}
for name, (pkg, cls, kw) in CFGS.items():
    mod = adamp if pkg == "adamp" else to
    C = getattr(mod, cls)
    P = run_parity_problem(lambda ps, C=C, kw=kw: C(ps, **kw))
    out["configs"][name] = {
        "package": pkg,
        "class": cls,
        "kwargs": kw,
        "params": {k: v.flatten().tolist() for k, v in P.items()},
    }
json.dump(out, open(sys.argv[1], "w"), indent=0)
