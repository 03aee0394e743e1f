"""``jaxpid study <name>``: run a study's plan with the chosen runner, then save its outputs.

Each study has a handler module (``jaxpid.cli.study_<name>``) that builds its plan from the
arguments and summarises its rows; this module runs the plan (local, Ray or multi-host JAX),
reports throughput, and says how to resume when batches are left.
"""

from __future__ import annotations

import argparse
import importlib

import jax

from jaxpid.analysis.config import make_sampler
from jaxpid.analysis.presets import FittedLogistic, resolve_study
from jaxpid.cli.options import model_spec
from jaxpid.core.config import EstimatorConfig
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.schedule import NoiseSchedule
from jaxpid.sd.weights import resolve_model_path
from jaxpid.studies.base import StudyPlan, StudyRun, run_study
from jaxpid.sweeps.distributed import initialize_distributed
from jaxpid.sweeps.plan import parse_shard

# study -> (handler module, function); each handler: (args) -> exit code
STUDIES: dict[str, tuple[str, str]] = {
    "localize": ("jaxpid.cli.study_localize", "localize_command"),
    "intervene": ("jaxpid.cli.study_intervention", "intervene_command"),
    "retrieve": ("jaxpid.cli.study_retrieval", "retrieve_command"),
    "words": ("jaxpid.cli.study_words", "words_command"),
    "validate": ("jaxpid.cli.study_validate", "validate_command"),
}


def study_command(args: argparse.Namespace) -> int:
    module, function = STUDIES[args.study]
    return getattr(importlib.import_module(module), function)(args)


def study_estimator(args: argparse.Namespace, samples: int = EstimatorConfig.n_samples) -> EstimatorConfig:
    """The estimator settings of a study's command line (``study_options``): explicit options, then
    the preset's settings for this study (``jaxpid.analysis.presets.STUDY_SETTINGS``), then defaults."""
    explicit = {"n_samples": args.samples, "sampler": args.sampler, "chunk_size": args.chunk_size, "key": args.key}
    options = {"n_samples": samples, "key": 0,
               **resolve_study(getattr(args, "preset", None), args.study, explicit)}
    if isinstance(options.get("sampler"), FittedLogistic):  # fitted to the model's range: its scheduler config
        folder = resolve_model_path(args.model, variant=args.variant)
        options["sampler"] = options["sampler"].for_range(NoiseSchedule.from_folder(folder / "scheduler").logsnr_range)
    if options.get("sampler") is not None:
        options["sampler"] = make_sampler(options["sampler"])
    return EstimatorConfig(**{k: v for k, v in options.items() if v is not None})


def load_for(args: argparse.Namespace) -> Pipeline | None:
    """The model a local or distributed run computes with (None for Ray: its workers load it).
    A distributed run joins its multi-host JAX job first (before any other JAX call)."""
    if args.backend == "distributed":
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    return None if args.backend == "ray" else model_spec(args).load()


def writes_outputs(args: argparse.Namespace) -> bool:
    """Whether this process writes the study's outputs (only process 0 of a distributed run)."""
    return args.backend != "distributed" or jax.process_index() == 0


def execute(args: argparse.Namespace, plan: StudyPlan, pipeline: Pipeline | None) -> StudyRun:
    """Compute (or resume) the plan's batches into ``args.out``; prints what it did."""
    ray_options = {"address": args.ray_address, "num_cpus": args.ray_cpus, "max_retries": args.ray_retries,
                   "gpus_per_task": args.ray_gpus_per_task}
    run = run_study(plan, args.out, pipeline=pipeline, model=model_spec(args), backend=args.backend,
                    shard=parse_shard(args.shard), progress=not args.no_progress, ray_options=ray_options)
    if not writes_outputs(args):
        return run
    summary = run.summary
    print(f"{args.study} {args.out}: {summary.jobs} {plan.unit}s in {summary.batches} batches; "
          f"{len(summary.computed)} batches computed now, {summary.skipped} were done")
    if summary.jobs_computed:
        steady = summary.steady_jobs_per_minute
        after = f"; after the first batch {steady:.1f} {plan.unit}s/min" if steady is not None else ""
        print(f"  {summary.seconds:.1f} s ({summary.compile_seconds:.1f} s compiling fused passes), "
              f"{summary.jobs_per_minute:.1f} {plan.unit}s/min{after}")
    if not run.complete:
        print("  not every batch is done (other shards, or an interruption): run the same command again to "
              "finish; the summary is written when all batches are there")
    return run
