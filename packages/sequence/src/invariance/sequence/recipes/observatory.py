"""Recipe of Observatory: config, the registered ``observatory`` recipe (a DeepSets column-type
classifier, the order-invariant oracle embedder, trained on generated tables) and the reproduce
(the eight properties measured on MiniLM, a positional tiny BERT and the oracle). The measures are
in :mod:`invariance.sequence.observatory`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    register,
    register_bench,
)
from invariance.core.bench import compare, machine
from invariance.core.groups import Permutation
from invariance.core.testing import as_float64, check_invariant, check_not_invariant
from invariance.sequence.observatory import (
    DeepSetsTableEmbedder,
    HFTableEmbedder,
    column_order_insignificance,
    entity_stability,
    functional_dependencies,
    hash_features,
    heterogeneous_context,
    join_relationship,
    perturbation_robustness,
    row_order_insignificance,
    sample_fidelity,
)
from invariance.sequence.text.models import have_minilm, load_minilm, tiny_bert, word_tokenizer
from invariance.sequence.text.tables import (
    Table,
    make_join_pairs,
    make_table,
    make_tables,
)

__all__ = [
    "ObservatoryConfig",
    "ObservatoryRecipe",
    "COLUMN_TYPES",
    "embedders_for",
    "bench_observatory",
]

#: column -> type label of the generated company tables (the oracle recipe's training task)
COLUMN_TYPES = {
    "name": 0,
    "city": 1,
    "country": 1,
    "sector": 2,
    "founded": 3,
    "revenue": 4,
    "employees": 5,
}


@dataclass
class ObservatoryConfig(TrainConfig):
    """Generated company tables; the oracle classifies column types from values only.

    Args:
        n_rows: rows per table (default: 6).
        n_tables: training tables (default: 64); test tables use other seeds.
        dim / n_features: oracle width and hashed n-gram buckets (default: 32 / 128).
        n_perms: permutations per order property (default: 10).
    """

    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-2
    n_rows: int = 6
    n_tables: int = 64
    dim: int = 32
    n_features: int = 128
    n_perms: int = 10

    ranges: ClassVar[dict] = {
        "n_rows": (2, None),
        "n_tables": (1, None),
        "dim": (1, None),
        "n_features": (8, None),
        "n_perms": (1, None),
    }


class _Tables(Dataset):
    def __init__(self, tables: list[Table], n_features: int, seed: int) -> None:
        rng = random.Random(seed)
        self.items = []
        for t in tables:
            perm = list(range(t.n_cols))
            rng.shuffle(perm)  # column order carries no label information
            t = t.take_columns(perm)
            cells = hash_features([c for r in t.rows for c in r], n_features)
            self.items.append(
                {
                    "cells": cells.reshape(t.n_rows, t.n_cols, -1),
                    "header": torch.zeros(t.n_cols, n_features),  # headers hidden
                    "y": torch.tensor([COLUMN_TYPES[h] for h in t.header]),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.items[i]


@register(
    "observatory",
    domain="sequence",
    paper="Observatory: Characterizing Embeddings of Relational Tables",
    authors="Cong, Hulsebos, Sun, Groth, Jagadish",
    year=2024,
    arxiv="2310.07736",
    code_url="https://github.com/superctj/observatory",
    symmetry="row-order invariance of column embeddings (the oracle); measures for any embedder",
    baseline="MiniLM column embeddings",
    tags=("tables", "embeddings", "measurement", "text"),
)
class ObservatoryRecipe(Recipe):
    """The eight Observatory properties; the trainable part is the order-invariant DeepSets
    oracle (column types from cell values), the reference point of the order measures."""

    Config = ObservatoryConfig
    presets = {"tiny": {}, "full": {"n_tables": 256, "steps": 200, "dim": 64, "n_features": 256}}

    def make_data(self, cfg: ObservatoryConfig, split: str) -> Dataset:
        base = {"train": 0, "val": 10_000, "test": 20_000}[split]
        n = cfg.n_tables if split == "train" else max(16, cfg.n_tables // 4)
        tables = [make_table(cfg.n_rows, seed=cfg.seed * 100_000 + base + k) for k in range(n)]
        return _Tables(tables, cfg.n_features, seed=cfg.seed + base)

    def build(self, cfg: ObservatoryConfig) -> nn.Module:
        return DeepSetsTableEmbedder(
            cfg.dim, cfg.n_features, n_types=len(set(COLUMN_TYPES.values())), seed=cfg.seed
        )

    def _logits(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return torch.stack(
            [model.head(model(c, h)) for c, h in zip(batch["cells"], batch["header"])]
        )

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self._logits(model, batch)
        y = batch["y"]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        acc = (logits.argmax(-1) == y).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    def check(self, model: nn.Module, cfg: ObservatoryConfig) -> list[CheckResult]:
        """The oracle's column embeddings are invariant to row permutations (random tables whose
        embeddings vary); a positional tiny BERT with the official column serialisation is not
        (negative control)."""
        d = self.make_data(cfg, "test")
        cells, header = d[0]["cells"].double(), d[0]["header"].double()
        m64 = as_float64(model)
        oracle = lambda c: m64(c, header)  # noqa: E731
        t = make_table(cfg.n_rows, seed=cfg.seed + 7)
        vocab = sorted({c for r in t.rows for c in r})
        bert, tok = _tiny_positional(t, cfg.seed)
        emb = HFTableEmbedder(bert, tok)

        def lm(idx: Tensor) -> Tensor:
            rows = [[vocab[int(i)] for i in r] for r in idx]
            return emb.column_embeddings(Table(t.header, rows)).double()

        idx = torch.tensor([[vocab.index(c) for c in r] for r in t.rows])
        return [
            check_invariant("oracle_row_permutation", oracle, (cells,), Permutation(0), "nodes"),
            check_not_invariant(
                "tiny_bert_row_permutation", lm, (idx,), Permutation(0), "nodes", dtype=None
            ),
        ]

    def reproduce(self, cfg: ObservatoryConfig, run: Any, *, quick: bool) -> ReproduceResult:
        return _reproduce(cfg, run, quick=quick)


def _tiny_positional(table: Table, seed: int) -> tuple[Any, Any]:
    tok = word_tokenizer([*table.header, *(c for r in table.rows for c in r)])
    return tiny_bert(len(tok), hidden=32, layers=2, init_range=0.5, seed=seed), tok


_CACHE: dict[str, Any] = {}


def embedders_for(tables: list[Table], seed: int = 0) -> dict[str, Any]:
    """The reproduce's embedders: MiniLM (when the wheel is installed), a positional tiny BERT
    (random, from a config) and the DeepSets oracle."""
    out: dict[str, Any] = {}
    if have_minilm():
        if "minilm" not in _CACHE:
            _CACHE["minilm"] = load_minilm()
        tok, model = _CACHE["minilm"]
        out["MiniLM"] = HFTableEmbedder(model, tok, name="MiniLM")
    words = [w for t in tables for w in (*t.header, *(c for r in t.rows for c in r))]
    words += ["title", "town", "nation", "established", "income", "staff", "chief", "executive"]
    tok = word_tokenizer(words)
    out["tiny BERT"] = HFTableEmbedder(
        tiny_bert(len(tok), hidden=64, layers=2, init_range=0.5, seed=seed), tok, name="tiny BERT"
    )
    out["DeepSets oracle"] = DeepSetsTableEmbedder(64, 256, seed=seed)
    return out


def _properties(e: Any, tables: list[Table], n_perms: int, seed: int, quick: bool) -> dict:
    t = tables[0]
    r: dict[str, float] = {}
    ro = [row_order_insignificance(e, x, n_perms, seed) for x in tables]
    co = [column_order_insignificance(e, x, n_perms, seed) for x in tables]
    r["row order cosine"] = sum(x["cosine"] for x in ro) / len(ro)
    r["row order MCV"] = sum(x["mcv"] for x in ro) / len(ro)
    r["column order cosine"] = sum(x["cosine"] for x in co) / len(co)
    r["column order MCV"] = sum(x["mcv"] for x in co) / len(co)
    if quick:
        return r
    r["join spearman (containment)"] = join_relationship(e, make_join_pairs(9, 6, seed))[
        "spearman_containment"
    ]
    fd = functional_dependencies(
        e, make_table(16, seed + 50), ("city", "country"), ("city", "sector")
    )
    r["FD norm variance"] = fd["fd_variance"]
    r["non-FD norm variance"] = fd["non_fd_variance"]
    sf = sample_fidelity(e, make_table(16, seed + 60), seed=seed)
    r.update({f"sample fidelity {k}": v for k, v in sf.items()})
    r["entity stability cosine"] = entity_stability(e, tables)["cosine"]
    r["heterogeneous context cosine"] = heterogeneous_context(e, t)["cosine"]
    r["perturbation (header synonyms) cosine"] = perturbation_robustness(e, t)["cosine"]
    return r


def _reproduce(cfg: ObservatoryConfig, run: Any, *, quick: bool) -> ReproduceResult:
    """Per seed, a fresh set of generated tables (and fresh random embedders); the eight
    properties per embedder (quick: the two order properties on one table, 5 permutations)."""
    t0 = time.time()
    seeds = [0, 1, 2]
    n_tables, n_perms = (1, 5) if quick else (3, cfg.n_perms)
    per: dict[str, dict[str, list[float]]] = {}
    names: list[str] = []
    for s in seeds:
        tables = make_tables(n_tables, cfg.n_rows, seed=1000 * s)
        embs = embedders_for(tables, seed=s)
        names = list(embs)
        for name, e in embs.items():
            props = _properties(e, tables, n_perms, s, quick)
            for k, v in props.items():
                per.setdefault(name, {}).setdefault(k, []).append(float(v))
            if run is not None:
                run.log_metrics({"seed": s, "embedder": name, **props})
    lm = "MiniLM" if "MiniLM" in per else "tiny BERT"
    key = "column order MCV"
    table = {n: {k: sum(v) / len(v) for k, v in d.items()} for n, d in per.items()}
    arms = {
        f"{n} ({k})": v
        for n, d in per.items()
        for k, v in d.items()
        if not (k == key and n in (lm, "DeepSets oracle"))
    }
    return ReproduceResult(
        task=f"column-order MCV over {n_tables} generated table(s) x {n_perms} permutations",
        metric=key + " (lower = more order invariant)",
        method="DeepSets oracle (order invariant by construction)",
        baseline=f"{lm} column embeddings (official serialisation)",
        method_values=per["DeepSets oracle"][key],
        baseline_values=per[lm][key],
        higher_is_better=False,
        invariance_error=max(per["DeepSets oracle"]["row order MCV"]),
        seconds=time.time() - t0,
        seeds=seeds,
        arms=arms,
        details={
            "mean_table": table,
            "embedders": names,
            "minilm": "installed" if have_minilm() else "missing: tiny BERT stands in",
        },
        plots=_plot(table, run),
    )


def _plot(table: dict[str, dict[str, float]], run: Any) -> list[str]:
    if run is None or not getattr(run, "enabled", False):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    props = [k for k in next(iter(table.values())) if "cosine" in k or "spearman" in k]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(props) + 2), 3.4))
    w = 0.8 / len(table)
    for i, (name, d) in enumerate(table.items()):
        ax.bar([p + i * w for p in range(len(props))], [d[k] for k in props], w, label=name)
    ax.set_xticks(
        [p + 0.4 - w / 2 for p in range(len(props))], props, rotation=30, ha="right", fontsize=7
    )
    ax.set_ylabel("mean over 3 seeds")
    ax.set_ylim(min(0.0, min(min(d[k] for k in props) for d in table.values())), 1.05)
    ax.legend(fontsize=7, ncol=len(table), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return [str(run.savefig(fig, "observatory_properties.png"))]


class _PadToMaxLength(HFTableEmbedder):
    """Bench reference: the official batching, every sequence padded to ``max_length`` (the
    official ``column_based_process_table`` pads to the model's length) instead of the longest
    sequence in the batch."""

    def _run(self, seqs: list[list[str]]) -> Tensor:
        pad = self.tokenizer.pad_token
        return super()._run([s + [pad] * (self.max_length - len(s)) for s in seqs])


@register_bench("sequence", "observatory")
def bench_observatory(*, quick: bool = False, repeats: int = 3, n_perms: int = 10) -> dict:
    """Row-order property (``n_perms`` + 1 column-embedding passes of one generated table):
    ours (pad to the longest sequence) against the official batching (pad to ``max_length``).
    Quick: tiny BERT (512 positions); full: MiniLM when installed. ``max_abs_diff``: largest
    difference of the measured MCV between the two (padding is masked, so ~0)."""
    t = make_table(6, seed=0)
    if not quick and have_minilm():
        if "minilm" not in _CACHE:
            _CACHE["minilm"] = load_minilm()
        tok, model = _CACHE["minilm"]
        label = "MiniLM, 512 positions"
    else:
        tok = word_tokenizer([*t.header, *(c for r in t.rows for c in r)])
        model, label = tiny_bert(len(tok), hidden=64, max_positions=512, seed=0), "tiny BERT"
    ours, ref = HFTableEmbedder(model, tok), _PadToMaxLength(model, tok)
    a = row_order_insignificance(ours, t, n_perms)["mcv"]
    b = row_order_insignificance(ref, t, n_perms)["mcv"]
    rows = compare(
        {
            "ours (pad to longest)": lambda: row_order_insignificance(ours, t, n_perms),
            "official batching (pad to max_length)": lambda: row_order_insignificance(
                ref, t, n_perms
            ),
        },
        reference="official batching (pad to max_length)",
        repeats=repeats,
        min_run_time=0.2 if quick else 0.5,
        label=f"{label}, {n_perms + 1} tables of 6x7",
    )
    for r in rows:
        r["max_abs_diff"] = abs(a - b)
    return {"rows": rows, "machine": machine()}
