"""Rectified-flow models (Stable Diffusion 3) served as ε̂ at a VP log-SNR (docs/sd3.md#flow-matching-models-sd3).

A flow model sees x_t = (1 − t)·x + t·ε at flow time t ∈ [0, 1] and predicts the velocity
v = ε − x (dx_t/dt). The estimator speaks of z = √σ(λ)·x + √σ(−λ)·ε at log-SNR λ. Both are the
same channel up to a scale: x_t has signal-to-noise ratio ((1 − t)/t)², so

    t = σ(−λ/2)                     ((1 − t)/t = exp(λ/2)),
    x_t = z·√((1 − t)² + t²)        (the c with c·√σ(λ) = 1 − t and c·√σ(−λ) = t),
    ε̂ = x_t + (1 − t)·v̂             (x_t + (1 − t)(ε − x) = ε for the true velocity).

The model's time input is diffusers' ``timestep`` = num_train_timesteps·t (1000·t), fractional:
the scheduler's ``shift`` only re-spaces the times a *sampler* visits (σ ↦ sσ/(1 + (s − 1)σ)), it
does not change which noise level a time input means, so it plays no part in ε̂. Flow models are
continuous in t, so :class:`FlowDenoiser` has no ``snap_logsnr``: z is built at the sampled λ.

This module knows the math and the scheduler config; the SD3 network and its conditioning are in
:mod:`jaxpid.sd.sd3`, the Euler sampler in :mod:`jaxpid.sd.flow_sampler`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.sd.weights import read_json_config

FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
PREDICTION_TYPE = "flow"  # what a flow pipeline's identity records as its prediction type
# Scheduler options that change only how a sampler spaces its steps (refused by jaxpid's sampler).
_SAMPLER_ONLY = ("use_dynamic_shifting", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                 "use_beta_sigmas", "stochastic_sampling")


def flow_time(logsnr: jax.Array) -> jax.Array:
    """Flow time t = σ(−λ/2) of log-SNR λ (float32): (1 − t)/t = exp(λ/2)."""
    return jax.nn.sigmoid(-0.5 * jnp.asarray(logsnr, jnp.float32))


def flow_logsnr(t: Any) -> Any:
    """Log-SNR λ = 2·log((1 − t)/t) of flow time t (numpy or JAX; +inf at t = 0, −inf at t = 1)."""
    xp = jnp if isinstance(t, jax.Array) else np
    with np.errstate(divide="ignore"):
        return 2.0 * (xp.log1p(-t) - xp.log(t))


def flow_input_scale(t: jax.Array) -> jax.Array:
    """c = √((1 − t)² + t²): x_t = c·z for the VP-scaled z of the same log-SNR."""
    return jnp.sqrt(jnp.square(1.0 - t) + jnp.square(t))


def velocity_to_epsilon(velocity: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
    """ε̂ = x_t + (1 − t)·v̂, with t broadcast against x_t's leading (batch) axis."""
    t = jnp.reshape(t, t.shape + (1,) * (x_t.ndim - t.ndim))
    return x_t + (1.0 - t) * velocity


@flax.struct.dataclass
class FlowDenoiser:
    """ε̂(z, λ, cond) of a velocity model, for the estimator (``denoise(z, logsnr, cond) -> eps_hat``).

    ``velocity(x_t, timesteps, cond) -> v̂`` is any pytree callable (its arrays are traced, never
    constants) taking the model's time input ``timesteps`` = num_train_timesteps·t, shape (B,).
    When it also has ``with_aux(x_t, timesteps, cond) -> (v̂, aux)`` (the SD3 transformer's
    attention maps), so does the denoiser; otherwise ``with_aux`` is absent (``getattr`` gives its
    default), so ``FusedPass(collect_aux=True)`` and the studies see a denoiser without maps.
    """

    velocity: Any
    num_train_timesteps: int = flax.struct.field(pytree_node=False, default=1000)

    def __call__(self, z: jax.Array, logsnr: jax.Array, cond: Any) -> jax.Array:
        """z (B, C, H, W), log-SNR (B,) or scalar, cond with leading B -> ε̂ (B, C, H, W) float32."""
        x_t, t, signal = self._flow_input(z, logsnr)
        velocity = self.velocity(x_t, self.num_train_timesteps * t, cond)
        return x_t + signal[:, None, None, None] * velocity.astype(jnp.float32)

    @property
    def with_aux(self):
        """``with_aux(z, logsnr, cond) -> (ε̂, aux)``: ε̂ as the call, and the velocity model's
        auxiliary output at the same (x_t, time input). Absent (AttributeError) when the velocity
        model has no ``with_aux``."""
        if not callable(getattr(self.velocity, "with_aux", None)):
            raise AttributeError(f"{type(self.velocity).__name__} has no with_aux: this flow denoiser returns "
                                 "no auxiliary output")
        return self._with_aux

    def _with_aux(self, z: jax.Array, logsnr: jax.Array, cond: Any) -> tuple[jax.Array, Any]:
        x_t, t, signal = self._flow_input(z, logsnr)
        velocity, aux = self.velocity.with_aux(x_t, self.num_train_timesteps * t, cond)
        return x_t + signal[:, None, None, None] * velocity.astype(jnp.float32), aux

    @staticmethod
    def _flow_input(z: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x_t, t, 1 − t) for z at log-SNR λ."""
        z = jnp.asarray(z, jnp.float32)
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), z.shape[:1])
        # 1 − t as σ(λ/2), not 1 − σ(−λ/2): no cancellation near t = 1 (very negative λ).
        t, signal = flow_time(logsnr), jax.nn.sigmoid(0.5 * logsnr)
        return z * jnp.sqrt(jnp.square(signal) + jnp.square(t))[:, None, None, None], t, signal


@dataclasses.dataclass(frozen=True)
class FlowMatchSchedule:
    """A diffusers ``FlowMatchEulerDiscreteScheduler`` config (hashable: a static jit argument).

    ``prediction_type`` is ``"flow"`` (the model predicts v = ε − x); it is what a pipeline's
    identity records, in the place of a beta schedule's ε / v / x̂.
    """

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    shift_terminal: float | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    stochastic_sampling: bool = False
    prediction_type: str = dataclasses.field(default=PREDICTION_TYPE, init=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlowMatchSchedule:
        """From a ``scheduler_config.json`` dict.

        Raises:
          ConfigError: another scheduler class, ``invert_sigmas`` (the time input would mean 1 − t),
            or a non-positive ``shift`` / ``num_train_timesteps``.
        """
        name = config.get("_class_name")
        if name not in FLOW_SCHEDULERS:
            raise ConfigError(f"scheduler {name!r}: a Stable Diffusion 3 folder needs one of {FLOW_SCHEDULERS}")
        if config.get("invert_sigmas"):
            raise ConfigError("scheduler invert_sigmas=true is not supported: the model's time input would be "
                              "1000·(1 − t), not 1000·t")
        steps, shift = config.get("num_train_timesteps", 1000), config.get("shift", 1.0)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ConfigError(f"scheduler num_train_timesteps={steps!r}: expected an integer >= 2")
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0:
            raise ConfigError(f"scheduler shift={shift!r}: expected a positive number")
        flags = {key: bool(config.get(key) or False) for key in _SAMPLER_ONLY if key != "shift_terminal"}
        terminal = config.get("shift_terminal")
        return cls(num_train_timesteps=steps, shift=float(shift),
                   shift_terminal=None if terminal is None else float(terminal), **flags)

    @classmethod
    def from_folder(cls, folder: str | Path) -> FlowMatchSchedule:
        return cls.from_config(read_json_config(folder, "scheduler_config.json"))

    def shifted(self, sigma: np.ndarray) -> np.ndarray:
        """σ ↦ s·σ / (1 + (s − 1)·σ), the static shift (float64)."""
        sigma = np.asarray(sigma, np.float64)
        return self.shift * sigma / (1.0 + (self.shift - 1.0) * sigma)

    @property
    def training_sigmas(self) -> np.ndarray:
        """The scheduler's table of flow times, shifted, from 1 down to s/T / (1 + (s − 1)/T), float64."""
        steps = self.num_train_timesteps
        return self.shifted(np.arange(steps, 0, -1, dtype=np.float64) / steps)

    @property
    def logsnr_range(self) -> tuple[float, float]:
        """(smallest, largest) finite log-SNR of the scheduler's table, as ``NoiseSchedule.logsnr_range``:
        λ at its largest t below 1 and at its smallest t; symmetric about −2·log(shift)
        (±2·log(T − 1) unshifted). The table's t = 1 (λ = −∞, pure noise) is left out, so the range
        can fit a proposal (``FittedLogistic.for_range``); the network takes any t in (0, 1)."""
        sigmas = self.training_sigmas
        return float(flow_logsnr(sigmas[1])), float(flow_logsnr(sigmas[-1]))

    def sampling_sigmas(self, steps: int) -> np.ndarray:
        """(steps + 1,) float32 flow times an Euler sampler visits, as diffusers' ``set_timesteps``:
        evenly spaced between the table's ends, shifted (again), then 0.

        Raises:
          ConfigError: scheduler options that change the spacing (dynamic or terminal shifting,
            Karras / exponential / beta sigmas, stochastic sampling).
        """
        used = [key for key in _SAMPLER_ONLY if getattr(self, key)]
        if used:
            raise ConfigError(f"scheduler options {used} are not supported by jaxpid's flow-matching sampler")
        table = self.training_sigmas.astype(np.float32)
        ends = float(table[0]) * self.num_train_timesteps, float(table[-1]) * self.num_train_timesteps
        sigmas = self.shifted(np.linspace(ends[0], ends[1], steps) / self.num_train_timesteps).astype(np.float32)
        return np.concatenate([sigmas, np.zeros(1, np.float32)])
