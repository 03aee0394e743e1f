"""The statistics the studies report, each with its uncertainty (numpy only).

- ``mean_and_stderr``: a mean over items and its standard error.
- ``pearson``: Pearson's r with a 95 % confidence interval from Fisher's z transform.
- ``spearman``: Spearman's rank correlation (Pearson's r of average ranks) with the same interval.
- ``wilson``: a binomial proportion's 95 % Wilson score interval (accuracy of n trials).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def _finite(*columns: Sequence[float]) -> list[np.ndarray]:
    arrays = [np.asarray(c, np.float64) for c in columns]
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    return [a[keep] for a in arrays]


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (NaN for fewer than two values), ignoring non-finite values."""
    (v,) = _finite(values)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, tuple[float, float], int]:
    """(r, (low, high) 95 % interval, n) over the pairs where both are finite; NaN when n < 4 or
    a variable is constant."""
    x, y = _finite(x, y)
    n = int(x.size)
    if n < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), (float("nan"), float("nan")), n
    r = float(np.corrcoef(x, y)[0, 1])
    return r, fisher_interval(r, n), n


def fisher_interval(r: float, n: int) -> tuple[float, float]:
    """95 % interval of a correlation from Fisher's z (needs n >= 4)."""
    if n < 4 or not math.isfinite(r):
        return float("nan"), float("nan")
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = Z95 / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    out = np.empty(values.size, np.float64)
    start = 0
    while start < values.size:
        stop = start + 1
        while stop < values.size and sorted_values[stop] == sorted_values[start]:
            stop += 1
        out[order[start:stop]] = 0.5 * (start + stop - 1) + 1.0
        start = stop
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, tuple[float, float], int]:
    """Spearman's rho as Pearson's r of average ranks, with the Fisher interval."""
    x, y = _finite(x, y)
    return pearson(ranks(x), ranks(y))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion successes / n."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
