"""DASK: domain adaptation with structured knowledge (knowledge injection at pivots, the pivot
memory bank, the ``masked_SSL_kbert`` model).

Paper: "Domain-Adaptive Text Classification with Structured Knowledge from Unlabeled Data"
(DASK; Li, Chen, Dong, Yu, Yan, Keutzer, Zhang, IJCAI 2022, arXiv 2206.09591). Official code:
https://github.com/hikaru-nara/DASK (no licence file; read at commit d056a60, nothing copied),
built on K-BERT / UER. The training schedule is in ``recipes/dask.py`` (``DASKRecipe.train_step``).

Mechanism:

* **Knowledge graph and lookup** (``brain/knowgraph.py``): triples ``(head, relation, tail)``
  linking target-domain non-pivot words to pivots; :func:`build_lookup` indexes each triple from
  its head (``"relation_tail"``), tail (``"head_relation"``) and relation (``"head_tail"``).
* **Knowledge injection** (``add_knowledge_with_vm_bert``; :func:`inject_knowledge`): the sentence
  is ``[CLS] w1 w2 ...``; a word that is a current pivot gets up to ``max_entities`` (2) lookup
  entries (underscores -> spaces) inserted right after it. Soft positions: injected tokens
  continue from their word's position, the next word continues from the word (injected tokens do
  not shift the sentence). Segment 0 for sentence tokens, 1 for injected ones. Visible matrix:
  sentence tokens see every sentence token and the injected tokens of their own word; injected
  tokens see their own entry and the word they hang from. Knowledge goes into source reviews
  (training) and target reviews (test) alike, only at pivots.
* **Memory bank** (``memory_bank.py``; :class:`MemoryBank`): common words occur >= ``min_occur``
  times in both domains; their polarity starts at ``(#pos docs - #neg docs) / #docs`` over
  labelled source documents (0 when the count is <= ``min_occur``); pseudo-label updates
  ``s <- (1-a)s + a(2y-1)`` when the prediction confidence is >= the threshold, else
  ``s <- (1-a)s``, separately for source and target; pivots are the top ``num_pivots`` common
  words by ``|(s_src + s_tgt)/2|`` and change as the bank updates, so does the injection.
* **Model** (``model.py::masked_SSL_kbert``; :class:`DASKModel`): BERT with the visible matrix as
  attention mask and soft positions as position ids, a classifier on the first token and a
  pivot decoder; **masked pivot prediction** (``Masked_SSL_preprocess``; :func:`mask_pivots`):
  the first occurrence of every pivot is replaced by ``[MASK]`` and predicted.

Tested properties: the visible matrix is symmetric, sentence tokens never see other words'
injected tokens, injection leaves the sentence tokens' soft positions unchanged, with no pivot in
the sentence the output equals the plain encoder; the class logits are invariant to how the
knowledge tree is flattened (tokens after ``[CLS]`` permuted with their soft positions and
visibility), a BERT with hard positions is not (negative control); the memory-bank scores stay in
[-1, 1] and move to +1 at rate ``a``; tokens, positions, segments and visible matrix equal the
official ``add_knowledge_with_vm_bert``, memory-bank scores and pivots equal the official
``MemoryBank``, the lookup table the official ``_create_lookup_table`` and the masked pivot input
the official ``Masked_SSL_preprocess`` at the sentence positions (``tests/test_dask.py``, provenance
there).

Deviations: words come from whitespace splitting (the official uses NLTK ``word_tokenize`` and
NLTK stop-words; the recipe passes its own stop-word list); padding uses the tokenizer's pad id;
the lookup table keeps ordered lists (the official uses sets, whose order depends on Python's
string hashing); the masked pivot prediction runs on the sentence without injected tokens (the
official runs it on the injected sequence with a visible matrix that hides them from sentence
tokens: the same outputs at the masked positions) and masks the first *sentence* occurrence of a
pivot (the official searches the injected sequence and skips a pivot whose first occurrence is
inside injected text). HEAD's ``brain/knowledge_graph.py`` (``BranchBundle``: whole triples
around the pivot, ``random.sample`` of the triples, a ``[SEP]``) is used by HEAD's plain ``base_DA``
path only; its ``add_knowledge_with_vm`` lacks the SSL mask that ``masked_SSL_kbert`` needs, so
this module follows ``knowgraph.py``, the injection of the masked-SSL path.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "build_lookup",
    "inject_knowledge",
    "inject_batch",
    "mask_pivots",
    "additive_mask",
    "MemoryBank",
    "DASKModel",
]


_ENC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _encode(tokenizer: Any, text: str) -> list[int]:
    """``tokenizer.encode(text, add_special_tokens=False)``, memoised per tokenizer."""
    try:
        memo = _ENC.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable
        return tokenizer.encode(text, add_special_tokens=False)
    if text not in memo:
        memo[text] = tokenizer.encode(text, add_special_tokens=False)
    return memo[text]


def build_lookup(triples: Iterable[Sequence[str]]) -> dict[str, list[str]]:
    """Lookup table of a knowledge graph as the official ``KnowledgeGraph._create_lookup_table``
    builds it: every triple ``(head, relation, tail)`` is indexed from its head (entry
    ``"relation_tail"``), its tail (``"head_relation"``) and its relation (``"head_tail"``);
    entries keep the order of first appearance (the official uses sets)."""
    if isinstance(triples, (str, bytes)) or not isinstance(triples, Iterable):
        raise TypeError("triples must be an iterable of (head, relation, tail)")
    table: dict[str, list[str]] = {}
    n = 0
    for t in triples:
        if isinstance(t, str) or not isinstance(t, Sequence) or len(t) != 3:
            raise ValueError(f"triples must hold (head, relation, tail) triples, got {t!r}")
        if not all(isinstance(x, str) and x for x in t):
            raise TypeError(f"triples must hold non-empty strings, got {t!r}")
        h, r, o = t
        for key, val in ((h, f"{r}_{o}"), (o, f"{h}_{r}"), (r, f"{h}_{o}")):
            lst = table.setdefault(key, [])
            if val not in lst:
                lst.append(val)
        n += 1
    if n == 0:
        raise ValueError("triples is empty")
    return table


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
        tok = _encode(tokenizer, w.strip())
        if not tok:
            continue
        w_abs = list(range(len(ids), len(ids) + len(tok)))
        ids += tok
        pos += [p + i for i in range(1, len(tok) + 1)]
        seg += [0] * len(tok)
        p = pos[-1]
        e_abs = []
        for e in ents:
            et = _encode(tokenizer, " ".join(e.split("_")).strip())
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
        stopwords: Iterable[str] = (),
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
        if isinstance(stopwords, str):
            raise TypeError("stopwords must be an iterable of words, not one string")
        self.stopwords = frozenset(stopwords)
        self.source: dict[str, float] = {}
        self.target: dict[str, float] = {}
        self.common: list[str] = []
        self.pivots: list[str] = []

    @staticmethod
    def _docs(texts: Sequence[Sequence[str]], name: str) -> list[set[str]]:
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise ValueError(f"{name} must be a non-empty sequence of tokenised documents")
        for t in texts:
            if isinstance(t, str) or not isinstance(t, Sequence):
                raise TypeError(f"{name} must hold tokenised documents (lists of words)")
        return [set(w.lower() for w in t) for t in texts]

    def _words(self, docs: list[set[str]]) -> list[set[str]]:
        # the official counts alphabetic non-stop-words only (utils.extract_word_freq)
        return [{w for w in d if w.isalpha() and w not in self.stopwords} for d in docs]

    def initialize(
        self,
        source_texts: Sequence[Sequence[str]],
        source_labels: Sequence[int],
        target_texts: Sequence[Sequence[str]],
    ) -> None:
        """Common words and the initial polarity from the labelled source documents (``labels``
        0/1; ``source_texts`` may include unlabelled documents after the labelled ones)."""
        src, tgt = (
            self._words(self._docs(source_texts, "source_texts")),
            self._words(self._docs(target_texts, "target_texts")),
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


def inject_batch(
    sentences: Sequence[Sequence[str]],
    lookup: Mapping[str, Sequence[str]],
    tokenizer: Any,
    *,
    pivots: Iterable[str] | None,
    max_entities: int = 2,
    max_length: int = 256,
    cache: dict | None = None,
) -> dict[str, Tensor]:
    """:func:`inject_knowledge` of each sentence, stacked and cut to the longest sentence of the
    batch (padding is invisible, so the cut changes nothing). ``cache`` (a dict) memoises per
    sentence and the pivots it contains (pivots change only when the memory bank updates)."""
    if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences:
        raise ValueError("sentences must be a non-empty sequence of word lists")
    piv = None if pivots is None else frozenset(pivots)
    items = []
    for words in sentences:
        key = None
        if cache is not None:
            hit = frozenset(words) & piv if piv is not None else None
            key = (tuple(words), hit, max_entities, max_length)
            if key in cache:
                items.append(cache[key])
                continue
        out = inject_knowledge(
            words, lookup, tokenizer, pivots=piv, max_entities=max_entities, max_length=max_length
        )
        if cache is not None:
            cache[key] = out
        items.append(out)
    L = max(min(int(o["n_tokens"]), max_length) for o in items)
    batch = {k: torch.stack([o[k][:L] for o in items]) for k in ("input_ids", "position_ids")}
    batch["token_type_ids"] = torch.stack([o["token_type_ids"][:L] for o in items])
    batch["visible"] = torch.stack([o["visible"][:L, :L] for o in items])
    return batch


def mask_pivots(
    sentences: Sequence[Sequence[str]],
    pivots: Iterable[str],
    tokenizer: Any,
    *,
    max_length: int = 256,
) -> dict[str, Tensor]:
    """Masked pivot prediction input (the official ``Masked_SSL_preprocess``): ``[CLS] words``
    with the first sentence occurrence of every pivot replaced by ``[MASK]`` tokens;
    ``labels`` hold the pivot's token ids there and ``-100`` elsewhere. Knowledge is left out:
    in the official SSL pass (``vm_ssl``) sentence tokens do not see injected tokens, so the
    sentence-token outputs are the same."""
    if isinstance(sentences, str) or not isinstance(sentences, Sequence) or not sentences:
        raise ValueError("sentences must be a non-empty sequence of word lists")
    piv = set(pivots)
    rows, labs = [], []
    for words in sentences:
        ids: list[int] = [tokenizer.cls_token_id]
        lab: list[int] = [-100]
        seen: set[str] = set()
        for w in words:
            tok = _encode(tokenizer, w)
            if w in piv and w not in seen:
                seen.add(w)
                ids += [tokenizer.mask_token_id] * len(tok)
                lab += tok
            else:
                ids += tok
                lab += [-100] * len(tok)
        rows.append(ids[:max_length])
        labs.append(lab[:max_length])
    L = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (L - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (L - len(r)) for r in labs])
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": labels}


class DASKModel(nn.Module):
    """The official ``masked_SSL_kbert``: a BERT encoder run with the visible matrix as attention
    mask and the soft positions as position ids, a classifier
    ``Linear-Dropout-ReLU-Linear`` on the first token (pooling ``first``) and a pivot decoder
    ``Linear-Dropout-ReLU-Linear(vocab)`` for masked pivot prediction. ``encoder`` is any
    ``transformers`` BERT-style model that accepts ``position_ids`` and a 4-D additive mask."""

    def __init__(self, encoder: nn.Module, *, n_classes: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module) or not hasattr(encoder, "config"):
            raise TypeError("encoder must be a transformers model (with a .config)")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        h, v = encoder.config.hidden_size, encoder.config.vocab_size
        self.encoder = encoder
        self.classifier = nn.Sequential(
            nn.Linear(h, h), nn.Dropout(dropout), nn.ReLU(), nn.Linear(h, n_classes)
        )
        self.decoder = nn.Sequential(
            nn.Linear(h, h), nn.Dropout(dropout), nn.ReLU(), nn.Linear(h, v)
        )
        #: the pivot memory bank (optional); its scores and pivots travel in the state dict
        self.bank: MemoryBank | None = None

    def get_extra_state(self) -> Tensor:
        # a uint8 tensor of JSON (checkpoints hold tensors only)
        b = self.bank
        if b is None:
            return torch.zeros(0, dtype=torch.uint8)
        state = {"source": b.source, "target": b.target, "common": b.common, "pivots": b.pivots}
        return torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        if isinstance(state, Tensor) and state.numel() and self.bank is not None:
            d = json.loads(bytes(state.tolist()).decode())
            self.bank.source, self.bank.target = dict(d["source"]), dict(d["target"])
            self.bank.common, self.bank.pivots = list(d["common"]), list(d["pivots"])

    def hidden(
        self,
        input_ids: Tensor,
        *,
        position_ids: Tensor | None = None,
        visible: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states ``(B, L, H)``; ``visible`` (``(B, L, L)`` bool) replaces
        ``attention_mask`` (``(B, L)``) when given."""
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a (B, L) tensor of token ids")
        if input_ids.dtype not in (torch.int32, torch.int64):
            raise TypeError("input_ids must be an integer tensor")
        B, L = input_ids.shape
        if B == 0 or L == 0:
            raise ValueError(f"input_ids is empty, got shape {tuple(input_ids.shape)}")
        if input_ids.min() < 0 or input_ids.max() >= self.encoder.config.vocab_size:
            raise ValueError("input_ids holds ids outside the vocabulary")
        if position_ids is not None:
            if not isinstance(position_ids, Tensor) or position_ids.shape != (B, L):
                raise ValueError(f"position_ids must be a ({B}, {L}) tensor")
            if position_ids.min() < 0 or (
                position_ids.max() >= self.encoder.config.max_position_embeddings
            ):
                raise ValueError("position_ids exceed the encoder's position table")
        mask = None
        if visible is not None:
            if not isinstance(visible, Tensor) or visible.shape != (B, L, L):
                raise ValueError(f"visible must be a ({B}, {L}, {L}) boolean tensor")
            mask = additive_mask(
                visible, dtype=self.encoder.embeddings.word_embeddings.weight.dtype
            )
        elif attention_mask is not None:
            if not isinstance(attention_mask, Tensor) or attention_mask.shape != (B, L):
                raise ValueError(f"attention_mask must be a ({B}, {L}) tensor")
            mask = attention_mask
        return self.encoder(
            input_ids=input_ids,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            attention_mask=mask,
        ).last_hidden_state

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        visible: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Class logits ``(B, n_classes)`` of knowledge-injected input (``inject_batch``)."""
        h = self.hidden(
            input_ids, position_ids=position_ids, visible=visible, token_type_ids=token_type_ids
        )
        return self.classifier(h[:, 0])

    def pivot_logits(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Vocabulary logits at the masked pivot positions (``labels >= 0``) and their targets
        (input from :func:`mask_pivots`)."""
        h = self.hidden(input_ids, attention_mask=attention_mask)
        if not isinstance(labels, Tensor) or labels.shape != input_ids.shape:
            raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}")
        sel = labels >= 0
        return self.decoder(h[sel]), labels[sel]
