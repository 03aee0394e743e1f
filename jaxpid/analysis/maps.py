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


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (..., h, w) maps to (..., H, W) with half-pixel centres and clamped
    edges (PyTorch's ``interpolate(mode="bilinear", align_corners=False)``): how a latent map is
    laid over its image. float64."""
    maps = np.asarray(maps, np.float64)
    rows = _interpolation_matrix(maps.shape[-2], size[0])
    cols = _interpolation_matrix(maps.shape[-1], size[1])
    return np.einsum("Hh,...hw,Ww->...HW", rows, maps, cols)


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation at half-pixel centres."""
    source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(n_out), high), frac)
    return matrix


def normalise_min_max(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map scaled to [0, 1] over its own pixels (a constant map becomes all zeros)."""
    m = np.asarray(maps, np.float64)
    low = m.min(axis=(-2, -1), keepdims=True)
    span = m.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (m - low) / np.where(span > 0, span, 1.0), 0.0)


def iou_curve(normalised: np.ndarray, mask: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """IoU of ``normalised > t`` with ``mask`` for every threshold t: (H, W), (H, W) bool, (T,) ->
    (T,) (NaN when the mask is empty), by sorting once instead of thresholding T times."""
    mask = np.asarray(mask, bool)
    area = int(mask.sum())
    if area == 0:
        return np.full(len(thresholds), np.nan)
    values = np.sort(np.ravel(normalised))
    inside = np.sort(np.asarray(normalised)[mask])
    predicted = values.size - np.searchsorted(values, thresholds, side="right")
    hit = inside.size - np.searchsorted(inside, thresholds, side="right")
    return hit / (predicted + area - hit)
