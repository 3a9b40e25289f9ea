"""Recipe of DASK: config, the synthetic cross-domain sentiment data with its knowledge graph, the
registered ``dask`` recipe (the official ``masked_SSL_kbert`` training: knowledge injection at the
memory bank's pivots, classification on labelled source reviews, masked pivot prediction on
labelled source + unlabelled source + unlabelled target reviews, pseudo-label updates of the
memory bank) and the injection bench; the reproduce (cross-domain pairs table) is in
:mod:`invariance.sequence.recipes._dask_experiments`. The pieces are in
:mod:`invariance.sequence.dask`, the data in :mod:`invariance.sequence.text.domains`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    register,
)
from invariance.core.bench import compare, register_bench
from invariance.core.groups import Permutation
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_invariant, check_not_invariant
from invariance.sequence.dask import (
    DASKModel,
    MemoryBank,
    build_lookup,
    inject_batch,
    inject_knowledge,
    mask_pivots,
)
from invariance.sequence.text.domains import (
    DOMAINS,
    FILLERS,
    DomainData,
    knowledge_graph,
    make_domain,
    vocabulary,
)
from invariance.sequence.text.models import tiny_bert, word_tokenizer

__all__ = [
    "DASKConfig",
    "DASKRecipe",
    "DASKData",
    "build_dask_data",
    "copy_heads",
    "accuracy",
    "PAIRS",
]

#: cross-domain pairs of the full reproduce (source, target): each domain once as source and
#: once as target
PAIRS = (
    ("books", "electronics"),
    ("electronics", "kitchen"),
    ("kitchen", "dvd"),
    ("dvd", "books"),
)


@dataclass
class DASKConfig(TrainConfig):
    """Synthetic cross-domain sentiment with a tiny BERT built from a config (defaults = tiny).

    Args:
        source / target: domains (``books``, ``dvd``, ``electronics``, ``kitchen``)
            (default: ``books`` -> ``electronics``).
        n_labeled / n_unlabeled / n_test: labelled source reviews, unlabelled reviews per domain,
            test reviews (default: 200 / 200 / 200).
        p_pivot: probability that a review's sentiment words are shared pivots, else the
            domain's own words (default: 0.5).
        links / noise: pivots each target word is linked to in the knowledge graph, fraction of
            triples pointing to a pivot of the wrong polarity (default: 2 / 0.0).
        hidden / layers / heads / dropout: encoder size, classifier/decoder dropout (official
            0.5) (default: 32 / 2 / 2 / 0.5).
        init: ``"copy"`` (identity value/output projections: copying attention heads, standing
            in for a pre-trained BERT, see :func:`copy_heads`) or ``"random"`` (default:
            ``"copy"``).
        use_kg: inject knowledge at the pivots (``False`` = the same training without knowledge)
            (default: ``True``).
        update: pseudo-label updates of the memory bank (``False`` = static pivots)
            (default: ``True``).
        lambda_ssl / ssl_warmup: weight of masked pivot prediction, fraction of the steps over
            which it ramps up linearly (official 0.1-0.3 / 0.1-0.5) (default: 0.1 / 0.1).
        balanced_interval: optimise the full loss every k-th step, the SSL loss otherwise
            (default: 1).
        update_steps / update_rate / confidence: memory-bank update period, rate alpha and
            pseudo-label confidence threshold (official 10 / 0.1 / 0.9).
        num_pivots / min_occur / max_entities / max_length: pivots kept, minimum document count
            of a common word, triples injected per pivot (official 2), sequence cap.
    """

    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    source: str = "books"
    target: str = "electronics"
    n_labeled: int = 200
    n_unlabeled: int = 200
    n_test: int = 200
    p_pivot: float = 0.5
    links: int = 2
    noise: float = 0.0
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    use_kg: bool = True
    update: bool = True
    lambda_ssl: float = 0.1
    ssl_warmup: float = 0.1
    balanced_interval: int = 1
    update_steps: int = 10
    update_rate: float = 0.1
    confidence: float = 0.9
    num_pivots: int = 16
    min_occur: int = 10
    max_entities: int = 2
    max_length: int = 64
    init: str = "copy"

    ranges: ClassVar[dict] = {
        "n_labeled": (2, None),
        "n_unlabeled": (2, None),
        "n_test": (1, None),
        "p_pivot": (0.0, 1.0),
        "links": (1, 8),
        "noise": (0.0, 1.0),
        "hidden": (2, None),
        "layers": (1, None),
        "heads": (1, None),
        "dropout": (0.0, 0.99),
        "lambda_ssl": (0.0, None),
        "ssl_warmup": (0.0, 1.0),
        "balanced_interval": (1, None),
        "update_steps": (1, None),
        "update_rate": (1e-6, 1.0),
        "confidence": (0.0, 1.0),
        "num_pivots": (1, None),
        "min_occur": (0, None),
        "max_entities": (0, None),
        "max_length": (8, None),
    }
    choices: ClassVar[dict] = {
        "source": tuple(DOMAINS),
        "target": tuple(DOMAINS),
        "init": ("copy", "random"),
    }

    def validate(self) -> None:
        super().validate()
        if self.source == self.target:
            raise ConfigError(f"DASKConfig.target must differ from source, got {self.target!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"DASKConfig.hidden={self.hidden} must be divisible by heads")
        for f in ("use_kg", "update"):
            if not isinstance(getattr(self, f), bool):
                raise ConfigError(f"DASKConfig.{f} must be a bool, got {getattr(self, f)!r}")


class _Train(Dataset):
    """(labelled source review, label, unlabelled source review, unlabelled target review) with
    the official index mapping (``Masked_DA_SSL_train_dataset``)."""

    def __init__(self, src: DomainData, tgt: DomainData) -> None:
        self.src, self.tgt = src, tgt
        self.n = max(len(src.unlabeled), len(tgt.unlabeled))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        s, t = self.src, self.tgt
        sl = i * len(s.labeled) // self.n
        su = i * len(s.unlabeled) // self.n
        tu = i * len(t.unlabeled) // self.n
        return (s.labeled[sl], s.labels[sl], s.unlabeled[su], t.unlabeled[tu])


class _Eval(Dataset):
    def __init__(self, texts: list[list[str]], labels: list[int]) -> None:
        self.texts, self.labels = texts, labels

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple:
        return (self.texts[i], self.labels[i])


def _collate(items: list[tuple]) -> dict[str, Any]:
    if len(items[0]) == 4:
        return {
            "labeled": [it[0] for it in items],
            "labels": torch.tensor([it[1] for it in items]),
            "src": [it[2] for it in items],
            "tgt": [it[3] for it in items],
        }
    return {"text": [it[0] for it in items], "labels": torch.tensor([it[1] for it in items])}


@dataclass
class DASKData:
    """Tokenizer, source and target domains, the target knowledge graph and its lookup table."""

    tok: Any
    source: DomainData
    target: DomainData
    triples: list[tuple[str, str, str]]
    lookup: dict[str, list[str]]


_TOK: list[Any] = []
_DATA: dict[tuple, DASKData] = {}


def _tokenizer() -> Any:
    if not _TOK:
        _TOK.append(word_tokenizer(vocabulary()))
    return _TOK[0]


def build_dask_data(cfg: DASKConfig) -> DASKData:
    """The reviews and knowledge graph of ``cfg`` (cached per data-relevant fields). The graph
    links the *target* domain's words to pivots (DASK builds it from target unlabelled data)."""
    key = (cfg.seed, cfg.source, cfg.target, cfg.n_labeled, cfg.n_unlabeled, cfg.n_test)
    key += (cfg.p_pivot, cfg.links, cfg.noise)
    if key not in _DATA:
        kw = dict(
            n_labeled=cfg.n_labeled,
            n_unlabeled=cfg.n_unlabeled,
            n_test=cfg.n_test,
            p_pivot=cfg.p_pivot,
            seed=cfg.seed,
        )
        triples = knowledge_graph(cfg.target, links=cfg.links, noise=cfg.noise, seed=cfg.seed)
        _DATA[key] = DASKData(
            _tokenizer(),
            make_domain(cfg.source, **kw),
            make_domain(cfg.target, **kw),
            triples,
            build_lookup(triples),
        )
    return _DATA[key]


def _inputs(model: nn.Module, texts: list[list[str]]) -> dict[str, Tensor]:
    """Knowledge-injected input at the memory bank's current pivots (no pivots without KG)."""
    pivots = model.bank.pivots if model.use_kg else []
    b = inject_batch(
        texts,
        model.lookup,
        model.tok,
        pivots=pivots,
        max_entities=model.max_entities,
        max_length=model.max_length,
        cache=model.cache,
    )
    # the official model passes no segment ids (all 0)
    return {"input_ids": b["input_ids"], "position_ids": b["position_ids"], "visible": b["visible"]}


def _ssl(model: nn.Module, texts: list[list[str]]) -> tuple[Tensor, Tensor]:
    m = mask_pivots(texts, model.bank.pivots, model.tok, max_length=model.max_length)
    return model.pivot_logits(m["input_ids"], m["attention_mask"], m["labels"])


@torch.no_grad()
def accuracy(model: nn.Module, texts: list[list[str]], labels: list[int], bs: int = 256) -> float:
    """Classification accuracy with knowledge injected at the current pivots (eval mode)."""
    was = model.training
    model.eval()
    hit = 0
    for i in range(0, len(texts), bs):
        logits = model(**_inputs(model, texts[i : i + bs]))
        hit += int((logits.argmax(-1) == torch.tensor(labels[i : i + bs])).sum())
    model.train(was)
    return hit / max(len(texts), 1)


@register(
    "dask",
    domain="sequence",
    paper="Domain-Adaptive Text Classification with Structured Knowledge from Unlabeled Data",
    authors="Li, Chen, Dong, Yu, Yan, Keutzer, Zhang",
    year=2022,
    arxiv="2206.09591",
    code_url="https://github.com/hikaru-nara/DASK",
    symmetry="domain invariance of pivots; the injected encoding is invariant to how the "
    "knowledge tree is flattened (order of injected tokens)",
    baseline="the same encoder and training without knowledge injection",
    tags=("text", "domain-adaptation", "knowledge-graph", "sentiment"),
)
class DASKRecipe(Recipe):
    """Tiny BERT from a config on synthetic cross-domain reviews; the official ``masked_SSL_kbert``
    schedule (see :meth:`train_step`)."""

    Config = DASKConfig
    presets = {
        "tiny": {},
        "full": {"n_labeled": 300, "n_unlabeled": 300},
    }

    def collate(self, items: list) -> Any:
        return _collate(items)

    def make_data(self, cfg: DASKConfig, split: str) -> Dataset:
        d = build_dask_data(cfg)
        if split == "train":
            return _Train(d.source, d.target)
        if split in ("test", "val"):
            return _Eval(d.target.test, d.target.test_labels)
        if split == "target_only":
            return _Eval(d.target.test_target_only, d.target.test_target_only_labels)
        if split == "source":
            return _Eval(d.source.test, d.source.test_labels)
        raise ValueError(f"split must be train, test, val, target_only or source, got {split!r}")

    def build(self, cfg: DASKConfig) -> nn.Module:
        d = build_dask_data(cfg)
        enc = tiny_bert(
            len(d.tok),
            hidden=cfg.hidden,
            layers=cfg.layers,
            heads=cfg.heads,
            max_positions=cfg.max_length + 8,
            seed=cfg.seed,
        )
        if cfg.init == "copy":
            copy_heads(enc)
        model = DASKModel(enc, dropout=cfg.dropout)
        model.tok, model.lookup, model.cache = d.tok, d.lookup, {}
        model.use_kg, model.update = cfg.use_kg, cfg.update
        model.max_entities, model.max_length = cfg.max_entities, cfg.max_length
        model.bank = MemoryBank(
            min_occur=cfg.min_occur,
            num_pivots=cfg.num_pivots,
            alpha=cfg.update_rate,
            confidence=cfg.confidence,
            stopwords=FILLERS,
        )
        model.bank.initialize(
            d.source.labeled + d.source.unlabeled, d.source.labels, d.target.unlabeled
        )
        warm = int(cfg.ssl_warmup * cfg.steps)
        model.ssl_schedule = (cfg.lambda_ssl, warm)
        model.balanced_interval, model.update_steps = cfg.balanced_interval, cfg.update_steps
        return model

    def step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        if "text" in batch:  # an eval set
            logits = model(**_inputs(model, batch["text"]))
            loss = F.cross_entropy(logits, batch["labels"])
            acc = (logits.argmax(-1) == batch["labels"]).float().mean()
            return {"loss": loss, "acc": acc.detach()}
        logits = model(**_inputs(model, batch["labeled"]))
        cls = F.cross_entropy(logits, batch["labels"])
        lam = model.ssl_schedule[0]
        preds, tgt = _ssl(model, batch["labeled"] + batch["src"] + batch["tgt"])
        ssl = F.cross_entropy(preds, tgt) if tgt.numel() else preds.sum() * 0.0
        return {"loss": cls + lam * ssl, "cls": cls.detach(), "ssl": ssl.detach()}

    def train_step(
        self, model: nn.Module, batch: dict[str, Any], optimizer: Any, step: int
    ) -> dict[str, Tensor]:
        """One official ``masked_SSL_kbert_Trainer`` iteration: class logits of the labelled
        source batch (knowledge injected at the current pivots), no-grad logits of the unlabelled
        source and target batches (for the memory bank), masked pivot prediction on all three;
        ``loss = CE + lambda_t * CE_ssl`` (lambda ramps up linearly over the warm-up); every
        ``balanced_interval``-th step optimises the full loss, the others the SSL loss only; every
        ``update_steps``-th step the memory bank takes the pseudo-labels and re-ranks pivots."""
        model.train()
        optimizer.zero_grad(set_to_none=True)
        logits = model(**_inputs(model, batch["labeled"]))
        upd = model.update and (step + 1) % model.update_steps == 0
        if upd:  # the official computes these every step but uses them only here
            with torch.no_grad():
                p_src = model(**_inputs(model, batch["src"])).softmax(-1)[:, 1]
                p_tgt = model(**_inputs(model, batch["tgt"])).softmax(-1)[:, 1]
        cls = F.cross_entropy(logits, batch["labels"])
        lam_max, warm = model.ssl_schedule
        lam = lam_max if warm == 0 else min(lam_max, lam_max * step / warm)
        if lam_max > 0:
            preds, tgt = _ssl(model, batch["labeled"] + batch["src"] + batch["tgt"])
            ssl = F.cross_entropy(preds, tgt) if tgt.numel() else logits.sum() * 0.0
        else:
            ssl = logits.sum() * 0.0
        loss = cls + lam * ssl
        (loss if step % model.balanced_interval == 0 else lam * ssl).backward()
        optimizer.step()
        if upd:
            # the official labelled-batch update uses the predicted label with confidence 1
            p_lab = (logits.detach().argmax(-1) == 1).float()
            model.bank.update(batch["labeled"], p_lab, "source")
            model.bank.update(batch["src"], p_src, "source")
            model.bank.update(batch["tgt"], p_tgt, "target")
            model.bank.update_pivots()
        acc = (logits.argmax(-1) == batch["labels"]).float().mean()
        return {"loss": loss.detach(), "cls": cls.detach(), "ssl": ssl.detach(), "acc": acc}

    def metrics(self, model: nn.Module, dataset: Dataset) -> dict[str, float]:
        if isinstance(dataset, _Eval):
            return {"acc": accuracy(model, dataset.texts, dataset.labels)}
        return super().metrics(model, dataset)

    def check(self, model: nn.Module, cfg: DASKConfig) -> list[CheckResult]:
        """The knowledge tree, not its flattening, defines the encoding: permuting the tokens
        after ``[CLS]`` together with their soft positions and the visible matrix's rows and
        columns leaves the class logits unchanged (so the order of the injected triples, a set in
        the official code, does not matter). Negative control: the same permutation with hard
        positions ``0..L-1`` (a plain BERT reading the flattened sequence) changes them."""
        d = build_dask_data(cfg)
        texts = d.source.labeled[:6]
        piv = sorted({w for t in texts for w in t} & set(d.lookup)) or None
        b = inject_batch(
            texts, d.lookup, d.tok, pivots=piv, max_entities=2, max_length=cfg.max_length
        )
        ids, pos, vis = b["input_ids"], b["position_ids"], b["visible"]
        m = model.eval()
        L = ids.shape[1]

        def act(g: Tensor, x: Tensor) -> Tensor:
            full = torch.cat([torch.zeros(1, dtype=torch.long), g + 1])
            x = x.index_select(1, full)
            return x.index_select(2, full) if x.dim() == 3 else x

        def soft(i: Tensor, p: Tensor, v: Tensor) -> Tensor:
            return m(i.long(), p.long(), v.bool()).double()

        def hard(i: Tensor, p: Tensor, v: Tensor) -> Tensor:
            ar = torch.arange(i.shape[1]).expand_as(i)
            return m(i.long(), ar, v.bool()).double()

        grp = Permutation(dim=0, n=L - 1)
        inputs = (ids, pos, vis)
        return [
            check_invariant("injected_tree_flattening", soft, inputs, grp, act, dtype=None),
            check_not_invariant(
                "hard_positions_flattening", hard, inputs, grp, act, dtype=None, min_error=1e-4
            ),
        ]

    def reproduce(self, cfg: DASKConfig, run: Any, *, quick: bool) -> ReproduceResult:
        from invariance.sequence.recipes._dask_experiments import reproduce_dask

        return reproduce_dask(self, cfg, run, quick=quick)


@torch.no_grad()
def copy_heads(encoder: nn.Module) -> nn.Module:
    """Set every self-attention layer's value and output projections to the identity (zero bias):
    attention then averages the visible tokens' states (copying heads). Stands in for the copying
    heads of a pre-trained BERT: with it, what a pivot copies from its injected words during
    training is what a sentence token copies from the same word at test time."""
    for layer in encoder.encoder.layer:
        for lin in (layer.attention.self.value, layer.attention.output.dense):
            lin.weight.copy_(torch.eye(lin.weight.shape[0], dtype=lin.weight.dtype))
            lin.bias.zero_()
    return encoder


@register_bench("sequence", "dask")
def bench_dask(*, device: str = "cpu", quick: bool = False) -> dict:
    """Knowledge injection of a batch of reviews: ours (``inject_batch``, cached per sentence and
    pivot set, as in training) against the unbatched uncached path (one
    ``inject_knowledge`` call per review, as the official dataset does per item)."""
    cfg = DASKConfig()
    d = build_dask_data(cfg)
    texts = d.source.labeled[: 32 if quick else 128]
    piv = sorted(set(d.lookup) & {w for t in texts for w in t})
    cache: dict = {}

    def ours() -> Any:
        return inject_batch(texts, d.lookup, d.tok, pivots=piv, max_length=64, cache=cache)

    def unbatched() -> Any:
        return [inject_knowledge(t, d.lookup, d.tok, pivots=piv, max_length=64) for t in texts]

    rows = compare(
        {"unbatched": unbatched, "ours": ours},
        reference="unbatched",
        repeats=3 if quick else 5,
        min_run_time=0.1 if quick else 0.2,
        label=f"{len(texts)} reviews",
    )
    return {"rows": rows, "machine": device}
