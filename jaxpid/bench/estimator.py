"""Estimator-core benchmark: cost linear in S × N, compile time apart, memory flat in N.

Uses the closed-form Gaussian-mixture denoiser (``jaxpid.core.ground_truth``) with a latent of a
chosen size, so it measures the fused pass itself (sampling, noising, error reductions, map
accumulation, sharding) rather than a network. Prints a table and appends one JSON row per
configuration (with the environment) to estimator.jsonl in the results folder (``--results``;
see ``jaxpid.bench.results.results_dir``).

    python -m jaxpid.bench.estimator            # a few minutes on a 2-core CPU
    python -m jaxpid.bench.estimator --quick    # seconds
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.bench import common
from jaxpid.core.ground_truth import MixtureDenoiser
from jaxpid.errors import JaxpidError

CHUNK = 16


def temp_bytes(denoise, x, conds, n_samples: int, chunk: int) -> int | None:
    """XLA's temporary-buffer size for the compiled fused pass (None if the backend won't say)."""
    return common.compile_fused_pass(denoise, x, conds, n_samples=n_samples, chunk=chunk).temp_bytes


def run_one(denoise, x, conds, n_samples: int, chunk: int) -> dict:
    """``jaxpid.information`` on one device: the first call (compile + run) and the best of 3 after."""
    kwargs = dict(key=jax.random.key(0), n_samples=n_samples, chunk_size=chunk, devices=jax.devices()[:1])
    t0 = time.perf_counter()
    jaxpid.information(denoise, x, conds, **kwargs)
    first = time.perf_counter() - t0
    times = []
    for rep in range(3):
        t0 = time.perf_counter()
        jaxpid.information(denoise, x + 1e-3 * rep, conds, **kwargs)
        times.append(time.perf_counter() - t0)
    steady = min(times)
    evals = x.shape[0] * n_samples * conds.shape[0]
    return {
        "n_samples": n_samples,
        "n_conditionings": int(conds.shape[0]),
        "chunk_size": chunk,
        "compile_plus_first_s": round(first, 4),
        "steady_s": round(steady, 4),
        "evals_per_s": round(evals / steady, 1),
        "us_per_eval": round(1e6 * steady / evals, 3),
        "temp_bytes": temp_bytes(denoise, x, conds, n_samples, chunk),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latent", type=int, default=16, help="latent side (C=4 channels)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    jaxpid.use_cpu_cores()  # before JAX starts: one CPU device per core, as jaxpid runs (jaxpid.devices)
    try:
        return run(args)
    except JaxpidError as error:
        print(f"jaxpid.bench.estimator: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(0)
    shape = (4, args.latent, args.latent)
    means = jnp.asarray(rng.normal(size=(8,) + shape), jnp.float32)
    denoise = MixtureDenoiser(means, std=0.5)
    x = jnp.asarray(rng.normal(size=(1,) + shape), jnp.float32)
    grid = [(4, 64), (4, 128), (16, 64), (4, 256)] if args.quick else [(4, 100), (4, 200), (4, 400), (4, 800), (8, 400), (16, 400), (16, 800)]
    print(common.load_note())
    env = common.environment()
    rows = []
    print(f"{'S':>3} {'N':>5} {'chunk':>5} {'first s':>8} {'steady s':>9} {'evals/s':>10} {'us/eval':>8} {'temp MiB':>9}")
    for n_conds, n_samples in grid:
        conds = jnp.asarray(rng.normal(size=(n_conds, 8)), jnp.float32)
        row = run_one(denoise, x, conds, n_samples, chunk=CHUNK)
        rows.append(row)
        mib = "n/a" if row["temp_bytes"] is None else f"{row['temp_bytes'] / 2**20:.2f}"
        print(f"{n_conds:>3} {n_samples:>5} {CHUNK:>5} {row['compile_plus_first_s']:8.3f} {row['steady_s']:9.4f} "
              f"{row['evals_per_s']:10.1f} {row['us_per_eval']:8.3f} {mib:>9}")
    rows = [{"benchmark": "estimator_gmm", "latent": list(shape), **row, "environment": env} for row in rows]
    print(f"appended {len(rows)} rows to {common.save_rows('estimator', rows, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
