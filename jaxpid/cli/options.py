"""Parsed arguments -> the configuration objects the library takes (validated there, once)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import jax

from jaxpid.analysis.config import RunConfig, estimator_from_options
from jaxpid.analysis.presets import FittedLogistic, resolve_study
from jaxpid.cli.option_groups import default_of
from jaxpid.cli.study_parsers import STUDY_CONFIGS
from jaxpid.core.config import EstimatorConfig
from jaxpid.errors import ConfigError
from jaxpid.sd.pipeline import ModelSpec, folder_schedule


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model a command loads, its dtype checked against the device first."""
    if getattr(args, "dtype", None) == "fp16" and jax.default_backend() == "cpu":
        raise ConfigError("--dtype fp16: XLA on the CPU has no float16 matrix products; use --dtype bf16 "
                          "(bfloat16 with float32 accumulation) or fp32 here, fp16 on a GPU")
    time_ids = getattr(args, "time_ids", None)
    return ModelSpec(args.model, args.dtype, args.param_dtype, args.attention, args.variant,
                     None if time_ids is None else tuple(time_ids), t5=getattr(args, "t5", True),
                     max_sequence_length=getattr(args, "t5_max_length", ModelSpec.max_sequence_length))


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run configuration of ``jaxpid pid`` / ``jaxpid mi`` (preset, then explicit options)."""
    return RunConfig.from_options(
        getattr(args, "preset", None),
        measure=getattr(args, "measure", None), form=args.form, level=getattr(args, "level", None),
        n_samples=args.samples, sampler=args.sampler, chunk_size=args.chunk_size, key=args.key,
        target_stderr=args.target_stderr, max_samples=args.max_samples,
        conditional=getattr(args, "conditional", None), removal=args.removal, steps=args.steps,
        guidance_scale=args.guidance, seeds=args.seed, prior=getattr(args, "prior", None),
    )


def given(**options: Any) -> dict[str, Any]:
    """The options set on the command line: an unset one (None) is left out, so the configuration
    it goes to keeps its own default (``jaxpid.cli.option_groups.config_option``)."""
    return {name: value for name, value in options.items() if value is not None}


def study_estimator(args: argparse.Namespace, samples: int | None = None) -> EstimatorConfig:
    """The estimator settings of a study's command line (``jaxpid.cli.study_parsers.study_options``):
    explicit options, then the preset's settings for this study (``jaxpid.analysis.presets.STUDY_SETTINGS``),
    then the study configuration's own estimator (``STUDY_CONFIGS``; ``samples``, if given, replaces
    its number of samples)."""
    defaults = default_of(STUDY_CONFIGS[args.study], "estimator")
    if samples is not None:
        defaults = dataclasses.replace(defaults, n_samples=samples)
    explicit = {"n_samples": args.samples, "sampler": args.sampler, "chunk_size": args.chunk_size, "key": args.key,
                "target_stderr": args.target_stderr, "max_samples": args.max_samples}
    settings = resolve_study(getattr(args, "preset", None), args.study, {})
    if isinstance(settings.get("sampler"), FittedLogistic) and args.sampler is None:
        # fitted to the model's trained range, from its scheduler config (read only when it is used)
        settings["sampler"] = settings["sampler"].for_range(folder_schedule(args.model, args.variant).logsnr_range)
    return estimator_from_options(settings, defaults=defaults, **explicit)


def parse_alternatives(items: list[str]) -> dict[str, list[str]] | None:
    """['red=blue,green', ...] -> {'red': ['blue', 'green'], ...}."""
    out = {}
    for item in items:
        word, sep, alts = item.partition("=")
        if not sep or not word.strip() or not alts.strip():
            raise ConfigError(f"--alternatives {item!r}: expected WORD=ALT1,ALT2")
        out[word.strip()] = [a.strip() for a in alts.split(",") if a.strip()]
    return out or None
