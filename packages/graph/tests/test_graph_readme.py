import pathlib
import re


def test_graph_readme_snippet_runs():
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python snippet"
    exec(compile(blocks[0], "README.md", "exec"), {})
