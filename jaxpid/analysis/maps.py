"""Binary masks from information maps, and their overlap (pure numpy, any leading axes)."""

from __future__ import annotations

import numpy as np


def threshold_map(info_map: np.ndarray, n_std: float = 1.5) -> np.ndarray:
    """Pixels above mean + n_std·std of their own map: (..., h, w) -> bool (..., h, w)."""
    m = np.asarray(info_map, np.float64)
    mean = m.mean(axis=(-2, -1), keepdims=True)
    std = m.std(axis=(-2, -1), keepdims=True)
    return m > mean + n_std * std


def baseline_redundancy_map(map_a: np.ndarray, map_b: np.ndarray, n_std: float = 1.5) -> np.ndarray:
    """DiffusionPID's baseline (docs/method.md#baseline-redundancy-maps): two MI / CMI (or
    attention) maps, each thresholded at mean + 1.5·std, intersected. (..., h, w) -> bool."""
    return threshold_map(map_a, n_std) & threshold_map(map_b, n_std)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boolean masks over the last two axes (NaN if both empty)."""
    inter = np.sum(a & b, axis=(-2, -1))
    union = np.sum(a | b, axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)
