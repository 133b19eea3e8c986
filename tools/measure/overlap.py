"""Overlap of label maps, for tools that compare masks outside a MONAI evaluator."""

from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def mean_dice(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Mean over the foreground classes 1..num_classes-1 of class maps (what MONAI's MeanDice reports)."""
    return float(np.mean([dice(pred == c, label == c) for c in range(1, num_classes)]))
