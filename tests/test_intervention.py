"""Prompt intervention: the same initial noise for both images, the information against an
independent pass, one compilation per shape, resume, bad jobs refused by line, the summary
against scipy, the demo's jobs and the notebook. End-to-end runs use a tiny random pipeline with
a VAE (so maps are upsampled from latents to pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pytest
import scipy.stats

import notebooks
import jaxpid
from jaxpid.cli.app import main
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.estimator import information
from jaxpid.demo import dataset
from jaxpid.errors import ConfigError, PromptError
from jaxpid.sd.ddim import GenerationConfig, generate
from jaxpid.studies.base import run_study
from jaxpid.studies.intervention import (
    InterventionConfig,
    check_jobs,
    demo_jobs,
    edit_images,
    job_prompts,
    plan_intervention,
    read_intervention_jobs,
    upsample,
)
from jaxpid.studies import intervention
from jaxpid.studies.intervention import run_intervention
from jaxpid.studies.intervention_summary import intervention_summary

CONFIG = InterventionConfig(EstimatorConfig(n_samples=4, chunk_size=2), GenerationConfig(steps=2), batch_size=2,
                            examples=1)
FAST = ["--samples", "4", "--chunk-size", "2", "--steps", "2", "--batch-size", "2", "--no-progress"]
JOBS = [
    {"prompt": "a red car on the beach", "word": "red", "seed": 0, "group": "colour"},
    {"prompt": "a blue dog on the beach", "word": "dog", "seed": 1, "group": "thing"},
    {"prompt": "a photo of a red dog", "word": "red", "seed": 2, "group": "colour"},
    {"prompt": "the man on the beach", "word": "man", "seed": 3, "group": "thing"},
]


@pytest.fixture(scope="module")
def folder(sd1_folder):
    return sd1_folder


@pytest.fixture(scope="module")
def pipeline(folder):
    return jaxpid.load_pipeline(folder)


def test_editing_nothing_gives_the_identical_image_and_no_change(pipeline):
    prompts, edited = ["a red car", "a blue dog"], ["a red car", "a blue cat"]
    images = edit_images(pipeline, prompts, edited, [7, 8], GenerationConfig(steps=2))
    # the same prompt from the same seed in the same call: bit for bit the same image, zero change
    np.testing.assert_array_equal(images.original_latents[0], images.edited_latents[0])
    np.testing.assert_array_equal(images.original_pixels[0], images.edited_pixels[0])
    assert not images.pixel_change[0].any() and not images.latent_change[0].any()
    assert images.pixel_change[1].sum() > 0 and images.latent_change[1].sum() > 0
    assert images.pixel_change.shape == (2,) + pipeline.image_size
    assert images.latent_change.shape == (2,) + pipeline.latent_shape[1:]
    # the noise is the seed's, whatever else is in the batch: the same prompt and seed elsewhere in
    # another batch gives the same image (up to float32 rounding)
    other = generate(pipeline, ["a blue dog", "a red car", "a photo of a man", "the beach"], seeds=[8, 1, 2, 3], steps=2)
    np.testing.assert_allclose(np.asarray(other.latents[0]), images.original_latents[1], rtol=1e-4, atol=1e-4)


def test_job_prompts_place_every_conditioning():
    jp = job_prompts({"prompt": "a red car on the beach", "word": "red", "seed": 0, "sources": ["beach"]})
    assert jp.k == 2 and jp.edited == "a car on the beach"
    assert jp.conditionings == ["a car on the", "a red car on the", "a car on the beach", "a red car on the beach", ""]
    assert jp.pairs == [(3, 2), (3, 1), (3, 4)] and jp.edit_pair == jp.cmi_pair == 0 and jp.mi_pair == 2
    jp = job_prompts({"prompt": "a red car, on the beach", "word": "car", "seed": 0, "replacement": "dog"})
    assert jp.edited == "a red dog, on the beach" and jp.conditionings[-1] == jp.edited
    assert jp.pairs == [(1, 0), (1, 2), (1, 3)] and jp.edit_pair == 2
    jp = job_prompts({"prompt": "a red car and a red dog", "word": "red@2", "seed": 0}, )
    assert jp.edited == "a red car and a dog"


def test_study_information_matches_an_independent_pass_and_compiles_once_per_shape(pipeline, tmp_path, compilations):
    plan = plan_intervention(JOBS, CONFIG, pipeline.identity())
    assert len(plan.batches) == 2 and len({b.shape for b in plan.batches}) == 1
    first = run_study(plan, tmp_path / "study", pipeline=pipeline, shard=(0, 2))
    assert not first.complete
    with compilations() as count:  # the second batch of the same shape compiles nothing
        study = run_intervention(pipeline, JOBS, tmp_path / "study", CONFIG)
    assert count[0] == 0
    assert study.run.summary.computed == (1,) and study.run.summary.skipped == 1  # resumed
    rows = study.run.rows.to_pylist()
    assert [r["item"] for r in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row["edit"] == "delete" and row["information"] == row["cmi"] and row["k"] == 1
        assert row["change_pixel"] > 0 and np.isfinite(row["pearson_pixel"])
    # the CMI is the orthogonal gap of (prompt, prompt without the word) on the original image
    # with the job's own key: the same draws, so the same number from a pass of its own
    job = JOBS[2]
    images = edit_images(pipeline, [job["prompt"], JOBS[3]["prompt"]], ["a photo of a dog", "the on the beach"],
                         [job["seed"], JOBS[3]["seed"]], CONFIG.generation)
    conds = pipeline.encode_prompt(["a photo of a dog", job["prompt"]])
    key = jax.random.fold_in(CONFIG.estimator.prng_key(), 2)[None]
    alone = information(pipeline.denoiser, images.original_latents[:1], conds, key=key, n_samples=4, chunk_size=2)
    assert rows[2]["cmi"] == pytest.approx(alone.mi_orthogonal[0, 1], rel=1e-4)
    assert rows[2]["change_pixel"] == pytest.approx(images.pixel_change[0].mean(), rel=1e-5)
    # outputs: summary, items, figures; only the first job keeps its images
    names = sorted(p.name for p in study.paths)
    assert names == ["examples.png", "items.parquet", "scatter.png", "summary.json"]
    record = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert record["n_items"] == 4 and record["study"] == "intervention" and set(record["groups"]) == {"colour", "thing"}
    # the attention baseline comes from the same pass: the word's map under the prompt, as with_aux gives it
    attention = record["attention"]
    assert attention["n_items"] == 4 and "same fused pass" in record["attention_note"]
    assert np.isfinite(attention["pearson_image"]) and np.isfinite(attention["pearson_pixel_mean"])
    for row in rows:
        assert row["attention"] > 0 and np.isfinite(row["pearson_pixel_attention"])
    assert record["run"]["items_computed"] == 2 and record["config"]["estimator"]["n_samples"] == 4
    assert [r["original"] is not None for r in rows] == [True, False, False, False]
    assert not [p for p in (tmp_path / "study").iterdir() if p.name.startswith(".")]


def test_replacements_and_pid_sources(pipeline, tmp_path):
    jobs = [{"prompt": "a red car on the beach", "word": "car", "seed": 0, "replacement": "dog", "sources": ["red"]},
            {"prompt": "a blue dog on the beach", "word": "blue", "seed": 1, "replacement": "red", "sources": ["dog"]}]
    study = run_intervention(pipeline, jobs, tmp_path / "study", CONFIG)
    for row in study.run.rows.to_pylist():
        assert row["edit"] == "replace" and row["k"] == 2 and row["measure"] == "mmi"
        assert row["information"] != row["cmi"]  # against the replaced prompt, not the deleted one
        subsets = row["subset_information"]  # i(x; sources in b | rest), bitmask order: 0, word, source, both
        atoms = row["redundancy"] + row["unique_word"] + row["unique_source"] + row["synergy"]
        assert atoms == pytest.approx(subsets[3], rel=1e-9)
        assert row["redundancy"] == pytest.approx(min(subsets[1], subsets[2]), rel=1e-9)  # mmi
    swap = study.run.rows.to_pylist()[0]
    assert swap["edited_prompt"] == "a red dog on the beach" and swap["sources"] == ["red"]
    assert study.summary["edits"] == {"delete": 0, "replace": 2} and study.summary["pid"]["n_items"] == 2


def test_bad_jobs_are_refused_by_line_and_nothing_is_written(folder, pipeline, tmp_path):
    path = tmp_path / "jobs.jsonl"
    cases = [
        ('{"prompt": "a red car", "word": "dog", "seed": 0}', PromptError, r"line 2: .*'dog' is not in the prompt"),
        ('{"prompt": "a red car", "word": "red", "seed": 0, "replacement": "Red"}', PromptError,
         r"line 2: the replacement 'Red' is the word itself"),
        ('{"prompt": "a red car", "word": "red", "seed": -1}', ConfigError, r"line 2: seed must be"),
        ('{"prompt": "a red car", "word": "red", "seed": 0, "sources": ["red"]}', PromptError, "line 2: .*same word"),
        ('{"prompt": "a red car", "word": "red", "seed": 0, "colour": "red"}', ConfigError, r"line 2: unknown field"),
        ('{"prompt": "a red car", "word": "red"}', ConfigError, r"line 2: missing \['seed'\]"),
    ]
    for line, error, message in cases:
        path.write_text('{"prompt": "a blue dog", "word": "dog", "seed": 0}\n' + line + "\n")
        with pytest.raises(error, match=message):
            read_intervention_jobs(path)
        out = tmp_path / "out"
        assert main(["study", "intervene", str(path), "--model", str(folder), "--out", str(out), *FAST]) == 2
        assert not out.exists()
    # a prompt over the tokenizer's length: refused by its line before any batch is computed
    path.write_text('{"prompt": "a blue dog", "word": "dog", "seed": 0}\n'
                    + json.dumps({"prompt": "a red " + "car " * 80, "word": "red", "seed": 0}) + "\n")
    with pytest.raises(PromptError, match="line 2: .*tokens"):
        run_study(plan_intervention(path, CONFIG, pipeline.identity()), tmp_path / "long", pipeline=pipeline)
    assert not (tmp_path / "long").exists()


def test_cli_runs_a_job_file(folder, tmp_path, capsys, monkeypatch):
    # a denoiser that cannot return its attention: the baseline is null, with the reason
    monkeypatch.setattr(intervention, "captures_attention", lambda pipeline: False)
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in JOBS[:2]))
    out = tmp_path / "out"
    assert main(["study", "intervene", str(path), "--model", str(folder), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "2 jobs (2 deletions, 0 replacements)" in printed and "jobs/min" in printed
    assert "attention baseline: none" in printed and "with_aux" in printed
    record = json.loads((out / "summary.json").read_text())
    assert record["attention"] is None and "with_aux" in record["attention_note"]
    assert sorted(p.name for p in out.iterdir()) == ["examples.png", "items.parquet", "parts", "scatter.png",
                                                     "summary.json"]
    with pytest.raises(SystemExit):
        main(["study", "intervene", str(path), "--out", str(out), "--edit", "wrong"])
    assert main(["study", "intervene", str(path), "--out", str(out), "--n", "3"]) == 2  # demo options need demo


def test_attention_baseline_is_computed_on_the_demo_model(tmp_path, capsys):
    """The demo model's denoiser has with_aux: its word attention is correlated with the change at
    both levels, from the same fused pass as the information."""
    demo = jaxpid.load_pipeline("demo")
    config = InterventionConfig(EstimatorConfig(n_samples=4, chunk_size=2), GenerationConfig(steps=2), batch_size=4,
                                examples=0)
    study = run_intervention(demo, demo_jobs(4), tmp_path / "demo", config)
    attention = study.summary["attention"]
    assert attention["n_items"] == 4
    assert np.isfinite(attention["pearson_image"]) and np.isfinite(attention["pearson_pixel_mean"])
    rows = study.run.rows.to_pylist()
    # the word's attention mass: a share of the prompt's, summed over layers and the latent grid
    assert all(np.isfinite(r["attention"]) and r["attention"] > 0 for r in rows)
    assert "attention baseline: image level r = " in study.summary.text()


def test_summary_statistics_match_scipy():
    rng = np.random.default_rng(0)
    n = 30
    info = rng.gamma(2.0, size=n)
    change = 0.02 * info + rng.normal(0, 0.02, size=n) ** 2
    pixel = rng.uniform(-0.2, 0.9, size=n)
    pixel[3] = np.nan  # a job whose image did not change has no pixel-level correlation
    rows = pa.table({
        "item": np.arange(n), "prompt": ["p"] * n, "word": ["w"] * n, "edit": ["delete"] * n,
        "edited_prompt": ["e"] * n, "seed": np.zeros(n, int), "group": ["a", "b"] * (n // 2),
        "information": info, "cmi": info, "change_pixel": change, "change_latent": 2 * change,
        "pearson_pixel": pixel, "pearson_latent": pixel, "attention": pa.nulls(n, pa.float64()),
        "pearson_pixel_attention": pa.nulls(n, pa.float64()), "measure": pa.nulls(n, pa.string()),
        **{name: pa.nulls(n, pa.float64()) for name in ("redundancy", "unique_word", "unique_source", "synergy")},
    })
    s = intervention_summary(rows)
    assert s["pearson_image"] == pytest.approx(scipy.stats.pearsonr(info, change)[0])
    assert s["spearman_image"] == pytest.approx(scipy.stats.spearmanr(info, change)[0])
    assert s["pearson_image_ci"][0] < s["pearson_image"] < s["pearson_image_ci"][1]
    finite = pixel[np.isfinite(pixel)]
    assert s["pearson_pixel_mean"] == pytest.approx(finite.mean()) and s["pearson_pixel_n"] == n - 1
    assert s["pearson_pixel_stderr"] == pytest.approx(scipy.stats.sem(finite))
    assert s["attention"] is None and s["pid"] is None and s["n_items"] == n
    assert s["groups"]["a"]["n_items"] == 15
    worst = s["disagreements"]["changed_less_than_predicted"][0]
    assert worst["rank_gap"] == min(scipy.stats.rankdata(change) - scipy.stats.rankdata(info)) / n


def test_upsample_matches_jax_image_resize():
    maps = np.random.default_rng(1).normal(size=(2, 4, 5))
    ours = upsample(maps, (16, 20))
    theirs = jax.image.resize(maps, (2, 16, 20), method="linear", antialias=False)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-6)
    assert upsample(maps, (4, 5)) is not None and np.array_equal(upsample(maps, (4, 5)), maps)


def test_demo_jobs_are_valid_and_reproducible():
    jobs = demo_jobs(24, seeds_per_caption=2)
    assert jobs == demo_jobs(24, seeds_per_caption=2) and len(jobs) == 24
    check_jobs(jobs)
    for job in jobs:
        dataset.parse_caption(job["prompt"])  # captions of the demo's grammar
        assert job["group"] in ("colour", "shape", "relation") and len(job["sources"]) == 1
    assert [j["seed"] for j in jobs[:4]] == [0, 1, 0, 1] and jobs[0]["prompt"] == jobs[1]["prompt"]
    replaced = demo_jobs(12, edit="replace")
    check_jobs(replaced)
    for job in replaced:
        edited = job_prompts(job).edited
        dataset.parse_caption(edited)  # the edit stays in the grammar
        assert job["replacement"] != job["word"].split("@")[0]
    assert {"replacement" in j for j in demo_jobs(8, edit="both")} == {True, False}


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "intervention.ipynb"


@pytest.mark.e2e
def test_intervention_notebook_executes(tmp_path):
    """notebooks/intervention.ipynb runs a small intervention study on the demo model."""
    notebook = notebooks.execute(NOTEBOOK.name, tmp_path)
    assert notebooks.images_in(notebook) >= 2  # scatter, examples
    printed = notebooks.printed_by(notebook)
    assert "jobs/min" in printed and "Pearson r" in printed
