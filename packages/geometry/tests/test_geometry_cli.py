import pytest

import invariance.geometry  # noqa: F401
from invariance.core.bench import list_benches
from invariance.geometry.cli import main


def test_geometry_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("frame_averaging", "tinvnn", "eqmotion", "risurconv", "roitr", "pare_net"):
        assert name in out


def test_geometry_benches_registered():
    assert {n for _, n in list_benches("geometry")} >= {
        "knn",
        "fa_overhead",
        "registration",
        "pare_hypotheses",
    }


def test_geometry_bench_knn_runs(capsys):
    assert (
        main(["bench", "knn", "--n_points", "64", "--batch", "2", "--k", "4", "--quick", "true"])
        == 0
    )
    assert "indices_equal" in capsys.readouterr().out


@pytest.mark.slow
def test_geometry_bench_registration_runs(capsys):
    """~25 s on a loaded 2-core box (open3d import, a dozen timed candidates)."""
    args = [
        "--n_points",
        "128",
        "--n_corr",
        "64",
        "--iterations",
        "20",
        "--ot_batch",
        "2",
        "--ot_size",
        "8",
        "--repeats",
        "1",
        "--quick",
        "true",
    ]
    assert main(["bench", "registration", *args]) == 0
    out = capsys.readouterr().out
    for op in ("knn", "fps", "ppf", "sinkhorn", "ransac"):
        assert op in out
