import invariance.geometry  # noqa: F401
from invariance.core.bench import list_benches
from invariance.geometry.cli import main


def test_geometry_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("frame_averaging", "tinvnn", "eqmotion", "risurconv"):
        assert name in out


def test_geometry_benches_registered():
    assert {n for _, n in list_benches("geometry")} >= {"knn", "fa_overhead"}


def test_geometry_bench_knn_runs(capsys):
    assert (
        main(["bench", "knn", "--n_points", "64", "--batch", "2", "--k", "4", "--quick", "true"])
        == 0
    )
    assert "indices_equal" in capsys.readouterr().out
