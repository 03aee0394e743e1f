"""The discrete noise schedule of a diffusers scheduler config, seen as a table of log-SNRs.

A discrete-time model was trained at timesteps t = 0..T-1 with ᾱ_t = Π_{s≤t}(1 − β_s). Its
log-SNR is α_t = logit(ᾱ_t), decreasing in t (docs/method.md#noise-channel-and-log-snr). The
estimator asks for a continuous α; the model is queried at the timestep whose α_t is nearest, and
z is built with that α_t. ``split_prediction`` is the one place a model output (ε, v or x̂0) is
turned into the noise and clean-sample estimates, for the denoiser and the sampler alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.sd.weights import read_json_config

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """A diffusers beta schedule and its tables.

    Equality and hashing use the configuration only, so a schedule can be a static
    (``pytree_node=False``) field of a jitted pytree. Missing config keys take the defaults of
    diffusers' ``DDIMScheduler`` (the sampler :mod:`jaxpid.sd.ddim` reproduces), exactly as
    ``DDIMScheduler.from_config`` would.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    timestep_spacing: str = "leading"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    thresholding: bool = False

    alphas_cumprod: np.ndarray = dataclasses.field(init=False, compare=False, repr=False)  # (T,) f64
    logsnr_table: np.ndarray = dataclasses.field(init=False, compare=False, repr=False)  # (T,) f64

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES and self.trained_betas is None:
            raise ConfigError(
                f"scheduler beta_schedule {self.beta_schedule!r} is not supported; use one of {BETA_SCHEDULES}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"scheduler prediction_type {self.prediction_type!r} is not supported; use one of {PREDICTION_TYPES}"
            )
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ConfigError(
                f"scheduler timestep_spacing {self.timestep_spacing!r} is not supported; use one of {TIMESTEP_SPACINGS}"
            )
        if self.num_train_timesteps < 2:
            raise ConfigError(f"scheduler num_train_timesteps {self.num_train_timesteps} must be at least 2")
        log_alphas_cumprod = np.cumsum(np.log1p(-_betas(self)))
        alphas_cumprod = np.exp(log_alphas_cumprod)
        # logit(ᾱ) = log ᾱ − log(1 − ᾱ), with 1 − ᾱ from expm1: exact near ᾱ ≈ 1 (small t).
        logsnr = log_alphas_cumprod - np.log(-np.expm1(log_alphas_cumprod))
        for name, table in (("alphas_cumprod", alphas_cumprod), ("logsnr_table", logsnr)):
            table.setflags(write=False)
            object.__setattr__(self, name, table)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """From a ``scheduler_config.json`` dict (DDIM, PNDM, Euler, DPM-Solver... configs).

        Raises:
          ConfigError: an unsupported value, a flow-matching scheduler, or zero-terminal-SNR
            rescaling (its last step has infinite negative log-SNR).
        """
        class_name = str(config.get("_class_name", ""))
        if class_name.startswith("FlowMatch"):
            raise ConfigError(f"scheduler {class_name} is a flow-matching schedule; jaxpid needs a beta schedule")
        if config.get("rescale_betas_zero_snr"):
            raise ConfigError("scheduler rescale_betas_zero_snr=true is not supported (log-SNR −∞ at the last step)")
        fields = {field.name for field in dataclasses.fields(cls) if field.init}
        values = {key: value for key, value in config.items() if key in fields and value is not None}
        if "trained_betas" in values:
            values["trained_betas"] = tuple(float(beta) for beta in values["trained_betas"])
        for key in ("beta_start", "beta_end", "clip_sample_range"):
            if key in values:
                values[key] = float(values[key])
        for key in ("num_train_timesteps", "steps_offset"):
            if key in values:
                values[key] = int(values[key])
        return cls(**values)

    @classmethod
    def from_folder(cls, folder: str | Path) -> NoiseSchedule:
        """From ``folder/scheduler_config.json`` (the pipeline's ``scheduler/`` folder)."""
        return cls.from_config(read_json_config(folder, "scheduler_config.json"))

    @property
    def logsnr_range(self) -> tuple[float, float]:
        """(smallest, largest) log-SNR the model was trained at: (α_{T−1}, α_0)."""
        return float(self.logsnr_table[-1]), float(self.logsnr_table[0])

    def nearest_timestep(self, logsnr: jnp.ndarray) -> jnp.ndarray:
        """The timestep t minimising |α − logit(ᾱ_t)|, elementwise; int32, jit-friendly.

        Log-SNRs beyond the trained range clip to the first or last step. A value equal to a
        table entry (as returned by :meth:`snap_logsnr`) maps back to that entry's step.
        """
        table = jnp.asarray(self.logsnr_table, dtype=jnp.float32)
        logsnr = jnp.asarray(logsnr, dtype=jnp.float32)
        distance = jnp.abs(logsnr[..., None] - table)
        return jnp.argmin(distance, axis=-1).astype(jnp.int32)

    def snap_logsnr(self, logsnr: jnp.ndarray) -> jnp.ndarray:
        """logit(ᾱ_t) of the nearest timestep t, float32, same shape as ``logsnr``."""
        table = jnp.asarray(self.logsnr_table, dtype=jnp.float32)
        return table[self.nearest_timestep(logsnr)]

    def timestep_logsnr(self, timestep: jnp.ndarray) -> jnp.ndarray:
        """logit(ᾱ_t) for integer timesteps, float32."""
        return jnp.asarray(self.logsnr_table, dtype=jnp.float32)[timestep]

    def sampling_timesteps(self, steps: int) -> np.ndarray:
        """The descending timesteps a ``steps``-step DDIM run visits, by ``timestep_spacing``.

        Raises:
          ConfigError: ``steps`` outside 1..T, or a step offset that leaves the table.
        """
        total = self.num_train_timesteps
        if not 1 <= steps <= total:
            raise ConfigError(f"sampling steps must be in 1..{total}, got {steps}")
        if self.timestep_spacing == "leading":
            timesteps = np.arange(steps)[::-1] * (total // steps) + self.steps_offset
        elif self.timestep_spacing == "trailing":
            timesteps = np.round(np.arange(total, 0, -total / steps)).astype(np.int64) - 1
        else:
            timesteps = np.linspace(0, total - 1, steps).round()[::-1].astype(np.int64)
        if timesteps.max() >= total or timesteps.min() < 0:
            raise ConfigError(
                f"{steps} steps with steps_offset {self.steps_offset} reach timestep {timesteps.max()}, "
                f"outside 0..{total - 1}; use fewer steps"
            )
        return timesteps.astype(np.int32)

    def previous_alpha_cumprod(self, timesteps: np.ndarray, steps: int) -> np.ndarray:
        """ᾱ of the step DDIM moves to from each timestep (t − T // steps), float64.

        Before t = 0 it is 1 with ``set_alpha_to_one``, else ᾱ_0 (diffusers' final_alpha_cumprod).
        """
        previous = np.asarray(timesteps) - self.num_train_timesteps // steps
        final = 1.0 if self.set_alpha_to_one else float(self.alphas_cumprod[0])
        return np.where(previous >= 0, self.alphas_cumprod[np.clip(previous, 0, None)], final)


def split_prediction(
    prediction: jax.Array, z: jax.Array, signal: jax.Array, noise: jax.Array, prediction_type: str
) -> tuple[jax.Array, jax.Array]:
    """A model output as (ε̂, x̂0), given z = signal·x + noise·ε (signal = sqrt(ᾱ), noise = sqrt(1 − ᾱ)).

    Args:
      prediction: (B, C, H, W) the model output: ε̂ (``"epsilon"``), v̂ (``"v_prediction"``,
        v = signal·ε − noise·x) or x̂0 (``"sample"``).
      z: (B, C, H, W) the noisy input.
      signal, noise: broadcastable to z, e.g. (B, 1, 1, 1).
    """
    if prediction_type == "epsilon":
        return prediction, (z - noise * prediction) / signal
    if prediction_type == "v_prediction":
        return signal * prediction + noise * z, signal * z - noise * prediction
    if prediction_type == "sample":
        return (z - signal * prediction) / noise, prediction
    raise ConfigError(f"prediction_type {prediction_type!r} is not supported; use one of {PREDICTION_TYPES}")


def prediction_to_epsilon(prediction: jax.Array, z: jax.Array, logsnr: jax.Array, prediction_type: str) -> jax.Array:
    """ε̂ from a model output at log-SNR α (broadcastable to z): σ(α) = ᾱ."""
    signal, noise = jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))
    return split_prediction(prediction, z, signal, noise, prediction_type)[0]


def _betas(schedule: NoiseSchedule) -> np.ndarray:
    total = schedule.num_train_timesteps
    if schedule.trained_betas is not None:
        betas = np.asarray(schedule.trained_betas, dtype=np.float64)
        if betas.shape != (total,):
            raise ConfigError(f"scheduler trained_betas has {betas.size} values, num_train_timesteps is {total}")
    elif schedule.beta_schedule == "linear":
        betas = np.linspace(schedule.beta_start, schedule.beta_end, total, dtype=np.float64)
    elif schedule.beta_schedule == "scaled_linear":
        betas = np.linspace(math.sqrt(schedule.beta_start), math.sqrt(schedule.beta_end), total) ** 2
    else:  # squaredcos_cap_v2: the cosine ᾱ of Nichol & Dhariwal, with β capped at 0.999
        edges = np.arange(total + 1, dtype=np.float64) / total
        alpha_bar = np.cos((edges + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    if np.any(betas <= 0) or np.any(betas >= 1):
        raise ConfigError("scheduler betas must lie strictly between 0 and 1")
    return betas
