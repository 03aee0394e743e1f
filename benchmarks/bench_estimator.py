"""Estimator-core benchmark: cost linear in S × N, compile time apart, memory flat in N.

Uses the closed-form Gaussian-mixture denoiser with a latent of a chosen size, so it measures
the fused pass itself (sampling, noising, error reductions, map accumulation, sharding) rather
than a network. Prints a table and appends one JSON row per configuration (with the
environment) to benchmarks/results/estimator.jsonl.

    python benchmarks/bench_estimator.py            # a few minutes on a 2-core CPU
    python benchmarks/bench_estimator.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.estimator import _fused_pass, _image_keys, _Plan, _split_denoiser
from jaxpid.gmm import MixtureDenoiser

RESULTS = Path(__file__).parent / "results" / "estimator.jsonl"


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = None
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{device.device_kind}",
        "n_devices": len(jax.devices()),
        "jax": jax.__version__,
        "jaxpid": jaxpid.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
    }


def temp_bytes(denoise, x, conds, n_samples: int, chunk: int) -> int | None:
    """XLA's temporary-buffer size for the compiled fused pass (None if the backend won't say)."""
    dynamic, static = _split_denoiser(denoise)
    plan = _Plan(static, jaxpid.LogisticSampler(), n_samples, 0, chunk, jax.sharding.Mesh(np.array(jax.devices()[:1]), ("d",)))
    conds_i = jnp.broadcast_to(conds[None], (x.shape[0],) + conds.shape)
    with jax.threefry_partitionable(False):  # as jaxpid.information compiles it
        compiled = _fused_pass.lower(plan, dynamic, x, conds_i, _image_keys(jax.random.key(0), x.shape[0])).compile()
    analysis = compiled.memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def run_one(denoise, x, conds, n_samples: int, chunk: int) -> dict:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latent", type=int, default=16, help="latent side (C=4 channels)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (4, args.latent, args.latent)
    means = jnp.asarray(rng.normal(size=(8,) + shape), jnp.float32)
    denoise = MixtureDenoiser(means, std=0.5)
    x = jnp.asarray(rng.normal(size=(1,) + shape), jnp.float32)
    grid = [(4, 64), (4, 128), (16, 64), (4, 256)] if args.quick else [(4, 100), (4, 200), (4, 400), (4, 800), (8, 400), (16, 400), (16, 800)]
    env = environment()
    rows = []
    print(f"{'S':>3} {'N':>5} {'chunk':>5} {'first s':>8} {'steady s':>9} {'evals/s':>10} {'us/eval':>8} {'temp MiB':>9}")
    for n_conds, n_samples in grid:
        conds = jnp.asarray(rng.normal(size=(n_conds, 8)), jnp.float32)
        row = run_one(denoise, x, conds, n_samples, chunk=16)
        rows.append(row)
        mib = "n/a" if row["temp_bytes"] is None else f"{row['temp_bytes'] / 2**20:.2f}"
        print(f"{n_conds:>3} {n_samples:>5} {16:>5} {row['compile_plus_first_s']:8.3f} {row['steady_s']:9.4f} "
              f"{row['evals_per_s']:10.1f} {row['us_per_eval']:8.3f} {mib:>9}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as fh:
        for row in rows:
            fh.write(json.dumps({"benchmark": "estimator_gmm", "latent": list(shape), **row, "environment": env}) + "\n")
    print(f"appended {len(rows)} rows to {RESULTS}")


if __name__ == "__main__":
    main()
