"""Shapes the synthetic phantoms are built from."""

from __future__ import annotations

import numpy as np


def ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Boolean mask of the ellipsoid with ``centre`` and ``radii`` (one per axis) on ``grid``, the
    stacked voxel coordinates of shape (D, *spatial) as ``np.meshgrid(..., indexing="ij")`` gives."""
    extra = (slice(None),) + (None,) * (grid.ndim - 1)
    return (((grid - np.asarray(centre)[extra]) / np.asarray(radii)[extra]) ** 2).sum(0) <= 1.0
