"""timm's own optimizer test-suite run against our AdamP/SGDP registered in place of timm's.

The suite is ``tests/test_optim.py`` of the timm sdist of the *installed* timm version (timm's
wheel does not ship its tests; nothing of it is copied into this repository). It is looked up in
``$INVARIANCE_TIMM_SDIST`` (a ``timm-<version>.tar.gz`` or an unpacked sdist folder), then in
``~/.cache/invariance-optim/timm-<version>/``, then fetched with
``pip download --no-deps --no-binary :all: timm==<version>`` into that cache. The test skips only
when timm is not installed; a suite that cannot be found or fetched is a failure.

Every test of the suite whose id names ``adamp`` or ``sgdp`` runs (timm's caution variants
``cadamp``/``csgdp`` are timm's own classes and are not selected): a subprocess runs pytest on a
copy of the file next to a ``conftest.py`` that registers :class:`invariance.optim.AdamP` and
:class:`invariance.optim.SGDP` under timm's names (timm's registry defaults kept) and asserts the
swap before the first test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

timm = pytest.importorskip("timm")

CONFTEST = """
import dataclasses
import importlib.util
import sys
import types
import unittest

import pytest

if importlib.util.find_spec("expecttest") is None:
    # torch.testing._internal.common_utils (imported by the suite for its TestCase.assertEqual)
    # needs expecttest only as a base class; it is a torch test dependency we do not install
    _stub = types.ModuleType("expecttest")
    _stub.TestCase = unittest.TestCase
    sys.modules["expecttest"] = _stub

import timm.optim._optim_factory as factory

from invariance.optim import SGDP, AdamP

_reg = factory.default_registry
for _name, _cls in (("adamp", AdamP), ("sgdp", SGDP)):
    _info = _reg.get_optimizer_info(_name)
    # our SGDP takes eps (timm's registry entry already says so); keep timm's defaults
    _reg.register(dataclasses.replace(_info, opt_class=_cls, has_eps=True))


@pytest.fixture(autouse=True)
def _ours_registered():
    for _name, _cls in (("adamp", AdamP), ("sgdp", SGDP)):
        assert _reg.get_optimizer_class(_name, bind_defaults=False) is _cls
"""


def _cache_dir(version: str) -> Path:
    return Path.home() / ".cache" / "invariance-optim" / f"timm-{version}"


def _extract(sdist: Path, version: str, dest: Path) -> Path | None:
    if sdist.is_dir():
        hit = next(iter(sorted(sdist.rglob("tests/test_optim.py"))), None)
        return hit
    member = f"timm-{version}/tests/test_optim.py"
    with tarfile.open(sdist) as tar:
        try:
            f = tar.extractfile(member)
        except KeyError:
            return None
        if f is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / "test_optim.py"
        out.write_bytes(f.read())
        return out


def _pip_commands() -> list[list[str]]:
    cmds = [[sys.executable, "-m", "pip"]]
    for exe in ("pip", "pip3"):
        path = shutil.which(exe)
        if path:
            cmds.append([path])
    if shutil.which("uv"):
        cmds.append(["uv", "tool", "run", "pip"])
    return cmds


def find_timm_suite(version: str) -> Path:
    """Path of timm ``<version>``'s ``tests/test_optim.py``; fetches the sdist once if needed."""
    cache = _cache_dir(version)
    env = os.environ.get("INVARIANCE_TIMM_SDIST")
    if env:
        hit = _extract(Path(env), version, cache)
        if hit is not None:
            return hit
    if (cache / "test_optim.py").exists():
        return cache / "test_optim.py"
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for pip in _pip_commands():
        cmd = [*pip, "download", "--no-deps", "--no-binary", ":all:", f"timm=={version}", "-d"]
        r = subprocess.run([*cmd, str(cache)], capture_output=True, text=True, timeout=600)
        sdist = cache / f"timm-{version}.tar.gz"
        if r.returncode == 0 and sdist.exists():
            hit = _extract(sdist, version, cache)
            if hit is not None:
                return hit
        errors.append(f"{' '.join(pip)}: {r.stderr.strip()[-200:]}")
    pytest.fail(
        f"timm {version}'s tests/test_optim.py not found: set INVARIANCE_TIMM_SDIST to its sdist "
        f"(pip download --no-deps --no-binary :all: timm=={version}); tried: {errors}"
    )


def test_timm_optimizer_suite_passes_with_our_adamp_sgdp(tmp_path):
    suite = find_timm_suite(timm.__version__)
    shutil.copy(suite, tmp_path / "test_optim.py")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    env = {**os.environ, "TORCH_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    select = "(adamp or sgdp) and not cadamp and not csgdp"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
        + ["-n", "0", "-k", select, "test_optim.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = r.stdout[-3000:] + r.stderr[-2000:]
    assert r.returncode == 0, tail
    passed = re.search(r"(\d+) passed", r.stdout)
    assert passed and int(passed.group(1)) >= 20, tail
    assert not re.search(r"\d+ (failed|error)", r.stdout), tail
