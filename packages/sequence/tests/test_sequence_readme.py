from pathlib import Path

from invariance.core.testing import run_readme_snippets


def test_sequence_readme_snippets_run():
    assert run_readme_snippets(Path(__file__).parents[1] / "README.md") >= 1
