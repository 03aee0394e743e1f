"""What per-item stopping saves (issue 28): denoiser evaluations at the same worst-case standard
error (sweeps) and at the same decisions (retrieval).

- **Sweep, Gaussian mixtures** (exact denoiser, ``jaxpid.core.ground_truth``): every image of a
  canonical case with its 4 subset conditionings and the anchored gaps. Fixed N: every image gets
  N samples; its worst standard error over images and reported quantities is W. Per-item stopping
  (``jaxpid.core.adaptive``): rounds of n samples until each image's reported errors are at most
  W (cap 4N), slots refilled.
- **Sweep, demo model**: the same through ``jaxpid.sweeps.run_sweep`` (generated images, the rows'
  every ``*stderr*`` column) — fixed N, then ``--target-stderr W`` with rounds of n.
- **Retrieval, demo model**: the retrieval study on the demo's items at a fixed N and
  sequentially (rounds of n, cap N, confidence 0.99): evaluations, accuracy, and the share of
  items whose choice equals the fixed-N run's (the synonym items, built as ties that no bound
  decides, are left out: ARO's sets have none).

Evaluations are the fused passes' (chunk padding included, both ways). The last line:
``sweep_evals_ratio=<r> retrieval_evals_ratio=<r> agree=<f>`` (r = fixed / per-item; the sweep's
is the demo's).

    python -m jaxpid.bench.adaptive --quick     # ~3 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq

import jaxpid
from jaxpid.bench import common
from jaxpid.core.adaptive import SlotItem, per_item_rounds
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.decomposition import anchored_pairs
from jaxpid.core.estimator import FusedPass
from jaxpid.core.ground_truth import canonical_case
from jaxpid.core.sampling import StratifiedSampler
from jaxpid.devices import use_compilation_cache
from jaxpid.errors import JaxpidError
from jaxpid.sweeps import SweepConfig, read_sweep, run_sweep
from jaxpid.sweeps.adaptive import largest_stderr


def reported_stderr(res) -> np.ndarray:
    """(I,) the largest reported standard error per image: every subset information (both
    forms) and every pair's gap (the anchored form's)."""
    others = [s for s in range(res.mi_orthogonal.shape[1]) if s != res.config["reference"]]
    parts = [res.stderr_orthogonal[:, others], res.stderr_standard[:, others], res.pair_stderr("orthogonal"),
             res.pair_stderr("standard")]
    return np.concatenate(parts, axis=1).max(axis=1)


def gmm_sweep(case_name: str, n_images: int, fixed_samples: int, round_samples: int, slots: int) -> dict:
    case = canonical_case(case_name, hidden=True)
    pairs, x = case.sample(jax.random.key(0), n_images)
    conds = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)
    base = jax.random.key(1)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(n_images))
    sampler = StratifiedSampler(strata=round_samples // 2)
    gaps = anchored_pairs(2, 4)
    fixed = FusedPass(case.denoiser, n_samples=fixed_samples, sampler=sampler, pairs=gaps)
    evals_fixed, worst = 0, []
    for start in range(0, n_images, slots):
        chunk = slice(start, start + slots)
        res = fixed(x[chunk], conds[chunk], key=keys[chunk], conds_per_image=True)
        evals_fixed += res.timings["evaluations"]
        worst.append(reported_stderr(res))
    worst = np.concatenate(worst)
    target = float(worst.max())
    stream = FusedPass(case.denoiser, n_samples=round_samples, sampler=sampler, pairs=gaps)
    items = [SlotItem(i, x[i], conds[i], keys[i]) for i in range(n_images)]
    last: dict = {}
    results = dict(per_item_rounds(stream, items, slots=slots, done=lambda t, r: reported_stderr(r)[0] <= target,
                                   max_samples=4 * fixed_samples, on_round=last.update))
    adaptive_worst = max(float(reported_stderr(r)[0]) for r in results.values())
    samples = np.array([r.samples_standard.shape[1] for r in results.values()])
    return {"part": "sweep", "data": f"gmm:{case_name}", "items": n_images, "fixed_samples": fixed_samples,
            "round_samples": round_samples, "target_stderr": target, "worst_stderr_fixed": target,
            "worst_stderr_adaptive": adaptive_worst, "evaluations_fixed": evals_fixed,
            "evaluations_adaptive": last["evaluations"], "evals_ratio": evals_fixed / last["evaluations"],
            "samples_mean": float(samples.mean()), "samples_max": int(samples.max()),
            "capped": int(sum(r.config["stopped"] != "target reached" for r in results.values()))}


def demo_sweep(out: Path, jobs: list[dict], fixed_samples: int, round_samples: int, batch: int) -> dict:
    pipeline = jaxpid.load_pipeline("demo")
    sampler = StratifiedSampler(strata=round_samples // 2)
    base = SweepConfig.from_options(batch_size=batch, steps=10, measures=("mmi", "ccs"))
    fixed_config = dataclasses.replace(base, estimator=EstimatorConfig(n_samples=fixed_samples, sampler=sampler))
    fixed = run_sweep(pipeline, jobs, out / "fixed", fixed_config)
    rows = read_sweep(out / "fixed")
    target = largest_stderr(rows)
    adaptive_config = dataclasses.replace(base, estimator=EstimatorConfig(
        n_samples=round_samples, sampler=sampler, target_stderr=target, max_samples=4 * fixed_samples))
    t0 = time.perf_counter()
    adaptive = run_sweep(pipeline, jobs, out / "adaptive", adaptive_config)
    seconds = time.perf_counter() - t0
    adaptive_rows = read_sweep(out / "adaptive")
    samples = np.array(adaptive_rows["n_samples"].to_pylist())
    return {"part": "sweep", "data": "demo", "items": len(jobs), "fixed_samples": fixed_samples,
            "round_samples": round_samples, "target_stderr": target, "worst_stderr_fixed": target,
            "worst_stderr_adaptive": largest_stderr(adaptive_rows), "evaluations_fixed": fixed.evaluations,
            "evaluations_adaptive": adaptive.evaluations, "evals_ratio": fixed.evaluations / adaptive.evaluations,
            "samples_mean": float(samples.mean()), "samples_max": int(samples.max()),
            "capped": int((samples >= 4 * fixed_samples).sum() // max(1, len(samples) // len(jobs))),
            "seconds_fixed": fixed.seconds, "seconds_adaptive": seconds}


def demo_retrieval(out: Path, n_per_group: int, fixed_samples: int, round_samples: int) -> dict:
    """The retrieval study on the demo's items, fixed N and sequential, each as a ``jaxpid``
    process (the command users run). Evaluations are the items' own (samples x (captions + 1)) of
    the scored items: the synonym items, built as ties that no bound decides (ARO's sets have
    none), run to the cap and are reported apart."""
    base = [sys.executable, "-m", "jaxpid.cli", "study", "retrieve", "demo", "--n-per-group", str(n_per_group),
            "--no-progress"]
    runs = {"fixed": ["--samples", str(fixed_samples)],
            "sequential": ["--samples", str(round_samples), "--sequential", "--max-samples", str(fixed_samples)]}
    rows, summaries = {}, {}
    for name, extra in runs.items():
        folder = out / name
        done = subprocess.run([*base, *extra, "--out", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            raise JaxpidError(f"the {name} retrieval failed: {done.stderr.strip()[-2000:]}")
        rows[name] = pq.read_table(folder / "items.parquet").to_pylist()
        summaries[name] = json.loads((folder / "summary.json").read_text())
    pairs = list(zip(rows["fixed"], rows["sequential"]))
    scored = [(a, b) for a, b in pairs if a["expect"] != "tie"]
    ties = [(a, b) for a, b in pairs if a["expect"] == "tie"]
    cost = lambda rs: sum(r["n_samples"] * (r["n_captions"] + 1) for r in rs)  # noqa: E731
    fixed_cost, sequential_cost = cost([a for a, _ in scored]), cost([b for _, b in scored])
    return {"part": "retrieval", "data": "demo", "items": len(scored), "tie_items": len(ties),
            "fixed_samples": fixed_samples, "round_samples": round_samples, "confidence": 0.99,
            "evaluations_fixed": fixed_cost, "evaluations_adaptive": sequential_cost,
            "evals_ratio": fixed_cost / sequential_cost,
            "run_evaluations": {name: summaries[name]["run"]["evaluations"] for name in runs},
            "agree": float(np.mean([a["choice"] == b["choice"] for a, b in scored])),
            "agree_ties": float(np.mean([a["choice"] == b["choice"] for a, b in ties])) if ties else None,
            "accuracy_fixed": summaries["fixed"].get("accuracy"),
            "accuracy_sequential": summaries["sequential"].get("accuracy"),
            "decided_by_bound": sum(b["decided"] for _, b in scored),
            "mean_rounds": float(np.mean([b["rounds"] for _, b in scored]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer items (~3 min on 2 CPU cores)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except JaxpidError as error:
        print(f"jaxpid.bench.adaptive: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, log=print) -> int:
    use_compilation_cache()
    quick = args.quick
    rows = []
    for case in ("XOR", "AND"):
        rows.append(gmm_sweep(case, 64 if quick else 256, 64, 8, 16))
    words = [("a red circle and a blue square", ["circle", "square"]),
             ("a green triangle and a yellow circle", ["green", "triangle"]),
             ("a blue square above a red circle", ["square", "circle"])]
    seeds = range(4 if quick else 16)
    jobs = [{"prompt": p, "sources": s, "seed": seed} for p, s in words for seed in seeds]
    folder = Path(tempfile.gettempdir()) / f"jaxpid-bench-adaptive-{uuid.uuid4().hex[:12]}"
    rows.append(demo_sweep(folder / "sweep", jobs, 32 if quick else 64, 8, 4))
    rows.append(demo_retrieval(folder / "retrieval", 32 if quick else 128, 100, 10))
    log(f"(the runs' folders: {folder})")
    env = common.environment()
    rows = [{"program": "adaptive", **row, "quick": quick, "environment": env} for row in rows]
    log(f"{'part':<10} {'data':<9} {'items':>5} {'evals fixed':>12} {'per-item':>10} {'ratio':>6}  notes")
    for row in rows:
        if row["part"] == "sweep":
            note = (f"worst s.e. {row['worst_stderr_fixed']:.3f} fixed, {row['worst_stderr_adaptive']:.3f} per-item; "
                    f"samples mean {row['samples_mean']:.0f} (max {row['samples_max']}), {row['capped']} capped")
        else:
            note = (f"agree {row['agree']:.3f}; accuracy {row['accuracy_fixed']:.3f} fixed, "
                    f"{row['accuracy_sequential']:.3f} sequential; {row['decided_by_bound']} decided by the bound, "
                    f"{row['mean_rounds']:.1f} rounds; {row['tie_items']} tie items apart; runs with padding and "
                    f"ties: {row['run_evaluations']['fixed']:,} vs {row['run_evaluations']['sequential']:,}")
        log(f"{row['part']:<10} {row['data']:<9} {row['items']:>5} {row['evaluations_fixed']:>12,} "
            f"{row['evaluations_adaptive']:>10,} {row['evals_ratio']:>6.2f}  {note}")
    log(f"rows appended to {common.save_rows('adaptive', rows, args)}")
    sweep = next(r for r in rows if r["part"] == "sweep" and r["data"] == "demo")
    retrieval = next(r for r in rows if r["part"] == "retrieval")
    log(f"sweep_evals_ratio={sweep['evals_ratio']:.2f} retrieval_evals_ratio={retrieval['evals_ratio']:.2f} "
        f"agree={retrieval['agree']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
