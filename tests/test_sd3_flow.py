"""The flow-matching ↔ VP log-SNR mapping of jaxpid.sd.flow, pinned by algebra and by ground truth.

A rectified-flow model of a Gaussian mixture is written in flow form alone (x_t = (1 − t)x + tε,
velocity E[ε − x | x_t], time input 1000·t), independently of jaxpid's ε-denoiser; served through
``FlowDenoiser`` it must give the exact ε̂ of ``ground_truth.MixtureDenoiser`` and, through
``information`` / ``decompose``, the closed-form informations of one fixed prompt (the known-answer
test's pass rule: within 3.5 standard errors + 0.02 nats; docs/validation.md).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpid
from jaxpid.core.ground_truth import PIDCase, canonical_case
from jaxpid.core.known_answers import known_answers
from jaxpid.errors import ConfigError
from jaxpid.sd.flow import FlowDenoiser, FlowMatchSchedule, flow_input_scale, flow_logsnr, flow_time, \
    velocity_to_epsilon


@functools.partial(jax.tree_util.register_dataclass, data_fields=["means"], meta_fields=["std", "steps"])
@dataclasses.dataclass(frozen=True)
class MixtureVelocity:
    """Exact flow velocity E[ε − x | x_t] for x ~ Σ π_m N(μ_m, s²I), x_t = (1 − t)x + tε, called as a
    diffusers flow model is: ``(x_t, timesteps = steps·t, log_weights (B, M))``."""

    means: jax.Array  # (M, C, H, W)
    std: float
    steps: int = 1000

    def __call__(self, x_t, timesteps, log_weights):
        t = (timesteps / self.steps)[:, None]  # (B, 1)
        a = 1.0 - t
        var = a**2 * self.std**2 + t**2  # x_t | m ~ N(a μ_m, var I)
        resid = x_t.reshape(x_t.shape[0], 1, -1) - a[..., None] * self.means.reshape(1, self.means.shape[0], -1)
        post = jax.nn.softmax(log_weights - 0.5 * jnp.sum(resid**2, axis=-1) / var, axis=-1)  # (B, M)
        noise = (t / var)[..., None] * resid  # E[ε | x_t, m]
        clean = self.means.reshape(1, self.means.shape[0], -1) + (a * self.std**2 / var)[..., None] * resid
        return jnp.einsum("bm,bmd->bd", post, noise - clean).reshape(x_t.shape)


@dataclasses.dataclass(frozen=True)
class FlowCase(PIDCase):
    """A canonical case whose denoiser is its flow-form velocity served through FlowDenoiser."""

    @property
    def denoiser(self):
        return FlowDenoiser(velocity=MixtureVelocity(jnp.asarray(self.means), float(self.std)))


def _flow(case: PIDCase) -> FlowCase:
    return FlowCase(**{field.name: getattr(case, field.name) for field in dataclasses.fields(case)})


def test_flow_channel_is_the_vp_channel_rescaled():
    """z = √σ(λ)x + √σ(−λ)ε at log-SNR λ: t = σ(−λ/2) and x_t = z·√((1 − t)² + t²) is exactly
    (1 − t)x + tε, and x_t + (1 − t)(ε − x) = ε."""
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((2, 7, 3, 4, 4)).astype(np.float32)
    logsnr = np.array([-12.0, -5.0, -0.5, 0.0, 2.0, 7.0, 13.8], np.float32)
    z = np.sqrt(jax.nn.sigmoid(logsnr))[:, None, None, None] * x + np.sqrt(jax.nn.sigmoid(-logsnr))[:, None, None,
                                                                                                   None] * eps
    t = flow_time(logsnr)
    np.testing.assert_allclose(np.float64(t), 1 / (1 + np.exp(np.float64(logsnr) / 2)), rtol=1e-6)
    np.testing.assert_allclose(flow_logsnr(np.asarray(t, np.float64)), logsnr, atol=2e-4)
    x_t = z * flow_input_scale(t)[:, None, None, None]
    np.testing.assert_allclose(x_t, (1 - t)[:, None, None, None] * x + t[:, None, None, None] * eps, atol=2e-6)
    np.testing.assert_allclose(velocity_to_epsilon(eps - x, x_t, t), eps, atol=2e-6)


def test_the_model_is_queried_at_1000_t_on_x_t():
    seen = {}

    def velocity(x_t, timesteps, cond):
        seen.update(x_t=x_t, timesteps=timesteps)
        return jnp.zeros_like(x_t)

    logsnr = jnp.array([-4.0, 0.0, 6.0])
    z = jnp.ones((3, 2, 2, 2))
    eps = FlowDenoiser(velocity=velocity)(z, logsnr, None)
    t = 1 / (1 + np.exp(np.asarray(logsnr) / 2))
    np.testing.assert_allclose(seen["timesteps"], 1000 * t, rtol=1e-6)
    np.testing.assert_allclose(seen["x_t"][:, 0, 0, 0], np.sqrt((1 - t) ** 2 + t**2), rtol=1e-6)
    np.testing.assert_allclose(eps, seen["x_t"], rtol=1e-6)  # zero velocity: ε̂ = x_t
    np.testing.assert_allclose(FlowDenoiser(velocity=velocity, num_train_timesteps=500)(z, logsnr, None), eps)
    np.testing.assert_allclose(seen["timesteps"], 500 * t, rtol=1e-6)


def test_flow_velocity_of_a_mixture_maps_to_the_exact_epsilon():
    case = canonical_case("AND")
    rng = np.random.default_rng(1)
    z = rng.standard_normal((64, 1, 2, 2)).astype(np.float32) * 1.5
    logsnr = rng.uniform(-10, 12, 64).astype(np.float32)
    log_weights = np.stack([case.subset_log_weights(1, 1)[i % 4] for i in range(64)]).astype(np.float32)
    ours = _flow(case).denoiser(z, logsnr, log_weights)
    exact = case.denoiser(jnp.asarray(z), jnp.asarray(logsnr), jnp.asarray(log_weights))
    np.testing.assert_allclose(ours, exact, atol=3e-5 * float(np.abs(exact).max()))


@pytest.mark.parametrize("name, prompt", [("AND", (1, 1)), ("XOR", (0, 1))])
def test_information_through_the_flow_adapter_meets_the_closed_form(name, prompt):
    """One fixed prompt, images from it: every subset information and conditional information of
    the anchored and standard forms within the known-answer tolerance; the values equal those of
    the ε-denoiser on the same draws."""
    case = canonical_case(name)
    rows = known_answers(_flow(case), prompt, key=jax.random.key(7), n_images=512, n_samples=64,
                         measures=("mmi",), forms=("anchored", "standard"))
    info = [r for r in rows if r["kind"] == "information"]
    failed = [(r["form"], r["quantity"], r["estimate"], r["exact"], r["z"]) for r in info if not r["passed"]]
    assert len(info) == 10 and not failed, failed
    assert max(abs(r["exact"]) for r in info) > 0.3  # the world carries information to get right
    x = case.sample_given(jax.random.key(3), prompt, 16)
    conds = case.subset_log_weights(*prompt).astype(np.float32)
    flow = jaxpid.information(_flow(case).denoiser, x, conds, key=jax.random.key(4), n_samples=32)
    direct = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(4), n_samples=32)
    np.testing.assert_allclose(flow.mi_standard, direct.mi_standard, atol=2e-3)
    np.testing.assert_allclose(flow.mi_orthogonal, direct.mi_orthogonal, rtol=1e-3, atol=1e-4)


def test_scheduler_config_and_logsnr_range():
    """The scheduler's table t ∈ [s/1000 / (1 + (s − 1)/1000), 1] covers λ ∈ (−∞, λ_max]; its finite part
    (t < 1) is ±13.81 unshifted and [−16.01, 11.62] at SD3's shift 3, symmetric about −2·log 3
    (docs/sd3.md), so a fitted logistic proposal centres on −2.197."""
    assert FlowMatchSchedule().logsnr_range == (pytest.approx(-2 * np.log(999), abs=1e-9),
                                                pytest.approx(2 * np.log(999), abs=1e-9))
    sd3 = FlowMatchSchedule.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0})
    low, high = sd3.logsnr_range
    assert high == pytest.approx(11.6163, abs=1e-4) and low == pytest.approx(-16.0108, abs=1e-4)
    assert (low + high) / 2 == pytest.approx(-2 * np.log(3), abs=1e-9)
    assert float(flow_logsnr(sd3.training_sigmas[0])) == float("-inf")  # t = 1, left out of the range
    assert sd3.prediction_type == "flow" and sd3.training_sigmas[0] == 1.0
    sigmas = sd3.sampling_sigmas(4)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and np.all(np.diff(sigmas) < 0)
    with pytest.raises(ConfigError, match="invert_sigmas"):
        FlowMatchSchedule.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "invert_sigmas": True})
    with pytest.raises(ConfigError, match="DDIMScheduler"):
        FlowMatchSchedule.from_config({"_class_name": "DDIMScheduler"})
    dynamic = FlowMatchSchedule.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler",
                                             "use_dynamic_shifting": True})
    with pytest.raises(ConfigError, match="use_dynamic_shifting"):
        dynamic.sampling_sigmas(4)
