from pathlib import Path

from invariance.causal.cli import main
from invariance.core.testing import run_readme_snippets

README = Path(__file__).parents[1] / "README.md"


def test_causal_readme_snippets_run():
    assert run_readme_snippets(README) >= 1


def test_causal_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("pac_invariance", "causal_de_finetti", "medl"):
        assert name in out


def test_causal_cli_check(capsys):
    assert main(["check", "pac_invariance", "--quiet"]) in (0, None)
