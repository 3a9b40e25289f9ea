import pathlib
import re


def test_control_readme_snippet_runs():
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python snippet"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_control_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, invariance.control; "
        "bad = [m for m in ('stable_baselines3', 'matplotlib') if m in sys.modules]; "
        "print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
