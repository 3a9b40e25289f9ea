"""The shared argument checks: wrong types raise TypeError, wrong values ValueError, both naming
the argument; good values pass through."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invariance.core.checks import check_choice, check_float, check_int, check_seed, check_tensor


def test_check_int():
    assert check_int("n", 3, lo=1) == 3
    assert check_int("n", np.int64(4), 1, 5) == 4 and type(check_int("n", np.int64(4))) is int
    with pytest.raises(TypeError, match="^n must be an int"):
        check_int("n", True)
    with pytest.raises(TypeError, match="^n must be an int"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0"):
        check_int("n", 0, lo=1)
    with pytest.raises(ValueError, match=r"^n must be in \[1, 5\], got 6"):
        check_int("n", 6, 1, 5)
    with pytest.raises(ValueError, match=r"^n must be <= 5"):
        check_int("n", 6, hi=5)


def test_check_float():
    assert check_float("lr", 1) == 1.0 and isinstance(check_float("lr", 1), float)
    assert check_float("p", 1.0, 0.0, 1.0) == 1.0
    with pytest.raises(TypeError, match="^lr must be a number"):
        check_float("lr", "0.1")
    with pytest.raises(TypeError, match="^lr must be a number"):
        check_float("lr", False)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="^lr must be finite"):
            check_float("lr", bad)
    with pytest.raises(ValueError, match=r"^lr must be > 0"):
        check_float("lr", 0.0, 0.0, lo_open=True)
    with pytest.raises(ValueError, match=r"^p must be in \[0.0, 1.0\)"):
        check_float("p", 1.0, 0.0, 1.0, hi_open=True)


def test_check_choice_and_seed():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="^mode must be one of"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(TypeError, match="^mode must be a str"):
        check_choice("mode", 1, ("a", "b"))
    assert check_seed(None) == 0 and check_seed(np.int32(3)) == 3
    with pytest.raises(TypeError, match="^seed must be an int"):
        check_seed(1.5)


def test_check_tensor():
    x = torch.randn(2, 3)
    assert check_tensor("x", x, ndim=2, floating=True) is x
    assert check_tensor("x", x, ndim=(1, 2)) is x
    with pytest.raises(TypeError, match="^x must be a torch.Tensor of shape"):
        check_tensor("x", [1.0], expected="of shape (N, 3)")
    with pytest.raises(ValueError, match="^x must have 3 dimensions"):
        check_tensor("x", x, ndim=3)
    with pytest.raises(TypeError, match="^x must be a floating-point tensor"):
        check_tensor("x", torch.ones(2, dtype=torch.long), floating=True)
    with pytest.raises(TypeError, match="^x must be a floating-point tensor"):
        check_tensor("x", torch.ones(2, dtype=torch.cfloat), floating=True)
    assert check_tensor(
        "x", torch.ones(2, dtype=torch.cfloat), floating=True, complex_ok=True
    ).is_complex()
    with pytest.raises(TypeError, match="^ids must hold integer ids"):
        check_tensor("ids", torch.ones(2), integer=True)
    with pytest.raises(TypeError, match="^ids must hold integer ids"):
        check_tensor("ids", torch.ones(2, dtype=torch.bool), integer=True)
    with pytest.raises(ValueError, match="^x must not be empty"):
        check_tensor("x", torch.zeros(0, 3))
    assert check_tensor("x", torch.zeros(0, 3), nonempty=False).numel() == 0
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^x must be finite, but it contains NaN"):
        check_tensor("x", bad)
    assert check_tensor("x", bad, finite=False) is bad
    cbad = torch.tensor([complex(float("inf"), 0.0)])
    with pytest.raises(ValueError, match="^z must be finite"):
        check_tensor("z", cbad, complex_ok=True)
    # a tensor that needs grad is checked without error
    w = torch.randn(3, requires_grad=True)
    assert check_tensor("w", w, floating=True) is w


def test_all_finite_matches_elementwise_isfinite():
    from invariance.core.checks import all_finite

    g = torch.Generator().manual_seed(0)
    big = torch.finfo(torch.float32).max
    cases = [
        torch.randn(100, 3, generator=g),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([float("inf"), -float("inf")]),  # the sum is NaN
        torch.tensor([-float("inf"), 2.0]),
        torch.tensor([big, big, -big]),  # finite values whose sum overflows: still finite
        torch.tensor([big, float("nan")]).half().float(),
        torch.tensor([1.0, 2.0], dtype=torch.float16),
        torch.tensor([65504.0, 65504.0], dtype=torch.float16),  # half max: the sum overflows
        torch.tensor([1 + 2j, complex(float("inf"), 0)]),
        torch.tensor([1, 2, 3]),  # integers are always finite
        torch.randn(4, requires_grad=True),
    ]
    for x in cases:
        want = bool(torch.isfinite(x.detach()).all())
        assert all_finite(x) is want, x
    assert [all_finite(c) for c in cases[:5]] == [True, False, False, False, True]


def test_collect_entry_points(tmp_path):
    from invariance.core.testing import collect_entry_points

    (tmp_path / "test_a.py").write_text("ENTRY_POINTS = {'f': (abs, {'x': 1}, {})}\n")
    (tmp_path / "test_b.py").write_text(
        "import math\n\nENTRY_POINTS = {'g': (math.sqrt, {}, {})}\n"
    )
    (tmp_path / "test_c.py").write_text("raise RuntimeError('never imported: no ENTRY_POINTS')\n")
    got = collect_entry_points(tmp_path)
    assert sorted(got) == ["f", "g"] and got["f"][0] is abs
    assert sorted(collect_entry_points(tmp_path, exclude=("test_a.py",))) == ["g"]
    (tmp_path / "test_d.py").write_text("ENTRY_POINTS = {'f': (abs, {}, {})}\n")
    with pytest.raises(ValueError, match="'f' is declared twice"):
        collect_entry_points(tmp_path)


def test_bad_input_summary(tmp_path, capsys):
    from invariance.core.checks import check_float
    from invariance.core.testing import bad_input_summary

    def halve(y):
        return check_float("y", y, 0.0) / 2

    (tmp_path / "test_ok.py").write_text(
        "from invariance.core.checks import check_float\n\n"
        "def scale(x):\n    return 2 * check_float('x', x, 0.0)\n\n"
        "ENTRY_POINTS = {'scale': (scale, {'x': 1.5}, {})}\n"
    )
    reps = bad_input_summary(tmp_path, extra={"halve": (halve, {"y": 1.0}, {})})
    assert [r.name for r in reps] == ["halve", "scale"] and all(r.ok for r in reps)
    assert "total" in capsys.readouterr().out
    (tmp_path / "test_bad.py").write_text(
        "def silent(x):\n    return x * 2\n\nENTRY_POINTS = {'silent': (silent, {'x': 1.5}, {})}\n"
    )
    with pytest.raises(AssertionError, match="silent"):
        bad_input_summary(tmp_path)
    with pytest.raises(AssertionError, match="declares ENTRY_POINTS"):
        bad_input_summary(tmp_path / "missing_dir_is_empty")
