"""From a prompt to the PID of its words, numbers and maps (``jaxpid pid``).

This layer ties the pieces together — subset prompts (``jaxpid.sd.prompts``), the pipeline
(text encoder, sampler, VAE), word priors, and the estimator core (``jaxpid.core.pid``) — and
returns a result that carries its full configuration. It writes no files (``jaxpid.io`` does).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.images import Images, generated_images
from jaxpid.analysis.maps import baseline_redundancy_map, mask_iou, threshold_map
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.decomposition import FormComparison, PIDResult, compare_forms, pid, reported_stderr, rule_fixed_atoms
from jaxpid.core.lattice import atom_label
from jaxpid.core.measures import check_measure
from jaxpid.errors import ConfigError
from jaxpid.priors.word_priors import load_prior_spec
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import SubsetPrompts, replace_source, subset_prompts

Stage = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class PIDPlan:
    """What a prompt PID will evaluate, checked before any model work."""

    config: RunConfig
    subsets: SubsetPrompts
    alternative_prompts: tuple[tuple[str, ...], ...]  # imin: per source, its candidate prompts
    alternatives: dict[str, tuple[str, ...]] | None  # source word -> alternative words (imin, consistency)
    log_prior: np.ndarray | None  # ppid: (k,) given priors (else computed from config.prior)
    allow_large_k: bool

    @property
    def prompts(self) -> list[str]:
        """Every conditioning prompt: the 2**k subsets, then imin's candidates."""
        return list(self.subsets.prompts) + [p for group in self.alternative_prompts for p in group]


@dataclasses.dataclass(frozen=True)
class PromptPID:
    """The PID of k prompt words for I images."""

    subsets: SubsetPrompts
    images: Images
    result: PIDResult
    run: RunConfig
    config: dict  # the record saved as result.json's "config": enough to run it again
    timings: dict
    forms: FormComparison | None = None  # every form's informations from the same pass, and disagreements

    @property
    def fixed_atoms(self) -> list[dict[str, str]]:
        """Per image, the atoms a measure's rule sets rather than estimates: name -> the rule."""
        return rule_fixed_atoms(self.result)

    def alternatives_of(self, j: int) -> tuple[str, ...]:
        """The alternative words given for source j (empty without alternatives)."""
        given = self.config.get("alternatives") or {}
        return tuple(given.get(self.subsets.sources[j].word.lower(), given.get(self.subsets.sources[j].word, ())))

    def atom_label(self, name: str) -> str:
        return atom_label(name, [s.word for s in self.subsets.sources])

    def baseline(self) -> tuple[np.ndarray, np.ndarray] | None:
        """k = 2: DiffusionPID's thresholded-intersection baseline (I, h, w) and its IoU with the
        redundancy map thresholded the same way (I,); None for other k."""
        if self.result.k != 2:
            return None
        maps = self.result.subset_maps
        baseline = baseline_redundancy_map(maps[:, 1], maps[:, 2])
        return baseline, mask_iou(baseline, threshold_map(self.result.atom_maps["{1}{2}"]))


def run_config(config: RunConfig | None, options: Mapping[str, Any]) -> RunConfig:
    """``config`` as given, or one built from keyword options (not both)."""
    if config is not None and options:
        raise ConfigError(f"give either a RunConfig or options {sorted(options)}, not both")
    if config is None:
        return RunConfig.from_options(**options)
    if not isinstance(config, RunConfig):
        raise ConfigError(f"config must be a jaxpid.RunConfig, got {type(config).__name__}")
    return config


def plan_pid(
    prompt: str,
    sources: Sequence[str],
    config: RunConfig,
    *,
    alternatives: Mapping[str, Sequence[str]] | None = None,
    log_prior: Sequence[float] | np.ndarray | None = None,
    allow_large_k: bool = False,
) -> PIDPlan:
    """Check a prompt PID and build its prompts, without a model.

    Raises:
      PromptError: a source not in the prompt (and the other prompt errors).
      ConfigError: a measure that does not fit k, imin without alternatives, ppid without priors.
    """
    subsets = subset_prompts(prompt, list(sources), conditional=config.conditional, allow_large_k=allow_large_k,
                             **config.removal.arguments())
    measure = config.pid.measure
    check_measure(measure, subsets.k)
    alt_prompts = _alternative_prompts(subsets, alternatives, measure)
    if measure == "ppid":
        if log_prior is None and config.prior is None:
            raise ConfigError("measure 'ppid' needs word priors: prior='bert:PATH', 'uniform' or 'file:PRIORS.json' "
                              "(CLI --prior), or log_prior=[log p(word), ...]")
    elif log_prior is not None:
        raise ConfigError(f"log_prior is used by measure 'ppid' only (measure is {measure!r})")
    given = None if log_prior is None else np.asarray(log_prior, np.float64)
    alts = None if not alternatives else {w: tuple(a) for w, a in alternatives.items()}
    return PIDPlan(config, subsets, tuple(tuple(g) for g in alt_prompts), alts, given, allow_large_k)


def analyze(
    pipeline: Pipeline,
    prompt: str,
    sources: Sequence[str],
    config: RunConfig | None = None,
    *,
    images: Images | None = None,
    alternatives: Mapping[str, Sequence[str]] | None = None,
    log_prior: Sequence[float] | np.ndarray | None = None,
    allow_large_k: bool = False,
    devices: Sequence[jax.Device] | None = None,
    on_stage: Stage | None = None,
    **options,
) -> PromptPID:
    """PID (or conditional PID) of the words ``sources`` of ``prompt`` in generated or given images.

    All 2**k subset prompts are encoded in one batched call (77 tokens each) and evaluated
    with every log-SNR sample of every image in one fused pass.

    Args:
      config: the run's settings; or give them as keyword ``options`` (``RunConfig.from_options``:
        measure, form, level, n_samples, sampler, chunk_size, key, conditional, removal,
        placeholder, steps, guidance_scale, seeds, prior, preset).
      images: images to analyse (``jaxpid.analysis.given_images``); default: generated from
        the prompt with ``config.seeds``.
      alternatives: source word -> alternative words: imin's candidates, and with any measure the
        consistency check (``PIDResult.log_consistency``).
      log_prior: ppid only: (k,) natural-log p(word); default: from ``config.prior``.
      on_stage: called with a description as each stage starts (a progress display).
    """
    plan = plan_pid(prompt, sources, run_config(config, options), alternatives=alternatives, log_prior=log_prior,
                    allow_large_k=allow_large_k)
    return run_pid(pipeline, plan, images=images, devices=devices, on_stage=on_stage)


def run_pid(
    pipeline: Pipeline,
    plan: PIDPlan,
    *,
    images: Images | None = None,
    devices: Sequence[jax.Device] | None = None,
    on_stage: Stage | None = None,
) -> PromptPID:
    """``analyze`` for a checked plan (the CLI plans before it loads a model)."""
    stage = on_stage or (lambda _: None)
    config, subsets = plan.config, plan.subsets
    pipeline.tokenizer.encode(plan.prompts)  # every prompt fits before any expensive work
    log_prior, prior_info = _priors(plan, stage)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if images is None:
        stage(f"generating {len(config.seeds)} image(s)")
        images = generated_images(pipeline, subsets.prompt, config.seeds, config.generation)
    timings["images_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage(f"encoding {len(plan.prompts)} prompts")
    conds = pipeline.encode_prompt(list(subsets.prompts))
    alt_conds = [pipeline.encode_prompt(list(group)) for group in plan.alternative_prompts] or None
    timings["text_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rounds = "" if config.estimator.target_stderr is None else " per round"
    stage(f"fused pass: {len(images.latents)} image(s) x {config.estimator.n_samples} log-SNR samples{rounds} x "
          f"{len(plan.prompts)} conditionings")
    result = pid(
        pipeline.denoiser, images.latents, conds, **config.estimator.arguments(), **config.pid.arguments(),
        alternatives=alt_conds, log_prior=log_prior, devices=devices, allow_large_k=plan.allow_large_k,
        on_round=round_note(stage, config.estimator, lambda r: r.information.config["n_samples"],
                            lambda r: float(np.max(reported_stderr(r)))),
    )
    timings["estimate_s"] = time.perf_counter() - t0
    timings["compile_s"] = result.information.timings.get("compile_s", 0.0)
    record = {
        "analysis": "conditional_pid" if config.conditional else "pid",
        "run": config.to_dict(),
        **subsets.to_dict(),
        "alternatives": {w: list(a) for w, a in plan.alternatives.items()} if plan.alternatives else None,
        "alternative_prompts": [list(g) for g in plan.alternative_prompts] or None,
        "allow_large_k": plan.allow_large_k,
        "prior": prior_info,
        "images": images.origin,
        "estimator": result.config,
        "model": pipeline.identity(),
    }
    return PromptPID(subsets, images, result, config, record, timings, compare_forms(result))


def round_note(stage: Stage, estimator: EstimatorConfig, samples_of: Callable, largest_of: Callable):
    """The ``on_round`` callback of a run with a target standard error: a line on ``stage``'s
    ``note`` (the CLI's progress bar) per round; None without a target or a note."""
    note = getattr(stage, "note", None)
    if estimator.target_stderr is None or note is None:
        return None
    return lambda result: note(f"{samples_of(result)} samples per image, largest s.e. {largest_of(result):.4g} "
                               f"(target {estimator.target_stderr:g}, at most {estimator.max_samples})")


def _priors(plan: PIDPlan, stage: Stage) -> tuple[np.ndarray | None, dict | None]:
    """ppid's (k,) log priors and their record: as given, or from the configured spec."""
    config = plan.config
    if config.pid.measure != "ppid":
        return None, None
    if plan.log_prior is not None:
        return plan.log_prior, {"spec": "given", "log_prior": plan.log_prior.tolist()}
    stage(f"word priors ({config.prior})")
    values = load_prior_spec(config.prior).evaluate(plan.subsets.prompt, list(plan.subsets.sources), config.conditional,
                                                   **config.removal.arguments())
    return values.log_prior, values.to_dict()


def _alternative_prompts(subsets: SubsetPrompts, alternatives, measure: str) -> list[list[str]]:
    """Per source, the prompts with the word replaced by each alternative (imin's candidates; with
    any measure they give the consistency check)."""
    if measure != "imin" and not alternatives:
        return []
    words = [s.word.lower() for s in subsets.sources]
    if not alternatives:
        raise ConfigError(
            "measure 'imin' needs alternative words for every source, e.g. "
            + " ".join(f"--alternatives {w}=OTHER1,OTHER2" for w in words)
        )
    given = {w.lower(): list(a) for w, a in alternatives.items()}
    unknown = sorted(set(given) - set(words))
    if unknown:
        raise ConfigError(f"alternatives given for {unknown}, which are not sources ({words})")
    groups = []
    for j, word in enumerate(words):
        alts = [a.strip() for a in given.get(word, []) if a.strip()]
        if not alts:
            raise ConfigError(f"no alternatives for source {word!r}: give them for every source "
                              f"(--alternatives {word}=OTHER1,OTHER2)")
        groups.append([replace_source(subsets, j, a) for a in alts])
    return groups
