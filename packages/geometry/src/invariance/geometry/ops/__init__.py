"""Pure-torch point-cloud operators shared by every geometry method.

Row-vector convention everywhere: a rigid motion acts as ``X @ R.T + t`` on (N, 3) points.
"""

from .frames import (
    O3_SIGNS,
    SO3_SIGNS,
    Frames,
    canonical_frame,
    centroid_covariance,
    classical_mds,
    frame_signs,
    pca_frames,
    sign_disambiguate,
)
from .geometry_features import estimate_normals, point_pair_features, vector_angle
from .neighbors import ball_query, farthest_point_sample, index_points, knn

__all__ = [
    "knn",
    "ball_query",
    "farthest_point_sample",
    "index_points",
    "estimate_normals",
    "point_pair_features",
    "vector_angle",
    "Frames",
    "pca_frames",
    "centroid_covariance",
    "canonical_frame",
    "sign_disambiguate",
    "classical_mds",
    "O3_SIGNS",
    "SO3_SIGNS",
    "frame_signs",
]
