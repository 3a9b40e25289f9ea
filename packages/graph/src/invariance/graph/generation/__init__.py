"""Graph generation toolkit (used by PARD, reusable on its own): PARD's block decomposition and
parallel training layout, USD3 categorical diffusion, generic graph families and molecules, and the
field's metrics (MMD^2 of degree / clustering / orbit / spectral statistics, a pure-Python orbit
counter, molecule validity / uniqueness / novelty)."""

from invariance.graph.generation.blocks import (
    BlockDecomposition,
    ParallelBatch,
    block_decomposition,
    block_sort,
    causal_block_mask,
    higher_order_degrees,
    parallel_blocks,
    target_masks,
)
from invariance.graph.generation.diffusion import (
    CategoricalDiffusion,
    cosine_alphabar,
    uniform_prior,
)
from invariance.graph.generation.families import (
    FAMILIES,
    data_to_nx,
    make_family,
    nx_to_data,
    split_graphs,
)
from invariance.graph.generation.metrics import (
    clustering_mmd,
    compute_mmd,
    degree_mmd,
    gaussian_tv,
    graph_mmds,
    orbit_mmd,
    spectral_mmd,
)
from invariance.graph.generation.molecules import (
    er_valence_molecules,
    graph_to_smiles,
    molecule_metrics,
    qm9_mini,
    smiles_to_data,
)
from invariance.graph.generation.orbits import orbit_counts, orbit_counts_bruteforce

__all__ = [
    "er_valence_molecules",
    "BlockDecomposition",
    "CategoricalDiffusion",
    "FAMILIES",
    "ParallelBatch",
    "block_decomposition",
    "block_sort",
    "causal_block_mask",
    "clustering_mmd",
    "compute_mmd",
    "cosine_alphabar",
    "data_to_nx",
    "degree_mmd",
    "gaussian_tv",
    "graph_mmds",
    "graph_to_smiles",
    "higher_order_degrees",
    "make_family",
    "molecule_metrics",
    "nx_to_data",
    "orbit_counts",
    "orbit_counts_bruteforce",
    "orbit_mmd",
    "parallel_blocks",
    "qm9_mini",
    "smiles_to_data",
    "spectral_mmd",
    "split_graphs",
    "target_masks",
    "uniform_prior",
]
