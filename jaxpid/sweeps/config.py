"""A sweep's configuration: what decides its numbers, and the fingerprint that guards a resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from jaxpid.analysis.config import estimator_from_options
from jaxpid.analysis.presets import resolve
from jaxpid.core.config import EstimatorConfig, PIDConfig, check_int
from jaxpid.errors import ConfigError
from jaxpid.priors.word_priors import parse_prior_spec
from jaxpid.sd.ddim import GenerationConfig
from jaxpid.sd.prompts import WordRemoval

DEFAULT_MEASURES = ("mmi", "ppid", "ccs")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that decides a sweep's numbers.

    Every decomposition (measure × form × level) comes from the same fused pass of a batch; each
    gives one result row per job.
    """

    estimator: EstimatorConfig = EstimatorConfig()  # job j draws from fold_in(key(estimator.key), j)
    decompositions: tuple[PIDConfig, ...] = tuple(PIDConfig(m) for m in DEFAULT_MEASURES)
    removal: WordRemoval = WordRemoval()
    generation: GenerationConfig = GenerationConfig()  # of the generated images
    prior: str = "uniform"  # ppid priors of jobs without log_prior: "uniform", "file:PATH", "bert:PATH"
    batch_size: int = 8  # jobs per fused pass

    def __post_init__(self):
        decompositions = tuple(self.decompositions)
        if not decompositions or not all(isinstance(d, PIDConfig) for d in decompositions):
            raise ConfigError(f"decompositions must be one or more PIDConfig, got {self.decompositions!r}")
        if len(set(decompositions)) != len(decompositions):
            raise ConfigError(f"decompositions repeat one another: {[d.to_dict() for d in decompositions]}")
        object.__setattr__(self, "decompositions", decompositions)
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, 1))
        parse_prior_spec(self.prior)

    @property
    def measures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.measure for d in self.decompositions))

    @classmethod
    def from_options(
        cls,
        preset: str | None = None,
        *,
        measures: Sequence[str] | None = None,
        forms: Sequence[str] | None = None,
        level: str | None = None,
        n_samples: int | None = None,
        sampler: Any = None,
        chunk_size: int | None = None,
        key: int | None = None,
        target_stderr: float | None = None,
        max_samples: int | None = None,
        removal: str | None = None,
        placeholder: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        prior: str | None = None,
        batch_size: int | None = None,
    ) -> SweepConfig:
        """A configuration from option values (None: not given), with a paper's preset under them.

        ``measures`` × ``forms`` are the decompositions (default: mmi, ppid and ccs in the
        default form, ``PIDConfig.form`` = anchored; a preset names its own measure). With
        ``target_stderr`` each job gets rounds of ``n_samples`` until every standard error its rows
        report is at most the target, or ``max_samples`` (``jaxpid.sweeps.adaptive``).
        """
        given = resolve(preset, {"level": level, "prior": prior,
                                 "measure": None if measures is None else tuple(measures)})
        measures = given.get("measure", DEFAULT_MEASURES)
        measures = (measures,) if isinstance(measures, str) else tuple(measures)
        forms = tuple(forms) if forms else (PIDConfig.form,)
        return cls(
            estimator=estimator_from_options(resolve(preset, {}), n_samples=n_samples, sampler=sampler,
                                             chunk_size=chunk_size, key=key, target_stderr=target_stderr,
                                             max_samples=max_samples),
            decompositions=tuple(PIDConfig(m, f, given.get("level", PIDConfig.level)) for m in measures for f in forms),
            removal=WordRemoval(removal or WordRemoval.mode, placeholder or WordRemoval.placeholder),
            generation=GenerationConfig(**{k: v for k, v in (("steps", steps), ("guidance_scale", guidance_scale))
                                           if v is not None}),
            prior=given.get("prior") or cls.prior,
            batch_size=cls.batch_size if batch_size is None else batch_size,
        )

    def to_dict(self) -> dict:
        return {
            "estimator": self.estimator.to_dict(),
            "decompositions": [d.to_dict() for d in self.decompositions],
            "removal": self.removal.to_dict(),
            "generation": self.generation.to_dict(),
            "prior": self.prior,
            "batch_size": self.batch_size,
        }


def sweep_fingerprint(config: SweepConfig, model: Mapping, priors_digest: str | None = None) -> str:
    """sha256 of the configuration, the model's identity (content fingerprint, dtypes, attention,
    prediction type — not its name, so a moved folder still resumes) and the ppid priors actually
    used (so a changed prior file or masked LM is a changed sweep)."""
    identity = {"config": config.to_dict(), "model": {k: v for k, v in model.items() if k != "name"},
                "priors": priors_digest}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
