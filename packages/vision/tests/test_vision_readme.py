import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_vision_readme_usage_snippet_runs():
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


def test_vision_readme_lists_every_method():
    import invariance.vision  # noqa: F401
    from invariance.core.registry import list_methods

    text = README.read_text()
    for m in list_methods("vision"):
        assert f"`{m.name}`" in text, m.name
