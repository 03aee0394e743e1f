"""Smoke tests of the benchmark scripts' core functions on a tiny UNet (seconds, not minutes).

They pin what the numbers rest on: the FLOP count, the regenerated (α, ε) draws, the agreement
of jaxpid's atoms with both PyTorch ways of doing the same job, the compiled pass's memory
staying flat in N, and ``jaxpid bench`` finding the scripts.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_throughput  # noqa: E402
import bench_models  # noqa: E402
import common  # noqa: E402

from jaxpid.bench import find_benchmarks, run_bench  # noqa: E402


def test_analytic_flops_of_matmul_and_conv():
    a = jax.ShapeDtypeStruct((3, 5, 7), jnp.float32)
    b = jax.ShapeDtypeStruct((3, 7, 11), jnp.float32)
    assert common.jaxpr_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == 2 * 3 * 5 * 7 * 11

    x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
    k = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
    conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert common.jaxpr_flops(conv, x, k) == 2 * (2 * 8 * 8 * 6) * (3 * 3 * 4)
    # inside jit and scan too
    scanned = lambda x, k: jax.lax.scan(lambda c, _: (c, conv(c, k)[..., :4]), x, None, length=3)[1]
    assert common.jaxpr_flops(jax.jit(scanned), x, k) == 3 * 2 * (2 * 8 * 8 * 6) * (3 * 3 * 4)


def test_unet_flops_analytic_agrees_with_xla():
    model = bench_models.build_model("micro")
    flops = bench_models.unet_flops_per_eval(model)
    assert flops["analytic_flops"] > 1e6
    # XLA also counts elementwise work (norms, softmax, activations), a large share in so small a net
    assert flops["analytic_flops"] <= flops["xla_flops"] <= 1.25 * flops["analytic_flops"]


def test_three_ways_agree():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    import bench_vs_pytorch

    model = bench_models.build_model("micro")
    summary = bench_vs_pytorch.compare(model, 8, chunk=4, repeats=1, probe_samples=4, torch_compile=False,
                                       try_bf16=False, log=lambda *a: None)
    scale = max(abs(v) for v in summary["atoms"]["jaxpid"].values())
    # same weights and same (α, ε) draws: float error, far below Monte-Carlo error
    for key in ("max_atom_diff_jaxpid_reference", "max_atom_diff_jaxpid_best", "max_atom_diff_reference_best"):
        assert summary[key] <= 1e-5 * scale + 1e-6, (key, summary[key], scale)
    assert summary["max_atom_diff_jaxpid_reference"] < 1e-3 * summary["max_atom_stderr"]
    assert summary["evaluations"] == 32 and summary["ratio_reference"] > 0 and summary["ratio_best"] > 0
    json.dumps(summary, default=common._json_default)  # the row is serialisable


def test_throughput_row_and_flat_memory():
    model = bench_models.build_model("micro")
    flops = bench_models.unet_flops_per_eval(model, xla=False)
    row = bench_throughput.throughput_row(model, chunk=2, n_samples=4, repeats=1, flops=flops, peak=1e11)
    assert row["evaluations"] == 16 and row["evals_per_s"] > 0 and 0 < row["mfu"] < 1
    assert row["temp_bytes"] is None or row["temp_bytes"] > 0

    # the first setting is the one compiled above (cached): two compilations in all
    rows = bench_throughput.scaling_rows(model, chunk=2, samples=[4, 16], ks=[2], base_n=4, repeats=1)
    assert [r["work"] for r in rows] == [16, 64]
    if rows[0]["temp_bytes"] is not None:  # chunked: scratch memory does not grow with N
        assert rows[1]["temp_bytes"] <= 1.05 * rows[0]["temp_bytes"] + 4096


def test_environment_and_rows(tmp_path):
    env = common.environment()
    assert env["device"].startswith("cpu") and len(env["loadavg"]) == 3 and env["jax"] == jax.__version__
    path = common.append_rows("demo", [{"a": np.float32(1.5), "b": np.arange(2)}], results_dir=tmp_path)
    assert common.load_rows("demo", results_dir=tmp_path) == [{"a": 1.5, "b": [0, 1]}]
    assert path.name == "demo.jsonl"
    assert "no rows yet" in common.readme_table(tmp_path)


def test_jaxpid_bench_finds_scripts(capsys, tmp_path):
    assert find_benchmarks() == BENCHMARKS
    assert run_bench(["--table"]) == 0
    assert "jaxpid vs PyTorch" in capsys.readouterr().out
    assert run_bench(["--scripts", str(tmp_path), "--table"]) == 0  # falls back to the checkout
    assert math.isfinite(common.measured_matmul_flops(size=256, repeats=1))


@pytest.mark.slow
def test_bias_sweep_benchmark_puts_the_designed_bias_first_under_ccs(tmp_path):
    """``bench_sweep.py --quick``'s job on the shipped demo model (about a minute)."""
    import bench_sweep

    from jaxpid.demo import demo_path
    from jaxpid.sweep import SweepConfig

    import jaxpid

    config = SweepConfig(n_samples=32, steps=10, batch_size=12, measures=("mmi", "ccs"))
    result = bench_sweep.bias_sweep(jaxpid.load_pipeline(demo_path()), tmp_path / "sweep", seeds=2, config=config,
                                    log=lambda *a: None)
    assert result["jobs"] == 24 and result["jobs_per_min"] > 0 and result["steady_jobs_per_min"] > 0
    ccs = result["reports"]["ccs"]
    assert ccs["designed_rank"] == 1 and ccs["designed_normalised"] == pytest.approx(1.0)
    assert ccs["top"][0]["occupation"] == "triangle" and ccs["top"][0]["attribute"] == "green"
    assert set(result["reports"]) == {"mmi", "ccs"}
