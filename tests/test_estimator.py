"""The fused estimator against closed-form Gaussian-mixture ground truth (docs/method.md#ground-truth)."""

import dataclasses
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpid
from jaxpid.core import estimator
from jaxpid.core.memory import DEFAULT_HEADROOM
from jaxpid.core.ground_truth import canonical_case, mixture_log_density


def _subset_conds(case, pairs):
    return np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)  # (I, 4, M)


@pytest.fixture(scope="module")
def and_case():
    case = canonical_case("AND")
    pairs, x = case.sample(jax.random.key(11), 8)
    return case, pairs, x


def test_standard_form_matches_exact_log_density_ratio_per_image(and_case):
    case, pairs, x = and_case
    res = jaxpid.information(
        case.denoiser, x, _subset_conds(case, pairs), key=jax.random.key(0), n_samples=1000, conds_per_image=True
    )
    exact = case.exact_information(x, pairs)  # (I, 4): log p(x|y_S) - log p(x)
    z = (res.mi_standard - exact)[:, 1:] / res.stderr_standard[:, 1:]
    assert np.all(np.abs(z) < 3.0), z
    assert np.all(np.abs(res.mi_standard[:, 0]) < 1e-5)  # the reference against itself
    # the test has teeth: the exact values are far from zero and from each other
    assert np.abs(exact[:, 1:]).mean() > 8 * res.stderr_standard[:, 1:].mean()


def test_orthogonal_form_matches_exact_information_on_average():
    case = canonical_case("AND")
    pairs, x = case.sample(jax.random.key(3), 2048)
    res = jaxpid.information(
        case.denoiser, x, _subset_conds(case, pairs), key=jax.random.key(1), n_samples=16, conds_per_image=True,
        pairs=[(3, 2), (3, 1)],
    )
    exact = case.exact_information(x, pairs)
    diff = res.mi_orthogonal - exact  # per image this is not zero; its mean over x ~ p(x|y) is
    se = diff.std(axis=0, ddof=1) / np.sqrt(len(x))
    assert np.all(np.abs(diff.mean(axis=0)[1:]) < 3 * se[1:] + 1e-3), (diff.mean(0), se)
    assert np.all(res.mi_orthogonal >= 0)
    assert np.abs(diff).mean() > 0.05  # genuinely pointwise-different from the log ratio
    # each source's conditional information given the other, ½∫E‖ε̂(y1, y2) − ε̂(y_other)‖²
    exact_cmi = exact[:, [3, 3]] - exact[:, [2, 1]]
    diff = res.pair_mi_orthogonal - exact_cmi
    se = diff.std(axis=0, ddof=1) / np.sqrt(len(x))
    assert np.all(np.abs(diff.mean(axis=0)) < 3 * se + 1e-3), (diff.mean(0), se)
    assert np.all(res.pair_mi_orthogonal >= 0) and exact_cmi.mean() > 10 * se.max()


def test_nll_matches_exact_negative_log_density():
    case = canonical_case("UNQ", std=0.7)
    pairs, x = case.sample(jax.random.key(5), 4)
    conds = _subset_conds(case, pairs)
    # a wide uniform proposal: the NLL integrand, unlike MI's, has tails beyond the default range
    sampler = jaxpid.UniformSampler(loc=2.0, scale=4.0, clip=4.0)
    res = jaxpid.information(
        case.denoiser, x, conds, key=jax.random.key(2), n_samples=4000, sampler=sampler, conds_per_image=True
    )
    exact = -np.stack([mixture_log_density(x[i : i + 1], case.means, case.std, conds[i])[0] for i in range(4)])
    assert np.all(np.abs(res.nll - exact) < 3 * res.stderr_nll + 0.02), (res.nll, exact, res.stderr_nll)


def test_maps_sum_to_image_level_values(and_case):
    case, pairs, x = and_case
    res = jaxpid.information(
        case.denoiser, x, _subset_conds(case, pairs), key=jax.random.key(0), n_samples=16, conds_per_image=True,
        pairs=[(3, 2), (2, 3), (3, 0)],
    )
    assert res.maps_orthogonal.shape == (8, 4, 2, 2) and res.pair_maps().shape == (8, 3, 2, 2)
    np.testing.assert_allclose(res.maps_orthogonal.sum(axis=(2, 3)), res.mi_orthogonal, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.maps_standard.sum(axis=(2, 3)), res.mi_standard, rtol=1e-5, atol=1e-6)
    for form in ("orthogonal", "standard"):
        np.testing.assert_allclose(res.pair_maps(form).sum(axis=(2, 3)), res.pair_mi(form), rtol=1e-5, atol=1e-6)
    # a pair against the reference is the reference-based value; the gap is symmetric in orthogonal
    # form and antisymmetric in standard form, which is a difference of reference-based values
    np.testing.assert_allclose(res.pair_mi()[:, 2], res.mi_orthogonal[:, 3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.pair_mi()[:, 0], res.pair_mi()[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.pair_mi("standard")[:, 0], res.mi_standard[:, 3] - res.mi_standard[:, 2], rtol=1e-9)
    np.testing.assert_allclose(res.pair_mi("standard")[:, 1], -res.pair_mi("standard")[:, 0], rtol=1e-9)
    np.testing.assert_allclose(res.pair_stderr(), res.pair_stderr_orthogonal, rtol=1e-9)
    assert res.config["pairs"] == [[3, 2], [2, 3], [3, 0]]
    # the default sampler, recorded with its strata fixed (N // 2)
    assert res.config["sampler"] == {"name": "stratified", "strata": res.config["n_samples"] // 2,
                                     "proposal": {"name": "logistic", "loc": 1.0, "scale": 2.0, "clip": 3.0}}


def test_results_do_not_depend_on_chunk_size_or_device_count(and_case):
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    n = 21
    run = lambda **kw: jaxpid.information(
        case.denoiser, x, conds, key=jax.random.key(4), n_samples=n, conds_per_image=True, pairs=[(3, 1)], **kw
    )
    assert len(jax.devices()) == 8, "conftest should give 8 fake CPU devices"
    baseline = run(chunk_size=1, devices=jax.devices()[:1])
    for kwargs in ({"chunk_size": 7}, {"chunk_size": n}, {"chunk_size": 1}, {"chunk_size": 7, "devices": jax.devices()[:1]}):
        other = run(**kwargs)
        for field in ("mi_standard", "mi_orthogonal", "nll", "maps_orthogonal", "logsnr", "pair_mi_orthogonal",
                      "pair_maps_orthogonal"):
            np.testing.assert_allclose(getattr(other, field), getattr(baseline, field), rtol=1e-5, atol=1e-6, err_msg=f"{field} {kwargs}")
        np.testing.assert_array_equal(other.logsnr, baseline.logsnr)


def test_without_a_chunk_size_free_device_memory_chooses_it_once_and_changes_no_result(
        and_case, monkeypatch, compilations):
    """Where devices report their free memory (a GPU or TPU; faked here on the CPU) the chunk comes
    from it: the default chunk's compiled scratch gives the bytes per evaluation, the decision is
    made once per shape and recorded, and the numbers are those of the default chunk."""
    from collections import OrderedDict

    from jaxpid.core import estimator

    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    n = 40  # 8 images x 40 samples on one device: 320 items, the default chunk 64 // 4 = 16
    kwargs = dict(key=jax.random.key(4), n_samples=n, conds_per_image=True, pairs=[(3, 1)], devices=jax.devices()[:1])
    default = jaxpid.information(case.denoiser, x, conds, **kwargs)  # the CPU tracks no memory: the fixed cap
    assert default.config["chunk_size"] == 16 and "chunk_memory" not in default.config

    def same_numbers(res):
        for field in ("mi_standard", "mi_orthogonal", "nll", "maps_orthogonal", "pair_mi_orthogonal",
                      "pair_maps_orthogonal"):
            np.testing.assert_allclose(getattr(res, field), getattr(default, field), rtol=1e-5, atol=1e-6,
                                       err_msg=field)
        np.testing.assert_array_equal(res.logsnr, default.logsnr)

    monkeypatch.setattr(estimator, "_MEMORY_CHUNKS", OrderedDict())
    monkeypatch.setattr(estimator, "free_device_memory", lambda device: 10**12)  # room for every item at once
    roomy = jaxpid.information(case.denoiser, x, conds, **kwargs)
    memory = roomy.config["chunk_memory"]
    assert roomy.config["chunk_size"] == memory["chunk_size"] == 320 and memory["probe_chunk_size"] == 16
    assert memory["rule"] == "device memory" and memory["free_bytes"] == 10**12 and memory["bytes_per_evaluation"] > 0
    same_numbers(roomy)
    with compilations() as count:  # decided once: the same shapes again compile nothing
        again = jaxpid.information(case.denoiser, x, conds, **kwargs)
    assert count[0] == 0 and again.config["chunk_size"] == 320 and again.timings["compile_s"] == 0.0

    # memory for 5 samples (x 4 conditionings) per step beside the arguments: 64 steps of 5
    probe = jaxpid.FusedPass(case.denoiser, n_samples=n, chunk_size=16, pairs=[(3, 1)], devices=jax.devices()[:1])
    arguments = probe.compile(probe.prepare(x, conds, key=jax.random.key(4), conds_per_image=True)).argument_bytes
    free = arguments + math.ceil(memory["bytes_per_evaluation"] * 4 * 5.5 / DEFAULT_HEADROOM)
    monkeypatch.setattr(estimator, "_MEMORY_CHUNKS", OrderedDict())
    monkeypatch.setattr(estimator, "free_device_memory", lambda device: free)
    tight = jaxpid.information(case.denoiser, x, conds, **kwargs)
    assert tight.config["chunk_size"] == 5 and tight.config["chunk_memory"]["free_bytes"] == free
    same_numbers(tight)
    # a chunk given by the caller is kept whatever the memory
    given = jaxpid.information(case.denoiser, x, conds, chunk_size=7, **kwargs)
    assert given.config["chunk_size"] == 7 and "chunk_memory" not in given.config


def test_one_compilation_for_new_images_and_conditionings(compilations):
    case = canonical_case("XOR")
    traces = []

    def denoise(z, logsnr, cond):
        traces.append(z.shape)
        return case.denoiser(z, logsnr, cond)

    kwargs = dict(key=jax.random.key(0), n_samples=10, chunk_size=5)
    pairs, x = case.sample(jax.random.key(0), 3)
    jaxpid.information(denoise, x, _subset_conds(case, pairs), conds_per_image=True, **kwargs)
    with compilations() as count:
        for seed in (1, 2):
            pairs, x = case.sample(jax.random.key(seed), 3)
            conds = _subset_conds(case, pairs) + 0.01 * seed  # new conditionings, same shapes
            jaxpid.information(denoise, x, conds, conds_per_image=True, **kwargs)
    assert count[0] == 0
    assert len(traces) == 1


def test_pytree_denoiser_weights_are_arguments_not_constants(compilations):
    """A denoiser holding arrays (like a model with its weights) compiles once for new weights."""
    case = canonical_case("AND")
    pairs, x = case.sample(jax.random.key(0), 2)
    conds = _subset_conds(case, pairs)
    first = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(0), n_samples=4, conds_per_image=True)
    moved = dataclasses.replace(case.denoiser, means=case.denoiser.means * 1.5)
    with compilations() as count:
        second = jaxpid.information(moved, x, conds, key=jax.random.key(0), n_samples=4, conds_per_image=True)
    assert count[0] == 0
    assert not np.allclose(first.mi_orthogonal, second.mi_orthogonal)


def test_the_public_compiled_pass_compiles_once_and_matches_information(compilations):
    """FusedPass: prepare / lower / compile / run / summarise, as information() runs it."""
    case = canonical_case("UNQ")
    pairs, x = case.sample(jax.random.key(5), 3)
    conds = _subset_conds(case, pairs)
    fused = jaxpid.FusedPass(case.denoiser, n_samples=12, chunk_size=3, pairs=[(3, 1)])
    inputs = fused.prepare(x, conds, key=jax.random.key(9), conds_per_image=True)
    assert "stablehlo" in fused.lower(inputs).as_text()[:20000]
    with compilations() as count:
        compiled = fused.compile(inputs)
        again = fused.compile(fused.prepare(x + 1.0, conds, key=jax.random.key(1), conds_per_image=True))
    assert count[0] == 1 and again is compiled  # one program per shape, cached in the process
    assert compiled.compile_seconds > 0 and compiled.evaluations >= 3 * 12 * 4
    assert compiled.temp_bytes is None or compiled.temp_bytes > 0
    result = fused.summarise(fused.run(inputs, compiled), inputs)
    reference = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(9), n_samples=12, chunk_size=3,
                                   conds_per_image=True, pairs=[(3, 1)])
    for field in ("mi_orthogonal", "mi_standard", "nll", "maps_orthogonal", "pair_mi_orthogonal", "logsnr"):
        np.testing.assert_array_equal(getattr(result, field), getattr(reference, field), err_msg=field)
    assert reference.timings["compile_s"] == 0.0 and reference.timings["run_s"] > 0  # compiled above: not again
    # the key is recorded, so the draws can be made again from the record alone
    record = reference.config["key"]
    key = jax.random.wrap_key_data(np.asarray(record["data"], np.uint32), impl=record["impl"])
    rebuilt = jaxpid.information(case.denoiser, x, conds, key=key, n_samples=12, chunk_size=3, conds_per_image=True,
                                 pairs=[(3, 1)])
    np.testing.assert_array_equal(rebuilt.mi_orthogonal, reference.mi_orthogonal)


@jax.tree_util.register_pytree_node_class
class _PosteriorDenoiser:
    """The mixture's exact denoiser, whose auxiliary output is its posterior over components."""

    def __init__(self, inner):
        self.inner = inner

    def tree_flatten(self):
        return (self.inner,), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)

    def __call__(self, z, logsnr, cond):
        return self.inner(z, logsnr, cond)

    def with_aux(self, z, logsnr, cond):
        a = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None, None]
        var = a[..., 0] ** 2 * self.inner.std**2 + jax.nn.sigmoid(-logsnr)[:, None]
        resid = z.reshape(z.shape[0], 1, -1) - a * self.inner.means.reshape(1, self.inner.means.shape[0], -1)
        posterior = jax.nn.softmax(cond - 0.5 * jnp.sum(resid**2, -1) / var, axis=-1)
        return self.inner(z, logsnr, cond), {"posterior": posterior, "logsnr": logsnr}


def test_auxiliary_outputs_are_averaged_over_each_images_samples(and_case):
    """collect_aux: a denoiser's extra output (a UNet's attention maps, here the mixture posterior)
    comes back as its mean over the samples of each (image, conditioning), from the same pass."""
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    denoiser = _PosteriorDenoiser(case.denoiser)
    kwargs = dict(key=jax.random.key(2), n_samples=10, chunk_size=3, conds_per_image=True)
    res = jaxpid.information(denoiser, x, conds, collect_aux=True, **kwargs)
    plain = jaxpid.information(case.denoiser, x, conds, **kwargs)
    np.testing.assert_array_equal(res.mi_orthogonal, plain.mi_orthogonal)  # capture changes nothing else
    assert plain.aux is None and res.aux["posterior"].shape == (len(x), 4, 2)
    np.testing.assert_allclose(res.aux["logsnr"], np.repeat(res.logsnr.mean(axis=1)[:, None], 4, 1), rtol=1e-6)
    np.testing.assert_allclose(res.aux["posterior"].sum(-1), 1.0, rtol=1e-6)
    # the posterior given the true pair's full conditioning puts its mass on the image's component
    component = case.outcome[pairs[:, 0], pairs[:, 1]]
    assert np.mean(res.aux["posterior"][np.arange(len(x)), 3, component] > 0.5) > 0.8
    one = jaxpid.information(denoiser, x, conds, collect_aux=True, devices=jax.devices()[:1], **kwargs)
    np.testing.assert_allclose(one.aux["posterior"], res.aux["posterior"], rtol=1e-6)  # device count free
    with pytest.raises(jaxpid.ConfigError, match="with_aux"):
        jaxpid.information(case.denoiser, x, conds, collect_aux=True, **kwargs)


def test_shared_conditionings_broadcast_over_images(and_case):
    case, pairs, x = and_case
    conds = case.subset_log_weights(1, 1).astype(np.float32)  # (4, M) for every image
    shared = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(0), n_samples=8)
    per_image = jaxpid.information(
        case.denoiser, x, np.broadcast_to(conds, (8,) + conds.shape), key=jax.random.key(0), n_samples=8, conds_per_image=True
    )
    np.testing.assert_allclose(shared.mi_orthogonal, per_image.mi_orthogonal, rtol=1e-6)


def test_per_image_keys_make_an_image_independent_of_its_batch(and_case):
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    keys = jax.random.split(jax.random.key(9), 8)
    full = jaxpid.information(case.denoiser, x, conds, key=keys, n_samples=8, conds_per_image=True)
    part = jaxpid.information(case.denoiser, x[3:5], conds[3:5], key=keys[3:5], n_samples=8, conds_per_image=True)
    np.testing.assert_allclose(part.mi_orthogonal, full.mi_orthogonal[3:5], rtol=1e-5)


def test_snap_logsnr_builds_z_with_the_snapped_value():
    """Discrete-time denoisers: z is built with the snapped log-SNR, the same one they receive."""
    case = canonical_case("UNQ")
    grid = jnp.linspace(-6.0, 8.0, 15)
    seen = []

    class Discrete:
        def snap_logsnr(self, logsnr):
            return grid[jnp.argmin(jnp.abs(logsnr[:, None] - grid[None]), axis=1)]

        def __call__(self, z, logsnr, cond):
            seen.append(1)
            return case.denoiser(z, logsnr, cond)

    pairs, x = case.sample(jax.random.key(0), 2)
    res = jaxpid.information(Discrete(), x, _subset_conds(case, pairs), key=jax.random.key(0), n_samples=64, conds_per_image=True)
    assert np.all(np.isin(np.round(res.logsnr, 5), np.round(np.asarray(grid), 5)))
    assert np.all(res.mi_orthogonal >= 0) and np.all(np.isfinite(res.mi_standard))


def test_sampler_weights_integrate_the_support():
    u = jax.random.uniform(jax.random.key(0), (200_000,))
    for sampler in (jaxpid.LogisticSampler(), jaxpid.UniformSampler(), jaxpid.LogisticSampler(0.0, 1.0, 4.0)):
        alpha, w = sampler.draw(u)
        lo, hi = sampler.support
        assert float(alpha.min()) >= lo - 1e-4 and float(alpha.max()) <= hi + 1e-4
        # E_q[w] = ∫ 1 dα over the support
        np.testing.assert_allclose(float(w.mean()), hi - lo, rtol=5e-3)
        # E_q[w f] for f = a Gaussian bump integrates it: ∫ exp(-α²/2) dα = sqrt(2π) (inside support)
        f = jnp.exp(-0.5 * (alpha - 0.5) ** 2)
        np.testing.assert_allclose(float((w * f).mean()), np.sqrt(2 * np.pi), rtol=2e-2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, x, c: jaxpid.information(d, x[0], c, key=jax.random.key(0)), "(I, C, H, W)"),
        (lambda d, x, c: jaxpid.information(d, x, {"a": c, "b": c[:3]}, key=jax.random.key(0)), "disagree"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), conds_per_image=True), "lead with 4 images"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), reference=4), "reference=4"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), n_samples=1), "n_samples"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), chunk_size=0), "chunk_size"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.split(jax.random.key(0), 3)), "one per image"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), pairs=[(0, 4)]), "pair (0, 4)"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), pairs=[(2, 2)]), "two different"),
        (lambda d, x, c: jaxpid.information(d, x, c, key=jax.random.key(0), pairs=[3]), "pairs must be"),
    ],
)
def test_bad_inputs_raise_specific_errors(call, message):
    case = canonical_case("AND")
    _, x = case.sample(jax.random.key(0), 2)
    conds = case.subset_log_weights(0, 0).astype(np.float32)
    with pytest.raises((jaxpid.ShapeError, jaxpid.ConfigError), match=message.replace("(", r"\(").replace(")", r"\)")):
        call(case.denoiser, x, conds)


def test_non_finite_denoiser_output_names_conditioning_and_sample():
    case = canonical_case("AND")
    _, x = case.sample(jax.random.key(0), 2)
    conds = {"log_weights": case.subset_log_weights(0, 0).astype(np.float32), "id": np.arange(4)}

    def broken(z, logsnr, cond):
        eps = case.denoiser(z, logsnr, cond["log_weights"])
        bad = (cond["id"] == 2) & (logsnr > 6.0)  # conditioning 2 at high log-SNR only
        return jnp.where(bad[:, None, None, None], jnp.nan, eps)

    with pytest.raises(jaxpid.NonFiniteError, match=r"image \d+, conditioning 2, sample \d+ \(log-SNR 6\.\d+"):
        jaxpid.information(broken, x, conds, key=jax.random.key(0), n_samples=64)


def test_reporting_chunks_changes_no_number_and_reports_every_chunk(and_case, compilations, monkeypatch):
    """on_chunk: a PassProgress per finished chunk, from a program of its own whose results are
    bit-identical to the one without; a pass that reports nothing keeps its program unchanged."""
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    kwargs = dict(n_samples=40, chunk_size=4, pairs=[(3, 1)])
    quiet = jaxpid.FusedPass(case.denoiser, **kwargs)
    seen = []
    loud = jaxpid.FusedPass(case.denoiser, on_chunk=seen.append, **kwargs)
    quiet_inputs = quiet.prepare(x, conds, key=jax.random.key(2), conds_per_image=True)
    assert "callback" not in quiet.lower(quiet_inputs).as_text()  # library users' program: no host callback
    assert "callback" in loud.lower(loud.prepare(x, conds, key=jax.random.key(2), conds_per_image=True)).as_text()
    plain = quiet(x, conds, key=jax.random.key(2), conds_per_image=True)
    shown = loud(x, conds, key=jax.random.key(2), conds_per_image=True)
    fields = ("mi_orthogonal", "mi_standard", "nll", "maps_orthogonal", "maps_standard", "samples_orthogonal",
              "pair_mi_orthogonal", "logsnr")
    for field in fields:
        np.testing.assert_array_equal(getattr(shown, field), getattr(plain, field), err_msg=field)
    devices = len(jax.devices())
    chunks = math.ceil(len(x) * 40 / (devices * 4))
    assert [p.chunks_done for p in seen] == list(range(chunks + 1))  # 0: compiled, about to run
    assert {p.chunks for p in seen} == {chunks} and seen[0].first_chunk_s is None
    assert seen[-1].evaluations == devices * chunks * 4 * 4 and seen[-1].remaining_s == 0
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(seen, seen[1:]))
    # a report_chunks_to block (how the CLI reaches passes inside the analyses) leaves a short pass
    # its plain program (cacheable: no host callback), and reports a long one's chunks
    scoped = []
    with compilations() as count, estimator.report_chunks_to(scoped.append):
        short = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(2), conds_per_image=True, **kwargs)
    assert count[0] == 0 and scoped == []  # under SCOPED_PROGRESS_MIN_EVALUATIONS: the quiet program above
    np.testing.assert_array_equal(short.mi_orthogonal, plain.mi_orthogonal)
    monkeypatch.setattr(estimator, "SCOPED_PROGRESS_MIN_EVALUATIONS", 0)
    with compilations() as count, estimator.report_chunks_to(scoped.append):
        again = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(2), conds_per_image=True, **kwargs)
    assert count[0] == 0 and len(scoped) == chunks + 1  # the reporting program was compiled above
    np.testing.assert_array_equal(again.mi_orthogonal, plain.mi_orthogonal)


def test_rounds_report_their_chunks_and_a_failing_callback_stops_the_pass(and_case):
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    seen = []
    fused = jaxpid.FusedPass(case.denoiser, n_samples=16, chunk_size=4, on_chunk=seen.append)
    fused.rounds(x, conds, key=jax.random.key(0), conds_per_image=True, max_samples=48, done=lambda r: False)
    assert sorted({p.round for p in seen}) == [0, 1, 2]
    assert all(p.chunks_done == p.chunks for p in seen if p is seen[-1])

    def broken(progress):
        if progress.chunks_done == 2:
            raise ValueError("display gone")

    failing = jaxpid.FusedPass(case.denoiser, n_samples=16, chunk_size=1, on_chunk=broken)
    with pytest.raises(ValueError, match="display gone"):
        failing(x, conds, key=jax.random.key(0), conds_per_image=True)
    with pytest.raises(jaxpid.ConfigError, match="on_chunk must be a callable"):
        jaxpid.FusedPass(case.denoiser, on_chunk="print")


def test_an_interrupt_while_chunks_are_reported_is_raised_at_once(and_case):
    """A program with host callbacks runs inside its launching call on the CPU; the pass launches
    it from a worker thread so that Ctrl-C still reaches the caller at once. The program then
    runs on to its end in the background, reporting nothing more."""
    case, pairs, x = and_case
    conds = _subset_conds(case, pairs)
    started, done, sent = threading.Event(), [], []

    def on_chunk(progress):
        done.append(progress.chunks_done)
        if progress.chunks_done == 1:
            started.set()
        time.sleep(0.05)  # the whole pass takes chunks x 0.05 s while it reports

    def interrupt():
        if started.wait(30):
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)  # to the process, as Ctrl-C is

    fused = jaxpid.FusedPass(case.denoiser, n_samples=80 * len(jax.devices()), chunk_size=1, on_chunk=on_chunk)
    inputs = fused.prepare(x[:1], conds[:1], key=jax.random.key(0), conds_per_image=True)
    fused.compile(inputs)
    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        fused(x[:1], conds[:1], key=jax.random.key(0), conds_per_image=True)
    assert time.perf_counter() - sent[0] < 1.0  # not the 4 s the rest of the pass would take
    deadline = time.perf_counter() + 30
    while estimator._LISTENERS and time.perf_counter() < deadline:  # the program's end unregisters it
        time.sleep(0.01)
    assert not estimator._LISTENERS and max(done) < 20  # no report after the interrupt
