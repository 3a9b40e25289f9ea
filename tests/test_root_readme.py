"""The root README: its python snippet runs, and it shows the two commands CI and users rely on."""

from pathlib import Path

from invariance.core.testing import run_readme_snippets

README = Path(__file__).parents[1] / "README.md"


def test_root_readme_snippets_run():
    assert run_readme_snippets(README) >= 1


def test_root_readme_shows_main_and_test_commands():
    text = README.read_text()
    assert "uv run invariance reproduce --quick" in text and "uv run pytest" in text
