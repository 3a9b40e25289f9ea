"""Table serialisation (the Observatory code's layout) and table embedders: a ``transformers``
encoder with the official column, row and cell serialisations, and an order-invariant DeepSets
oracle over hashed character n-grams. The measures in :mod:`invariance.sequence.observatory`
take any embedder with ``column_embeddings(table)``; that module re-exports these names."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from invariance.sequence.text.tables import Table

__all__ = [
    "DeepSetsTableEmbedder",
    "HFTableEmbedder",
    "hash_features",
    "max_rows_fit",
    "serialize_cells",
    "serialize_columns",
    "serialize_rows",
]


def _table(t: Any, name: str = "table") -> Table:
    if not isinstance(t, Table):
        raise TypeError(
            f"{name} must be an invariance.sequence.text.tables.Table, got {type(t).__name__}"
        )
    return t


def _int(v: Any, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


# ---------------------------------------------------------------- serialisation (official layout)
def _col_text(table: Table, j: int) -> str:
    return " ".join([table.header[j], *table.column(j)])


def _serialize(units: list[str], tokenizer: Any, max_length: int) -> tuple[list[str], list[int]]:
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    out: list[str] = []
    pos: list[int] = []
    for j, text in enumerate(units):
        toks = [cls, *tokenizer.tokenize(text), sep]
        if len(out) + len(toks) > max_length:
            raise ValueError(
                f"table does not fit max_length={max_length} tokens after {j} of {len(units)} "
                "units; truncate its rows first (max_rows_fit)"
            )
        out = out[:-1] + toks if out else toks
        pos.append(len(out) - len(toks))
    return out, pos


def serialize_columns(table: Table, tokenizer: Any, max_length: int) -> tuple[list[str], list[int]]:
    """``(tokens, cls_positions)``: ``[CLS] col1 [CLS] col2 ... [CLS] colN [SEP]`` (no padding),
    column ``j`` = ``"header v1 ... vn"``. Raises ``ValueError`` naming ``table`` when the tokens
    exceed ``max_length`` (truncate rows with :func:`max_rows_fit` first)."""
    _table(table)
    _int(max_length, "max_length", 2)
    return _serialize([_col_text(table, j) for j in range(table.n_cols)], tokenizer, max_length)


def serialize_rows(table: Table, tokenizer: Any, max_length: int) -> tuple[list[str], list[int]]:
    """Row-wise serialisation (official ``row_based_process_table``): row ``i`` is the text
    ``"h1 v_i1 h2 v_i2 ..."``, rows joined as ``[CLS] row1 [CLS] row2 ... [SEP]``."""
    _table(table)
    _int(max_length, "max_length", 2)
    units = [" ".join(f"{h} {v}" for h, v in zip(table.header, r)) for r in table.rows]
    return _serialize(units, tokenizer, max_length)


def max_rows_fit(table: Table, tokenizer: Any, max_length: int) -> int:
    """The most leading rows whose column serialisation fits ``max_length`` tokens (0 when not even
    the headers with one row fit); binary search as the official ``column_based_truncate``."""
    _table(table)
    _int(max_length, "max_length", 2)

    def fits(k: int) -> bool:
        t = Table(table.header, table.rows[:k]) if k else None
        total = 0
        for j in range(table.n_cols):
            text = _col_text(t, j) if t is not None else table.header[j]
            n = len(tokenizer.tokenize(text)) + 2
            total = n if total == 0 else total - 1 + n
            if total > max_length:
                return False
        return True

    lo, hi = 0, table.n_rows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def serialize_cells(
    table: Table, tokenizer: Any, max_length: int
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """``(tokens, positions)`` of the official cell serialisation: per column ``[CLS]`` then the
    tokens of the header (row 0) and of every cell (rows 1..n), one ``[SEP]`` at the end;
    ``positions[k] = (row, column, flag)`` with flag 1 for ``[CLS]``, 2 for ``[SEP]``, 0 else."""
    _table(table)
    _int(max_length, "max_length", 2)
    toks: list[str] = []
    pos: list[tuple[int, int, int]] = []
    for j in range(table.n_cols):
        toks.append(tokenizer.cls_token)
        pos.append((0, j, 1))
        for i, cell in enumerate([table.header[j], *table.column(j)]):
            for t in tokenizer.tokenize(cell):
                toks.append(t)
                pos.append((i, j, 0))
    toks.append(tokenizer.sep_token)
    pos.append((0, 0, 2))
    if len(toks) > max_length:
        raise ValueError(f"table serialises to {len(toks)} tokens > max_length={max_length}")
    return toks, pos


# ---------------------------------------------------------------- embedders
class HFTableEmbedder:
    """Column and cell embeddings from a ``transformers`` encoder (BERT-style: MiniLM, tiny BERT)
    with the official serialisation; rows beyond what fits ``max_length`` are dropped (the
    official truncation), a table whose header does not fit raises ``ValueError``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        batch_size: int = 16,
        name: str = "",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a transformers encoder, got {type(model).__name__}")
        if getattr(tokenizer, "cls_token", None) is None or tokenizer.sep_token is None:
            raise TypeError("tokenizer must have cls_token and sep_token (a BERT-style tokenizer)")
        limit = int(getattr(model.config, "max_position_embeddings", 512))
        self.max_length = limit if max_length is None else _int(max_length, "max_length", 2)
        if self.max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's {limit} positions")
        self.batch_size = _int(batch_size, "batch_size", 1)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or str(getattr(model, "name_or_path", type(model).__name__))

    def truncate(self, table: Table) -> Table:
        k = max_rows_fit(_table(table), self.tokenizer, self.max_length)
        if k < 1:
            raise ValueError(
                f"table: its header and first row exceed the model's length "
                f"({self.max_length} tokens)"
            )
        return table if k == table.n_rows else Table(table.header, table.rows[:k])

    def _run(self, seqs: list[list[str]]) -> Tensor:
        L = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token
        ids = torch.tensor(
            [self.tokenizer.convert_tokens_to_ids(s + [pad] * (L - len(s))) for s in seqs]
        )
        mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in seqs])
        with torch.no_grad():
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def column_embeddings_many(self, tables: Sequence[Table]) -> list[Tensor]:
        """Column embeddings ``(n_cols, d)`` of each table (batched)."""
        out: list[Tensor] = []
        for b in range(0, len(tables), self.batch_size):
            ser = [
                serialize_columns(self.truncate(t), self.tokenizer, self.max_length)
                for t in tables[b : b + self.batch_size]
            ]
            h = self._run([s for s, _ in ser])
            out += [h[i, p] for i, (_, p) in enumerate(ser)]
        return out

    def column_embeddings(self, table: Table) -> Tensor:
        return self.column_embeddings_many([table])[0]

    def row_embeddings(self, table: Table) -> Tensor:
        """Row embeddings ``(n_rows, d)``: the ``[CLS]`` states of the row serialisation (rows that
        do not fit ``max_length`` are dropped)."""
        _table(table)
        k = table.n_rows
        while k > 0:
            try:
                toks, pos = serialize_rows(
                    Table(table.header, table.rows[:k]), self.tokenizer, self.max_length
                )
                break
            except ValueError:
                k -= 1
        if k == 0:
            raise ValueError(f"table: one row exceeds the model's length ({self.max_length})")
        return self._run([toks])[0, pos]

    def cell_embeddings(self, table: Table) -> Tensor:
        """Cell embeddings ``(n_rows, n_cols, d)`` (mean of each cell's token states)."""
        table = self.truncate(table)
        toks, pos = serialize_cells(table, self.tokenizer, self.max_length)
        h = self._run([toks])[0]
        out = torch.zeros(table.n_rows, table.n_cols, h.shape[-1])
        cnt = torch.zeros(table.n_rows, table.n_cols, 1)
        for k, (i, j, flag) in enumerate(pos):
            if flag == 0 and i > 0:
                out[i - 1, j] += h[k]
                cnt[i - 1, j] += 1
        return out / cnt.clamp_min(1)


def hash_features(texts: Sequence[str], n_features: int = 256) -> Tensor:
    """Bag of hashed character 1-3-grams (crc32 buckets), L2-normalised, ``(len(texts), F)``."""
    out = torch.zeros(len(texts), n_features)
    for i, t in enumerate(texts):
        s = f"^{t.lower()}$"
        for n in (1, 2, 3):
            for k in range(len(s) - n + 1):
                out[i, zlib.crc32(s[k : k + n].encode()) % n_features] += 1.0
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


class DeepSetsTableEmbedder(nn.Module):
    """Order-invariant oracle: ``col_j = rho(mean_i phi(cell_ij) + psi(header_j))`` and
    ``cell_ij = phi(cell_ij) + psi(header_j)`` over hashed character n-gram features. Invariant to
    row permutations, equivariant to column permutations by construction. ``n_types > 0`` adds a
    column-type head (the trainable task of the registered recipe)."""

    def __init__(
        self, dim: int = 64, n_features: int = 256, n_types: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.dim, self.n_features = _int(dim, "dim", 1), _int(n_features, "n_features", 1)
        _int(n_types, "n_types", 0)
        g = torch.Generator().manual_seed(seed)
        self.phi = nn.Linear(n_features, dim)
        self.psi = nn.Linear(n_features, dim)
        self.rho = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        self.head = nn.Linear(dim, n_types) if n_types else None
        self.name = "deepsets-oracle"

    def forward(self, cells: Tensor, header: Tensor) -> Tensor:
        """``cells`` ``(R, C, F)`` and ``header`` ``(C, F)`` features -> column embeddings
        ``(C, dim)``."""
        for name, x in (("cells", cells), ("header", header)):
            if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
                raise TypeError(f"{name} must be a floating-point tensor")
            if x.numel() == 0 or not torch.isfinite(x).all():
                raise ValueError(f"{name} must be non-empty and finite")
        if cells.dim() != 3 or header.dim() != 2 or cells.shape[1:] != header.shape:
            raise ValueError(
                f"cells must be (R, C, F) and header (C, F), got "
                f"{tuple(cells.shape)} and {tuple(header.shape)}"
            )
        return self.rho(torch.tanh(self.phi(cells)).mean(0) + self.psi(header))

    def features(self, table: Table) -> tuple[Tensor, Tensor]:
        _table(table)
        cells = hash_features([c for r in table.rows for c in r], self.n_features)
        return (
            cells.reshape(table.n_rows, table.n_cols, -1),
            hash_features(list(table.header), self.n_features),
        )

    def column_embeddings(self, table: Table) -> Tensor:
        with torch.no_grad():
            return self(*self.features(table))

    def column_embeddings_many(self, tables: Sequence[Table]) -> list[Tensor]:
        return [self.column_embeddings(t) for t in tables]

    def cell_embeddings(self, table: Table) -> Tensor:
        c, h = self.features(table)
        with torch.no_grad():
            return torch.tanh(self.phi(c)) + self.psi(h)[None]
