"""`jaxpid pid` end to end on a tiny Stable Diffusion 3 folder (written by diffusers: needs torch), and the
SD3 model options (--no-t5, --t5-max-length) and the study preset's proposal fitted to the flow schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sd3_folders import write_tiny_sd3

import jaxpid
from jaxpid.cli import main
from jaxpid.cli.options import study_estimator
from jaxpid.cli.parsers import build_parser
from jaxpid.sd.flow import FlowMatchSchedule
from jaxpid.sd.pipeline import folder_schedule

pytestmark = pytest.mark.e2e  # whole `jaxpid` runs on an SD3 folder: the e2e tier (CI runs it after the default suite)

pytest.importorskip("torch")
pytest.importorskip("diffusers")

PROMPT = "a red car on the beach"
FAST = ["--samples", "8", "--chunk-size", "4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_sd3(tmp_path_factory.mktemp("sd3cli") / "sd3", seed=5)


def test_pid_of_a_given_image_then_rerun(folder, tmp_path, capsys):
    """The CLI loads the SD3 folder, encodes the image (16-channel VAE), runs the fused pass through the
    flow denoiser on SD3Conditioning pytrees, writes the result with the model's identity, and a rerun
    from result.json reproduces every atom exactly."""
    Image.fromarray((np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "run"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--image", str(tmp_path / "x.png"),
                 "--out", str(out), *FAST]) == 0
    record = json.loads((out / "result.json").read_text())
    model = record["config"]["model"]
    assert model["family"] == "sd3" and model["prediction_type"] == "flow" and model["latent_shape"] == [16, 8, 8]
    assert model["fingerprint"] == jaxpid.load_pipeline(folder).fingerprint
    atoms = record["results"][0]["atoms"]
    assert all(np.isfinite(a["nats"]) for a in atoms.values())
    assert np.isclose(sum(a["nats"] for a in atoms.values()), record["results"][0]["joint_information"]["nats"])
    capsys.readouterr()
    assert main(["rerun", str(out / "result.json"), "--out", str(tmp_path / "again")]) == 0
    assert "every value is identical to the recorded one" in capsys.readouterr().out


def test_pid_of_generated_images(folder, tmp_path):
    out = tmp_path / "generated"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--seed", "0", "--steps", "2",
                 "--out", str(out), *FAST]) == 0
    assert "flow-matching Euler" in (out / "result.json").read_text()  # the record names SD3's sampler


def test_no_t5_and_t5_length_options(folder, tmp_path, capsys):
    """--no-t5 / --t5-max-length reach the model and its recorded identity; other families refuse them."""
    out = tmp_path / "no_t5"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--no-t5", "--t5-max-length", "16",
                 "--seed", "0",
                 "--steps", "1", "--out", str(out), *FAST]) == 0
    model = json.loads((out / "result.json").read_text())["config"]["model"]
    assert model["text_encoder_3"] is False and model["max_sequence_length"] == 16
    capsys.readouterr()
    assert main(["pid", PROMPT, "--sources", "red", "car", "--no-t5", "--seed", "0", "--steps", "1",
                 "--out", str(tmp_path / "demo"), *FAST]) == 2
    assert "Stable Diffusion 3 folders only" in capsys.readouterr().err


def test_the_intervention_preset_fits_its_proposal_to_the_flow_schedule(folder):
    """Info-Decomp's intervention proposal spans the model's log-SNR range: for SD3 the finite part of
    the flow scheduler's table (shift 3: [−16.01, 11.62]), read from the folder's scheduler config."""
    args = build_parser().parse_args(["study", "intervene", "demo", "--out", "x", "--preset", "infodecomp",
                                      "--model", str(folder)])
    schedule = folder_schedule(folder)
    assert isinstance(schedule, FlowMatchSchedule) and schedule.shift == 3.0
    estimator = study_estimator(args)
    assert estimator.sampler.support == pytest.approx(schedule.logsnr_range)
    assert estimator.sampler.to_dict()["loc"] == pytest.approx(-2 * np.log(3), abs=1e-6)
