"""Smoke tests of the benchmark programs' core functions on a tiny UNet (seconds, not minutes).

They pin what the numbers rest on: the FLOP count, the regenerated (α, ε) draws, the agreement
of jaxpid's atoms with both PyTorch ways of doing the same job, the compiled pass's memory
staying flat in N, ``jaxpid bench --table`` reading saved rows without a checkout lookup, and
the benchmarks using jaxpid's public API only.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpid.bench
from jaxpid.bench import common, results
from jaxpid.bench import models as bench_models
from jaxpid.bench import sweep as bench_sweep
from jaxpid.bench import throughput as bench_throughput
from jaxpid.bench import vs_pytorch as bench_vs_pytorch
from jaxpid.cli.bench import run_bench

CHECKOUT_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


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

    model = bench_models.build_model("micro")
    summary = bench_vs_pytorch.compare(model, 8, chunk=4, repeats=1, probe_samples=4, torch_compile=False,
                                       try_bf16=False, log=lambda *a: None)
    scale = max(abs(v) for v in summary["atoms"]["jaxpid"].values())
    # same weights and same (α, ε) draws: float error, far below Monte-Carlo error
    for key in ("max_atom_diff_jaxpid_reference", "max_atom_diff_jaxpid_best", "max_atom_diff_reference_best"):
        assert summary[key] <= 1e-5 * scale + 1e-6, (key, summary[key], scale)
    assert summary["max_atom_diff_jaxpid_reference"] < 1e-3 * summary["max_atom_stderr"]
    assert summary["evaluations"] == 32 and summary["ratio_reference"] > 0 and summary["ratio_best"] > 0
    json.dumps(summary, default=common.json_default)  # the row is serialisable


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


def test_sdxl_style_model_runs_with_pytree_conditionings():
    """The SDXL rows' path: conditionings are an SDXLConditioning pytree, FLOPs and the fused pass take it."""
    from jaxpid.sd.sdxl import SDXLConditioning

    model = bench_models.build_model("micro-sdxl")
    assert isinstance(model.conds, SDXLConditioning) and model.conds.time_ids.shape == (4, 6)
    flops = bench_models.unet_flops_per_eval(model, xla=False)
    row = bench_throughput.throughput_row(model, chunk=2, n_samples=2, repeats=1, flops=flops, peak=1e11)
    assert row["evaluations"] == 8 and row["evals_per_s"] > 0


def test_environment_and_rows(tmp_path):
    env = common.environment()
    assert env["device"].startswith("cpu") and len(env["loadavg"]) == 3 and env["versions"]["jax"] == jax.__version__
    path = common.append_rows("demo", [{"a": np.float32(1.5), "b": np.arange(2)}], results_dir=tmp_path)
    assert common.load_rows("demo", results_dir=tmp_path) == [{"a": 1.5, "b": [0, 1]}]
    assert path.name == "demo.jsonl"
    assert "no rows yet" in common.readme_table(tmp_path)


def test_results_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXPID_BENCH_RESULTS", raising=False)
    assert common.results_dir() == CHECKOUT_RESULTS  # jaxpid imported from this checkout
    assert common.results_dir(tmp_path) == tmp_path  # --results DIR
    monkeypatch.setenv("JAXPID_BENCH_RESULTS", str(tmp_path / "env"))
    assert common.results_dir() == tmp_path / "env"
    monkeypatch.delenv("JAXPID_BENCH_RESULTS")
    # an installed package (no checkout beside it): ./benchmark-results, made when a row is written
    monkeypatch.setattr(results, "CHECKOUT_RESULTS", tmp_path / "no-checkout")
    monkeypatch.chdir(tmp_path)
    assert common.results_dir() == tmp_path / "benchmark-results"
    assert common.append_rows("demo", [{"a": 1}]) == tmp_path / "benchmark-results" / "demo.jsonl"


def test_jaxpid_bench_table(capsys, tmp_path):
    assert run_bench(["--table", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "jaxpid vs PyTorch" in out and "no rows yet" in out
    assert run_bench(["--table"]) == 0  # the checkout's saved rows (old rows' environment records too)
    out = capsys.readouterr().out
    assert "jaxpid vs PyTorch" in out and "no rows yet" not in out and "| demo |" in out
    assert math.isfinite(common.measured_matmul_flops(size=256, repeats=1))


def _private_jaxpid_names(tree: ast.AST) -> list[str]:
    """``from jaxpid... import _x`` and ``jaxpid.x._y`` (attribute access) in a module's AST."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "jaxpid":
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
            found += [f"from {node.module} import ..." for part in node.module.split(".") if part.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "jaxpid" and any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "jaxpid":
                found.append(".".join(["jaxpid", *reversed(chain)]))
    return found


def test_benchmarks_use_no_private_jaxpid_names():
    folder = Path(jaxpid.bench.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert {"common.py", "models.py", "vs_pytorch.py", "throughput.py", "sweep.py", "estimator.py"} <= {
        m.name for m in modules}
    for module in modules:
        found = _private_jaxpid_names(ast.parse(module.read_text(), str(module)))
        assert not found, f"{module.name} uses private jaxpid names: {found}"
    # the scan catches both forms
    assert _private_jaxpid_names(ast.parse(
        "from jaxpid.core.estimator import _fused_pass, FusedPass\nimport jaxpid\njaxpid.core.estimator._Plan"
    )) == ["from jaxpid.core.estimator import _fused_pass", "jaxpid.core.estimator._Plan"]


@pytest.mark.slow
def test_bias_sweep_benchmark_puts_the_designed_bias_first_under_ccs(tmp_path):
    """``python -m jaxpid.bench.sweep --quick``'s job on the shipped demo model (about a minute)."""
    import jaxpid
    from jaxpid.sweeps import SweepConfig

    config = SweepConfig.from_options(n_samples=32, steps=10, batch_size=12, measures=("mmi", "ccs"))
    # 4 seeds per cell, as --quick: with 2 the retrained demo's ccs ranking is decided by noise (its
    # world's only redundant cell, triangle-green, holds 0.14 nats; notebooks/bias_sweep.ipynb)
    result = bench_sweep.bias_sweep(jaxpid.load_pipeline("demo"), tmp_path / "sweep", seeds=4, config=config,
                                    log=lambda *a: None)
    assert result["jobs"] == 48 and result["jobs_per_min"] > 0 and result["steady_jobs_per_min"] > 0
    ccs = result["reports"]["ccs"]
    # first by bias (the interaction the report ranks by); its raw redundancy need not be the study's
    # largest: on the shipped demo square-blue's (a model departure; 0 in the world) normalises to 1
    # and triangle-green's to 0.91
    assert ccs["designed_rank"] == 1 and ccs["designed_normalised"] > 0.5
    assert ccs["top"][0]["occupation"] == "triangle" and ccs["top"][0]["attribute"] == "green"
    assert set(result["reports"]) == {"mmi", "ccs"}


@pytest.mark.e2e
def test_demo_calibration_clip_part_reports_three_clips_paired_against_the_default():
    """benchmarks/demo_calibration.py's part 6 (docs/method.md#sampling-the-log-snr) on the shipped demo, small.
    In a fresh process, as the other e2e runs: JAX started here would make their forks warn."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    script = (
        "import argparse, json, sys; sys.path.insert(0, 'benchmarks'); import demo_calibration as c, jaxpid; "
        "printed = []; row = c.part_clip(jaxpid.load_pipeline('demo'), "
        "argparse.Namespace(images=2, samples=16, seed=0), printed.append); "
        "print(json.dumps({'row': row, 'printed': printed}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    row, printed = out["row"], out["printed"]
    assert row["part"] == "clip" and [r["clip"] for r in row["rows"]] == [3.0, 4.0, 5.0]
    assert [r["support"] for r in row["rows"]] == [[-5.0, 7.0], [-7.0, 9.0], [-9.0, 11.0]]
    assert row["rows"][0]["joint_minus_clip3"][0] == 0.0  # clip 3 against itself
    for r in row["rows"]:
        assert all(math.isfinite(r[n][0]) for n in ("i(circle|c)", "i(square|c)", "joint"))
        assert r["joint"][0] - row["rows"][0]["joint"][0] == pytest.approx(r["joint_minus_clip3"][0])
    assert len(printed) == 2 + 3  # title, header, one line per clip
