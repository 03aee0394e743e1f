"""``jaxpid study intervene``: build the jobs, run them on the sweep machinery, save and print."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for, study_estimator, writes_outputs
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
from jaxpid.studies.intervention_summary import save_intervention


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
    plan = plan_intervention(jobs, config, identity, source="demo" if demo else str(args.jobs))
    run = execute(args, plan, pipeline)
    if not (run.complete and writes_outputs(args)):
        return 0
    summary, paths = save_intervention(args.out, run.rows, plan, run)
    print_summary(summary)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _ci(values) -> str:
    return "[n/a]" if values is None or None in values else f"[{values[0]:.2f}, {values[1]:.2f}]"


def _num(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def print_summary(s: dict) -> None:
    print(f"{s['n_items']} jobs ({s['edits']['delete']} deletions, {s['edits']['replace']} replacements); "
          f"information vs image change:")
    print(f"  image level: Pearson r = {_num(s['pearson_image'])} {_ci(s['pearson_image_ci'])}, "
          f"Spearman rho = {_num(s['spearman_image'])} {_ci(s['spearman_image_ci'])}")
    print(f"  pixel level: mean per-job r = {_num(s['pearson_pixel_mean'])} ± {_num(s['pearson_pixel_stderr'])} "
          f"(s.e., {s['pearson_pixel_n']} jobs whose image changed)")
    for name, g in (s.get("groups") or {}).items():
        print(f"  {name:>10s}: n = {g['n_items']:3d}, r = {_num(g['pearson_image'])} {_ci(g['pearson_image_ci'])}, "
              f"pixel r = {_num(g['pearson_pixel_mean'])} ± {_num(g['pearson_pixel_stderr'])}")
    a = s.get("attention")
    if a is None:
        print(f"  attention baseline: none ({s.get('attention_note')})")
    else:
        print(f"  attention baseline: image level r = {_num(a['pearson_image'])} {_ci(a['pearson_image_ci'])}, "
              f"pixel level r = {_num(a['pearson_pixel_mean'])} ± {_num(a['pearson_pixel_stderr'])}")
    pid = s.get("pid")
    if pid:
        atoms = ", ".join(f"{k} r = {_num(v['pearson'])}" for k, v in pid["correlations"].items())
        print(f"  PID atoms ({pid['measure']}, {pid['n_items']} jobs) vs change: {atoms}")
    worst = (s.get("disagreements") or {}).get("changed_less_than_predicted") or []
    for d in worst[:1]:
        print(f"  least change for its information: −{d['word']} in “{d['prompt']}” (seed {d['seed']}): "
              f"{d['information']:.2f} nats, change {d['change_pixel']:.4f}")
