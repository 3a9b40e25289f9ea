"""invariance.sequence: HiPPO / S4 / S4D state-space models and the EISL loss.

Importing this package registers its methods (``s4``, ``s4d``, ``eisl``) and benches through
:mod:`invariance.sequence.recipes`; it loads torch only (transformers is imported when a
``BartNAT`` is built; torchaudio is declared for the package's later speech methods).
"""

from invariance.sequence import eisl, hippo, recipes, s4  # recipes registers the methods
from invariance.sequence.data.synthetic import corpus_bleu, make_delay_task, make_noisy_translation
from invariance.sequence.eisl import BartNAT, ConvNAT
from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss
from invariance.sequence.nn.s4_layers import (
    S4DKernel,
    S4Kernel,
    S4Layer,
    S4Model,
    TiedDropout,
    ssm_param_groups,
)
from invariance.sequence.recipes.eisl import EISLConfig, EISLRecipe, two_stage_arms
from invariance.sequence.recipes.s4 import S4Config, S4DRecipe, S4Recipe
from invariance.sequence.s4 import ZeroReferenced

__version__ = "0.1.0"

__all__ = [
    "eisl",
    "hippo",
    "s4",
    "recipes",
    "S4Kernel",
    "S4DKernel",
    "S4Layer",
    "S4Model",
    "TiedDropout",
    "ZeroReferenced",
    "ssm_param_groups",
    "eisl_loss",
    "EISLLoss",
    "ConvNAT",
    "BartNAT",
    "make_delay_task",
    "make_noisy_translation",
    "corpus_bleu",
    "S4Config",
    "S4Recipe",
    "S4DRecipe",
    "EISLConfig",
    "EISLRecipe",
    "two_stage_arms",
]
