"""invariance.sequence: HiPPO / S4 / S4D state-space models, the EISL loss, augmentation-invariant
speech units, UniMTS, Observatory table-embedding measures, corpus-invariant tuning (CIT) and
domain adaptation with structured knowledge (DASK).

Importing this package registers its methods (``s4``, ``s4d``, ``eisl``, ``speech_units``,
``unimts``, ``observatory``, ``cit``, ``dask``) and benches through
:mod:`invariance.sequence.recipes`;
torchaudio is loaded by the speech modules; transformers models are built only when a method
needs one (``BartNAT``, the text models of :mod:`invariance.sequence.text`).
"""

from invariance.sequence import (  # recipes registers the methods
    audio,
    cit,
    dask,
    eisl,
    hippo,
    motion,
    observatory,
    recipes,
    s4,
    speech_units,
    text,
    unimts,
)
from invariance.sequence.cit import CorpusInvariantTuning, FiDReader, cit_penalty, span_corrupt
from invariance.sequence.dask import DASKModel, MemoryBank, build_lookup, inject_knowledge
from invariance.sequence.data.synthetic import corpus_bleu, make_delay_task, make_noisy_translation
from invariance.sequence.eisl import BartNAT, ConvNAT
from invariance.sequence.motion.stgcn import STGCN
from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss
from invariance.sequence.nn.s4_layers import (
    S4DKernel,
    S4Kernel,
    S4Layer,
    S4Model,
    TiedDropout,
    ssm_param_groups,
)
from invariance.sequence.observatory import DeepSetsTableEmbedder, HFTableEmbedder, mcv
from invariance.sequence.recipes.cit import CITConfig, CITRecipe
from invariance.sequence.recipes.dask import DASKConfig, DASKRecipe
from invariance.sequence.recipes.eisl import EISLConfig, EISLRecipe, two_stage_arms
from invariance.sequence.recipes.observatory import ObservatoryConfig, ObservatoryRecipe
from invariance.sequence.recipes.s4 import S4Config, S4DRecipe, S4Recipe
from invariance.sequence.recipes.speech_units import (
    SpeechUnitsConfig,
    SpeechUnitsRecipe,
    train_invariant_units,
)
from invariance.sequence.recipes.unimts import UniMTSConfig, UniMTSRecipe
from invariance.sequence.s4 import ZeroReferenced
from invariance.sequence.speech_units import MFCCUnits, SpeechUnits, UnitEncoder, ctc_unit_loss
from invariance.sequence.text.tables import Table
from invariance.sequence.unimts import (
    FewShotClassifier,
    JointCNN,
    MiniLMEmbedder,
    UniMTS,
    fine_tune,
    unimts_loss,
    zero_shot_logits,
)

__version__ = "0.1.0"

__all__ = [
    "dask",
    "DASKModel",
    "MemoryBank",
    "build_lookup",
    "inject_knowledge",
    "DASKConfig",
    "DASKRecipe",
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
    "audio",
    "motion",
    "speech_units",
    "unimts",
    "SpeechUnits",
    "MFCCUnits",
    "UnitEncoder",
    "ctc_unit_loss",
    "SpeechUnitsConfig",
    "SpeechUnitsRecipe",
    "train_invariant_units",
    "UniMTS",
    "JointCNN",
    "MiniLMEmbedder",
    "unimts_loss",
    "zero_shot_logits",
    "STGCN",
    "UniMTSConfig",
    "UniMTSRecipe",
    "observatory",
    "cit",
    "text",
    "DeepSetsTableEmbedder",
    "HFTableEmbedder",
    "mcv",
    "Table",
    "CorpusInvariantTuning",
    "FiDReader",
    "cit_penalty",
    "span_corrupt",
    "ObservatoryConfig",
    "ObservatoryRecipe",
    "CITConfig",
    "CITRecipe",
    "FewShotClassifier",
    "fine_tune",
]
