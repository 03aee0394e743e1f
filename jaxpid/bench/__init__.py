"""jaxpid's benchmarks, shipped with the package: run them with ``jaxpid bench`` or one by one.

Programs (each ``python -m jaxpid.bench.<name> [--quick] [--results DIR] [--no-save]``):

    vs_pytorch   the same 2-source PID job three ways: PyTorch as Info-Decomp runs it, PyTorch at
                 its best (batched, bf16 / channels-last, torch.compile) and jaxpid; needs the
                 ``torch`` extra (``pip install 'jaxpid[torch]'``)
    throughput   the fused estimator's UNet evaluations/s, compile time, memory and MFU, and its
                 cost and memory against 2^k x N
    sweep        a bias sweep on the demo model: jobs/min and where the designed bias ranks
    estimator    the estimator core alone on a closed-form Gaussian-mixture denoiser
    variance     where the Monte-Carlo variance comes from: every integrand and PID atom binned by
                 log-SNR, on the demo and the Gaussian mixtures (docs/method.md)
    device_check what jaxpid does on the accelerator at hand, in one time-budgeted run
                 (``benchmarks/device_check.sh``; ``--dry-run`` on tiny sizes anywhere)
    cost_model   time and cost of the papers' studies on accelerators, from FLOP counts and
                 stated assumptions (docs/cost_model.md)
    validate     the measures' validation table (docs/validation.md; ~30 min, not run by ``jaxpid bench``)

Shared modules:

    results      result rows (JSON lines) and the README table made from them (light: no JAX)
    common       the environment record, timing helpers, FLOP counts, device peaks, and
                 jaxpid's public ``FusedPass`` compiled apart from its runs
    models       the benchmark models (tiny test configs, the demo, the SD 2.1-base architecture),
                 random-weight whole pipelines and the networks' FLOP counts
    prototypes   proposed layer speed-ups patched in before adoption (``--prototypes``)

Every row carries ``jaxpid.io.provenance.environment()``; rows are appended to
``$JAXPID_BENCH_RESULTS``, else ``benchmarks/results`` of the checkout jaxpid runs from, else
``./benchmark-results`` (``--results DIR`` overrides; see ``results.results_dir``).
"""
