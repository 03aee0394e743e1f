"""Importance samplers over log-SNR (docs/method.md#sampling-the-log-snr).

An integral over all log-SNR values α is estimated as (1/N) Σ w(α_n) f(α_n) with α_n ~ q.
A sampler maps a uniform draw u ∈ (0, 1) to (α, w(α)); it is a frozen dataclass so it can be a
static argument of a compiled program and be recorded in every result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import jax
import jax.numpy as jnp

from jaxpid.errors import ConfigError


class LogSNRSampler(Protocol):
    def draw(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Uniform draws u (any shape) -> (log-SNR α, importance weight w), same shape."""
        ...

    def to_dict(self) -> dict: ...


@dataclasses.dataclass(frozen=True)
class LogisticSampler:
    """Truncated logistic proposal (the default): α = loc + scale·logit(p), p uniform on
    [σ(−clip), σ(clip)], so α ∈ [loc − clip·scale, loc + clip·scale]."""

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0

    def __post_init__(self):
        _check_positive(self, "scale", self.scale)
        _check_positive(self, "clip", self.clip)

    def draw(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
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
class UniformSampler:
    """Uniform proposal on [loc − clip·scale, loc + clip·scale]; w = 2·clip·scale."""

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0

    def __post_init__(self):
        _check_positive(self, "scale", self.scale)
        _check_positive(self, "clip", self.clip)

    def draw(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        lo, hi = self.support
        alpha = lo + (hi - lo) * u
        return alpha, jnp.full_like(alpha, hi - lo)

    @property
    def support(self) -> tuple[float, float]:
        return (self.loc - self.clip * self.scale, self.loc + self.clip * self.scale)

    def to_dict(self) -> dict:
        return {"name": "uniform", **dataclasses.asdict(self)}


def sampler_from_dict(d: dict) -> LogisticSampler | UniformSampler:
    """Rebuild a sampler from its ``to_dict()`` record (as saved in results)."""
    kinds = {"logistic": LogisticSampler, "uniform": UniformSampler}
    name = d.get("name")
    if name not in kinds:
        raise ConfigError(f"unknown log-SNR sampler {name!r}; expected one of {sorted(kinds)}")
    return kinds[name](**{k: float(v) for k, v in d.items() if k != "name"})


def _check_positive(sampler, field: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{type(sampler).__name__}.{field} must be a positive finite number, got {value!r}")
