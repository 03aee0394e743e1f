"""Where the estimator's Monte-Carlo variance comes from, as a function of log-SNR (issue 18).

Every image-level value is a mean over N log-SNR samples of per-sample weighted integrands
g_n = ½·w(α_n)·(…) (docs/method.md#standard-errors). This program bins those per-sample values
by α and reports, per bin and per quantity: the proposal's density, the mean of g, its share
of the estimate and its share of the Monte-Carlo variance Σ(g_n − ḡ)². Quantities: each subset's
information in the anchored, orthogonal and standard forms, the conditioning-pair gaps of the pass
(orthogonal, and standard as differences), and the PID atoms through their jackknife
pseudo-values (an atom is a non-linear function of the means, so its per-sample contribution is
N·θ̂ − (N − 1)·θ̂₋ₙ, whose variance / N is the jackknife variance jaxpid reports).

Two numbers per quantity say what a better sampler could win at equal evaluations (both are
ratios of variances, hence of the evaluations needed for one standard error):

- ``stratified_gain``: total variance / the variance left within the bins (sampling each bin in
  proportion to its proposal mass removes the between-bin part);
- ``ideal_gain``: total variance / the variance of the best piecewise-constant proposal over the
  bins, fitted to this run's per-bin second moments (one proposal for all images: per model).
  Both use this run's own samples, so they are optimistic by their noise.

Then the sampler comparison (``compare``): the same jobs run with the papers' logistic proposal
and with jaxpid's default (the same proposal, stratified: ``StratifiedSampler``) at equal UNet
evaluations, over several keys. Per quantity (the subset informations and PID atoms the
README's job reports), ``evals_ratio`` = mean s.e.² (logistic) / mean s.e.² (default): the
evaluations the logistic proposal needs for the default's standard error, per evaluation the
default used. ``honesty`` = the spread of the estimates over keys / the mean reported s.e.²
(≈ 1 when the standard errors are right). The program's last line is the demo's median
``evals_ratio=<r>``.

Data: the demo model on the README's main job (conditional PID of "circle" and "square" in
"a red circle and a blue square", the default measure and form), random-weight SD-family UNets
(tiny; SD 2.1-base's architecture at 16x16 latents without --quick) and the Gaussian-mixture
canonical cases (``jaxpid.core.ground_truth``). Prints a table, saves a figure (``--figure``,
default variance.png in the results folder) and appends rows to variance.jsonl.

    python -m jaxpid.bench.variance --quick    # profiles, and the comparison on the demo, a tiny UNet, the GMMs: ~3 min
    python -m jaxpid.bench.variance            # more images, samples and keys, and SD 2.1-base at 16x16: ~40 min
    python -m jaxpid.bench.variance --no-profile --data sd21-base    # one job of the comparison
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import jax
import numpy as np

import jaxpid
from jaxpid.analysis.config import make_sampler
from jaxpid.analysis.images import generated_images
from jaxpid.bench import common
from jaxpid.bench import models as bench_models
from jaxpid.core.config import PIDConfig
from jaxpid.core.sampling import LogisticSampler, StratifiedSampler, UniformSampler
from jaxpid.core.decomposition import PIDResult, anchored_pairs, decompose, pid
from jaxpid.core.ground_truth import CANONICAL_CASES, canonical_case
from jaxpid.errors import ConfigError, JaxpidError
from jaxpid.io.plots import variance_profile_figure
from jaxpid.io.results import write_figure

PROMPT = "a red circle and a blue square"
DATA = ("demo", "tiny", "sd21-base", "gmm")  # the comparison's jobs
SOURCES = ("circle", "square")
N_BINS = 12
ZERO = 1e-5  # relative size below which a quantity's per-sample values are rounding noise


@dataclasses.dataclass(frozen=True)
class VarianceProfile:
    """One quantity's per-sample values binned by log-SNR (B bins), pooled over images."""

    quantity: str
    edges: np.ndarray  # (B + 1,) log-SNR bin edges
    proposal_mass: np.ndarray  # (B,) the proposal's probability of each bin
    counts: np.ndarray  # (B,) samples that fell in each bin (all images)
    mean: np.ndarray  # (B,) mean weighted integrand g in the bin (NaN where empty)
    estimate_share: np.ndarray  # (B,) Σ_bin g / Σ g: where the value comes from (signed)
    variance_share: np.ndarray  # (B,) Σ_bin (g − ḡ_image)² / Σ (g − ḡ_image)²: sums to 1
    estimate: float  # mean over images of the image-level value
    stderr: float  # root mean square over images of the per-image standard error
    stratified_gain: float
    ideal_gain: float

    @property
    def density(self) -> np.ndarray:
        """(B,) the proposal's mean density in each bin (per unit log-SNR)."""
        return self.proposal_mass / np.diff(self.edges)

    def binned_estimate(self) -> float:
        """The estimate rebuilt from the bins: Σ_b (count_b / total) · mean_b."""
        full = self.counts > 0
        return float(np.sum(self.counts[full] * self.mean[full]) / self.counts.sum())

    def to_row(self) -> dict:
        rounded = lambda a: [None if not math.isfinite(v) else round(float(v), 6) for v in a]  # noqa: E731
        return {"quantity": self.quantity, "edges": rounded(self.edges), "proposal_mass": rounded(self.proposal_mass),
                "counts": self.counts.tolist(), "mean": rounded(self.mean), "estimate_share": rounded(self.estimate_share),
                "variance_share": rounded(self.variance_share), "estimate": round(self.estimate, 6),
                "stderr": round(self.stderr, 6), "stratified_gain": round(self.stratified_gain, 4),
                "ideal_gain": round(self.ideal_gain, 4)}


def proposal_mass(sampler, edges: np.ndarray, resolution: int = 200_000) -> np.ndarray:
    """(B,) probability of each bin under the sampler (from its draw on a fine uniform grid)."""
    u = (np.arange(resolution) + 0.5) / resolution
    alpha, _ = sampler.draw(jax.numpy.asarray(u, jax.numpy.float32))
    counts, _ = np.histogram(np.clip(np.asarray(alpha, np.float64), edges[0], edges[-1]), edges)
    return counts / resolution


def proposal_weight(sampler, alpha: np.ndarray) -> np.ndarray:
    """w(α) = 1 / q(α) at the recorded log-SNR values (after snapping, for a discrete model)."""
    return np.asarray(sampler.weight(jax.numpy.asarray(alpha, jax.numpy.float32)), np.float64)


def profile(quantity: str, values: np.ndarray, logsnr: np.ndarray, sampler, edges: np.ndarray) -> VarianceProfile:
    """Bin per-sample values (I, N) at log-SNR (I, N) drawn from ``sampler``."""
    values, logsnr = np.asarray(values, np.float64), np.asarray(logsnr, np.float64)
    n_images, n = values.shape
    n_bins = len(edges) - 1
    bins = np.clip(np.searchsorted(edges, logsnr, side="right") - 1, 0, n_bins - 1)  # the ends catch snapped α
    per_image = values.mean(axis=1, keepdims=True)
    deviation = values - per_image  # each image's variance is about its own value
    in_bin = lambda b: bins == b  # noqa: E731
    counts = np.array([in_bin(b).sum() for b in range(n_bins)])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.array([values[in_bin(b)].mean() if counts[b] else np.nan for b in range(n_bins)])
        total = values.sum()
        estimate_share = np.array([values[in_bin(b)].sum() for b in range(n_bins)]) / total
        squares = np.array([np.sum(deviation[in_bin(b)] ** 2) for b in range(n_bins)])
        variance_share = squares / squares.sum()
    mass = proposal_mass(sampler, edges)
    variance = np.mean(deviation**2)  # per sample, pooled over images (ddof 0: the gains are ratios)
    # Stratified by bin: only the spread about each bin's mean is left (pooled over images, so
    # images whose profiles differ count against it: a conservative gain).
    within = sum(np.sum((deviation[in_bin(b)] - deviation[in_bin(b)].mean()) ** 2) for b in range(n_bins) if counts[b])
    stratified = variance / (within / values.size) if within > 0 else math.inf
    # Ideal piecewise-constant proposal c_b (per model): A_b = ∫_bin E f² dα estimated by
    # (1/N)·Σ_bin g²/w per image; variance Σ_b Ā_b / c_b − mean I², least at c_b ∝ sqrt(Ā_b / L_b).
    weight = proposal_weight(sampler, logsnr)
    second = np.array([np.sum(values[in_bin(b)] ** 2 / weight[in_bin(b)]) for b in range(n_bins)]) / (n_images * n)
    ideal = np.sum(np.sqrt(second * np.diff(edges))) ** 2 - np.mean(per_image**2)
    current = np.mean(values**2) - np.mean(per_image**2)
    ideal_gain = current / ideal if ideal > 0 else math.inf
    stderr = math.sqrt(np.mean(values.var(axis=1, ddof=1)) / n)
    return VarianceProfile(quantity, np.asarray(edges, np.float64), mass, counts, mean, estimate_share, variance_share,
                           float(per_image.mean()), stderr, float(stratified), float(ideal_gain))


def atom_pseudo_values(result: PIDResult) -> dict[str, np.ndarray]:
    """name -> (I, N) jackknife pseudo-values N·θ̂ − (N − 1)·θ̂₋ₙ of each atom: the atom's
    per-sample contributions (their mean is the jackknife estimate, their variance / N the
    jackknife variance). The leave-one-out atoms come from ``decompose`` on a pass whose
    "images" are the N leave-one-out means of each image."""
    if result.measure in ("imin", "ppid"):
        raise ConfigError(f"pseudo-values need a measure without candidates or priors; got {result.measure!r}")
    info = result.information
    n_images, n, n_conds = info.samples_standard.shape
    loo = lambda a: None if a is None else np.repeat(  # noqa: E731
        ((a.sum(axis=1, keepdims=True) - a) / (n - 1)).reshape(n_images * n, 1, -1), 2, axis=1)
    zeros = lambda a: None if a is None else np.zeros((n_images * n,) + a.shape[1:])  # noqa: E731
    leave_one_out = dataclasses.replace(
        info, samples_standard=loo(info.samples_standard), samples_orthogonal=loo(info.samples_orthogonal),
        pair_samples_orthogonal=loo(info.pair_samples_orthogonal), maps_standard=zeros(info.maps_standard),
        maps_orthogonal=zeros(info.maps_orthogonal), pair_maps_orthogonal=zeros(info.pair_maps_orthogonal))
    replicates = decompose(leave_one_out, result.k, measure=result.measure, form=result.form, level=result.level)
    return {name: n * result.atoms[name][:, None] - (n - 1) * replicates.atoms[name].reshape(n_images, n)
            for name in result.names}


def quantities(result: PIDResult, labels: list[str]) -> dict[str, np.ndarray]:
    """name -> (I, N) per-sample values of everything the README's job reports and its parts.

    ``labels``: a name per conditioning of the subset lattice (bitmask order)."""
    info, k = result.information, result.k
    n_subsets = 1 << k
    scale = 1.0 / np.prod(info.maps_orthogonal.shape[-2:]) if result.level == "mean" else 1.0
    out = {}
    for form in ("orthogonal", "standard"):
        for s in range(1, n_subsets):
            out[f"i_{form[:4]}({labels[s]})"] = scale * info.samples(form)[..., s]
    if info.pairs:
        for p, (s, t) in enumerate(info.pairs):
            out[f"gap_orth({labels[s]}|{labels[t]})"] = scale * info.pair_samples("orthogonal")[..., p]
            out[f"gap_stan({labels[s]}|{labels[t]})"] = scale * info.pair_samples("standard")[..., p]
        if set(anchored_pairs(k)) <= set(info.pairs):
            # the anchored form (docs/method.md#the-anchored-form): gap(∅ → full) − gap(s → full);
            # the full prompt's own value is its orthogonal one (i_orth above), so it is not repeated
            full = n_subsets - 1
            top = info.samples("orthogonal")[..., full]
            for s in range(1, full):
                gap = info.pair_samples("orthogonal")[..., info.pairs.index((full, s))]
                out[f"i_anch({labels[s]})"] = scale * (top - gap)
    for name, values in atom_pseudo_values(result).items():
        out[f"atom {name}"] = values
    return out


def profiles_of(result: PIDResult, labels: list[str], sampler, edges) -> list[VarianceProfile]:
    """Profiles of ``quantities``, less those that are zero but for rounding (a source that carries
    nothing in a Gaussian-mixture case): their shares would be shares of float noise."""
    found = quantities(result, labels)
    largest = max(np.abs(v).max() for v in found.values())
    return [profile(name, values, result.information.logsnr, sampler, edges)
            for name, values in found.items() if np.abs(values).max() > ZERO * largest]


def subset_labels(words) -> list[str]:
    k = len(words)
    return ["{}"] + ["{" + ",".join(w for j, w in enumerate(words) if s >> j & 1) + "}" for s in range(1, 1 << k)]


def mixture_pid(case_name: str, n_images: int, n_samples: int, sampler, seed: int = 0,
                key: int | None = None) -> PIDResult:
    """The default PID of a canonical Gaussian-mixture case on ``n_images`` draws of x (data seed
    ``seed``; the estimator's key ``key``, default seed + 1)."""
    case = canonical_case(case_name)
    pairs, x = case.sample(jax.random.key(seed), n_images)
    conds = np.stack([case.subset_log_weights(*pair) for pair in pairs]).astype(np.float32)
    return pid(case.denoiser, x, conds, key=jax.random.key(seed + 1 if key is None else key), n_samples=n_samples,
               sampler=sampler, conds_per_image=True)


# ---------------------------------------------------------------------------------------------
# The comparison of samplers at equal evaluations


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One quantity under each sampler of ``SAMPLERS`` at the same N, over R keys × I images."""

    quantity: str
    estimate: dict[str, float]  # sampler label -> mean estimate
    mean_variance: dict[str, float]  # sampler label -> mean reported s.e.² (per image)
    honesty: dict[str, float]  # sampler label -> spread over keys / mean s.e.² (nan with one key)

    def ratio(self, label: str) -> float:
        """Evaluations the logistic proposal needs for ``label``'s standard error, per evaluation."""
        base, new = self.mean_variance["logistic"], self.mean_variance[label]
        return base / new if new > 0 else math.inf

    @property
    def evals_ratio(self) -> float:
        return self.ratio("default")

    def to_row(self) -> dict:
        r = lambda v: None if not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"quantity": self.quantity, "evals_ratio": r(self.evals_ratio),
                **{f"evals_ratio_{label}": r(self.ratio(label)) for label in self.mean_variance if label != "logistic"},
                **{f"{k}_{label}": r(v) for k, d in (("estimate", self.estimate), ("variance", self.mean_variance),
                                                      ("honesty", self.honesty)) for label, v in d.items()}}


# The papers' proposal, jaxpid's default, and the other candidate measured (uniform on the same
# support, stratified: better on the demo, worse on the mixtures; docs/method.md).
SAMPLERS = {"logistic": LogisticSampler(), "default": StratifiedSampler(),
            "stratified-uniform": StratifiedSampler(UniformSampler())}


def reported_quantities(result: PIDResult, labels: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(estimates, standard errors), name -> (I,): the subset informations (the result's form) and
    the atoms, as the README's job prints them."""
    n_subsets = 1 << result.k
    values = {f"i({labels[s]})": result.subset_information[:, s] for s in range(1, n_subsets)}
    errors = {f"i({labels[s]})": result.subset_stderr[:, s] for s in range(1, n_subsets)}
    values.update({f"atom {n}": result.atoms[n] for n in result.names})
    errors.update({f"atom {n}": result.atoms_stderr[n] for n in result.names})
    return values, errors


def compare(run_job, keys: int, labels: list[str], minimum: float = 0.0) -> list[Comparison]:
    """Run ``run_job(sampler, key) -> PIDResult`` for both samplers and keys 0..keys−1.

    Quantities whose logistic s.e. is below ``minimum`` (exactly zero atoms of a mixture case)
    are left out: their ratio would be one of rounding noise."""
    found = {}
    for label, sampler in SAMPLERS.items():
        runs = [reported_quantities(run_job(sampler, key), labels) for key in range(keys)]
        found[label] = {q: (np.stack([r[0][q] for r in runs]), np.stack([r[1][q] for r in runs])) for q in runs[0][0]}
    out = []
    for q in found["logistic"]:
        variance = {label: float(np.mean(found[label][q][1] ** 2)) for label in SAMPLERS}
        if math.sqrt(variance["logistic"]) <= minimum:
            continue
        spread = {label: float(np.mean(found[label][q][0].var(axis=0, ddof=1))) if keys > 1 else math.nan
                  for label in SAMPLERS}
        out.append(Comparison(q, {label: float(found[label][q][0].mean()) for label in SAMPLERS}, variance,
                              {label: spread[label] / variance[label] if variance[label] > 0 else math.nan
                               for label in SAMPLERS}))
    return out


def demo_job(n_images: int, n_samples: int):
    """``run_job`` of the README's main job on the demo model (images generated once)."""
    pipeline = jaxpid.load_pipeline("demo")
    images = generated_images(pipeline, PROMPT, list(range(n_images)), jaxpid.RunConfig().generation)
    return lambda sampler, key: jaxpid.analyze(pipeline, PROMPT, list(SOURCES), images=images, n_samples=n_samples,
                                               sampler=sampler, key=key).result


def model_job(name: str, n_samples: int, latent: int | None = None):
    """``run_job`` of the benchmark models' 2-source job (random weights, one image)."""
    model = bench_models.build_model(name, latent=latent)
    return lambda sampler, key: pid(model.denoiser, model.x, model.conds, key=jax.random.key(key),
                                    n_samples=n_samples, sampler=sampler)


def mixture_job(case_name: str, n_images: int, n_samples: int):
    """``run_job`` of a Gaussian-mixture case: the same images for every key (only the
    estimator's draws change, so the spread over keys is the Monte-Carlo error)."""
    return lambda sampler, key: mixture_pid(case_name, n_images, n_samples, sampler, seed=0, key=1000 + key)


def print_comparison(title: str, rows: list[Comparison], log=print) -> float:
    """The per-quantity table; returns the median evals_ratio (the default's)."""
    log(f"\n{title}: the logistic proposal vs the default (stratified logistic) at equal evaluations; "
        "last columns: stratified uniform, and spread over keys / mean s.e.² (honesty)")
    log(f"{'quantity':<22}{'logistic':>10}{'default':>10}{'s.e. log':>10}{'s.e. def':>10}{'evals_ratio':>12}"
        f"{'strat-unif':>11}{'honesty log/def':>17}")
    for c in rows:
        log(f"{c.quantity:<22}{c.estimate['logistic']:10.3f}{c.estimate['default']:10.3f}"
            f"{math.sqrt(c.mean_variance['logistic']):10.3f}{math.sqrt(c.mean_variance['default']):10.3f}"
            f"{c.evals_ratio:12.2f}{c.ratio('stratified-uniform'):11.2f}"
            f"{c.honesty['logistic']:9.2f}/{c.honesty['default']:.2f}")
    median = float(np.median([c.evals_ratio for c in rows]))
    other = float(np.median([c.ratio("stratified-uniform") for c in rows]))
    log(f"{'median':<62}{median:12.2f}{other:11.2f}")
    return median


def plotted(profiles: list[VarianceProfile], joint: str) -> list[VarianceProfile]:
    """The figure's lines: the joint information in each form, and the atoms."""
    return [p for p in profiles if p.quantity.startswith("atom") or p.quantity.endswith(f"({joint})")]


def print_table(title: str, profiles: list[VarianceProfile], log=print) -> None:
    edges = profiles[0].edges
    log(f"\n{title}: variance share per log-SNR bin (%), bins of width {edges[1] - edges[0]:g} from {edges[0]:g}")
    head = "".join(f"{0.5 * (a + b):>5.1f}" for a, b in zip(edges[:-1], edges[1:]))
    log(f"{'quantity':<34}{'value':>9}{'s.e.':>8} |{head} | strat  ideal")
    mass = "".join(f"{100 * m:5.0f}" for m in profiles[0].proposal_mass)
    log(f"{'proposal mass (%)':<51} |{mass} |")
    for p in profiles:
        shares = "".join(f"{100 * v:5.0f}" for v in p.variance_share)
        log(f"{p.quantity[:34]:<34}{p.estimate:9.3f}{p.stderr:8.3f} |{shares} | {p.stratified_gain:5.2f} {p.ideal_gain:6.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=None, help="profiles: demo images (seeds 0..); default 2 quick, "
                        "4 full")
    parser.add_argument("--samples", type=int, default=None, help="profiles: demo log-SNR samples; default 128 quick, "
                        "512 full")
    parser.add_argument("--no-demo", action="store_true", help="the Gaussian mixtures only")
    parser.add_argument("--sampler", choices=("logistic", "uniform"), default="logistic",
                        help="the log-SNR proposal (default parameters: support [-5, 7])")
    parser.add_argument("--figure", default=None, metavar="PNG", help="default: variance.png in the results folder")
    parser.add_argument("--keys", type=int, default=None, help="estimator keys per sampler in the comparison; "
                        "default 3 quick, 6 full")
    parser.add_argument("--no-profile", action="store_true", help="the sampler comparison only")
    parser.add_argument("--data", nargs="+", choices=DATA, default=None,
                        help="the comparison's jobs (default: demo tiny gmm with --quick, all without)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    jaxpid.use_cpu_cores()  # before JAX starts: one CPU device per core, as jaxpid runs
    try:
        return run(args)
    except JaxpidError as error:
        print(f"jaxpid.bench.variance: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, log=print) -> int:
    rows = [] if args.no_profile else run_profiles(args, log)
    keys = args.keys or (3 if args.quick else 6)
    jobs = []  # (data, title, run_job, labels, keys, record)
    data = set(args.data or (("demo", "tiny", "gmm") if args.quick else DATA)) - ({"demo"} if args.no_demo else set())
    if "demo" in data:
        n_images, n_samples = (4, 64) if args.quick else (8, 128)
        jobs.append(("demo", f"demo, '{PROMPT}' ({n_images} images x {n_samples} samples x {keys} keys)",
                     demo_job(n_images, n_samples), subset_labels(SOURCES), keys,
                     {"prompt": PROMPT, "sources": list(SOURCES), "n_images": n_images, "n_samples": n_samples}))
    # random-weight UNets: one image, so more keys; SD 2.1-base (866 M parameters) at 16x16 latents
    # runs ~0.85 evaluations/s on 2 cores: 16 samples x 3 keys x 3 samplers x 4 conditionings, ~12 min
    models = [("tiny", None, 64, 2 * keys), ("sd21-base", 16, 16, 3)]
    for name, latent, n_samples, n_keys in (m for m in models if m[0] in data):
        size = f" at {latent}x{latent} latents" if latent else ""
        jobs.append((f"random {name}", f"random-weight {name} UNet{size} (1 image x {n_samples} samples x {n_keys} keys)",
                     model_job(name, n_samples, latent), subset_labels(("a", "b")), n_keys,
                     {"model": name, "latent": latent, "n_images": 1, "n_samples": n_samples}))
    gmm_images = 16 if args.quick else 64
    for name in CANONICAL_CASES if "gmm" in data else ():
        jobs.append((f"gmm-{name}", f"GMM {name} ({gmm_images} images x 64 samples x {keys} keys)",
                     mixture_job(name, gmm_images, 64), subset_labels(("y1", "y2")), keys,
                     {"n_images": gmm_images, "n_samples": 64}))
    env = common.environment()
    ratios = {}
    for data, title, job, labels, n_keys, record in jobs:
        found = compare(job, n_keys, labels, minimum=1e-6)
        ratios[data] = print_comparison(title, found, log)
        rows += [{"benchmark": "variance-comparison", "data": data, **record, "keys": n_keys,
                  "samplers": {k: v.to_dict() for k, v in SAMPLERS.items()}, "measure": PIDConfig().measure,
                  "form": PIDConfig().form, "quick": bool(args.quick), "environment": env, **c.to_row()}
                 for c in found]
    log(f"\nappended {len(rows)} rows to {common.save_rows('variance', rows, args)}")
    log("median evals_ratio: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    log(f"evals_ratio={ratios.get('demo', math.nan):.2f}")
    return 0


def run_profiles(args: argparse.Namespace, log=print) -> list[dict]:
    """Where the variance comes from: per-bin profiles under the chosen proposal (``--sampler``)."""
    sampler = make_sampler(args.sampler)
    edges = np.linspace(*sampler.support, N_BINS + 1)
    images = args.images or (2 if args.quick else 4)
    samples = args.samples or (128 if args.quick else 512)
    gmm_images, gmm_samples = (16, 256) if args.quick else (64, 1024)
    log(common.load_note())
    env = common.environment()
    panels, rows = {}, []
    if not args.no_demo:
        result = demo_job(images, samples)(sampler, 0)
        found = profiles_of(result, subset_labels(SOURCES), sampler, edges)
        panels["demo"] = plotted(found, "{circle,square}")
        rows += [{"benchmark": "variance", "data": "demo", "prompt": PROMPT, "sources": list(SOURCES),
                  "conditional": True, "n_images": images, "n_samples": samples, "sampler": sampler.to_dict(),
                  "measure": result.measure, "form": result.form, **p.to_row()} for p in found]
        print_table(f"demo, '{PROMPT}' ({images} images x {samples} samples)", found, log)
    # random-weight SD-family UNets, one image (the benchmark models' 2-source job): the tiny one,
    # and without --quick SD 2.1-base's architecture at 16x16 latents (~0.85 evaluations/s here)
    for name, latent, n_samples in [("tiny", None, 512)] + ([] if args.quick else [("sd21-base", 16, 64)]):
        result = model_job(name, n_samples, latent)(sampler, 0)
        found = profiles_of(result, subset_labels(("a", "b")), sampler, edges)
        panels[f"random {name}"] = plotted(found, "{a,b}")
        rows += [{"benchmark": "variance", "data": f"random {name}", "model": name, "latent": latent, "n_images": 1,
                  "n_samples": n_samples, "sampler": sampler.to_dict(), "measure": result.measure,
                  "form": result.form, **p.to_row()} for p in found]
        size = f" at {latent}x{latent} latents" if latent else ""
        print_table(f"random-weight {name} UNet{size} (1 image x {n_samples} samples)", found, log)
    for name in CANONICAL_CASES:
        result = mixture_pid(name, gmm_images, gmm_samples, sampler)
        found = profiles_of(result, subset_labels(("y1", "y2")), sampler, edges)
        panels[f"GMM {name}"] = plotted(found, "{y1,y2}")
        rows += [{"benchmark": "variance", "data": f"gmm-{name}", "n_images": gmm_images, "n_samples": gmm_samples,
                  "sampler": sampler.to_dict(), "measure": result.measure, "form": result.form, **p.to_row()}
                 for p in found]
        print_table(f"GMM {name} ({gmm_images} images x {gmm_samples} samples)", found, log)
    figure = Path(args.figure) if args.figure else common.results_dir(args.results) / "variance.png"
    log(f"\nfigure: {write_figure(variance_profile_figure(panels, args.sampler), figure)}")
    return [{**row, "quick": bool(args.quick), "environment": env} for row in rows]


if __name__ == "__main__":
    sys.exit(main())
