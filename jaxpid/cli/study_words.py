"""``jaxpid study words``: the PID of word pairs by relation, under every measure and every form."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for
from jaxpid.errors import ConfigError
from jaxpid.studies.words import SETS, demo_pairs, job_table, plan_words, read_pairs, shipped_pairs, words_config
from jaxpid.sweeps.config import SweepConfig


def words_command(args: argparse.Namespace) -> int:
    if args.pairs not in ("shipped", "demo") and (args.sets or args.seeds):
        raise ConfigError("--sets / --seeds choose the shipped or demo pairs: a PAIRS file has its own seed field")
    sweep = SweepConfig.from_options(n_samples=args.samples, chunk_size=args.chunk_size, key=args.key, sampler=args.sampler,
                                     target_stderr=args.target_stderr, max_samples=args.max_samples, steps=args.steps,
                                     guidance_scale=args.guidance, prior=args.prior, batch_size=args.batch_size,
                                     level=args.level)
    config = words_config(sweep, args.measure)
    if args.pairs == "shipped":
        pairs, source = shipped_pairs(args.sets or SETS, args.seeds or (0,)), "jaxpid/data/words"
    elif args.pairs == "demo":
        pairs, source = demo_pairs(args.seeds or (0, 1, 2, 3)), "jaxpid.studies.words.demo_pairs"
    else:
        pairs, source = read_pairs(args.pairs), str(args.pairs)
    job_table(pairs, source, conditional=args.conditional)  # bad pairs are refused before the model loads
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    plan = plan_words(pairs, config, identity, source=source, conditional=args.conditional, examples=args.examples)
    execute(args, plan, pipeline)
    return 0
