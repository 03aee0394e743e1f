"""Importance samplers over log-SNR (docs/method.md#sampling-the-log-snr).

An integral over all log-SNR values α is estimated as (1/N) Σ w(α_n) f(α_n) with α_n ~ q.
A sampler maps a uniform draw u ∈ (0, 1) of sample n to (α, w(α)); it is a frozen dataclass so
it can be a static argument of a compiled program and be recorded in every result.

``StratifiedSampler`` (the default) cuts a proposal's u-range into K equal strata and gives
sample n stratum n mod K: the same proposal, but every region of log-SNR gets its share of the
samples in every run, which removes the part of the variance that comes from how the integrand
changes along α (docs/method.md#stratified-log-snr-samples). Standard errors then come from the
spread within strata (``stratified_stderr``, ``jackknife_replicates``), which needs two samples
per stratum.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError


def _check_positive(sampler, field: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{type(sampler).__name__}.{field} must be a positive finite number, got {value!r}")


class LogSNRSampler(Protocol):
    strata: int | None

    def draw(self, u: jax.Array, sample: jax.Array | None = None, n_samples: int | None = None
             ) -> tuple[jax.Array, jax.Array]:
        """Uniform draws u of samples ``sample`` (index in 0..n_samples−1, same shape as u) ->
        (log-SNR α, importance weight w), same shape."""
        ...

    def for_samples(self, n_samples: int) -> LogSNRSampler:
        """This sampler with everything that depends on N fixed (what a pass records)."""
        ...

    def to_dict(self) -> dict: ...


class _Independent:
    """Independent draws: every sample from the whole proposal (one stratum)."""

    strata = 1

    def for_samples(self, n_samples: int):
        return self


@dataclasses.dataclass(frozen=True)
class LogisticSampler(_Independent):
    """Truncated logistic proposal (the papers'): α = loc + scale·logit(p), p uniform on
    [σ(−clip), σ(clip)], so α ∈ [loc − clip·scale, loc + clip·scale]; independent draws."""

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0

    def __post_init__(self):
        _check_positive(self, "scale", self.scale)
        _check_positive(self, "clip", self.clip)

    def draw(self, u: jax.Array, sample=None, n_samples=None) -> tuple[jax.Array, jax.Array]:
        lo, hi = jax.nn.sigmoid(-self.clip), jax.nn.sigmoid(self.clip)
        p = lo + (hi - lo) * u
        alpha = self.loc + self.scale * (jnp.log(p) - jnp.log1p(-p))
        return alpha, self.weight(alpha)

    def weight(self, alpha: jax.Array) -> jax.Array:
        """1 / q(α): the truncated logistic density's reciprocal."""
        t = (alpha - self.loc) / self.scale
        return self.scale * math.tanh(self.clip / 2) / (jax.nn.sigmoid(t) * jax.nn.sigmoid(-t))

    @property
    def support(self) -> tuple[float, float]:
        return (self.loc - self.clip * self.scale, self.loc + self.clip * self.scale)

    def to_dict(self) -> dict:
        return {"name": "logistic", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class UniformSampler(_Independent):
    """Uniform proposal on [loc − clip·scale, loc + clip·scale]; w = 2·clip·scale."""

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0

    def __post_init__(self):
        _check_positive(self, "scale", self.scale)
        _check_positive(self, "clip", self.clip)

    def draw(self, u: jax.Array, sample=None, n_samples=None) -> tuple[jax.Array, jax.Array]:
        lo, hi = self.support
        alpha = lo + (hi - lo) * u
        return alpha, jnp.full_like(alpha, hi - lo)

    def weight(self, alpha: jax.Array) -> jax.Array:
        lo, hi = self.support
        return jnp.full_like(alpha, hi - lo)

    @property
    def support(self) -> tuple[float, float]:
        return (self.loc - self.clip * self.scale, self.loc + self.clip * self.scale)

    def to_dict(self) -> dict:
        return {"name": "uniform", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class StratifiedSampler:
    """A proposal's u-range in K equal strata; sample n draws u ∈ [(n mod K)/K, (n mod K + 1)/K).

    Unbiased for any N ≥ 2K: stratum h holds n_h samples and its samples are weighted by
    N / (K·n_h) (1 when K divides N), so the plain mean over samples is Σ_h (1/K)·mean_h.
    Draws depend on (key, n) and N only, never on chunking or devices.

    Args:
      proposal: the density over log-SNR (its weights 1/q stay as they are).
      strata: K; None (the default) fixes it to N // 2 when a pass is built (two samples per
        stratum, the most strata that still give a standard error).
    """

    proposal: LogisticSampler | UniformSampler = LogisticSampler()
    strata: int | None = None

    def __post_init__(self):
        if not isinstance(self.proposal, (LogisticSampler, UniformSampler)):
            raise ConfigError(f"StratifiedSampler.proposal must be a LogisticSampler or UniformSampler, "
                              f"got {self.proposal!r}")
        if self.strata is not None and (isinstance(self.strata, bool) or not isinstance(self.strata, int)
                                        or self.strata < 1):
            raise ConfigError(f"StratifiedSampler.strata must be a positive integer or None, got {self.strata!r}")

    def for_samples(self, n_samples: int) -> StratifiedSampler:
        strata = self.strata if self.strata is not None else max(1, n_samples // 2)
        if n_samples < 2 * strata:
            raise ConfigError(f"the stratified sampler with {strata} strata needs at least {2 * strata} log-SNR "
                              f"samples (two per stratum, for a standard error), got {n_samples}: raise the "
                              f"samples or lower the strata (strata=None takes samples // 2)")
        return dataclasses.replace(self, strata=strata)

    def draw(self, u: jax.Array, sample: jax.Array | None = None, n_samples: int | None = None
             ) -> tuple[jax.Array, jax.Array]:
        if self.strata is None or sample is None or n_samples is None:
            raise ConfigError("a stratified draw needs its sample indices and N, with the strata fixed "
                              "(sampler.for_samples(N))")
        k = self.strata
        stratum = jnp.asarray(sample) % k
        alpha, weight = self.proposal.draw((stratum + u) / k)
        count = n_samples // k + (stratum < n_samples % k)  # samples of this stratum among the N
        return alpha, weight * (n_samples / (k * count))

    def weight(self, alpha: jax.Array) -> jax.Array:
        """1 / q(α) of the proposal (the stratum factor is 1 when K divides N)."""
        return self.proposal.weight(alpha)

    @property
    def support(self) -> tuple[float, float]:
        return self.proposal.support

    def to_dict(self) -> dict:
        return {"name": "stratified", "strata": self.strata, "proposal": self.proposal.to_dict()}


def sampler_from_dict(d: dict) -> LogisticSampler | UniformSampler | StratifiedSampler:
    """Rebuild a sampler from its ``to_dict()`` record (as saved in results)."""
    kinds = {"logistic": LogisticSampler, "uniform": UniformSampler}
    name = d.get("name")
    if name == "stratified":
        strata = d.get("strata")
        return StratifiedSampler(sampler_from_dict(d.get("proposal", {"name": "logistic"})),
                                 None if strata is None else int(strata))
    if name not in kinds:
        raise ConfigError(f"unknown log-SNR sampler {name!r}; expected one of {sorted(kinds) + ['stratified']}")
    return kinds[name](**{k: float(v) for k, v in d.items() if k != "name"})


# ---------------------------------------------------------------------------------------------
# Standard errors of means over (possibly stratified) samples.


def stratum_labels(n_samples: int, strata: int) -> np.ndarray:
    """(N,) the stratum n mod K of each sample."""
    return np.arange(n_samples) % strata


def stratified_stderr(values: np.ndarray, strata: int = 1, axis: int = 1) -> np.ndarray:
    """Standard error of the mean over ``axis`` of per-sample values drawn with K strata.

    With the stratum weights folded into the values (as the estimator does), the mean is
    Σ_n y_n / N and its variance Σ_h n_h·s_h² / N², s_h² the spread within stratum h (K = 1:
    the usual s² / N).
    """
    values = np.asarray(values, np.float64)
    if strata == 1:  # on the given axis, so results recorded before strata existed rerun bit for bit
        return values.std(axis=axis, ddof=1) / math.sqrt(values.shape[axis])
    values = np.moveaxis(values, axis, 0)
    n = values.shape[0]
    labels = stratum_labels(n, strata)
    total = np.zeros(values.shape[1:])
    for h in range(strata):
        part = values[labels == h]
        total += part.shape[0] * part.var(axis=0, ddof=1)
    return np.sqrt(total) / n


def jackknife_replicates(values: np.ndarray, strata: int = 1) -> np.ndarray:
    """(I, N, ...) the mean over axis 1 with sample n left out of its stratum (delete-one
    jackknife; the stratum's other samples stand for it): mean + n_h·(m_h − y_n) / (N·(n_h − 1))."""
    values = np.asarray(values, np.float64)
    n = values.shape[1]
    if strata == 1:  # the plain leave-one-out means, as computed before strata existed
        return (values.sum(axis=1, keepdims=True) - values) / (n - 1)
    labels = stratum_labels(n, strata)
    counts = np.bincount(labels, minlength=strata)[labels]  # n_h of each sample's stratum
    means = np.zeros_like(values)
    for h in range(strata):
        means[:, labels == h] = values[:, labels == h].mean(axis=1, keepdims=True)
    shape = (1, n) + (1,) * (values.ndim - 2)
    scale = (counts / (n * (counts - 1))).reshape(shape)
    return values.mean(axis=1, keepdims=True) + scale * (means - values)


def jackknife_stderr(replicates: np.ndarray, strata: int = 1) -> np.ndarray:
    """Standard error from (I, N, ...) replicates of a statistic (``jackknife_replicates``
    pushed through it): sqrt(Σ_h (n_h − 1)/n_h · Σ_{n ∈ h} (θ_n − θ̄_h)²); for a mean it equals
    ``stratified_stderr``."""
    replicates = np.asarray(replicates, np.float64)
    n = replicates.shape[1]
    labels = stratum_labels(n, strata)
    total = np.zeros(replicates.shape[:1] + replicates.shape[2:])
    for h in range(strata):
        part = replicates[:, labels == h]
        m = part.shape[1]
        total += (m - 1) / m * np.sum((part - part.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return np.sqrt(total)
