"""DASK pieces: knowledge injection with a visible matrix and soft positions, and the pivot
memory bank (not yet a registered method: no recipe, training loop or reproduce yet).

Paper: "Domain-Adaptive Text Classification with Structured Knowledge from Unlabeled Data"
(DASK; Zhang et al., IJCAI 2022, arXiv 2206.09591). Official code: https://github.com/hikaru-nara/DASK
(no licence file; read at commit d056a60, nothing copied), built on K-BERT / UER.

Mechanism (the pieces here):

* **Knowledge injection** (``brain/knowgraph.py::add_knowledge_with_vm_bert``): the sentence is
  ``[CLS] w1 w2 ...``; a word that is a current pivot gets up to ``max_entities`` (2) triples from
  the lookup table (each ``"relation_object"`` text, underscores -> spaces) inserted right after it.
  Soft positions: a word's tokens continue the sentence positions; its injected tokens continue
  from the word's last position; the next word continues from the word (injected tokens do not
  shift the sentence). Segment 0 for sentence tokens, 1 for injected tokens. Visible matrix:
  sentence tokens see every sentence token and the injected tokens of their own word; injected
  tokens see their own triple and the word they hang from.
* **Memory bank** (``memory_bank.py``): common words occur >= ``min_occur`` times in both domains;
  their polarity starts at ``(#pos docs - #neg docs) / #docs`` over labelled source documents
  (0 when the count is <= ``min_occur``); pseudo-label updates ``s <- (1-a)s + a(2y-1)`` when the
  prediction confidence is >= the threshold, else ``s <- (1-a)s``; pivots are the top
  ``num_pivots`` common words by ``|(s_src + s_tgt)/2|``.

Tested properties: the visible matrix is symmetric, sentence tokens never see other words'
injected tokens, injection leaves the sentence tokens' soft positions unchanged, with no pivot in
the sentence the output equals the plain encoder; the memory-bank scores stay in [-1, 1] and move
to +1 at rate ``a`` under positive pseudo-labels; tokens, positions, segments and visible matrix
equal the official ``add_knowledge_with_vm_bert`` (``tests/test_dask.py``, provenance there).

Deviations: words come from whitespace splitting (the official uses NLTK ``word_tokenize``);
padding uses the tokenizer's pad id (the official pads with UER's ``PAD_ID``; padded tokens are
invisible either way); the lookup table maps a word to an ordered list (the official uses a set,
whose order depends on Python's string hashing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["inject_knowledge", "additive_mask", "MemoryBank"]


def inject_knowledge(
    words: Sequence[str],
    lookup: Mapping[str, Sequence[str]],
    tokenizer: Any,
    *,
    pivots: Iterable[str] | None = None,
    max_entities: int = 2,
    max_length: int = 256,
    add_cls: bool = True,
) -> dict[str, Tensor]:
    """K-BERT/DASK input of one sentence: ``input_ids``, ``position_ids`` (soft positions),
    ``token_type_ids`` (0 sentence, 1 injected) of length ``max_length`` and the boolean
    ``visible`` matrix ``(max_length, max_length)``; ``n_tokens`` before padding/truncation.
    ``pivots=None`` injects for every word found in ``lookup``."""
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise TypeError("words must be a sequence of strings (split the sentence first)")
    if not words:
        raise ValueError("words is empty")
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"words must hold strings, got {type(w).__name__}")
    if not isinstance(lookup, Mapping):
        raise TypeError(f"lookup must be a mapping word -> triples, got {type(lookup).__name__}")
    if isinstance(max_entities, bool) or not isinstance(max_entities, int) or max_entities < 0:
        raise ValueError(f"max_entities must be an int >= 0, got {max_entities!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    piv = None if pivots is None else set(pivots)
    seq = [tokenizer.cls_token, *words] if add_cls else list(words)
    ids: list[int] = []
    pos: list[int] = []
    seg: list[int] = []
    groups: list[tuple[list[int], list[list[int]]]] = []  # (word abs idx, [entity abs idx])
    src: list[int] = []
    p = -1
    for w in seq:
        ents = list(lookup.get(w, []))[:max_entities] if (piv is None or w in piv) else []
        tok = tokenizer.encode(w.strip(), add_special_tokens=False)
        if not tok:
            continue
        w_abs = list(range(len(ids), len(ids) + len(tok)))
        ids += tok
        pos += [p + i for i in range(1, len(tok) + 1)]
        seg += [0] * len(tok)
        p = pos[-1]
        e_abs = []
        for e in ents:
            et = tokenizer.encode(" ".join(e.split("_")).strip(), add_special_tokens=False)
            e_abs.append(list(range(len(ids), len(ids) + len(et))))
            ids += et
            pos += [p + i for i in range(1, len(et) + 1)]
            seg += [1] * len(et)
        groups.append((w_abs, e_abs))
        src += w_abs
    n = len(ids)
    vis = torch.zeros(n, n, dtype=torch.bool)
    src_t = torch.tensor(src, dtype=torch.long)
    for w_abs, e_abs in groups:
        own = torch.tensor([i for e in e_abs for i in e], dtype=torch.long)
        for i in w_abs:
            vis[i, src_t] = True
            vis[i, own] = True
        for e in e_abs:
            et = torch.tensor(e + w_abs, dtype=torch.long)
            vis[torch.tensor(e, dtype=torch.long)[:, None], et[None, :]] = True
    L = max_length
    if n < L:
        pad = L - n
        ids += [tokenizer.pad_token_id] * pad
        seg += [0] * pad
        pos += list(range(n, L))
        vis = torch.nn.functional.pad(vis, (0, pad, 0, pad))
    else:
        ids, seg, pos, vis = ids[:L], seg[:L], pos[:L], vis[:L, :L]
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.tensor(pos),
        "token_type_ids": torch.tensor(seg),
        "visible": vis,
        "n_tokens": torch.tensor(n),
    }


def additive_mask(visible: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, L, L)`` boolean visible matrices -> the ``(B, 1, L, L)`` additive attention mask
    (0 visible, ``finfo.min`` hidden) that ``transformers`` BERT accepts with ``position_ids``."""
    if not isinstance(visible, Tensor) or visible.dtype != torch.bool:
        raise TypeError("visible must be a boolean tensor")
    if visible.dim() != 3 or visible.shape[1] != visible.shape[2]:
        raise ValueError(f"visible must be (B, L, L), got {tuple(visible.shape)}")
    m = torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)
    return m[:, None]


class MemoryBank:
    """Pivot memory bank: polarity scores of the words common to both domains, updated with
    pseudo-labels; :attr:`pivots` are the top ``num_pivots`` by ``|(s_src + s_tgt) / 2|``."""

    def __init__(
        self,
        *,
        min_occur: int = 10,
        num_pivots: int = 500,
        alpha: float = 0.01,
        confidence: float = 0.9,
    ) -> None:
        for name, v in (("min_occur", min_occur), ("num_pivots", num_pivots)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {confidence!r}")
        self.min_occur, self.num_pivots = min_occur, num_pivots
        self.alpha, self.confidence = float(alpha), float(confidence)
        self.source: dict[str, float] = {}
        self.target: dict[str, float] = {}
        self.common: list[str] = []
        self.pivots: list[str] = []

    @staticmethod
    def _docs(texts: Sequence[Sequence[str]], name: str) -> list[set[str]]:
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"{name} must be a non-empty sequence of tokenised documents")
        return [set(w.lower() for w in t) for t in texts]

    def initialize(
        self,
        source_texts: Sequence[Sequence[str]],
        source_labels: Sequence[int],
        target_texts: Sequence[Sequence[str]],
    ) -> None:
        """Common words and the initial polarity from the labelled source documents (``labels``
        0/1; ``source_texts`` may include unlabelled documents after the labelled ones)."""
        src, tgt = (
            self._docs(source_texts, "source_texts"),
            self._docs(target_texts, "target_texts"),
        )
        if len(source_labels) > len(src) or not source_labels:
            raise ValueError("source_labels must label the first documents of source_texts")
        if any(y not in (0, 1) for y in source_labels):
            raise ValueError("source_labels must be 0 or 1")
        freq_s: dict[str, int] = {}
        freq_t: dict[str, int] = {}
        for d in src:
            for w in d:
                freq_s[w] = freq_s.get(w, 0) + 1
        for d in tgt:
            for w in d:
                freq_t[w] = freq_t.get(w, 0) + 1
        self.common = sorted(
            w
            for w, c in freq_s.items()
            if c >= self.min_occur and freq_t.get(w, 0) >= self.min_occur
        )
        cnt: dict[str, int] = {}
        pol: dict[str, int] = {}
        for d, y in zip(src, source_labels):
            for w in d:
                cnt[w] = cnt.get(w, 0) + 1
                pol[w] = pol.get(w, 0) + (1 if y == 1 else -1)
        self.source = {
            w: (pol[w] / cnt[w] if cnt.get(w, 0) > self.min_occur else 0.0) for w in freq_s
        }
        self.target = {w: self.source[w] for w in self.common}
        self.update_pivots()

    def update(self, texts: Sequence[Sequence[str]], probs: Tensor, domain: str) -> None:
        """Pseudo-label update for one batch: ``probs`` ``(B,)`` = P(positive); each common word
        of a document is updated once per document."""
        if domain not in ("source", "target"):
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
        docs = self._docs(texts, "texts")
        if not isinstance(probs, Tensor) or probs.shape != (len(docs),):
            raise ValueError(f"probs must be a tensor of shape ({len(docs)},)")
        if not torch.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
            raise ValueError("probs must be probabilities in [0, 1]")
        table = self.source if domain == "source" else self.target
        common = set(self.common)
        a = self.alpha
        for d, p in zip(docs, probs.tolist()):
            y = 1.0 if p >= 0.5 else 0.0
            conf = max(p, 1.0 - p)
            for w in d & common:
                s = table.get(w, 0.0)
                table[w] = (1 - a) * s + a * (2 * y - 1) if conf >= self.confidence else (1 - a) * s

    def update_pivots(self) -> list[str]:
        score = {w: (self.source.get(w, 0.0) + self.target.get(w, 0.0)) / 2 for w in self.common}
        self.pivots = [w for w, _ in sorted(score.items(), key=lambda kv: -abs(kv[1]))][
            : self.num_pivots
        ]
        return self.pivots
