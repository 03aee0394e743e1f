"""``jaxpid study retrieve``: build the items (manifest, ARO files or the demo), run, save and print."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import given, model_spec, study_estimator
from jaxpid.cli.studies import execute, load_for
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


def retrieval_config(args: argparse.Namespace) -> RetrievalConfig:
    """The study's configuration (unset options keep RetrievalConfig's defaults). With
    --sequential, --max-samples caps the decision's rounds (not a target standard error's)."""
    if not args.sequential and args.confidence is not None:
        raise ConfigError("--confidence is the sequential decision's: give --sequential too")
    if args.sequential and args.target_stderr is not None:
        raise ConfigError("--sequential stops each item on its decision, --target-stderr on a standard error: "
                          "choose one")
    cap = args.max_samples if args.sequential else None
    estimator = study_estimator(argparse.Namespace(**{**vars(args), "max_samples": None}) if args.sequential else args)
    return RetrievalConfig(estimator, sequential=args.sequential,
                           **given(batch_size=args.batch_size, confidence=args.confidence, max_samples=cap))


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
    execute(args, plan_retrieval(items, config, identity, source=source), pipeline)
    return 0
