"""Relational tables: the :class:`Table` container and a procedural generator with exact ground
truth for the Observatory properties (keys, functional dependencies by construction, joinable
columns with controlled overlap, header synonyms, entities shared across tables)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Table",
    "COLUMNS",
    "HEADER_SYNONYMS",
    "make_table",
    "make_tables",
    "make_join_pairs",
    "entity_names",
    "perturb_headers",
]


@dataclass(frozen=True)
class Table:
    """A relational table of string cells: ``header`` (one name per column) and ``rows`` (each a
    sequence of ``len(header)`` strings). Rejects empty tables, ragged rows and non-string cells
    with a ``ValueError`` / ``TypeError`` naming the argument."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if isinstance(header, str) or not isinstance(header, Sequence):
            raise TypeError(f"header must be a sequence of strings, got {type(header).__name__}")
        if len(header) == 0:
            raise ValueError("header is empty: a table needs at least one column")
        for h in header:
            if not isinstance(h, str):
                raise TypeError(f"header must hold strings, got {type(h).__name__} ({h!r})")
        if isinstance(rows, str) or not isinstance(rows, Sequence):
            raise TypeError(f"rows must be a sequence of rows, got {type(rows).__name__}")
        if len(rows) == 0:
            raise ValueError("rows is empty: a table needs at least one row")
        out = []
        for i, r in enumerate(rows):
            if isinstance(r, str) or not isinstance(r, Sequence):
                raise TypeError(f"rows[{i}] must be a sequence of cells, got {type(r).__name__}")
            if len(r) != len(header):
                raise ValueError(
                    f"rows[{i}] has {len(r)} cells but header has {len(header)} columns "
                    "(ragged rows)"
                )
            for c in r:
                if not isinstance(c, str):
                    raise TypeError(
                        f"rows[{i}] holds a non-string cell {c!r} ({type(c).__name__}); "
                        "convert cells with str() first"
                    )
            out.append(tuple(r))
        object.__setattr__(self, "header", tuple(header))
        object.__setattr__(self, "rows", tuple(out))

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_cols(self) -> int:
        return len(self.header)

    def column(self, j: int) -> list[str]:
        return [r[j] for r in self.rows]

    def take_rows(self, idx: Sequence[int]) -> Table:
        """The table with rows ``idx`` in that order (a permutation, a sample or a prefix)."""
        idx = [int(i) for i in idx]
        if not idx:
            raise ValueError("idx is empty")
        if min(idx) < -self.n_rows or max(idx) >= self.n_rows:
            raise ValueError(f"idx must index rows 0..{self.n_rows - 1}, got {idx}")
        return Table(self.header, [self.rows[i] for i in idx])

    def take_columns(self, idx: Sequence[int]) -> Table:
        """The table with columns ``idx`` in that order."""
        idx = [int(i) for i in idx]
        if not idx:
            raise ValueError("idx is empty")
        if min(idx) < -self.n_cols or max(idx) >= self.n_cols:
            raise ValueError(f"idx must index columns 0..{self.n_cols - 1}, got {idx}")
        return Table([self.header[j] for j in idx], [[r[j] for j in idx] for r in self.rows])

    def with_header(self, header: Sequence[str]) -> Table:
        return Table(header, self.rows)


_SYL = ("ka", "lo", "mi", "ren", "tas", "vor", "bel", "dun", "shi", "pra", "gol", "nex", "tu")
#: header synonyms and abbreviations (the header perturbations of Dr.Spider, generated here)
HEADER_SYNONYMS = {
    "name": "title",
    "city": "town",
    "country": "nation",
    "founded": "established",
    "revenue": "income",
    "employees": "staff",
    "ceo": "chief executive",
    "population": "inhabitants",
}


def entity_names(n: int, seed: int = 0, *, syllables: int = 3) -> list[str]:
    """``n`` distinct fictional names built from syllables (e.g. ``"kalomi"``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        w = "".join(rng.choice(_SYL) for _ in range(syllables))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


#: the columns of :func:`make_table`
COLUMNS = ("name", "city", "country", "sector", "founded", "revenue", "employees")


def make_table(n_rows: int = 6, seed: int = 0, *, pool: Sequence[str] | None = None) -> Table:
    """A company table ``name, city, country, sector, founded, revenue, employees``: ``name`` is
    a key (drawn from ``pool`` when given, so entities recur across tables), ``city -> country`` a
    functional dependency by construction (4 cities, 2 countries), ``sector`` independent of
    ``city`` (a non-dependency with repeated value pairs)."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    rng = random.Random(seed)
    if pool is None:
        names = entity_names(n_rows, seed=seed + 17)
    else:
        if len(pool) < n_rows:
            raise ValueError(f"pool holds {len(pool)} names, fewer than n_rows={n_rows}")
        names = rng.sample(list(pool), n_rows)
    places = entity_names(6, seed=99, syllables=2)
    cities, countries = places[:4], places[4:]
    country_of = {c: countries[i % 2] for i, c in enumerate(cities)}
    rows = []
    for i in range(n_rows):
        city = rng.choice(cities)
        rows.append(
            [
                names[i],
                city,
                country_of[city],
                rng.choice(("retail", "mining")),
                str(rng.randint(1900, 2020)),
                f"{rng.randint(1, 999)}.{rng.randint(0, 9)}",
                str(rng.randint(10, 9000)),
            ]
        )
    return Table(COLUMNS, rows)


def make_tables(n_tables: int, n_rows: int = 6, seed: int = 0) -> list[Table]:
    """``n_tables`` tables from :func:`make_table` with seeds ``seed, seed+1, ...`` whose names
    come from one shared pool of ``2 * n_rows`` entities (so entities recur across tables)."""
    if isinstance(n_tables, bool) or not isinstance(n_tables, int) or n_tables < 1:
        raise ValueError(f"n_tables must be a positive int, got {n_tables!r}")
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    pool = entity_names(2 * n_rows, seed=seed + 17)
    return [make_table(n_rows, seed=seed + k, pool=pool) for k in range(n_tables)]


def make_join_pairs(n_pairs: int = 12, size: int = 8, seed: int = 0) -> list[tuple[Table, Table]]:
    """Pairs of one-column tables over a shared entity pool whose value overlap sweeps from
    disjoint to identical (containment ``k/size``, ``k = 0..size`` cycling), for the join
    relationship property."""
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    rng = random.Random(seed)
    pool = entity_names(4 * size + 8, seed=seed + 5)
    out = []
    for p in range(n_pairs):
        k = p % (size + 1)
        rng.shuffle(pool)
        a = pool[:size]
        b = a[:k] + pool[size : 2 * size - k]
        rng.shuffle(b)
        out.append((Table(["name"], [[v] for v in a]), Table(["name"], [[v] for v in b])))
    return out


def perturb_headers(table: Table) -> Table:
    """The table with every header that has a synonym in :data:`HEADER_SYNONYMS` replaced."""
    return table.with_header([HEADER_SYNONYMS.get(h, h) for h in table.header])
