"""Procedural (seeded, with ground truth) and package-shipped graph data for OOD methods."""

from invariance.graph.data.connectome import load_drosophila_left
from invariance.graph.data.csbm import load_karate, make_csbm_mixture, node_homophily
from invariance.graph.data.mol_motif import make_mol_motif, mol_to_data
from invariance.graph.data.spurious_motif import (
    BASES,
    MOTIFS,
    make_spurious_motif,
    spurious_motif_graph,
)

__all__ = [
    "BASES",
    "MOTIFS",
    "load_drosophila_left",
    "load_karate",
    "make_csbm_mixture",
    "make_mol_motif",
    "make_spurious_motif",
    "mol_to_data",
    "node_homophily",
    "spurious_motif_graph",
]
