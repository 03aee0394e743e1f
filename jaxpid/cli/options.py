"""Parsed arguments -> the configuration objects the library takes (validated there, once)."""

from __future__ import annotations

import argparse

import jax

from jaxpid.analysis.config import RunConfig
from jaxpid.errors import ConfigError
from jaxpid.sd.pipeline import ModelSpec


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model a command loads, its dtype checked against the device first."""
    if getattr(args, "dtype", None) == "fp16" and jax.default_backend() == "cpu":
        raise ConfigError("--dtype fp16: XLA on the CPU has no float16 matrix products; use --dtype bf16 "
                          "(bfloat16 with float32 accumulation) or fp32 here, fp16 on a GPU")
    time_ids = getattr(args, "time_ids", None)
    return ModelSpec(args.model, args.dtype, args.param_dtype, args.attention, args.variant,
                     None if time_ids is None else tuple(time_ids))


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


def parse_alternatives(items: list[str]) -> dict[str, list[str]] | None:
    """['red=blue,green', ...] -> {'red': ['blue', 'green'], ...}."""
    out = {}
    for item in items:
        word, sep, alts = item.partition("=")
        if not sep or not word.strip() or not alts.strip():
            raise ConfigError(f"--alternatives {item!r}: expected WORD=ALT1,ALT2")
        out[word.strip()] = [a.strip() for a in alts.split(",") if a.strip()]
    return out or None
