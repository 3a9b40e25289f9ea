"""Recipe of augmentation-invariant speech units: config, the registered ``speech_units``
recipe (one CTC training run = all pseudo-label iterations), ``train_invariant_units`` (the
schedule as a function), the reproduce (per-augmentation UED table, 3 seeds) and the pitch-shift
bench. The mechanism is in :mod:`invariance.sequence.speech_units`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torchaudio.functional as AF
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    fit_recipe,
    make_config,
    register,
)
from invariance.core.bench import compare, machine, register_bench
from invariance.core.groups import Scaling
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_invariant, check_not_invariant, equivariance_error
from invariance.sequence.audio.augment import AUGMENTATIONS, augment, pitch_shift, random_augment
from invariance.sequence.audio.tts import DIGITS, VOICES, make_spoken_corpus
from invariance.sequence.audio.units import (
    log_mel,
    unit_edit_distance,
    unit_perplexity,
    word_accuracy,
)
from invariance.sequence.speech_units import MFCCUnits, SpeechUnits, ctc_unit_loss, pad_features

__all__ = [
    "SpeechUnitsConfig",
    "SpeechUnitsRecipe",
    "prepare_speech_data",
    "train_invariant_units",
    "evaluate_units",
]

#: seed of the test-time augmentations (the same augmented copy of each utterance for every arm)
TEST_AUG_SEED = 1234


@dataclass
class SpeechUnitsConfig(TrainConfig):
    """Spoken digits from eSpeak NG, units from k-means, CTC pseudo-labelling (defaults = tiny).

    Args:
        steps: CTC steps in all, split evenly over ``iterations`` (default: 60).
        iterations: pseudo-label iterations (k-means refit + relabel after each) (default: 2).
        k: codebook size (default: 32).
        augment: train on augmented copies (the method); ``False`` trains on clean audio only
            (the negative control) (default: True).
        n_aug: augmented copies of each training utterance in the pool (default: 2).
        aug_p: probability of each augmentation family in the training chain (default: 0.5).
        hidden / layers: encoder width and depth (default: 48 / 3).
        n_voices: voices of :data:`VOICES` used (default: 4); the last ``n_test_voices`` are held
            out for testing (default: 1).
        rates / pitches: speaking rates (wpm) and pitches, comma lists (default: "150" / "40,60").
        cache_dir: where the synthesised corpus is cached ("" = the default cache) (default: "").
    """

    steps: int = 60
    batch_size: int = 16
    lr: float = 3e-3
    iterations: int = 2
    k: int = 32
    augment: bool = True
    n_aug: int = 2
    aug_p: float = 0.5
    hidden: int = 48
    layers: int = 3
    n_voices: int = 4
    n_test_voices: int = 1
    rates: str = "150"
    pitches: str = "40,60"
    cache_dir: str = ""

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "iterations": (1, 10),
        "k": (2, 512),
        "n_aug": (0, 50),
        "aug_p": (0.0, 1.0),
        "hidden": (1, None),
        "layers": (1, 16),
        "n_voices": (2, len(VOICES)),
        "n_test_voices": (1, len(VOICES) - 1),
    }

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.n_test_voices >= self.n_voices:
            raise ConfigError(f"{name}.n_test_voices must be < n_voices={self.n_voices}")
        if self.steps < self.iterations:
            raise ConfigError(f"{name}.steps must be >= iterations={self.iterations}")
        for field, lo, hi in (("rates", 80, 450), ("pitches", 0, 100)):
            try:
                vals = _ints(getattr(self, field))
            except ValueError:
                raise ConfigError(f"{name}.{field} must be a comma list of ints") from None
            if not vals or any(v < lo or v > hi for v in vals):
                raise ConfigError(f"{name}.{field} must list ints in [{lo}, {hi}]")
        if self.augment and self.n_aug < 1:
            raise ConfigError(f"{name}.n_aug must be >= 1 when augment is on")


def _ints(s: str) -> list[int]:
    return [int(v) for v in str(s).split(",") if v.strip()]


# --------------------------------------------------------------------------- data

_DATA: dict[tuple, dict[str, Any]] = {}
_POOLS: dict[tuple, list] = {}


def prepare_speech_data(cfg: SpeechUnitsConfig) -> dict[str, Any]:
    """The corpus split by voice (train voices / held-out test voices), the base MFCC units of
    the training audio, and the fixed-seed augmented test copies per family (memoised)."""
    key = (cfg.n_voices, cfg.n_test_voices, cfg.rates, cfg.pitches, cfg.k, cfg.seed, cfg.cache_dir)
    if key in _DATA:
        return _DATA[key]
    corpus = make_spoken_corpus(
        DIGITS,
        VOICES[: cfg.n_voices],
        _ints(cfg.rates),
        _ints(cfg.pitches),
        cache_dir=cfg.cache_dir or None,
    )
    test_v = set(range(cfg.n_voices - cfg.n_test_voices, cfg.n_voices))
    is_test = [int(v) in test_v for v in corpus["voice"]]
    tr = [i for i, t in enumerate(is_test) if not t]
    te = [i for i, t in enumerate(is_test) if t]
    audio = corpus["audio"]
    d: dict[str, Any] = {
        "train_audio": [audio[i] for i in tr],
        "train_word": corpus["word"][tr],
        "test_audio": [audio[i] for i in te],
        "test_word": corpus["word"][te],
    }
    g = torch.Generator().manual_seed(TEST_AUG_SEED)
    d["test_aug"] = {k: [augment(a, k, 16000, g) for a in d["test_audio"]] for k in AUGMENTATIONS}
    d["base"] = MFCCUnits(cfg.k, seed=cfg.seed).fit(d["train_audio"])
    d["base_targets"] = d["base"].units(d["train_audio"])
    _DATA[key] = d
    return d


def _pool(cfg: SpeechUnitsConfig, model: SpeechUnits, d: dict[str, Any]) -> list:
    """``[(utterance index, encoder input features)]``: every clean training utterance, plus
    ``n_aug`` random augmentation chains of it when ``augment`` (memoised per seed)."""
    key = (id(d), cfg.augment, cfg.n_aug, cfg.aug_p, cfg.seed, model.n_mels, model.cmvn)
    if key in _POOLS:
        return _POOLS[key]
    g = torch.Generator().manual_seed(cfg.seed + 1)
    pool = []
    for i, a in enumerate(d["train_audio"]):
        pool.append((i, model.input_features(a)))
        if cfg.augment:
            for _ in range(cfg.n_aug):
                pool.append((i, model.input_features(random_augment(a, 16000, g, cfg.aug_p))))
    _POOLS[key] = pool
    return pool


class _Pool(Dataset):
    def __init__(self, pool: list) -> None:
        self.pool = pool

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> dict[str, Any]:
        u, x = self.pool[i]
        return {"x": x, "utt": u}


class _Eval(Dataset):
    """The evaluation split: clean and augmented test audio, and the training audio + labels the
    word classifier is fitted on."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def __len__(self) -> int:
        return len(self.d["test_audio"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"audio": self.d["test_audio"][i], "word": self.d["test_word"][i]}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    if "x" not in items[0]:
        return {
            "audio": [it["audio"] for it in items],
            "word": torch.stack([it["word"] for it in items]),
        }
    x, lens = pad_features([it["x"] for it in items])
    return {"x": x, "lengths": lens, "utt": torch.tensor([it["utt"] for it in items])}


# --------------------------------------------------------------------------- training


def _refit(model: SpeechUnits) -> None:
    """End of an iteration: k-means refit on clean training audio, relabel, fresh CTC head."""
    model.fit_codebook(model.train_audio)
    model.targets = model.units(model.train_audio)
    model.encoder.head.reset_parameters()


def train_invariant_units(cfg: SpeechUnitsConfig) -> tuple[SpeechUnits, dict[str, Any]]:
    """The full schedule: base units as iteration-0 targets; ``iterations`` rounds of CTC
    training (``steps // iterations`` steps each) on the pool, each followed by a k-means refit
    on clean audio and relabelling. Returns the trained units and the prepared data."""
    recipe = SpeechUnitsRecipe()
    model, _ = fit_recipe(recipe, cfg, progress=False)
    return model, prepare_speech_data(cfg)  # type: ignore[return-value]


def evaluate_units(units: Any, d: dict[str, Any], k: int) -> dict[str, float]:
    """UED per augmentation family (fixed-seed test copies), their mean, word accuracy from units
    (classifier fitted on the clean training utterances' units, tested on the held-out voices:
    ``word_acc`` clean, ``word_acc_aug`` augmented, mean over families), codebook perplexity and
    deduplicated units per utterance."""
    clean = units.units(d["test_audio"])
    train_u = units.units(d["train_audio"])
    out: dict[str, float] = {}
    acc_aug = []
    for kind in AUGMENTATIONS:
        aug = units.units(d["test_aug"][kind])
        out[f"ued_{kind}"] = unit_edit_distance(clean, aug)
        acc_aug.append(word_accuracy(train_u, d["train_word"], aug, d["test_word"], k))
    out["ued_mean"] = sum(out[f"ued_{k_}"] for k_ in AUGMENTATIONS) / len(AUGMENTATIONS)
    out["word_acc"] = word_accuracy(train_u, d["train_word"], clean, d["test_word"], k)
    out["word_acc_aug"] = sum(acc_aug) / len(acc_aug)
    out["perplexity"] = unit_perplexity(clean, k)
    out["units_per_utt"] = sum(len(u) for u in clean) / len(clean)
    return out


@register(
    "speech_units",
    domain="sequence",
    paper="Augmentation Invariant Discrete Representation for Generative Spoken Language Modeling",
    authors="Gat, Kreuk, Nguyen, Lee, Copet, Synnaeve, Dupoux, Adi",
    year=2023,
    arxiv="2209.15483",
    code_url="",
    symmetry="units invariant to waveform gain (exact); robust to time stretch, pitch shift, "
    "reverberation and noise (measured by UED)",
    baseline="same CTC pseudo-labelling without augmentation; iteration-0 k-means units",
    tags=("speech", "units", "augmentation", "ctc"),
)
class SpeechUnitsRecipe(Recipe):
    """CTC pseudo-labelling on augmented spoken digits; units compared by UED and word accuracy."""

    Config = SpeechUnitsConfig
    presets = {
        "tiny": {},
        "full": {
            "steps": 480,
            "batch_size": 32,
            "iterations": 3,
            "n_aug": 3,
            "hidden": 64,
            "n_voices": 8,
            "n_test_voices": 2,
            "rates": "140,180",
            "pitches": "40,60",
        },
    }

    def collate(self, items: list) -> Any:
        return _collate(items)

    def make_data(self, cfg: SpeechUnitsConfig, split: str) -> Dataset:
        d = prepare_speech_data(cfg)
        if split == "train":
            probe = SpeechUnits(cfg.k, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
            return _Pool(_pool(cfg, probe, d))
        return _Eval(d)

    def build(self, cfg: SpeechUnitsConfig) -> nn.Module:
        d = prepare_speech_data(cfg)
        model = SpeechUnits(cfg.k, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
        model.train_audio = d["train_audio"]
        model.targets = list(d["base_targets"])
        model.per_iter = max(1, cfg.steps // cfg.iterations)
        model.total_steps = cfg.steps
        return model

    def step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        targets = [model.targets[int(u)] for u in batch["utt"]]
        loss = ctc_unit_loss(model.encoder.logits(batch["x"]), batch["lengths"], targets)
        return {"loss": loss, "ctc": loss.detach()}

    def train_step(
        self, model: nn.Module, batch: Any, optimizer: Any, step: int
    ) -> dict[str, Tensor]:
        optimizer.zero_grad(set_to_none=True)
        out = self.step(model, batch)
        out["loss"].backward()
        optimizer.step()
        done = step + 1
        if done % model.per_iter == 0 or done == model.total_steps:
            _refit(model)
            for p in model.encoder.head.parameters():
                optimizer.state.pop(p, None)
        return {k: v.detach() for k, v in out.items()}

    def metrics(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        return evaluate_units(model, dataset.d, model.k)  # type: ignore[attr-defined]

    def check(self, model: nn.Module, cfg: SpeechUnitsConfig) -> list[CheckResult]:
        """The units read CMVN'd log-mel frames, so the encoder features are invariant to the
        waveform's gain (float64, gains in [0.1, 10]); negative control: the same encoder
        reading log-mel frames without CMVN."""
        return _gain_checks(model, cfg)

    def reproduce(self, cfg: SpeechUnitsConfig, run: Any, *, quick: bool) -> ReproduceResult:
        return _reproduce(self, cfg, run, quick=quick)


def _gain_inputs(cfg: SpeechUnitsConfig) -> Tensor:
    d = prepare_speech_data(cfg)
    return d["test_audio"][0].double()


def _gain_fns(model: SpeechUnits) -> tuple[Any, Any]:
    m = SpeechUnits(model.k, hidden=model.encoder.hidden, layers=len(model.encoder.norms))
    m.load_state_dict(model.state_dict())
    m = m.double().eval()
    broken = SpeechUnits(
        model.k, hidden=model.encoder.hidden, layers=len(model.encoder.norms), cmvn=False
    )
    broken.load_state_dict(model.state_dict())
    broken = broken.double().eval()
    return (lambda x: m.features(x)), (lambda x: broken.features(x))


def _gain_checks(model: nn.Module, cfg: SpeechUnitsConfig) -> list[CheckResult]:
    x = _gain_inputs(cfg)
    ok, broken = _gain_fns(model)  # type: ignore[arg-type]
    grp = Scaling(0.1, 10.0)
    return [
        check_invariant("features_gain", ok, x, grp, "scale", dtype=None, tol=1e-6),
        check_not_invariant("features_gain_no_cmvn", broken, x, grp, "scale", dtype=None),
    ]


def gain_invariance_error(model: SpeechUnits, cfg: SpeechUnitsConfig) -> float:
    """Relative gain-invariance error of the trained encoder's features (float64)."""
    ok, _ = _gain_fns(model)
    rep = equivariance_error(ok, _gain_inputs(cfg), Scaling(0.1, 10.0), "scale", dtype=None)
    return float(rep.relative_error)


# --------------------------------------------------------------------------- reproduce

QUICK = dict(steps=200, iterations=2, n_aug=2, n_voices=4, n_test_voices=1)
FULL = dict(SpeechUnitsRecipe.presets["full"])


def _reproduce(
    recipe: SpeechUnitsRecipe, cfg: SpeechUnitsConfig, run: Any, *, quick: bool
) -> ReproduceResult:
    """Invariant units (CTC pseudo-labelling on augmented audio, k-means refit each iteration)
    vs the same schedule on clean audio only (the baseline: same encoder, steps and refits) vs
    the base units (k-means on MFCC of clean audio, iteration 0; an arm); 3 seeds; mean UED over
    the four families on held-out voices, per-family UED and word accuracy from units beside
    it."""
    t0 = time.time()
    seeds = [0, 1, 2]
    base = QUICK if quick else FULL
    arms = {"invariant": {}, "no_aug": {"augment": False}}
    cache = None
    if run is not None and getattr(run, "enabled", False):
        from invariance.core.cache import ResultCache

        cache = ResultCache(
            run.path.parent / ".cache" / "sequence-speech-units",
            sources=("invariance.sequence", "invariance.core"),
        )
    per: dict[str, list[dict[str, float]]] = {"base": []}
    inv_err = None
    for s in seeds:
        c = make_config(recipe, "tiny", **base, seed=s, cache_dir=cfg.cache_dir)
        d = prepare_speech_data(c)
        per["base"].append(evaluate_units(d["base"], d, c.k))
        for arm, over in arms.items():
            ca = make_config(recipe, "tiny", **{**base, **over}, seed=s, cache_dir=cfg.cache_dir)

            def cell(ca: SpeechUnitsConfig = ca) -> dict[str, float]:
                model, dd = train_invariant_units(ca)
                m = evaluate_units(model, dd, ca.k)
                m["gain_error"] = gain_invariance_error(model, ca)
                return m

            key = {"cfg": {k: v for k, v in vars(ca).items()}, "v": 2}
            m = cache.get_or_compute(key, cell) if cache is not None else cell()
            per.setdefault(arm, []).append(m)
            if arm == "invariant" and inv_err is None:
                inv_err = m["gain_error"]
        if run is not None:
            for arm, rows in per.items():
                run.log_metrics({"arm": arm, "seed": s, **rows[-1]})
    vals = {a: {k: [r[k] for r in rows] for k in rows[0]} for a, rows in per.items()}
    other = {
        f"{a} ({m})": v[m]
        for a, v in vals.items()
        for m in ("ued_mean", "word_acc", "word_acc_aug")
        if (a, m) not in (("invariant", "ued_mean"), ("no_aug", "ued_mean"))
    }
    table = {a: {k: sum(v) / len(v) for k, v in mv.items()} for a, mv in vals.items()}
    plots = _plot(vals, run)
    return ReproduceResult(
        task=f"spoken digits (eSpeak NG, {base['n_voices'] - base['n_test_voices']} train voices, "
        f"{base['n_test_voices']} held out), UED over stretch/pitch/reverb/noise",
        metric="mean UED (held-out voices)",
        method="invariant units (CTC on augmented audio, k-means refit)",
        baseline="same CTC pseudo-labelling on clean audio only (no augmentation)",
        method_values=vals["invariant"]["ued_mean"],
        baseline_values=vals["no_aug"]["ued_mean"],
        higher_is_better=False,
        invariance_error=inv_err,
        seconds=time.time() - t0,
        seeds=seeds,
        arms=other,
        details={"mean_table": table, "setup": base},
        plots=plots,
    )


def _plot(vals: dict[str, dict[str, list[float]]], run: Any) -> list[str]:
    if run is None or not getattr(run, "enabled", False):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    arms = list(vals)
    w = 0.8 / len(arms)
    fams = [*AUGMENTATIONS, "mean"]
    for j, a in enumerate(arms):
        for i, f in enumerate(fams):
            v = vals[a][f"ued_{f}"]
            axes[0].bar(
                i + (j - (len(arms) - 1) / 2) * w,
                sum(v) / len(v),
                w,
                color=f"C{j}",
                label=a if i == 0 else None,
            )
            axes[0].plot([i + (j - (len(arms) - 1) / 2) * w] * len(v), v, "k.", ms=3)
        for i, m in enumerate(("word_acc", "word_acc_aug")):
            v = vals[a][m]
            x = i + (j - (len(arms) - 1) / 2) * w
            axes[1].bar(x, sum(v) / len(v), w, color=f"C{j}")
            axes[1].plot([x] * len(v), v, "k.", ms=3)
    axes[0].set_xticks(range(len(fams)), fams)
    axes[0].set_ylabel("UED (held-out voices; dots: seeds)")
    axes[0].legend(fontsize=7)
    axes[1].set_xticks(range(2), ["clean", "augmented"], fontsize=8)
    axes[1].set_ylabel("word accuracy from units")
    axes[1].set_ylim(0, 1.05)
    fig.tight_layout()
    return [str(run.savefig(fig, "speech_units_ued.png"))]


# --------------------------------------------------------------------------- bench


@register_bench("sequence", "pitch_shift")
def bench_pitch_shift(*, device: str = "cpu", quick: bool = False) -> dict[str, Any]:
    """Fast pitch shift (phase vocoder + resampling at a rounded ratio) vs torchaudio's stock
    ``functional.pitch_shift`` on speech-like audio at 16 kHz, +2 semitones; ``spec_dist``: the
    relative log-mel distance of each output to the stock output."""
    rows = []
    for seconds in (0.25,) if quick else (0.5, 1.0):
        g = torch.Generator().manual_seed(0)
        n = int(16000 * seconds)
        t = torch.arange(n) / 16000
        x = sum(
            torch.sin(2 * math.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 700))
        )
        x = (
            x * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t)) + 0.01 * torch.randn(n, generator=g)
        ).float()
        ref = AF.pitch_shift(x, 16000, 2)
        fast = pitch_shift(x, 16000, 2.0)
        lm_ref = log_mel(ref, cmvn=False)
        dist = float((log_mel(fast, cmvn=False) - lm_ref).norm() / lm_ref.norm())
        res = compare(
            {
                "torchaudio_pitch_shift": lambda x=x: AF.pitch_shift(x, 16000, 2),
                "fast_pitch_shift": lambda x=x: pitch_shift(x, 16000, 2.0),
            },
            reference="torchaudio_pitch_shift",
            repeats=3 if quick else 5,
            min_run_time=0.05,
            label=f"{seconds:g}s",
        )
        for r in res:
            r["spec_dist"] = 0.0 if r["name"] == "torchaudio_pitch_shift" else round(dist, 4)
        rows.extend(res)
    return {"rows": rows, "machine": machine(device)}
