"""``jaxpid study words``: the PID of word pairs by relation, under every measure and both forms."""

from __future__ import annotations

import argparse

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.prompt_pid import analyze
from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for, writes_outputs
from jaxpid.core.config import PIDConfig
from jaxpid.errors import ConfigError
from jaxpid.io.plots import pid_panel, relation_shares
from jaxpid.io.studies import save_study
from jaxpid.studies.words import SETS, demo_pairs, items_table, job_table, read_pairs, shipped_pairs, summarise, words_config
from jaxpid.sweeps.config import SweepConfig
from jaxpid.sweeps.plan import plan_sweep


def words_command(args: argparse.Namespace) -> int:
    if args.pairs not in ("shipped", "demo") and (args.sets or args.seeds):
        raise ConfigError("--sets / --seeds choose the shipped or demo pairs: a PAIRS file has its own seed field")
    sweep = SweepConfig.from_options(n_samples=args.samples, chunk_size=args.chunk_size, key=args.key, sampler=args.sampler,
                                     steps=args.steps, guidance_scale=args.guidance, prior=args.prior,
                                     batch_size=args.batch_size, level=args.level)
    config = words_config(sweep, args.measure)
    if args.pairs == "shipped":
        pairs, source = shipped_pairs(args.sets or SETS, args.seeds or (0,)), "jaxpid/data/words"
    elif args.pairs == "demo":
        pairs, source = demo_pairs(args.seeds or (0, 1, 2, 3)), "jaxpid.studies.words.demo_pairs"
    else:
        pairs, source = read_pairs(args.pairs), str(args.pairs)
    table = job_table(pairs, source, conditional=args.conditional)
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    run = execute(args, plan_sweep(table, config, identity), pipeline)
    if not run.complete or not writes_outputs(args):
        return 0
    default = PIDConfig()
    summary = summarise(run.rows, default)
    figures = {"shares": relation_shares(summary)}
    if pipeline is not None and args.examples > 0:
        figures.update(_examples(pipeline, pairs, config, args))
    record = {**summary, "n_items": len(table), "pairs": source, "conditional": args.conditional,
              "config": config.to_dict(), "items_per_minute": run.items_per_minute}
    paths = save_study(args.out, "words", record, tables={"items": items_table(run.rows)}, figures=figures,
                       model=identity)
    _print(summary)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _examples(pipeline, pairs, config: SweepConfig, args) -> dict:
    """PID panels (maps of every atom) of the first pairs of each relation, default measure and form."""
    figures = {}
    for relation in sorted({p["relation"] for p in pairs}):
        for n, pair in enumerate([p for p in pairs if p["relation"] == relation][:args.examples]):
            run = RunConfig(estimator=config.estimator, generation=config.generation, seeds=(pair.get("seed", 0),),
                            conditional=bool(pair.get("conditional", args.conditional)))
            analysis = analyze(pipeline, pair["prompt"], pair["sources"], run)
            figures[f"example_{relation}_{n}".replace(" ", "_")] = pid_panel(analysis)
    return figures


def _print(summary: dict) -> None:
    print("\nredundancy as a share of the joint information, by relation (mean over pairs ± s.e.):")
    relations = summary["relations"]
    measures = list(dict.fromkeys(m for r in relations.values() for m in r if m != "n"))
    forms = list(dict.fromkeys(f for r in relations.values() for m in r.values() if isinstance(m, dict) for f in m))
    print(f"  {'relation':<14} {'n':>4}  " + "  ".join(f"{m + ' ' + f[:5]:>16}" for m in measures for f in forms))
    for name, entry in relations.items():
        cells = []
        for m in measures:
            for f in forms:
                share = entry.get(m, {}).get(f, {}).get("shares", {}).get("redundancy")
                cells.append(f"{share['mean']:>8.2f} ± {share['stderr']:<5.2f}" if share else f"{'–':>16}")
        print(f"  {name:<14} {entry['n']:>4}  " + "  ".join(cells))
