"""Test helpers for the packages' suites: the registry contract every method passes, README
snippets executed as tests, and optional-dependency markers. Re-exported by
:mod:`invariance.core.testing`."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_contract", "readme_snippets", "run_readme_snippets", "with_package"]


def with_package(*names: str):
    """``pytest.mark.skipif`` unless every named package is importable (like PyG's withPackage)."""
    import pytest

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


def readme_snippets(path: str | Path) -> list[str]:
    """The ```python code blocks of a README (run them in a test so the docs stay true)."""
    text = Path(path).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run_readme_snippets(path: str | Path) -> int:
    """Execute every python block of a README in one fresh namespace; returns how many ran."""
    blocks = readme_snippets(path)
    ns: dict[str, Any] = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{path}:block{i}", "exec"), ns)
        except Exception as e:
            raise AssertionError(
                f"README block {i} of {path} failed: {type(e).__name__}: {e}"
            ) from e
    return len(blocks)


def run_contract(info: Any, size: str = "tiny", *, seed: int = 0) -> None:
    """Registry contract for one method (the timm pattern): on the tiny preset,

    * a forward/``step`` on real data gives a finite ``"loss"``;
    * backward reaches every parameter that requires grad (unless the recipe lists exceptions in
      ``Recipe.unused_parameters``);
    * a ``state_dict`` round trip gives the same loss (eval mode);
    * ``repr`` works;
    * every declared check in ``Recipe.check`` passes (negative controls included).
    """
    __tracebackhide__ = True
    from invariance.core.recipe import make_config
    from invariance.core.seed import seed_everything
    from invariance.core.testing import DEFAULT_MIN_VARIATION

    recipe = info.recipe()
    cfg = make_config(recipe, size)
    seed_everything(seed)
    data = recipe.make_data(cfg, "train")
    if len(data) == 0:
        raise AssertionError(f"{info.name}: make_data returned an empty dataset")
    model = recipe.build(cfg)
    repr(model)
    batch = recipe.collate([data[i] for i in range(min(len(data), max(2, cfg.batch_size)))])
    model.train()
    out = recipe.step(model, batch)
    if "loss" not in out:
        raise AssertionError(
            f"{info.name}: step() must return a dict with 'loss', got {sorted(out)}"
        )
    loss = out["loss"]
    if not torch.isfinite(loss).all():
        raise AssertionError(f"{info.name}: non-finite loss {loss}")
    model.zero_grad(set_to_none=True)
    loss.backward()
    allowed = set(getattr(recipe, "unused_parameters", ()))
    dead = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.grad is None and not any(n.startswith(a) for a in allowed)
    ]
    if dead:
        raise AssertionError(f"{info.name}: no gradient reaches {dead[:8]}")
    model.eval()
    seed_everything(seed)
    with torch.no_grad():
        ref = recipe.step(model, batch)["loss"]
    clone = recipe.build(cfg)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    seed_everything(seed)
    with torch.no_grad():
        again = recipe.step(clone, batch)["loss"]
    if not torch.allclose(ref, again, rtol=1e-5, atol=1e-6):
        raise AssertionError(
            f"{info.name}: state_dict round trip changed the loss {ref} -> {again}"
        )
    results = recipe.check(model, cfg)
    bad = [r for r in results if not r.passed]
    if bad:
        raise AssertionError(
            f"{info.name}: declared checks failed: "
            + "; ".join(f"{r.name} error={r.error:.3g} tol={r.tol:.1g} {r.detail}" for r in bad)
        )
    if results and not any(r.negative_control for r in results):
        raise AssertionError(f"{info.name}: check() has no negative control")
    vacuous = [
        r.name
        for r in results
        if not r.negative_control
        and r.variation is not None
        and r.variation < DEFAULT_MIN_VARIATION
    ]
    if vacuous:
        raise AssertionError(
            f"{info.name}: vacuous checks (outputs barely vary across the inputs): {vacuous}"
        )
