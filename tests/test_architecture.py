"""Architecture rules checked on the source tree: dependency direction between packages, no
namespace ``__init__.py``, no unpickling, light imports."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
ALLOWED = {"core": set(), "optim": {"core"}}


def _sources(pkg):
    return sorted((ROOT / "packages" / pkg / "src").rglob("*.py"))


def _imported_domains(path):
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            if n.startswith("invariance."):
                found.add(n.split(".")[1])
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_dependency_direction(pkg):
    allowed = ALLOWED.get(pkg, {"core", "optim"}) | {pkg}
    for path in _sources(pkg):
        bad = _imported_domains(path) - allowed
        assert not bad, f"{path.relative_to(ROOT)} imports invariance.{sorted(bad)}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_member_layout(pkg):
    base = ROOT / "packages" / pkg
    assert not (base / "src" / "invariance" / "__init__.py").exists(), "namespace must stay PEP 420"
    assert (base / "src" / "invariance" / pkg / "__init__.py").exists()
    assert (base / "README.md").exists()
    meta = tomllib.loads((base / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"invariance-{pkg}"
    assert meta["tool"]["uv"]["build-backend"]["module-name"] == f"invariance.{pkg}"
    deps = " ".join(meta["project"]["dependencies"])
    for other in PACKAGES:
        if other != pkg and f"invariance-{other}" in deps:
            assert other in ALLOWED.get(pkg, {"core", "optim"}), f"{pkg} depends on {other}"
    if pkg != "core":
        assert f"invariance-{pkg}" in meta["project"]["scripts"]


def test_nothing_unpickles():
    pat = re.compile(r"\bpickle\.loads?\(|torch\.load\((?![^)]*weights_only\s*=\s*True)")
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in PACKAGES
        for p in _sources(pkg)
        if pat.search(p.read_text())
    ]
    assert not offenders, offenders


def test_import_core_stays_light():
    code = (
        "import sys, invariance.core; heavy = [m for m in ('torch_geometric', 'transformers', "
        "'diffusers', 'torchaudio', 'torchvision', 'scanpy', 'rdkit', 'matplotlib', "
        "'jsonargparse') if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import invariance.core pulled in {out.stdout.strip()}"
