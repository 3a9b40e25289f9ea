"""Shared pieces of the registration recipes (RoITr, PARE-Net; private, not a recipe): the config
fields both use, seeded pair sets cached on disk, training through core's ``fit``, evaluation of
a learned matcher and of FPFH + RANSAC, and the reproduce grid (seeds x arms x test sets)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import TrainConfig
from invariance.core.cache import cache_key
from invariance.core.recipe import ConfigError

from ..registration import RegistrationPair, make_pair, registration_metrics, summarize
from ._common import cosine, plot_arms, seeds_of

__all__ = [
    "RegConfig",
    "PairSet",
    "pair_set",
    "collate_pairs",
    "pair_cache_dir",
    "train_matcher",
    "eval_matcher",
    "eval_fpfh",
    "TEST_SETS",
    "run_registration_grid",
]

#: the test sets of the reproduce: (split, rotation); "z" = aligned up to a yaw
TEST_SETS = (("normal", "z"), ("normal", "so3"), ("low", "z"), ("low", "so3"))


@dataclass
class RegConfig(TrainConfig):
    """Fields shared by the registration recipes (tiny preset = defaults).

    Args:
        n_points: points per fragment. n_train / n_test: training pairs / test pairs per test set.
        split: overlap split of the training pairs (``"full"``, ``"normal"``, ``"low"``).
        train_rotation: rotation of the training pairs (``"z"``: aligned up to a yaw).
        pos_radius: ground-truth matching radius of the losses (positives are points within it
            after the ground-truth motion); scale it with the sampling density, about 2x the
            mean nearest-neighbour spacing (0.1 at 512 points on diameter-2 objects).
        inlier_radius: RANSAC / hypothesis acceptance radius.
        ransac_iterations: RANSAC hypotheses on the learned correspondences.
        test_splits: overlap splits evaluated by ``reproduce`` (comma separated).
        fpfh: run the FPFH + RANSAC arm in ``reproduce`` (needs open3d).
        n_seeds: reproduce seeds.
    """

    steps: int = 20
    batch_size: int = 1
    lr: float = 2e-3
    n_points: int = 256
    n_train: int = 8
    n_test: int = 4
    split: str = "full"
    train_rotation: str = "z"
    pos_radius: float = 0.15
    inlier_radius: float = 0.1
    ransac_iterations: int = 1000
    test_splits: str = "normal,low"
    fpfh: bool = True
    n_seeds: int = 3

    ranges: ClassVar[dict] = {
        "lr": (0.0, 1.0),
        "n_points": (64, None),
        "n_train": (1, None),
        "n_test": (1, None),
        "pos_radius": (1e-3, 2.0),
        "inlier_radius": (1e-3, 2.0),
        "ransac_iterations": (1, None),
        "n_seeds": (1, 50),
    }
    choices: ClassVar[dict] = {
        "split": ("full", "normal", "low"),
        "train_rotation": ("so3", "z", "none"),
    }

    def validate(self) -> None:
        super().validate()
        bad = [s for s in self.splits() if s not in ("full", "normal", "low")]
        if bad or not self.splits():
            raise ConfigError(
                f"{type(self).__name__}.test_splits must list splits among full, normal, low "
                f"(comma separated), got {self.test_splits!r}"
            )

    def splits(self) -> list[str]:
        return [s.strip() for s in str(self.test_splits).split(",") if s.strip()]


def pair_cache_dir() -> Path:
    """``$INVARIANCE_CACHE_DIR/geometry-pairs`` or ``~/.cache/invariance/geometry-pairs``."""
    root = os.environ.get("INVARIANCE_CACHE_DIR") or str(Path.home() / ".cache" / "invariance")
    return Path(root) / "geometry-pairs"


_MEMO: dict[str, list[RegistrationPair]] = {}


def pair_set(n: int, seed: int, **kw: Any) -> list[RegistrationPair]:
    """``n`` pairs ``make_pair(seed * 1_000_003 + i, **kw)``, generated once per setting and kept
    in memory and on disk (:func:`pair_cache_dir`, one ``.pt`` file per setting), so seeds and
    arms that share a set reuse it."""
    key = cache_key({"n": n, "seed": seed, "kw": kw, "v": 1})
    if key in _MEMO:
        return _MEMO[key]
    path = pair_cache_dir() / f"{key}.pt"
    pairs = None
    if path.is_file():
        try:
            pairs = [RegistrationPair(**d) for d in torch.load(path, weights_only=True)]
        except Exception:  # a damaged file is regenerated
            pairs = None
    if pairs is None or len(pairs) != n:
        pairs = [make_pair(seed * 1_000_003 + i, **kw) for i in range(n)]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save([dataclasses.asdict(p) for p in pairs], tmp)
            os.replace(tmp, path)
        except OSError:  # read-only home: keep the in-memory copy only
            pass
    _MEMO[key] = pairs
    return pairs


class PairSet(Dataset):
    """A list of :class:`RegistrationPair` as a dataset of ``as_dict`` items."""

    def __init__(self, pairs: Sequence[RegistrationPair]) -> None:
        if not pairs:
            raise ValueError("pairs is empty")
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def pair(self, i: int) -> RegistrationPair:
        return self.pairs[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.pairs[i].as_dict()


def collate_pairs(items: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Pairs have different sizes after cropping: a batch is the list of pair dicts."""
    return list(items)


def mean_losses(outs: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Average per-pair loss dicts."""
    return {k: torch.stack([torch.as_tensor(o[k]) for o in outs]).mean() for k in outs[0]}


def train_matcher(
    model: nn.Module,
    cfg: Any,
    pairs: Sequence[RegistrationPair],
    step_fn: Callable[[nn.Module, Any], dict],
) -> nn.Module:
    """``cfg.optimizer`` with a cosine schedule through core's ``fit`` (seeded); eval mode."""
    from invariance.core.train import build_optimizer, fit

    torch.manual_seed(cfg.seed)
    opt = build_optimizer(model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ds = PairSet(pairs)
    fit(
        model,
        opt,
        ds,
        step_fn,
        steps=cfg.steps,
        batch_size=min(cfg.batch_size, len(ds)),
        collate_fn=collate_pairs,
        scheduler=cosine(cfg, opt),
        seed=cfg.seed,
        progress=False,
        log_every=0,
    )
    return model.eval()


@torch.no_grad()
def eval_matcher(
    register: Callable[[RegistrationPair], tuple[Tensor, Tensor, Tensor, Tensor]],
    pairs: Sequence[RegistrationPair],
) -> dict[str, float]:
    """``register(pair) -> (R, t, src_corr, tgt_corr)`` on every pair; RR, median RRE/RTE,
    mean IR and the mean seconds per pair."""
    rows, secs = [], 0.0
    for p in pairs:
        t0 = time.perf_counter()
        R, t, sc, tc = register(p)
        secs += time.perf_counter() - t0
        rows.append(registration_metrics(p.src, R, t, p.R, p.t, src_corr=sc, tgt_corr=tc))
    s = summarize(rows)
    s.pop("pairs", None)
    s["seconds"] = secs / len(pairs)
    return s


def eval_fpfh(pairs: Sequence[RegistrationPair]) -> dict[str, float]:
    """FPFH + RANSAC (open3d) on every pair: RR, median RRE/RTE, seconds per pair."""
    from ..registration.fpfh import fpfh_ransac

    rows, secs = [], 0.0
    for i, p in enumerate(pairs):
        t0 = time.perf_counter()
        r = fpfh_ransac(p.src.double(), p.tgt.double(), seed=i)
        secs += time.perf_counter() - t0
        rows.append(registration_metrics(p.src, r.R.to(p.src), r.t.to(p.src), p.R, p.t))
    s = summarize(rows)
    s.pop("pairs", None)
    s["seconds"] = secs / len(pairs)
    return s


def heldout_pairs(cfg: Any, seed: int, split: str, rotation: str) -> list[RegistrationPair]:
    """The test set of one seed: ``cfg.n_test`` pairs of ``split`` with ``rotation``. The same
    geometry for both rotations (same pair seeds), so aligned vs rotated is a paired comparison."""
    return pair_set(
        cfg.n_test, 50_000 + seed, n_points=cfg.n_points, split=split, rotation=rotation
    )


def train_pairs(cfg: Any) -> list[RegistrationPair]:
    return pair_set(
        cfg.n_train,
        7 * cfg.seed + 1,
        n_points=cfg.n_points,
        split=cfg.split,
        rotation=cfg.train_rotation,
    )


def run_registration_grid(
    cfg: Any,
    run: Any,
    *,
    arms: dict[str, Callable[[Any], nn.Module]],
    step_fn: Callable[[nn.Module, Any], dict],
    register_fn: Callable[[nn.Module, Any], Callable[[RegistrationPair], tuple]],
    extra_eval: Callable[[str, nn.Module, Any, list[RegistrationPair], str], dict] | None = None,
) -> tuple[dict[str, dict[str, list[dict[str, float]]]], dict[str, nn.Module]]:
    """For each seed and arm: train on :func:`train_pairs`, evaluate every test set
    (``cfg.splits()`` x aligned/SO(3)); FPFH + RANSAC as one more arm when ``cfg.fpfh``.

    Returns ``{arm: {test_set: [metrics per seed]}}`` (test set ``"<split>/<rotation>"``) and
    the first seed's trained models."""
    res: dict[str, dict[str, list[dict[str, float]]]] = {}
    kept: dict[str, nn.Module] = {}
    tests = [(s, r) for s in cfg.splits() for r in ("z", "so3")]
    for seed in seeds_of(cfg):
        c = dataclasses.replace(cfg, seed=seed)
        train = train_pairs(c)
        for name, build in arms.items():
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = train_matcher(build(c), c, train, step_fn)
            train_s = time.perf_counter() - t0
            kept.setdefault(name, model)
            for split, rot in tests:
                pairs = heldout_pairs(c, seed, split, rot)
                m = eval_matcher(register_fn(model, c), pairs)
                if extra_eval is not None:
                    m.update(extra_eval(name, model, c, pairs, f"{split}/{rot}"))
                m["train_s"] = round(train_s, 2)
                res.setdefault(name, {}).setdefault(f"{split}/{rot}", []).append(m)
                if run is not None:
                    run.log_metrics({"arm": name, "seed": seed, "test": f"{split}/{rot}", **m})
        if c.fpfh:
            for split, rot in tests:
                m = eval_fpfh(heldout_pairs(c, seed, split, rot))
                res.setdefault("fpfh", {}).setdefault(f"{split}/{rot}", []).append(m)
                if run is not None:
                    run.log_metrics({"arm": "fpfh", "seed": seed, "test": f"{split}/{rot}", **m})
    return res, kept


def grid_values(res: dict, arm: str, test: str, key: str = "rr") -> list[float]:
    return [float(m[key]) for m in res[arm][test]]


def grid_table(res: dict, keys: Sequence[str] = ("rr", "median_rre", "median_rte", "ir")):
    """``{"<arm> <test>": {metric: "mean ± sd"}}`` for the report."""
    out: dict[str, dict[str, str]] = {}
    for arm, tests in res.items():
        for test, rows in tests.items():
            cell = {}
            for k in keys:
                v = torch.tensor([float(r[k]) for r in rows if k in r], dtype=torch.float64)
                if v.numel():
                    sd = float(v.std()) if v.numel() > 1 else 0.0
                    cell[k] = f"{float(v.mean()):.3g} ± {sd:.2g}"
            out[f"{arm} {test}"] = cell
    return out


def grid_plot(run: Any, res: dict, *, title: str, name: str) -> list[str]:
    values = {f"{a} {t}": grid_values(res, a, t) for a in res for t in res[a]}
    return plot_arms(run, values, metric="registration recall", title=title, name=name)
