"""The configuration of one prompt analysis (``jaxpid pid`` / ``jaxpid mi``), validated once.

``RunConfig`` gathers the layers' own configurations — the estimator's (samples, sampler,
chunking, key), the decomposition's (measure, form, level), how words are removed, the
generation's (DDIM steps, guidance) — plus the image seeds, the ppid prior spec and the preset
that filled them. The CLI, the Python API and presets all build it with ``RunConfig.from_options``,
so a bad value fails before any model is loaded, and ``to_dict`` / ``from_dict`` make a saved
``result.json`` enough to run the analysis again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxpid.analysis.presets import resolve
from jaxpid.core.config import SEED_LIMIT, EstimatorConfig, PIDConfig, check_int
from jaxpid.core.sampling import LogisticSampler, StratifiedSampler, UniformSampler
from jaxpid.errors import ConfigError
from jaxpid.priors.word_priors import parse_prior_spec
from jaxpid.sd.ddim import GenerationConfig
from jaxpid.sd.prompts import WordRemoval

# By name (the CLI's --sampler): the default stratifies the papers' logistic proposal.
SAMPLERS = {"stratified": StratifiedSampler, "logistic": LogisticSampler, "uniform": UniformSampler,
            "stratified-uniform": lambda: StratifiedSampler(UniformSampler())}

# Options of ``RunConfig.from_options`` (also the names presets use), by the part they set.
ESTIMATOR_OPTIONS = ("n_samples", "sampler", "chunk_size", "key", "target_stderr", "max_samples")
PID_OPTIONS = ("measure", "form", "level")
REMOVAL_OPTIONS = ("removal", "placeholder")
GENERATION_OPTIONS = ("steps", "guidance_scale")
OTHER_OPTIONS = ("conditional", "seeds", "prior")
OPTIONS = ESTIMATOR_OPTIONS + PID_OPTIONS + REMOVAL_OPTIONS + GENERATION_OPTIONS + OTHER_OPTIONS


def make_sampler(sampler: Any):
    """A name of ``SAMPLERS`` (default parameters) or a sampler object as it is."""
    if isinstance(sampler, str):
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {sorted(SAMPLERS)} or a sampler object, got {sampler!r}")
        return SAMPLERS[sampler]()
    return sampler


def estimator_from_options(preset_settings: Mapping[str, Any] | None = None, *,
                           defaults: EstimatorConfig = EstimatorConfig(), **explicit) -> EstimatorConfig:
    """The estimator's configuration from option values: the explicit ones (None: not given), then
    the preset's settings (those of ``ESTIMATOR_OPTIONS``; other settings are ignored), then
    ``defaults`` (a study's own, e.g. fewer samples). A sampler may be a name of ``SAMPLERS``.

    Every command that builds an ``EstimatorConfig`` from options comes here: ``RunConfig``,
    ``SweepConfig`` and the studies' ``jaxpid.cli.options.study_estimator``.

    Raises:
      ConfigError: an option that is not the estimator's, or any invalid value (named).
    """
    unknown = sorted(set(explicit) - set(ESTIMATOR_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown estimator option(s) {unknown}; the options are {list(ESTIMATOR_OPTIONS)}")
    given = {k: v for k, v in (preset_settings or {}).items() if k in ESTIMATOR_OPTIONS and v is not None}
    given.update({k: v for k, v in explicit.items() if v is not None})
    if "sampler" in given:
        given["sampler"] = make_sampler(given["sampler"])
    return dataclasses.replace(defaults, **given)


def check_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, str)) or seeds is None:
        seeds = [seeds]
    seeds = tuple(check_int("seed", s, 0, SEED_LIMIT) for s in seeds)
    if not seeds:
        raise ConfigError("give at least one image seed")
    return seeds


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides a prompt analysis' numbers (see the module docstring)."""

    estimator: EstimatorConfig = EstimatorConfig()
    pid: PIDConfig = PIDConfig()
    conditional: bool = True  # conditional PID: the rest of the prompt is context everywhere (docs/validation.md)
    removal: WordRemoval = WordRemoval()
    generation: GenerationConfig = GenerationConfig()
    seeds: tuple[int, ...] = (0,)  # seeds of the generated images (one image each)
    prior: str | None = None  # ppid word priors: 'bert:PATH', 'uniform' or 'file:PRIORS.json'
    preset: str | None = None  # the preset the options came from, if any (recorded)

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        if not isinstance(self.conditional, bool):
            raise ConfigError(f"conditional must be True or False, got {self.conditional!r}")
        if self.prior is not None:
            parse_prior_spec(self.prior)

    @classmethod
    def from_options(cls, preset: str | None = None, **options) -> RunConfig:
        """A configuration from option values (None: not given); see ``OPTIONS``.

        Explicit options win over the preset's, which win over the defaults.

        Raises:
          ConfigError: an unknown option or preset, or any invalid value (named).
        """
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; the options are {list(OPTIONS)}")
        given = resolve(preset, options)
        part = lambda names: {n: given[n] for n in names if n in given}  # noqa: E731
        return cls(
            estimator=estimator_from_options(resolve(preset, {}), **{n: options.get(n) for n in ESTIMATOR_OPTIONS}),
            pid=PIDConfig(**part(PID_OPTIONS)),
            conditional=given.get("conditional", cls.conditional),
            removal=WordRemoval(given.get("removal", WordRemoval.mode),
                                given.get("placeholder", WordRemoval.placeholder)),
            generation=GenerationConfig(**part(GENERATION_OPTIONS)),
            seeds=given.get("seeds", cls.seeds),
            prior=given.get("prior"),
            preset=preset,
        )

    def options(self) -> dict[str, Any]:
        """The option values of this configuration (``from_options(**options())`` rebuilds it)."""
        return {
            "n_samples": self.estimator.n_samples, "sampler": self.estimator.sampler,
            "chunk_size": self.estimator.chunk_size, "key": self.estimator.key,
            "target_stderr": self.estimator.target_stderr, "max_samples": self.estimator.max_samples,
            **self.pid.to_dict(), "removal": self.removal.mode, "placeholder": self.removal.placeholder,
            **self.generation.to_dict(), "conditional": self.conditional, "seeds": self.seeds, "prior": self.prior,
        }

    def to_dict(self) -> dict:
        return {
            "estimator": self.estimator.to_dict(),
            "pid": self.pid.to_dict(),
            "conditional": self.conditional,
            "removal": self.removal.to_dict(),
            "generation": self.generation.to_dict(),
            "seeds": list(self.seeds),
            "prior": self.prior,
            "preset": self.preset,
        }

    @classmethod
    def from_dict(cls, record: dict) -> RunConfig:
        return cls(
            estimator=EstimatorConfig.from_dict(record["estimator"]),
            pid=PIDConfig.from_dict(record["pid"]),
            conditional=bool(record["conditional"]),
            removal=WordRemoval.from_dict(record["removal"]),
            generation=GenerationConfig.from_dict(record["generation"]),
            seeds=tuple(record["seeds"]),
            prior=record.get("prior"),
            preset=record.get("preset"),
        )

