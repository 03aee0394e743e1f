"""NoiseSchedule: diffusers' beta schedules as log-SNR tables (docs/method.md#noise-channel-and-log-snr)."""

import jax
import numpy as np
import pytest

from jaxpid.errors import ConfigError
from jaxpid.sd.schedule import NoiseSchedule

# scheduler/scheduler_config.json of stabilityai/stable-diffusion-2-1-base.
SD21_BASE = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def test_sd21_base_logsnr_range_matches_the_method_docs():
    schedule = NoiseSchedule.from_config(SD21_BASE)
    low, high = schedule.logsnr_range
    # docs/method.md#noise-channel-and-log-snr: the reachable range is α ∈ [−5.364, 7.069].
    assert low == pytest.approx(-5.364, abs=2e-3)
    assert high == pytest.approx(7.069, abs=2e-3)
    # α_0 = logit(1 − β_0) in closed form.
    assert high == pytest.approx(np.log((1 - 0.00085) / 0.00085), rel=1e-12)
    assert np.all(np.diff(schedule.logsnr_table) < 0)
    assert schedule.alphas_cumprod.dtype == np.float64 and schedule.alphas_cumprod.shape == (1000,)
    assert schedule.prediction_type == "epsilon"


@pytest.mark.parametrize(
    ("beta_schedule", "rtol"),
    # diffusers builds the table in float32; the cosine one reaches ᾱ ≈ 1e-8 where that costs digits.
    [("scaled_linear", 1e-5), ("linear", 1e-5), ("squaredcos_cap_v2", 1e-4)],
)
def test_alphas_cumprod_match_diffusers_ddim(beta_schedule, rtol):
    diffusers = pytest.importorskip("diffusers")
    config = dict(SD21_BASE, beta_schedule=beta_schedule)
    reference = diffusers.DDIMScheduler.from_config(config).alphas_cumprod.double().numpy()
    np.testing.assert_allclose(NoiseSchedule.from_config(config).alphas_cumprod, reference, rtol=rtol)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [4, 50, 999])
def test_sampling_timesteps_match_diffusers_ddim(spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    config = dict(SD21_BASE, timestep_spacing=spacing)
    reference = diffusers.DDIMScheduler.from_config(config)
    reference.set_timesteps(steps)
    schedule = NoiseSchedule.from_config(config)
    timesteps = schedule.sampling_timesteps(steps)
    np.testing.assert_array_equal(timesteps, reference.timesteps.numpy())
    previous = timesteps - 1000 // steps
    expected_previous = [
        float(reference.alphas_cumprod[p]) if p >= 0 else float(reference.final_alpha_cumprod) for p in previous
    ]
    np.testing.assert_allclose(schedule.previous_alpha_cumprod(timesteps, steps), expected_previous, rtol=1e-5)


def test_nearest_timestep_and_snap():
    schedule = NoiseSchedule.from_config(SD21_BASE)
    table = schedule.logsnr_table
    # A table value maps to its own step, also once rounded to float32 as the estimator holds it.
    steps = np.arange(1000)
    np.testing.assert_array_equal(schedule.nearest_timestep(table.astype(np.float32)), steps)
    snapped = schedule.snap_logsnr(table)
    np.testing.assert_array_equal(schedule.nearest_timestep(snapped), steps)
    np.testing.assert_allclose(snapped, table, rtol=1e-6)
    # Out-of-range values clip to the ends; in-between values go to the nearest neighbour.
    np.testing.assert_array_equal(schedule.nearest_timestep(np.array([50.0, -50.0])), [0, 999])
    between = 0.3 * table[400] + 0.7 * table[401]
    assert int(schedule.nearest_timestep(np.array([between]))[0]) == 401
    # The brute-force definition, on random log-SNRs.
    alphas = np.random.default_rng(0).uniform(-8, 9, size=257)
    expected = np.argmin(np.abs(alphas[:, None] - table[None, :]), axis=1)
    np.testing.assert_array_equal(schedule.nearest_timestep(alphas), expected)


def test_nearest_timestep_jits_with_schedule_static():
    schedule = NoiseSchedule.from_config(SD21_BASE)
    same = NoiseSchedule.from_config(dict(SD21_BASE))
    assert schedule == same and hash(schedule) == hash(same)
    snap = jax.jit(lambda s, a: s.snap_logsnr(a), static_argnums=0)
    np.testing.assert_allclose(snap(schedule, np.array([0.0, 1.0])), schedule.snap_logsnr(np.array([0.0, 1.0])))


def test_defaults_follow_ddim_and_v_prediction_is_kept():
    schedule = NoiseSchedule.from_config({"prediction_type": "v_prediction"})
    assert schedule.prediction_type == "v_prediction"
    assert schedule.set_alpha_to_one and schedule.clip_sample and schedule.timestep_spacing == "leading"
    assert schedule.beta_schedule == "linear" and schedule.num_train_timesteps == 1000


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("beta_schedule", "sigmoid"),
        ("prediction_type", "flow"),
        ("timestep_spacing", "karras"),
        ("rescale_betas_zero_snr", True),
    ],
)
def test_unsupported_values_are_named(key, value):
    with pytest.raises(ConfigError, match=key if key != "rescale_betas_zero_snr" else "rescale"):
        NoiseSchedule.from_config(dict(SD21_BASE, **{key: value}))


def test_trained_betas_and_too_many_steps():
    betas = np.linspace(1e-4, 2e-2, 10)
    schedule = NoiseSchedule.from_config({"num_train_timesteps": 10, "trained_betas": betas.tolist()})
    np.testing.assert_allclose(schedule.alphas_cumprod, np.cumprod(1 - betas))
    with pytest.raises(ConfigError, match="steps"):
        schedule.sampling_timesteps(11)
    with pytest.raises(ConfigError, match="steps_offset"):
        NoiseSchedule.from_config(dict(SD21_BASE)).sampling_timesteps(1000)
