import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_snippet_runs():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python snippet"
    exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme"})


def test_readme_has_no_placeholder():
    assert "PLACEHOLDER" not in README.read_text()
