"""``jaxpid study intervene``: build the jobs, run them on the sweep machinery, save and print."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import model_spec, study_estimator
from jaxpid.cli.studies import execute, load_for
from jaxpid.errors import ConfigError
from jaxpid.sd.ddim import GenerationConfig
from jaxpid.sd.prompts import WordRemoval
from jaxpid.studies.intervention import (
    InterventionConfig,
    check_jobs,
    demo_jobs,
    plan_intervention,
    read_intervention_jobs,
)


def intervention_config(args: argparse.Namespace) -> InterventionConfig:
    """The study's configuration from the arguments (unset options keep the defaults)."""
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    estimator = study_estimator(args)
    return InterventionConfig(
        estimator=estimator,
        generation=GenerationConfig(**given(steps=args.steps, guidance_scale=args.guidance)),
        removal=WordRemoval(**given(mode=args.removal)),
        **given(measure=args.measure, form=args.form, batch_size=args.batch_size, examples=args.examples),
    )


def intervene_command(args: argparse.Namespace) -> int:
    config = intervention_config(args)
    demo = args.jobs == "demo"
    demo_options = {"n": args.n, "seeds_per_caption": args.seeds_per_caption, "edit": args.edit,
                    "seed": args.demo_seed}
    demo_options = {k: v for k, v in demo_options.items() if v is not None}
    if not demo and demo_options:
        raise ConfigError("--n / --seeds-per-caption / --edit / --demo-seed build the demo's jobs: use them with "
                          "JOBS = demo")
    if demo:
        jobs = demo_jobs(**demo_options)
    else:
        jobs = read_intervention_jobs(args.jobs)
    check_jobs(jobs, config.removal)  # bad jobs are refused before the model loads
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    execute(args, plan_intervention(jobs, config, identity, source="demo" if demo else str(args.jobs)), pipeline)
    return 0
