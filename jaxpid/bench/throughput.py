"""Throughput of jaxpid's fused estimator: UNet evaluations/s, compile time, memory, MFU.

For each model (tiny config; the demo model; the SD 2.1-base or SDXL-base architecture with
random weights at a small latent size), compute dtype (fp32, bf16), attention implementation available on the
platform ("xla"; "cudnn" on GPU only) and chunk size (samples per step; the batch is chunk × S
conditionings), the fused pass of a 2-source PID (S = 4) is compiled once (timed apart) and run
to steady state. Reported: evaluations/s, compile time, XLA's temporary memory of the compiled
pass (CPU) or the device's peak memory (GPU), FLOPs per evaluation (analytic count of the
traced UNet and XLA's cost analysis) and MFU against the device peak (``--peak-tflops``, a
data-sheet value for known GPUs, or on CPU the measured rate of a large fp32 matmul).

A second table shows that cost grows linearly in 2^k × N and that the compiled program's
temporary memory stays flat as N grows with a fixed chunk size. For bf16 it also reports how far
bf16 MI estimates are from fp32 ones, in Monte-Carlo standard errors.

Rows go to throughput.jsonl (and scaling.jsonl) in the results folder (``--results``; see
``jaxpid.bench.results.results_dir``).

    python -m jaxpid.bench.throughput --quick      # tiny + demo, a few minutes on 2 CPU cores
    python -m jaxpid.bench.throughput              # + SD 2.1-base architecture at 16x16
    python -m jaxpid.bench.throughput --models sdxl-base --dtypes fp32 --sd-latent 16   # ~11 GB of RAM
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.bench import common, prototypes
from jaxpid.bench import models as bench_models
from jaxpid.errors import JaxpidError

DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
N_CONDS = 4  # a 2-source PID


def attention_settings() -> tuple[list[str], str | None]:
    """Attention implementations to measure here, and a note on the ones skipped."""
    if jax.default_backend() == "gpu":
        return ["xla", "cudnn"], None
    return ["xla"], f"attention 'cudnn' skipped: needs a GPU (backend is {jax.default_backend()!r})"


def attention_for(dtype_name: str, attentions: list[str]) -> list[str]:
    """The settings of ``attentions`` that run in ``dtype_name``: cuDNN's fused attention takes
    bf16 / fp16 only (jaxpid.sd.models.layers refuses it for fp32)."""
    return [a for a in attentions if not (a == "cudnn" and dtype_name == "fp32")]


def throughput_row(model: bench_models.BenchModel, *, chunk: int, n_samples: int, repeats: int,
                   flops: dict, peak: float) -> dict:
    """Compile the fused pass for one setting and time it to steady state."""
    compiled = common.compile_fused_pass(model.denoiser, model.x, model.conds, n_samples=n_samples, chunk=chunk)
    t0 = time.perf_counter()
    compiled.run()
    first_run = time.perf_counter() - t0
    steady, _ = common.best_of(compiled.run, repeats)
    evals_per_s = compiled.evaluations / steady
    return {
        "chunk_size": chunk,
        "batch": chunk * N_CONDS,
        "n_samples": n_samples,
        "evaluations": compiled.evaluations,
        "compile_s": round(compiled.compile_s, 3),
        "first_run_s": round(first_run, 4),
        "steady_s": round(steady, 4),
        "evals_per_s": round(evals_per_s, 2),
        "ms_per_eval": round(1e3 / evals_per_s, 3),
        "temp_bytes": compiled.temp_bytes,
        "peak_device_bytes": common.device_peak_memory(),
        "analytic_gflop_per_eval": round(flops["analytic_flops"] / 1e9, 4),
        "xla_gflop_per_eval": None if flops.get("xla_flops") is None else round(flops["xla_flops"] / 1e9, 4),
        "achieved_gflop_s": round(flops["analytic_flops"] * evals_per_s / 1e9, 2),
        "mfu": round(flops["analytic_flops"] * evals_per_s / peak, 4),
    }


def bf16_accuracy(model_fp32: bench_models.BenchModel, model_bf16: bench_models.BenchModel, n_samples: int, chunk: int) -> dict:
    """bf16 vs fp32 MI and PID atoms of the same job (same draws): max |difference| in nats and in
    Monte-Carlo standard errors (the fp32 run's). The job's 4 conditionings are a 2-source PID's
    subsets, so the atoms are ``decompose(information, 2)`` (mmi) of each run."""
    kwargs = dict(key=jax.random.key(0), n_samples=n_samples, chunk_size=chunk, devices=jax.devices()[:1])
    ref = jaxpid.information(model_fp32.denoiser, model_fp32.x, model_fp32.conds, **kwargs)
    low = jaxpid.information(model_bf16.denoiser, model_bf16.x, model_bf16.conds, **kwargs)
    out = {}
    for form in ("orthogonal", "standard"):
        diff = np.abs(low.mi(form) - ref.mi(form))[:, 1:]  # conditioning 0 is the reference: 0 in both
        stderr = ref.stderr(form)[:, 1:]
        out[f"bf16_max_mi_diff_{form}_nats"] = float(diff.max())
        out[f"bf16_max_mi_diff_{form}_in_stderr"] = float((diff / stderr).max())
        atoms_ref, atoms_low = (jaxpid.decompose(r, 2, measure="mmi", form=form) for r in (ref, low))
        atom_diff = np.stack([np.abs(atoms_low.atoms[a] - atoms_ref.atoms[a]) for a in atoms_ref.names])  # (4, I)
        atom_err = np.stack([atoms_ref.atoms_stderr[a] for a in atoms_ref.names])
        out[f"bf16_max_atom_diff_{form}_nats"] = float(atom_diff.max())
        out[f"bf16_max_atom_diff_{form}_in_stderr"] = float((atom_diff / np.maximum(atom_err, 1e-30)).max())
    return out


def scaling_rows(model: bench_models.BenchModel, *, chunk: int, samples: list[int], ks: list[int], base_n: int,
                 repeats: int) -> list[dict]:
    """Steady-state time and temp memory over N (k = 2) and over k (N = base_n), fixed chunk."""
    rng = np.random.default_rng(0)
    settings = [(2, n) for n in samples] + [(k, base_n) for k in ks if k != 2]
    rows = []
    for k, n in settings:
        n_conds = 2**k
        conds = model.conds if n_conds == N_CONDS else rng.standard_normal(
            (n_conds,) + model.conds.shape[1:], dtype=np.float32)
        compiled = common.compile_fused_pass(model.denoiser, model.x, conds, n_samples=n, chunk=chunk)
        compiled.run()
        steady, _ = common.best_of(compiled.run, repeats)
        rows.append({
            "k": k, "n_conditionings": n_conds, "n_samples": n, "work": n_conds * n, "chunk_size": chunk,
            "compile_s": round(compiled.compile_s, 3), "steady_s": round(steady, 4),
            "ms_per_eval": round(1e3 * steady / compiled.evaluations, 4), "temp_bytes": compiled.temp_bytes,
        })
    return rows


def print_throughput(rows: list[dict]) -> None:
    print(f"{'model':<11} {'code':<8} {'dtype':<5} {'attn':<5} {'chunk':>5} {'batch':>5} {'compile s':>9} {'steady s':>9} "
          f"{'evals/s':>9} {'GFLOP/s':>8} {'MFU':>6} {'temp MiB':>9}")
    for r in rows:
        mib = "n/a" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
        print(f"{r['model']:<11} {r['code'][:8]:<8} {r['dtype']:<5} {r['attention']:<5} {r['chunk_size']:>5} {r['batch']:>5} "
              f"{r['compile_s']:9.2f} {r['steady_s']:9.3f} {r['evals_per_s']:9.1f} {r['achieved_gflop_s']:8.2f} "
              f"{100 * r['mfu']:5.1f}% {mib:>9}")


def print_scaling(rows: list[dict]) -> None:
    print(f"{'k':>2} {'2^k':>4} {'N':>5} {'2^k*N':>6} {'chunk':>5} {'steady s':>9} {'ms/eval':>8} {'s/(2^k*N) ratio':>16} "
          f"{'temp MiB':>9}")
    base = rows[0]["steady_s"] / rows[0]["work"]
    for r in rows:
        mib = "n/a" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.2f}"
        print(f"{r['k']:>2} {r['n_conditionings']:>4} {r['n_samples']:>5} {r['work']:>6} {r['chunk_size']:>5} "
              f"{r['steady_s']:9.4f} {r['ms_per_eval']:8.3f} {r['steady_s'] / r['work'] / base:16.3f} {mib:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny + demo models, small grid")
    parser.add_argument("--models", nargs="+", default=None, help="tiny, demo, demo-sized, sd21-base, sdxl-base")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--chunks", nargs="+", type=int, default=None, help="chunk sizes (samples per step)")
    parser.add_argument("--samples", type=int, default=None, help="log-SNR samples N per timed run")
    parser.add_argument("--sd-latent", type=int, default=16,
                        help="latent side of the SD 2.1-base / SDXL-base architectures")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: look up / measure)")
    parser.add_argument("--repeats", type=int, default=3)
    common.add_results_option(parser)
    parser.add_argument("--no-scaling", action="store_true", help="skip the linearity / flat-memory table")
    parser.add_argument("--prototypes", nargs="*", default=None,
                        help="measure with the proposed layer changes of jaxpid.bench.prototypes patched in "
                             "(all, or the named ones)")
    args = parser.parse_args(argv)
    jaxpid.use_cpu_cores()  # before JAX starts: one CPU device per core, as jaxpid runs (jaxpid.devices)
    try:
        return run(args)
    except JaxpidError as error:
        print(f"jaxpid.bench.throughput: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    code = prototypes.apply_requested(args.prototypes)

    models = args.models or (["tiny", "demo"] if args.quick else ["tiny", "demo", "sd21-base"])
    attentions, skipped = attention_settings()
    env = common.environment()
    print(common.load_note())
    peaks = {name: common.device_peak({"fp32": "float32", "bf16": "bfloat16"}[name], args.peak_tflops)
             for name in args.dtypes}
    for name, (peak, how) in peaks.items():
        print(f"peak for {name}: {peak / 1e9:.1f} GFLOP/s ({how})")
    torch_peak = common.torch_matmul_flops(repeats=10) if jax.default_backend() == "cpu" else None
    if torch_peak:
        print(f"for comparison, PyTorch's fp32 2048x2048 matmul here: {torch_peak / 1e9:.1f} GFLOP/s")
    if skipped:
        print(skipped)

    rows = []
    for model_name in models:
        sd = model_name in bench_models.LARGE_MODELS
        chunks = args.chunks or ([1, 2] if sd else [1, 4, 16] if args.quick else [1, 2, 4, 8, 16])
        n_samples = args.samples or (max(chunks) * 2 if sd else 64)
        base = bench_models.build_model(model_name, latent=args.sd_latent if sd else None)
        built = {}
        for dtype_name in args.dtypes:
            for attention in attention_for(dtype_name, attentions):
                denoiser = bench_models.make_denoiser(base.unet_config, base.denoiser.params, dtype=DTYPES[dtype_name],
                                                      attention=attention, schedule=base.denoiser.schedule)
                model = dataclasses.replace(base, denoiser=denoiser)
                built[(dtype_name, attention)] = model
                flops = bench_models.unet_flops_per_eval(model, xla=not sd)
                print(f"{model.description}; {dtype_name}, attention {attention}: "
                      f"{flops['analytic_flops'] / 1e9:.3f} GFLOP per evaluation")
                for chunk in chunks:
                    n = max(n_samples, chunk) // chunk * chunk
                    row = throughput_row(model, chunk=chunk, n_samples=n, repeats=1 if sd else args.repeats,
                                         flops=flops, peak=peaks[dtype_name][0])
                    row.update(model=model_name, code=code, description=model.description, n_params=model.n_params,
                               dtype=dtype_name, attention=attention, peak_gflop_s=round(peaks[dtype_name][0] / 1e9, 2),
                               peak_how=peaks[dtype_name][1],
                               torch_matmul_gflop_s=None if not torch_peak else round(torch_peak / 1e9, 2), loadavg=[round(x, 2) for x in os.getloadavg()])
                    rows.append(row)
                    print_throughput([row])
        if "fp32" in args.dtypes and "bf16" in args.dtypes and not sd:
            acc = bf16_accuracy(built[("fp32", "xla")], built[("bf16", "xla")], n_samples=64, chunk=min(chunks[-1], 16))
            print(f"{model_name}: bf16 vs fp32 MI (N=64, same draws): max |diff| "
                  f"{acc['bf16_max_mi_diff_orthogonal_nats']:.4g} nats = "
                  f"{acc['bf16_max_mi_diff_orthogonal_in_stderr']:.3f} stderr (orthogonal), "
                  f"{acc['bf16_max_mi_diff_standard_in_stderr']:.3f} stderr (standard)")
            for row in rows:
                if row["model"] == model_name and row["dtype"] == "bf16":
                    row.update(acc)
        del built, base, model

    print()
    print_throughput(rows)
    path = common.save_rows("throughput", [{"benchmark": "throughput", **r, "environment": env} for r in rows], args)
    print(f"appended {len(rows)} rows to {path}")

    if not args.no_scaling:
        model = bench_models.build_model("tiny" if args.quick else "demo")
        samples = [16, 32, 64, 128] if args.quick else [32, 64, 128, 256, 512]
        scaling = scaling_rows(model, chunk=4, samples=samples, ks=[1, 2, 3], base_n=samples[1],
                               repeats=args.repeats)
        print(f"\ncost and memory vs 2^k x N ({model.description}; fixed chunk 4):")
        print_scaling(scaling)
        env = common.environment()
        path = common.save_rows("scaling", [{"benchmark": "scaling", "model": model.name, "code": code, **r,
                                             "environment": env} for r in scaling], args)
        print(f"appended {len(scaling)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
