"""From a prompt to PID maps end to end, through the CLI and the Python API, on a tiny random
pipeline folder written by the test (no torch needed)."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import jaxpid
from jaxpid.analysis.images import generated_images, given_images
from jaxpid.analysis.prompt_pid import analyze
from jaxpid.analysis.words import word_information
from jaxpid.cli import main
from jaxpid.io.results import save_pid
from jaxpid.sd.ddim import GenerationConfig

PROMPT = "a red car on the beach"
FAST = ["--samples", "8", "--steps", "3", "--chunk-size", "4"]


@pytest.fixture(scope="module")
def folder(sd1_folder):
    return sd1_folder


@pytest.fixture(scope="module")
def pipeline(folder):
    return jaxpid.load_pipeline(folder)


def test_cli_pid_writes_a_complete_result(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--seed", "0", "1", "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_0.png", "image_1.png", "maps.npz", "panel.png", "result.json"]
    record = json.loads((out / "result.json").read_text())
    # the defaults: CCS in the anchored form, conditioned on the rest of the prompt (docs/validation.md)
    assert record["measure"] == "ccs" and record["level"] == "sum" and record["form"] == "anchored"
    assert record["notes"][0].startswith("ccs:") and record["notes"][1].startswith("anchored form:")
    assert record["config"]["model"]["fingerprint"] == jaxpid.load_pipeline(folder).fingerprint
    assert record["config"]["images"]["generated"]["seeds"] == [0, 1]
    assert record["config"]["estimator"]["sampler"] == {"name": "stratified", "strata": 4,  # --samples 8: 8 // 2
                                                        "proposal": {"name": "logistic", "loc": 1.0, "scale": 2.0, "clip": 3.0}}
    assert record["config"]["subset_prompts"] == ["a on the beach", "a red on the beach", "a car on the beach", PROMPT]
    assert "jax" in record["provenance"]["environment"]["versions"]
    assert record["provenance"]["estimator_key"] == record["config"]["estimator"]["key"]
    assert record["config"]["run"]["estimator"]["key"] == 0 and record["config"]["model"]["param_dtype"] == "float32"
    maps = np.load(out / "maps.npz")
    for row, i in zip(record["results"], range(2)):
        atoms = row["atoms"]
        assert set(atoms) == {"{1}{2}", "{1}", "{2}", "{12}"}
        assert all(np.isfinite(a["nats"]) and np.isfinite(a["stderr_nats"]) for a in atoms.values())
        assert np.isclose(atoms["{12}"]["bits"], atoms["{12}"]["nats"] / np.log(2))
        total = sum(a["nats"] for a in atoms.values())
        assert np.isclose(total, row["joint_information"]["nats"], atol=1e-9)
        # per pixel: the atom maps add up to the joint information's map
        joint_map = maps["subset_maps"][i, 3]
        np.testing.assert_allclose(sum(maps[f"atom_{n}"][i] for n in atoms), joint_map, atol=1e-9)
        # ccs's rule sets exactly one of redundancy and synergy to 0: recorded as such, not as an estimate
        fixed = {n: a["fixed_by"] for n, a in atoms.items() if "fixed_by" in a}
        assert len(fixed) == 1 and set(fixed) <= {"{1}{2}", "{12}"} and all(atoms[n]["nats"] == 0 for n in fixed)
        # every form's informations from the same pass; the result's form is one of them
        forms = row["forms"]
        assert {"anchored", "orthogonal", "standard", "disagreements"} == set(forms)
        for prompt, value in row["subset_information"].items():
            assert np.isclose(forms["anchored"]["subset_information"][prompt]["nats"], value["nats"], atol=1e-9)
        # the joint of the two gap forms is the same gap; the standard form's is not
        full = record["config"]["subset_prompts"][-1]
        assert np.isclose(forms["orthogonal"]["subset_information"][full]["nats"],
                          forms["anchored"]["subset_information"][full]["nats"], atol=1e-9)
        for d in forms["disagreements"]:
            assert abs(d["difference_nats"]) > 3 * d["paired_stderr_nats"]
    printed = capsys.readouterr().out
    assert "redundancy" in printed and "note: ccs:" in printed and "every form, same draws" in printed
    assert "(ccs sign rule)" in printed or "(ccs: the co-information is the redundancy)" in printed
    assert "-0.0000" not in printed
    assert Image.open(out / "panel.png").size[0] > 800


def test_cli_mi_and_generate(folder, tmp_path):
    assert main(["mi", PROMPT, "--words", "red", "beach", "--model", str(folder), "--out", str(tmp_path / "mi"), *FAST]) == 0
    record = json.loads((tmp_path / "mi" / "result.json").read_text())
    assert set(record["results"][0]["cmi"]) == {"red", "beach"}
    assert record["results"][0]["mi_prompt"]["nats"] >= 0
    assert main(["generate", PROMPT, "--model", str(folder), "--seed", "3", "--steps", "2", "--out", str(tmp_path / "img.png")]) == 0
    assert Image.open(tmp_path / "img.png").size == (16, 16)


def test_api_matches_the_cli_numbers_and_is_device_count_independent(pipeline, tmp_path):
    images = generated_images(pipeline, PROMPT, [0], GenerationConfig(steps=3))
    kwargs = dict(images=images, n_samples=8, chunk_size=1, key=0)
    one = analyze(pipeline, PROMPT, ["red", "car"], devices=jax.devices()[:1], **kwargs)
    eight = analyze(pipeline, PROMPT, ["red", "car"], devices=jax.devices(), **kwargs)
    for name in one.result.names:
        np.testing.assert_allclose(eight.result.atoms[name], one.result.atoms[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(eight.result.atom_maps[name], one.result.atom_maps[name], rtol=1e-4, atol=1e-7)
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(pipeline.path), "--seed", "0", "--samples", "8",
                 "--steps", "3", "--chunk-size", "1", "--out", str(tmp_path / "cli")]) == 0
    record = json.loads((tmp_path / "cli" / "result.json").read_text())
    for name in one.result.names:
        assert np.isclose(record["results"][0]["atoms"][name]["nats"], one.result.atoms[name][0], rtol=1e-5, atol=1e-7)


def test_two_prompts_of_the_same_k_compile_once(pipeline, compilations):
    images = generated_images(pipeline, PROMPT, [0], GenerationConfig(steps=2))
    other = generated_images(pipeline, "a blue dog on the beach", [1], GenerationConfig(steps=2))
    kwargs = dict(n_samples=6, chunk_size=2, key=1)
    analyze(pipeline, PROMPT, ["red", "car"], images=images, **kwargs)
    with compilations() as count:
        res = analyze(pipeline, "a blue dog on the beach", ["dog", "beach"], conditional=True, images=other, **kwargs)
    assert count[0] == 0
    assert res.subsets.prompts[0] == "a blue on the"


def test_conditional_measures_and_user_image(pipeline, tmp_path):
    pixels = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = given_images(pipeline, jaxpid.load_image(tmp_path / "photo.png"), "photo.png")
    res = analyze(pipeline, PROMPT, ["red", "car"], images=image, conditional=True,
                  measure="imin", alternatives={"red": ["blue"], "car": ["dog", "man"]}, n_samples=6)
    assert res.images.latents.shape == (1,) + pipeline.latent_shape
    assert res.config["alternative_prompts"] == [["a blue on the beach"], ["a dog on the beach", "a man on the beach"]]
    ppid = analyze(pipeline, PROMPT, ["red", "car"], images=image, measure="ppid", log_prior=np.log([0.1, 0.2]),
                   level="mean", n_samples=6)
    assert ppid.result.level == "mean" and ppid.result.config["log_prior"][0] == pytest.approx(list(np.log([0.1, 0.2])))
    info = word_information(pipeline, PROMPT, ["red", "car"], images=res.images, n_samples=6)
    assert info.cmi.shape == (1, 2) and info.cmi_maps.shape[1:] == (2,) + pipeline.latent_shape[1:]
    save_pid(ppid, tmp_path / "saved")
    assert (tmp_path / "saved" / "panel.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["pid", PROMPT, "--sources", "red", "boat"], "'boat' is not in the prompt"),
        (["pid", "a red car and a red boat", "--sources", "red", "car"], "say which: red@1, red@2"),
        (["pid", PROMPT, "--sources", "a", "red", "car", "on", "beach"], "allow_large_k"),
        (["pid", " ".join(["red car"] * 40), "--sources", "red@1", "car@1"], "tokens"),
        (["pid", PROMPT, "--sources", "red", "car", "--image", "NOT_AN_IMAGE"], "cannot read as an image"),
        (["pid", PROMPT, "--sources", "red", "car", "--measure", "ppid"], "needs word priors"),
        (["pid", PROMPT, "--sources", "red", "car", "--measure", "imin"], "alternative words"),
        (["mi", PROMPT, "--words", "boat"], "'boat' is not in the prompt"),
    ],
)
def test_bad_input_gets_a_specific_error_and_writes_nothing(folder, tmp_path, capsys, args, message):
    if "NOT_AN_IMAGE" in args:
        (tmp_path / "bad.png").write_text("not a png")
        args = [str(tmp_path / "bad.png") if a == "NOT_AN_IMAGE" else a for a in args]
    out = tmp_path / "out"
    assert main([*args, "--model", str(folder), "--out", str(out), *FAST]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    (tmp_path / "notapipe").mkdir()
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(tmp_path / "notapipe"), "--out", str(tmp_path / "o")]) == 2
    assert "model_index.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_existing_results_are_not_overwritten_silently(folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--out", str(out), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "result.json").read_text() == "{}"


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "jaxpid.cli", "pid", "--help"], capture_output=True, text=True, check=True)
    assert "--sources" in out.stdout and "redundancy" in out.stdout


def test_presets_resolve_and_explicit_options_win(folder, tmp_path):
    prior = tmp_path / "priors.json"
    prior.write_text(json.dumps({"format": "probability", "words": {"red": 0.05, "car": 0.2}}))
    out = tmp_path / "dpid"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--preset", "diffusionpid",
                 "--prior", f"file:{prior}", "--samples", "6", "--steps", "2", "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["measure"] == "ppid" and record["level"] == "mean" and record["config"]["run"]["preset"] == "diffusionpid"
    assert "blind to the designed bias" in record["notes"][0] and record["notes"][1].startswith("orthogonal form:")
    assert record["config"]["images"]["generated"]["seeds"] == [42]
    assert record["config"]["estimator"]["n_samples"] == 6  # explicit beats the preset's 50
    assert record["config"]["prior"]["log_prior"] == pytest.approx([np.log(0.05), np.log(0.2)])


def test_diffusionpid_preset_with_a_bert_prior_end_to_end(folder, tmp_path):
    from jaxpid.priors.bert import write_test_bert

    bert = write_test_bert(tmp_path / "bert", ["a", "red", "car", "on", "the", "beach"], key=jax.random.key(0))
    out = tmp_path / "dpid-bert"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--conditional", "--model", str(folder),
                 "--preset", "diffusionpid", "--prior", f"bert:{bert}", "--samples", "6", "--steps", "2",
                 "--out", str(out)]) == 0
    record = json.loads((out / "result.json").read_text())
    prior = record["config"]["prior"]
    assert prior["spec"] == f"bert:{bert}" and len(prior["log_prior"]) == 2 and all(v < 0 for v in prior["log_prior"])
    assert record["measure"] == "ppid" and record["config"]["conditional"] is True
    atoms = record["results"][0]["atoms"]
    assert np.isclose(sum(a["nats"] for a in atoms.values()), record["results"][0]["joint_information"]["nats"])
    assert "baseline_redundancy" in record["results"][0]
    assert np.load(out / "maps.npz")["baseline_redundancy"].dtype == bool


def test_baseline_redundancy_map_thresholds_and_intersects():
    from jaxpid.analysis import baseline_redundancy_map, mask_iou

    a = np.zeros((8, 8))
    b = np.zeros((8, 8))
    a[1:3, 1:3] = 5.0
    b[2:4, 2:4] = 5.0
    both = baseline_redundancy_map(a, b)
    assert both.sum() == 1 and both[2, 2]
    assert mask_iou(both, both) == 1.0


# ---------------------------------------------------------------------------------------------
# Reproducible from result.json alone; options checked before any model work


def _atoms(record):
    return [[a["nats"] for a in row["atoms"].values()] for row in record["results"]]


def test_a_saved_pid_runs_again_bit_for_bit_from_its_result_json(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--conditional", "--measure", "ccs", "--key", "3",
                 "--model", str(folder), "--seed", "0", "1", "--out", str(out), *FAST]) == 0
    record = json.loads((out / "result.json").read_text())
    assert record["config"]["run"]["estimator"]["key"] == 3 and record["config"]["run"]["conditional"] is True
    again = jaxpid.rerun(out)  # the model, images, key and settings all come from the record
    for i, row in enumerate(record["results"]):
        for name, atom in row["atoms"].items():
            assert again.result.atoms[name][i] == atom["nats"]  # identical, not close
    capsys.readouterr()
    assert main(["rerun", str(out / "result.json"), "--out", str(tmp_path / "again")]) == 0
    assert "every value is identical to the recorded one" in capsys.readouterr().out
    assert _atoms(json.loads((tmp_path / "again" / "result.json").read_text())) == _atoms(record)
    # a different key is a different run: the comparison must be able to fail
    changed = json.loads((out / "result.json").read_text())
    changed["config"]["run"]["estimator"]["key"] = 4
    other = jaxpid.rerun(changed)
    assert any(other.result.atoms[n][0] != record["results"][0]["atoms"][n]["nats"] for n in other.result.names)
    # and the command says so with its exit status
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert main(["rerun", str(tmp_path / "changed.json"), "--out", str(tmp_path / "other")]) == 1
    assert "the numbers differ from the recorded ones" in capsys.readouterr().out


def test_a_saved_mi_of_a_given_image_runs_again(folder, tmp_path, capsys):
    pixels = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    out = tmp_path / "mi"
    assert main(["mi", PROMPT, "--words", "red", "beach", "--image", str(tmp_path / "photo.png"), "--model", str(folder),
                 "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["rerun", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "every value is identical" in capsys.readouterr().out
    (tmp_path / "photo.png").unlink()
    assert main(["rerun", str(out), "--out", str(tmp_path / "third")]) == 2
    assert "is not there any more" in capsys.readouterr().err


def test_a_target_stderr_adds_rounds_records_them_and_runs_again(folder, tmp_path, capsys):
    out = tmp_path / "mi"
    # an unreachable target: it stops at --max-samples, after 3 rounds of 8 samples
    assert main(["mi", PROMPT, "--words", "red", "--model", str(folder), "--out", str(out), *FAST,
                 "--target-stderr", "1e-9", "--max-samples", "24"]) == 0
    printed = capsys.readouterr().out
    assert "24 log-SNR samples per image, in 3 rounds: max_samples reached (target s.e. 1e-09" in printed
    record = json.loads((out / "result.json").read_text())
    estimator = record["config"]["estimator"]
    assert estimator["n_samples"] == 24 and estimator["rounds"] == 3 and estimator["samples_per_round"] == 8
    assert estimator["target_stderr"] == 1e-9 and estimator["largest_stderr"] > 0
    assert record["config"]["run"]["estimator"]["target_stderr"] == 1e-9
    assert main(["rerun", str(out), "--out", str(tmp_path / "again")]) == 0
    assert "every value is identical" in capsys.readouterr().out


@pytest.mark.parametrize(
    "option, message",
    [
        (["--samples", "1"], "n_samples"),
        (["--chunk-size", "0"], "chunk_size"),
        (["--key", "-1"], "key"),
        (["--steps", "0"], "steps"),
        (["--seed", "-3"], "seed"),
        (["--measure", "ppid"], "needs word priors"),
        (["--prior", "bogus"], "prior spec"),
        (["--max-samples", "400"], "give target_stderr too"),
        (["--target-stderr", "0.1", "--samples", "33"], "even number of samples per round"),
        (["--target-stderr", "0"], "positive number"),
    ],
)
def test_options_are_refused_before_any_model_work(tmp_path, capsys, option, message):
    """The model named here does not exist: the error must be about the option, found first."""
    out = tmp_path / "out"
    args = ["pid", PROMPT, "--sources", "red", "car", "--model", str(tmp_path / "no-such-model"), "--out", str(out)]
    assert main([*args, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "no-such-model" not in err
    assert not out.exists()


def test_run_config_options_presets_and_round_trip():
    config = jaxpid.RunConfig.from_options("diffusionpid", n_samples=8, sampler="uniform", conditional=True)
    assert (config.pid.measure, config.pid.level, config.seeds, config.prior) == ("ppid", "mean", (42,),
                                                                                  "bert:bert-base-uncased")
    assert config.estimator.n_samples == 8 and config.estimator.sampler == jaxpid.UniformSampler()
    assert jaxpid.RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert jaxpid.RunConfig.from_options(**config.options()).to_dict() == {**config.to_dict(), "preset": None}
    with pytest.raises(jaxpid.ConfigError, match="unknown option"):
        jaxpid.RunConfig.from_options(n_sample=8)
    with pytest.raises(jaxpid.ConfigError, match="preset"):
        jaxpid.RunConfig.from_options("kong")
