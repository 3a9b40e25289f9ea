"""invariance.causal: invariance in causal inference and batch-effect modelling.

Methods (one module each; configs, recipes and reproduce experiments in
:mod:`invariance.causal.recipes`, registered under domain ``causal``):

* :mod:`~invariance.causal.pac_invariance`: PAC generalisation via (approximately) invariant linear
  representations (Parulekar et al., ICML 2023);
* :mod:`~invariance.causal.causal_de_finetti`: Causal de Finetti structure identification from
  exchangeable grouped data (Guo et al., NeurIPS 2023), with our KCI test
  (:mod:`~invariance.causal.ci_tests`);
* :mod:`~invariance.causal.medl`: mixed-effects deep learning (scMEDAL) for single-cell data with
  batch effects (Andrade et al., 2024).

Procedural data with ground truth lives in :mod:`invariance.causal.data`.
"""

from invariance.causal import (
    benches,  # noqa: F401  (registers the benches)
    recipes,  # noqa: F401  (registers the methods)
)
from invariance.causal.causal_de_finetti import (
    CdFResult,
    ICMGaussian,
    causal_de_finetti,
    iid_baseline,
    normalised_shd,
)
from invariance.causal.ci_tests import fisher_z_test, g_test, kci_test
from invariance.causal.data.exchangeable import (
    make_bivariate_exchangeable,
    make_linear_gaussian_icm,
    make_multivariate_binary,
)
from invariance.causal.data.scrna import load_pbmc68k_reduced, make_scrna_counts
from invariance.causal.data.sem import LinearSEM, empirical_covariance
from invariance.causal.medl import (
    MEDL,
    RandomEffectBlock,
    medl_alternating_step,
    medl_loss,
    re_relabel_report,
)
from invariance.causal.pac_invariance import (
    InvariantLinear,
    SubsetFit,
    certify_invariance,
    fit_invariant_subset,
    invariance_residual,
    sample_residual,
)
from invariance.causal.recipes.causal_de_finetti import CausalDeFinettiRecipe
from invariance.causal.recipes.medl import MEDLRecipe, fit_medl
from invariance.causal.recipes.pac_invariance import PACInvarianceRecipe, fit_invariant_linear

__version__ = "0.1.0"

__all__ = [
    "LinearSEM",
    "empirical_covariance",
    "fit_invariant_subset",
    "fit_invariant_linear",
    "certify_invariance",
    "invariance_residual",
    "sample_residual",
    "InvariantLinear",
    "SubsetFit",
    "PACInvarianceRecipe",
    "causal_de_finetti",
    "iid_baseline",
    "normalised_shd",
    "CdFResult",
    "ICMGaussian",
    "CausalDeFinettiRecipe",
    "kci_test",
    "fisher_z_test",
    "g_test",
    "make_bivariate_exchangeable",
    "make_linear_gaussian_icm",
    "make_multivariate_binary",
    "MEDL",
    "RandomEffectBlock",
    "medl_loss",
    "fit_medl",
    "medl_alternating_step",
    "re_relabel_report",
    "MEDLRecipe",
    "make_scrna_counts",
    "load_pbmc68k_reduced",
]
