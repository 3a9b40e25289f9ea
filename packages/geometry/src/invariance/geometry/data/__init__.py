"""Procedural data with ground truth (seeded), and offline mesh readers."""

from .affine_digits import make_affine_digits
from .meshes import PYVISTA_MESHES, load_pyvista_mesh, pyvista_example_path, read_ply, sample_mesh
from .nbody import NBodyDataset, make_nbody, simulate_charged
from .shapes import SHAPE_CLASSES, PointCloudDataset, make_shape_classes, sample_shape

__all__ = [
    "make_affine_digits",
    "SHAPE_CLASSES",
    "PointCloudDataset",
    "make_shape_classes",
    "sample_shape",
    "read_ply",
    "sample_mesh",
    "pyvista_example_path",
    "load_pyvista_mesh",
    "PYVISTA_MESHES",
    "simulate_charged",
    "make_nbody",
    "NBodyDataset",
]
