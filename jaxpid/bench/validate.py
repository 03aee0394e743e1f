"""The measures' validation table as a benchmark row: ``jaxpid study validate`` on the demo model
(its designed phenomena) and the Gaussian-mixture cases with exact atoms, one row per run in
validation.jsonl (``--results``; see ``jaxpid.bench.results.results_dir``) with every cell's
statistic, standard error and pass/fail, the passes per measure, the Markdown table and the
environment. docs/validation.md renders the latest row.

    python -m jaxpid.bench.validate                       # 8 images per case, N = 64: ~30 min on 2 CPU cores
    python -m jaxpid.bench.validate --quick               # 2 images, N = 16, small mixtures: ~3 minutes
    python -m jaxpid.bench.validate --from runs/validate  # record a finished `jaxpid study validate` folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from jaxpid.bench import common

QUICK = ["--n-images", "2", "--samples", "16", "--gmm-images", "8", "--gmm-samples", "32", "--truth-samples", "256",
         "--known-images", "64", "--known-samples", "16"]


def validation_row(folder: Path) -> dict:
    """The benchmark row of a finished validate study folder."""
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("study") != "validate":
        raise SystemExit(f"{folder}: not a `jaxpid study validate` folder (study {summary.get('study')!r})")
    return {
        "benchmark": "validation", "model": "demo", "config": summary["config"],
        "passed": summary["passed"], "cells": summary["cells"],
        "demo": summary["demo"], "gaussian_mixtures": summary["gaussian_mixtures"],
        "items_per_minute": summary["items_per_minute"],
        "table": (folder / "table.md").read_text(),
        "environment": summary["provenance"]["environment"] if "provenance" in summary else common.environment(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 images per case, N = 16, small Gaussian mixtures")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="record this finished `jaxpid study validate` folder instead of running one")
    parser.add_argument("--out", type=Path, default=None, help="study directory (default: a temporary one)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    folder = args.source
    if folder is None:
        folder = args.out or Path(tempfile.gettempdir()) / f"jaxpid-bench-validate-{uuid.uuid4().hex[:12]}"
        # the study is the `jaxpid study validate` program itself (benchmarks do not import the CLI)
        command = [sys.executable, "-m", "jaxpid.cli", "study", "validate", "--model", "demo", "--out", str(folder),
                   "--no-progress"] + (QUICK if args.quick else [])
        code = subprocess.run(command, check=False).returncode
        if code:
            return code
    row = {"quick": args.quick, **validation_row(folder)}
    print("cells passed per measure: " + ", ".join(f"{m} {row['passed'][m]}/{row['cells'][m]}" for m in row["passed"]))
    print(f"appended 1 row to {common.save_rows('validation', [row], args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
