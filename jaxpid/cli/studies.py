"""``jaxpid study <name>``: one executor for every study.

Each study has a handler module (``jaxpid.cli.study_<name>``) that turns the arguments into the
study's config, items and plan (every input checked before a model loads); ``execute`` here runs
the plan (local, Ray or multi-host JAX), writes the summary, prints it, and says how to resume
when batches are left.
"""

from __future__ import annotations

import argparse
import importlib

import jax

from jaxpid.cli.options import model_spec
from jaxpid.sd.pipeline import Pipeline
from jaxpid.studies.base import FinishedStudy, StudyPlan, complete_study
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


def load_for(args: argparse.Namespace) -> Pipeline | None:
    """The model a local or distributed run computes with (None for Ray: its workers load it).
    A distributed run joins its multi-host JAX job first (before any other JAX call)."""
    if args.backend == "distributed":
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    return None if args.backend == "ray" else model_spec(args).load()


def writes_outputs(args: argparse.Namespace) -> bool:
    """Whether this process writes the study's outputs (only process 0 of a distributed run)."""
    return args.backend != "distributed" or jax.process_index() == 0


def execute(args: argparse.Namespace, plan: StudyPlan, pipeline: Pipeline | None) -> FinishedStudy:
    """The one executor of every study: compute (or resume) the plan's batches into ``args.out``
    with the chosen runner, then summarise and write the outputs; prints what it did, the
    summary's text and the files written (only the process that writes prints them)."""
    ray_options = {"address": args.ray_address, "num_cpus": args.ray_cpus, "max_retries": args.ray_retries,
                   "gpus_per_task": args.ray_gpus_per_task}
    finished = complete_study(plan, args.out, pipeline=pipeline, model=model_spec(args), backend=args.backend,
                              shard=parse_shard(args.shard), progress=not args.no_progress, ray_options=ray_options,
                              announce=print if writes_outputs(args) else None)
    if not writes_outputs(args):
        return finished
    summary = finished.run.summary
    print(f"{args.study} {args.out}: {summary.jobs} {plan.unit}s in {summary.batches} batches; "
          f"{len(summary.computed)} batches computed now, {summary.skipped} were done")
    for damaged in summary.damaged:
        print(f"  damaged part set aside into parts/_damaged/ and computed again: {damaged}")
    if summary.jobs_computed:
        steady = summary.steady_jobs_per_minute
        after = f"; after the first batch {steady:.1f} {plan.unit}s/min" if steady is not None else ""
        print(f"  {summary.seconds:.1f} s ({summary.compile_seconds:.1f} s compiling fused passes), "
              f"{summary.jobs_per_minute:.1f} {plan.unit}s/min{after}")
    if summary.evaluations is not None:
        print(f"  {summary.evaluations:,} denoiser evaluations in fused passes (chunk padding included)")
    if finished.summary is None:
        print("  not every batch is done (other shards, or an interruption): run the same command again to "
              "finish; the summary is written when all batches are there")
        return finished
    text = finished.summary.text()
    if text:
        print(text)
    print("wrote " + ", ".join(str(p) for p in finished.paths))
    return finished
