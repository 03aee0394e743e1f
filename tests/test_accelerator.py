"""Ready for the accelerator: the notebook a researcher opens on a TPU / GPU box runs end to end on
the demo model (8 fake CPU devices), the device check runs to completion as a dry run, and the
cost model's table follows from its FLOP counts and stated assumptions.

These run on a CPU; what they pin is that nothing breaks unseen before a GPU or TPU is at hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import notebooks
from jaxpid.bench import cost_model
from jaxpid.bench import models as bench_models

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "accelerator_quickstart.ipynb"
_outputs, _printed = notebooks.outputs_of, notebooks.printed_by


@pytest.mark.e2e
def test_accelerator_notebook_executes_on_the_demo(tmp_path, monkeypatch):
    """notebooks/accelerator_quickstart.ipynb top to bottom with JAXPID_MODEL=demo on 8 fake CPU devices."""
    assert "xla_force_host_platform_device_count=8" in os.environ["XLA_FLAGS"]  # conftest: the kernel inherits it
    monkeypatch.setenv("JAXPID_MODEL", "demo")
    t0 = time.perf_counter()
    notebook = notebooks.execute(NOTEBOOK.name, tmp_path, timeout=900)
    print(f"accelerator notebook executed in {time.perf_counter() - t0:.0f} s")
    outputs = _outputs(notebook)
    printed = _printed(notebook)
    # the model and its sizes were chosen from JAXPID_MODEL, and said so
    assert "model: demo" in printed and "demo sizes" in printed
    # the devices and the mesh jaxpid shards over: all 8
    assert "8 device(s)" in printed and "mesh ('d',): 8 devices" in printed
    # loaded through the real loading code (bf16 on an accelerator)
    assert "compute dtype float32" in printed  # the demo on a CPU; bfloat16 on an accelerator
    # a 2-word PID with its atoms, word MI / CMI, the timed map, the sweep and its report, the timings
    for needle in ("redundancy", "unique: circle", "synergy", "i(x; prompt) =", "CMI given the rest",
                   "2-word map at", "evaluations/s", "sweep: 6 jobs", "sharded over 8 devices", "normalised redundancy",
                   "stage", "compile s", "run s"):
        assert needle in printed, needle
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # images, PID panel, MI panel, heat map


def test_committed_notebook_shows_its_demo_outputs():
    """Opened without running it, the notebook shows the outputs of the demo run on a CPU, says so,
    and keeps them small."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code if c.source.strip() and not c.source.lstrip().startswith("#"))
    assert sum("image/png" in o.get("data", {}) for o in _outputs(notebook)) >= 4
    assert "model: demo" in _printed(notebook)
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "outputs shown" in markdown and "JAXPID_MODEL=demo" in markdown and "CPU" in markdown
    assert NOTEBOOK.stat().st_size < 1_500_000
    source = "\n".join(c.source for c in code)
    assert 'os.environ.get("JAXPID_MODEL", "stabilityai/stable-diffusion-2-1-base")' in source
    assert "jax.random.key(" in source and "block_until_ready" in source
    assert "# !pip install" in source  # the install cell, commented for local use


@pytest.mark.e2e
def test_device_check_dry_run(tmp_path):
    """``bash benchmarks/device_check.sh --dry-run`` runs every step on tiny sizes and writes its files."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # as a user runs it: one device per core
    env.update(OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run", "--budget-s", "1200"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    print(f"device_check.sh --dry-run ran in {time.perf_counter() - t0:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["device_check.jsonl", "device_check.log", "throughput.jsonl",
                                                     "vs_pytorch.jsonl"]
    log = (out / "device_check.log").read_text()
    assert "==== device check summary ====" in log and "FAILED" not in log and "skipped" not in log
    rows = [json.loads(line) for line in (out / "device_check.jsonl").read_text().splitlines()]
    done = {(r["section"], r["model"]) for r in rows if r["status"] == "ok"}
    assert {("environment", "-"), ("flops", "-"), ("throughput", "micro"), ("diffusionpid", "micro"), ("map", "micro"),
            ("pytorch", "micro"), ("agreement", "micro"), ("throughput", "demo")} <= done
    assert all(r["dry_run"] and r["environment"]["device"].startswith("cpu") for r in rows)
    adaptive = next(r for r in rows if r["section"] == "adaptive")  # per-item stopping, on the demo
    assert adaptive["status"] == "ok" and adaptive["gmm_evals_ratio"] > 1 and adaptive["sweep_evals_ratio"] > 1
    by_section = {r["section"]: r for r in rows if r["model"] == "micro"}
    dpid = by_section["diffusionpid"]
    assert dpid["steady"]["wall_s"] < dpid["first"]["wall_s"] and dpid["first"]["compile_s"] > 0
    assert by_section["map"]["evaluations"] >= 4 * 8 and by_section["map"]["run_s"] > 0
    pytorch = by_section["pytorch"]
    assert pytorch["torch_device"] == "cpu" and pytorch["ratio_reference"] > 0
    assert pytorch["max_atom_diff_jaxpid_reference"] < 1e-3 * max(pytorch["max_atom_stderr"], 1e-6) + 1e-5
    agreement = by_section["agreement"]
    assert 0 <= agreement["bf16_max_atom_diff_orthogonal_in_stderr"] < 50
    throughput_rows = [json.loads(line) for line in (out / "throughput.jsonl").read_text().splitlines()]
    measured = {(r["model"], r["dtype"]) for r in throughput_rows}
    assert measured >= {("micro", "fp32"), ("micro", "bf16"), ("demo", "fp32")}
    assert all(r["memory_rule"]["chunk"] is None for r in rows if r["section"] == "throughput")  # CPU: not tracked


def test_sd21_base_flop_count_and_the_cost_table_in_the_docs():
    """The analytic count the cost model rests on: 804 GFLOP per SD 2.1-base UNet evaluation at
    64x64 latents (REFERENCES.md), 865.9 M parameters; and docs/cost_model.md shows the table the
    script makes from it (regenerate: python -m jaxpid.bench.cost_model)."""
    flops = bench_models.pipeline_flops("sd21-base", 64)
    assert flops["unet_parameters"] == 865_910_724
    assert flops["unet_per_evaluation"] / 1e9 == pytest.approx(804.26, abs=0.01)
    assert flops["latent_shape"] == [4, 64, 64]
    assert flops["vae_decode_per_image"] > flops["vae_encode_per_image"] > flops["text_encoder_per_prompt"] > 0
    table = cost_model.markdown(cost_model.cost_rows(flops))
    assert table in (ROOT / "docs" / "cost_model.md").read_text()


def test_cost_model_table_follows_from_its_assumptions():
    flops = {"unet_per_evaluation": 804.26e9, "text_encoder_per_prompt": 45.1e9, "vae_encode_per_image": 1116.7e9,
             "vae_decode_per_image": 2514.5e9}
    rows = cost_model.cost_rows(flops, cost_model.ASSUMPTIONS)
    studies = {r["study"] for r in rows}
    assert {"DiffusionPID bias study, 1 seed", "Info-Decomp COCO-IT localization",
            "Info-Decomp ARO retrieval"} <= studies
    platforms = {r["platform"] for r in rows}
    assert platforms == set(cost_model.ASSUMPTIONS.platforms)
    bias = next(r for r in rows if r["study"] == "DiffusionPID bias study, 1 seed" and r["platform"] == "1x H100")
    # 1,128 prompts x (100 generation + 200 map evaluations) of 804 GFLOP, plus a VAE decode and 6 encodings each
    jobs = 188 * 6
    assert bias["unet_evaluations"] == jobs * 300
    expected = jobs * (300 * 804.26e9 + 2514.5e9 + 6 * 45.1e9)
    assert bias["pflop"] == pytest.approx(expected / 1e15, rel=1e-9)
    mfu = cost_model.ASSUMPTIONS.mfu
    assert bias["hours"] == pytest.approx(expected / (989e12 * mfu) / 3600, rel=1e-9)
    eight = next(r for r in rows if r["study"] == bias["study"] and r["platform"] == "8x H100")
    assert eight["hours"] == pytest.approx(bias["hours"] / (8 * cost_model.ASSUMPTIONS.platforms["8x H100"].efficiency))
    # cost = hours x the hourly price; the table prints every row
    assert bias["usd"] == pytest.approx(bias["hours"] * cost_model.ASSUMPTIONS.platforms["1x H100"].usd_per_hour)
    table = cost_model.markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| DiffusionPID bias study, 1 seed | 1x H100 |" in table
