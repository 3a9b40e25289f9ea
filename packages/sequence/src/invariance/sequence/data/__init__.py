"""Procedural sequence data with exact ground truth."""

from invariance.sequence.data.synthetic import (
    NOISES,
    corpus_bleu,
    corrupt,
    make_delay_task,
    make_noisy_translation,
)

__all__ = ["make_delay_task", "make_noisy_translation", "corrupt", "corpus_bleu", "NOISES"]
