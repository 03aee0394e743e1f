"""Run configuration of the estimator core: frozen, validated once, recorded in every result.

- ``EstimatorConfig``: how the information integrals are estimated (samples, log-SNR sampler,
  chunking, the key of the draws, and optionally a target standard error reached in rounds).
- ``PIDConfig``: how subset informations become PID atoms (redundancy measure, pointwise form,
  image level).

Higher layers (the prompt analysis, sweeps, studies, the CLI) build these objects, so a bad
value fails before any model work, and every default lives here once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxpid.core.measures import check_measure_name
from jaxpid.core.sampling import LogSNRSampler, StratifiedSampler, sampler_from_dict
from jaxpid.errors import ConfigError

FORMS = ("orthogonal", "standard")  # pointwise information of one conditioning against another
# What a decomposition may use (docs/method.md#pointwise-forms): the anchored form subtracts gaps
# that end at the full prompt, which is what makes it unbiased for images drawn from that prompt.
PID_FORMS = ("anchored",) + FORMS
RETIRED_FORMS = {
    "chain": "the chain form was retired: its gaps between subsets other than the full prompt are biased "
             "for images drawn from the prompt, even with an exact denoiser (docs/method.md#the-chain-form); "
             "use form 'anchored' (the default), whose gaps all end at the full prompt",
}
LEVELS = ("sum", "mean")
NATS_TO_BITS = 1.0 / math.log(2.0)
SEED_LIMIT = 2**32  # jax.random.key and fold_in take 32-bit seeds


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_form(form: Any) -> str:
    """A decomposition's pointwise form, with the reason when it names a retired one."""
    if form in RETIRED_FORMS:
        raise ConfigError(RETIRED_FORMS[form])
    return check_choice("form", form, PID_FORMS)


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """An integer in [minimum, maximum) (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum}{why}, got {value!r}")
    if value < minimum or (maximum is not None and value >= maximum):
        bound = f"in {minimum}..{maximum - 1}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be an integer {bound}{why}, got {value!r}")
    return int(value)


def check_n_samples(n_samples: Any) -> int:
    return check_int("n_samples (log-SNR samples per image)", n_samples, 2, why=" (standard errors need two)")


def check_chunk_size(chunk_size: Any) -> int | None:
    return None if chunk_size is None else check_int("chunk_size", chunk_size, 1)


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """How the information integrals are estimated (docs/method.md#sampling-the-log-snr)."""

    n_samples: int = 100  # log-SNR samples per image, one noise draw each (per round with a target)
    sampler: LogSNRSampler = StratifiedSampler()  # the logistic proposal, stratified (docs/method.md)
    chunk_size: int | None = None  # samples per device per step; None: as many as fit 64 evaluations
    key: int = 0  # seed of the estimator's key: image i draws from fold_in(jax.random.key(key), i)
    # With a target: rounds of n_samples per image until every reported standard error is at most
    # target_stderr (nats) or max_samples (default 10 rounds) is reached.
    target_stderr: float | None = None
    max_samples: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "n_samples", check_n_samples(self.n_samples))
        object.__setattr__(self, "chunk_size", check_chunk_size(self.chunk_size))
        object.__setattr__(self, "key", check_int("key (the estimator's seed)", self.key, 0, SEED_LIMIT))
        if not all(callable(getattr(self.sampler, m, None)) for m in ("draw", "for_samples", "to_dict")):
            raise ConfigError(f"sampler must be a log-SNR sampler (e.g. StratifiedSampler(); draw, for_samples and "
                              f"to_dict), got {self.sampler!r}")
        self.sampler.for_samples(self.n_samples)  # enough samples for its strata
        target, most = self.target_stderr, self.max_samples
        if target is None:
            if most is not None:
                raise ConfigError("max_samples caps the rounds of a target standard error: give target_stderr too")
            return
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not (0 < target < math.inf):
            raise ConfigError(f"target_stderr must be a positive number of nats, got {target!r}")
        object.__setattr__(self, "target_stderr", float(target))
        most = 10 * self.n_samples if most is None else check_int("max_samples", most, self.n_samples,
                                                                 why=" (at least one round of n_samples)")
        object.__setattr__(self, "max_samples", most)
        if self.n_samples % self.sampler.for_samples(self.n_samples).strata:
            raise ConfigError(f"rounds of {self.n_samples} samples cannot keep the sampler's strata balanced: give an "
                              "even number of samples per round (or strata that divide it)")

    def prng_key(self) -> jax.Array:
        return jax.random.key(self.key)

    def arguments(self) -> dict:
        """Keyword arguments of ``jaxpid.information`` / ``jaxpid.pid`` for this configuration."""
        return {"key": self.prng_key(), "n_samples": self.n_samples, "sampler": self.sampler,
                "chunk_size": self.chunk_size, "target_stderr": self.target_stderr, "max_samples": self.max_samples}

    def to_dict(self) -> dict:
        record = {"n_samples": self.n_samples, "sampler": self.sampler.to_dict(), "chunk_size": self.chunk_size,
                  "key": self.key}
        if self.target_stderr is not None:
            record.update(target_stderr=self.target_stderr, max_samples=self.max_samples)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> EstimatorConfig:
        return cls(n_samples=record["n_samples"], sampler=sampler_from_dict(record["sampler"]),
                   chunk_size=record.get("chunk_size"), key=record.get("key", 0),
                   target_stderr=record.get("target_stderr"), max_samples=record.get("max_samples"))


@dataclasses.dataclass(frozen=True)
class PIDConfig:
    """How subset informations become atoms (docs/method.md#partial-information-decomposition)."""

    # The defaults: the form that meets the exact values of known worlds one fixed prompt at a
    # time, in magnitude, and the measure that recovers most of the demo's designed structure
    # (docs/validation.md); ccs is defined for two sources: pass measure="mmi" for k > 2.
    measure: str = "ccs"  # redundancy measure: one of MEASURES
    form: str = "anchored"  # pointwise information fed to the measure: one of PID_FORMS
    level: str = "sum"  # image-level information: "sum" of the pixel map (nats/image) or its "mean"

    def __post_init__(self):
        check_measure_name(self.measure)
        check_form(self.form)
        check_choice("level", self.level, LEVELS)

    def arguments(self) -> dict:
        """Keyword arguments of ``jaxpid.pid`` / ``jaxpid.decompose``."""
        return dataclasses.asdict(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> PIDConfig:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})
