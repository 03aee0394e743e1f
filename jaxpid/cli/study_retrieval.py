"""``jaxpid study retrieve``: build the items (manifest, ARO files or the demo), run, save and print."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for, study_estimator, writes_outputs
from jaxpid.core.config import check_int
from jaxpid.errors import ConfigError
from jaxpid.studies.aro import load_aro
from jaxpid.studies.retrieval import (
    RetrievalConfig,
    check_items,
    demo_items,
    plan_retrieval,
    read_retrieval_manifest,
)
from jaxpid.studies.retrieval_summary import save_retrieval


def retrieval_config(args: argparse.Namespace) -> RetrievalConfig:
    given = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    estimator = study_estimator(args)
    return RetrievalConfig(estimator, **given(batch_size=args.batch_size))


def retrieval_items(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The items and where they came from; every input error is raised here, before the model loads."""
    if args.limit is not None:
        check_int("--limit", args.limit, 1)
    if args.aro is not None:
        if args.manifest is not None:
            raise ConfigError("give a MANIFEST or --aro SET FILE, not both")
        if args.images is None:
            raise ConfigError("--aro needs --images DIR: the folder its image paths are relative to")
        kind, path = args.aro
        return load_aro(kind, path, args.images, limit=args.limit), f"aro:{kind}:{path}"
    if args.images is not None:
        raise ConfigError("--images goes with --aro (a manifest's image paths are relative to the manifest)")
    if args.manifest is None:
        raise ConfigError("give a MANIFEST (JSONL), 'demo', or --aro SET FILE --images DIR")
    demo_options = {k: v for k, v in (("n", args.n), ("seed", args.demo_seed)) if v is not None}
    if args.manifest == "demo":
        items = demo_items(**demo_options)
        return items[:args.limit] if args.limit else items, "demo"
    if demo_options:
        raise ConfigError("--n / --demo-seed build the demo's items: use them with MANIFEST = demo")
    items = read_retrieval_manifest(args.manifest)
    return items[:args.limit] if args.limit else items, str(args.manifest)


def retrieve_command(args: argparse.Namespace) -> int:
    config = retrieval_config(args)
    items, source = retrieval_items(args)
    check_items(items)  # bad items are refused before the model loads
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    plan = plan_retrieval(items, config, identity, source=source)
    run = execute(args, plan, pipeline)
    if not (run.complete and writes_outputs(args)):
        return 0
    summary, paths = save_retrieval(args.out, run.rows, plan, run)
    print_summary(summary)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _line(name: str, g: dict) -> str:
    lo, hi = g["accuracy_ci"]
    margin = "n/a" if g["margin_mean"] is None else f"{g['margin_mean']:+.3f}"
    margin_se = "n/a" if g["margin_stderr"] is None else f"{g['margin_stderr']:.3f}"
    return (f"  {name:>10s}: {g['n_correct']:g}/{g['n_items']} = {g['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]; "
            f"by orthogonal MI {g['accuracy_mi']:.3f}; chance {g['chance']:.2f}; NLL margin {margin} ± {margin_se}")


def _interval(value, ci) -> str:
    if value is None:
        return "n/a"
    lo, hi = ci if ci else (None, None)
    return f"{value:.3f}" + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")


def _macro_line(s: dict) -> str:
    """Micro (every item) and macro (mean over groups, as ARO reports its VG sets) accuracy."""
    micro = f"  micro (every item, Wilson): {_interval(s.get('accuracy_micro'), s.get('accuracy_micro_ci'))}"
    m = s.get("macro")
    if m is None:
        return micro
    if not s.get("n_groups_macro"):
        return f"{micro}; macro = micro ({m['note']})"
    left_out = m.get("groups_left_out") or {}
    dropped = f", {len(left_out)} left out by rule {m['rule']}" if left_out else ""
    n = s["n_groups_macro"]
    return (f"{micro}; macro (mean over {n} group{'s' * (n != 1)}{dropped}, bootstrap over items): "
            f"{_interval(s.get('accuracy_macro'), s.get('accuracy_macro_ci'))}")


def print_summary(s: dict) -> None:
    if s.get("n_items"):
        print("accuracy of the lowest-NLL caption (95 % Wilson interval):")
        for name, g in s["groups"].items():
            print(_line(name, g))
        print(_line("all", s))
        print(_macro_line(s))
    ties = s.get("expected_ties")
    if ties:
        lo, hi = ties["other_preferred_ci"]
        print(f"  expected ties ({ties['n_items']} items): the other caption preferred in {ties['other_preferred']:.2f} "
              f"[{lo:.2f}, {hi:.2f}]; margin {ties['margin_mean']:+.3f} ± {ties['margin_stderr']:.3f} nats")
    mc = s["margin_mc_stderr"]
    if mc["ratio"] is not None:
        print(f"  margin Monte-Carlo s.e.: {mc['shared_draws']:.3f} nats with shared draws, "
              f"{mc['independent_draws']:.3f} if the captions had independent draws ({mc['ratio']:.1f}x)")
