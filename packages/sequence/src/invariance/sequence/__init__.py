"""invariance.sequence: HiPPO / S4 / S4D state-space models and the EISL loss.

Importing this package registers its methods (``s4``, ``s4d``, ``eisl``) and benches; it loads torch
only (transformers is imported inside the EISL reproduce code, torchaudio by later modules).
"""

from invariance.sequence import eisl, hippo, s4  # noqa: F401  (registers the methods)
from invariance.sequence.data.synthetic import corpus_bleu, make_delay_task, make_noisy_translation
from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss
from invariance.sequence.nn.s4_layers import S4DKernel, S4Kernel, S4Layer, S4Model, ssm_param_groups

__version__ = "0.1.0"

__all__ = [
    "hippo",
    "S4Kernel",
    "S4DKernel",
    "S4Layer",
    "S4Model",
    "ssm_param_groups",
    "eisl_loss",
    "EISLLoss",
    "make_delay_task",
    "make_noisy_translation",
    "corpus_bleu",
]
