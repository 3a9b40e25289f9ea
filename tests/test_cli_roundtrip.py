"""CLI round trip through real console scripts: ``train`` writes ``config.yaml``; ``--config``
replays it with identical metrics; bad arguments exit 2 without a traceback; the umbrella lists
every installed package."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TOY = (
    "import sys; from invariance.core._toy import register_toy; register_toy();"
    "from invariance.core.cli import build_cli; sys.exit(build_cli('coretoy')(sys.argv[1:]))"
)


def _run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def test_train_config_replay_gives_identical_metrics(tmp_path):
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    a = _run(
        [
            sys.executable,
            "-c",
            TOY,
            "train",
            "toy_norm",
            "--out",
            str(r1),
            "--quiet",
            "--cfg.steps",
            "30",
            "--seed",
            "3",
        ]
    )
    assert a.returncode == 0, a.stderr
    b = _run(
        [
            sys.executable,
            "-c",
            TOY,
            "train",
            "toy_norm",
            "--config",
            str(r1 / "config.yaml"),
            "--out",
            str(r2),
            "--quiet",
        ]
    )
    assert b.returncode == 0, b.stderr
    m1, m2 = (r1 / "metrics.jsonl").read_text(), (r2 / "metrics.jsonl").read_text()
    assert m1 == m2 and m1.count("\n") >= 3


def _domains_with_cli():
    # look at files, not imports: collection must not import every package
    root = Path(__file__).parents[1] / "packages"
    return sorted(
        p.parents[3].name for p in root.glob("*/src/invariance/*/cli.py") if p.parent.name != "core"
    )


@pytest.mark.skipif(shutil.which("invariance", path=str(BIN)) is None, reason="not installed")
@pytest.mark.parametrize("domain", _domains_with_cli())
def test_domain_console_script_usage_errors(domain):
    # one process per domain (each pays the package's import): a bad argument exits 2 with usage
    bad = _run([str(BIN / f"invariance-{domain}"), "train", "--no-such-flag"])
    assert bad.returncode == 2 and "usage:" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(shutil.which("invariance", path=str(BIN)) is None, reason="not installed")
def test_umbrella_usage_errors_and_listing():
    bad = _run([str(BIN / "invariance"), "frobnicate"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    ok = _run([str(BIN / "invariance"), "list"])
    assert ok.returncode == 0, ok.stderr
    assert "domain" in ok.stdout
