"""Sequential choice of the most likely conditioning, checked after every round of samples.

For a retrieval item (an image, C candidate captions, all evaluated on the same (log-SNR, noise)
draws), the choice is the caption with the lowest NLL — the largest standard-form information
against the pass's reference. After each round the current best caption b is accepted when, for
every rival r, the paired margin d = i(x; b) − i(x; r) (per sample, so the shared draws cancel)
satisfies

    mean(d) − z_k · s.e.(d) > 0,    z_k = Φ⁻¹(1 − α_k / (C − 1)),    α_k = α · 6 / (π² k²)

at look k = 1, 2, … (α = 1 − confidence). The looks spend α_1 + α_2 + … = α (alpha spending
with Σ 1/k² = π²/6), and each look's C − 1 comparisons share its α_k (Bonferroni), so the chance
of ever accepting a caption that is not the best is at most α — although the bound is checked
after every round — as far as each look's mean is normal (the s.e. is the stratified one of the
round's sampler). An item that never clears the bound stops at its sample cap and takes the
fixed-N rule's choice there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from jaxpid.core.results import InformationResult
from jaxpid.core.sampling import stratified_stderr
from jaxpid.errors import ConfigError


def look_alpha(look: int, confidence: float) -> float:
    """The error spent at look ``look`` (1-based): (1 − confidence) · 6 / (π² look²)."""
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if look < 1:
        raise ConfigError(f"looks count from 1, got {look}")
    return (1.0 - confidence) * 6.0 / (math.pi**2 * look**2)


def sequential_choice(res: InformationResult, candidates: Sequence[int], *, confidence: float,
                      look: int) -> tuple[int, bool, np.ndarray]:
    """The current choice among ``candidates`` (conditioning indices) for a one-image result, and
    whether it clears the bound at look ``look``.

    Returns:
      (choice, decided, lower): the candidate with the largest mean standard-form information
      (lowest NLL), whether its margin over every rival clears the bound, and each rival's
      lower bound mean(d) − z·s.e.(d) (the chosen one's entry is +inf).
    """
    if res.samples_standard.shape[0] != 1:
        raise ConfigError(f"a sequential choice is per image; got {res.samples_standard.shape[0]} images")
    candidates = list(candidates)
    if len(candidates) < 2:
        raise ConfigError("a choice needs at least two candidates")
    samples = res.samples_standard[0][:, candidates]  # (N, C): per-sample i(x; c), shared draws
    choice = int(np.argmax(samples.mean(axis=0)))
    alpha = look_alpha(look, confidence) / (len(candidates) - 1)
    z = NormalDist().inv_cdf(1.0 - alpha)
    margins = samples[:, [choice]] - samples  # (N, C): d against every rival
    stderr = stratified_stderr(margins[None], res.strata)[0]
    lower = margins.mean(axis=0) - z * stderr
    lower[choice] = math.inf
    decided = bool(np.all(lower > 0))
    return candidates[choice], decided, lower
