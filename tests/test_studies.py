"""The machinery every study runs on: manifests, plans the sweep runners execute and resume,
the study folder, and the statistics studies report (against scipy)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
import scipy.stats

import jaxpid
from jaxpid.errors import ConfigError, PromptError
from jaxpid.io.studies import save_study
from jaxpid.studies.base import StudyPlan, StudySummary, complete_study, run_study
from jaxpid.studies.manifest import read_manifest, resolve_path
from jaxpid.studies.stats import fisher_interval, mean_and_stderr, pearson, ranks, spearman, wilson

PROMPTS = ["a red car", "a blue dog", "a red dog on the beach", "the car", "a blue car on the beach"]


@dataclasses.dataclass(frozen=True)
class EchoConfig:
    scale: float = 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class EchoPlan(StudyPlan):
    """A study whose rows are a number per item from the model's text encoder."""

    study = "echo"

    def prompts(self, item):
        return [item["prompt"]]

    def compute(self, pipeline, batch, *, devices=None):
        items, n = self.batch_items(batch, 2)
        embedding = np.asarray(pipeline.encode_prompt([item["prompt"] for item in items]))
        norms = self.config.scale * np.linalg.norm(embedding.reshape(len(items), -1), axis=1)
        rows = pa.table({"item": [item["index"] for item in items[:n]], "norm": norms[:n]})
        return rows, {"seconds": 0.0, "compile_s": 0.0}

    def summarise(self, run, pipeline=None):
        norms = run.rows["norm"].to_numpy()
        return EchoSummary("echo", {"n_items": len(norms), "mean_norm": float(norms.mean())},
                           tables={"items": run.rows}, texts={"norms.txt": " ".join(f"{v:.3f}" for v in norms)})


class EchoSummary(StudySummary):
    def text(self):
        return f"{self['n_items']} items, mean norm {self['mean_norm']:.3f}"


@pytest.fixture(scope="module")
def pipeline(sd1_pipeline):
    return sd1_pipeline


def _plan(pipeline, config=EchoConfig(), prompts=PROMPTS):
    items = [{"prompt": p, "words": len(p.split())} for p in prompts]
    return EchoPlan(items, config, pipeline.identity(), batch_size=2, shape_of=lambda item: item["words"] > 3,
                    source="test")


def test_a_study_runs_in_fixed_batches_and_resumes(pipeline, tmp_path):
    plan = _plan(pipeline)
    assert [(b.shape, b.jobs) for b in plan.batches] == [(False, (0, 1)), (False, (3,)), (True, (2, 4))]
    half = run_study(plan, tmp_path / "s", pipeline=pipeline, shard=(1, 3))
    assert not half.complete and half.summary.computed == (1,)
    whole = run_study(plan, tmp_path / "s", pipeline=pipeline)
    assert whole.complete and whole.summary.computed == (0, 2) and whole.summary.skipped == 1
    expected = [np.linalg.norm(np.asarray(pipeline.encode_prompt([p]))) for p in PROMPTS]
    assert whole.rows["item"].to_pylist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(whole.rows["norm"].to_numpy(), expected, rtol=1e-5)
    # the same study directory refuses another configuration or other items, naming it
    with pytest.raises(ConfigError, match="config.scale: 1.0 there, 2.0 now"):
        run_study(_plan(pipeline, EchoConfig(2.0)), tmp_path / "s", pipeline=pipeline)
    with pytest.raises(ConfigError, match="another job table"):
        run_study(_plan(pipeline, prompts=PROMPTS[:3]), tmp_path / "s", pipeline=pipeline)


def test_a_new_study_is_its_compute_and_summarise_the_runner_does_the_rest(pipeline, tmp_path):
    """The study contract: EchoPlan fills compute and summarise; complete_study runs, resumes,
    summarises and writes summary.json (the record's keys), its tables and texts."""
    plan = _plan(pipeline)
    half = complete_study(plan, tmp_path / "s", pipeline=pipeline, shard=(0, 2))
    assert half.summary is None and half.paths == [] and not (tmp_path / "s" / "summary.json").exists()
    notes = []
    done = complete_study(plan, tmp_path / "s", pipeline=pipeline, announce=notes.append)
    expected = [np.linalg.norm(np.asarray(pipeline.encode_prompt([p]))) for p in PROMPTS]
    assert done.run.summary.skipped == 2 and done.summary["n_items"] == 5
    assert done.summary.text() == f"5 items, mean norm {np.mean(expected):.3f}"
    record = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert record["study"] == "echo" and record["mean_norm"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert {p.name for p in done.paths} == {"summary.json", "items.parquet", "norms.txt"}
    assert notes == []  # no summary_note: nothing announced


def test_prompts_are_checked_before_any_batch_and_name_the_item(pipeline, tmp_path):
    plan = _plan(pipeline, prompts=["a red car", " ".join(["red car"] * 40)])
    with pytest.raises(PromptError, match="item 1: .*tokens"):
        run_study(plan, tmp_path / "s", pipeline=pipeline)
    assert not (tmp_path / "s" / "parts").exists() or not any((tmp_path / "s" / "parts").glob("part-*"))


def test_manifests_name_the_line_at_fault(tmp_path):
    path = tmp_path / "items.jsonl"
    (tmp_path / "a.png").write_bytes(b"")
    path.write_text('{"image": "a.png", "prompt": "x"}\n\n{"image": "b.png"}\n')
    with pytest.raises(ConfigError, match=r"line 3: missing \['prompt'\]"):
        read_manifest(path, required=["image", "prompt"])
    path.write_text('{"image": "a.png", "prompt": "x"}\nnot json\n')
    with pytest.raises(ConfigError, match="line 2: not JSON"):
        read_manifest(path, required=["image"])
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="line 1: expected one JSON object"):
        read_manifest(path, required=[])
    path.write_text("\n")
    with pytest.raises(ConfigError, match="has no items"):
        read_manifest(path, required=[])
    path.write_text('{"image": "a.png"}\n')
    (item,) = read_manifest(path, required=["image"])
    assert item["line"] == 1 and resolve_path(item["image"], tmp_path, "line 1") == tmp_path / "a.png"
    with pytest.raises(ConfigError, match="line 1: .*missing.png does not exist"):
        resolve_path("missing.png", tmp_path, "line 1")


def test_save_study_writes_summary_tables_and_figures(tmp_path):
    import matplotlib.pyplot as plt

    figure = plt.figure()
    paths = save_study(tmp_path / "out", "echo", {"n_items": 3}, tables={"items": pa.table({"a": [1, 2, 3]})},
                       figures={"plot": figure}, model={"name": "m"})
    assert sorted(p.name for p in paths) == ["items.parquet", "plot.png", "summary.json"]
    record = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert record["study"] == "echo" and record["n_items"] == 3 and record["provenance"]["model"] == {"name": "m"}


def test_statistics_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    r, (low, high), n = pearson(x, y)
    assert n == 40 and r == pytest.approx(scipy.stats.pearsonr(x, y)[0]) and low < r < high
    interval = scipy.stats.pearsonr(x, y).confidence_interval(0.95)  # scipy's is Fisher's too
    assert (low, high) == pytest.approx((interval.low, interval.high), abs=1e-9)
    y_ties = np.round(y)  # ties get average ranks
    assert spearman(x, y_ties)[0] == pytest.approx(scipy.stats.spearmanr(x, y_ties)[0])
    np.testing.assert_allclose(ranks(np.array([3.0, 1.0, 3.0, 2.0])), scipy.stats.rankdata([3, 1, 3, 2]))
    with_nan = np.append(x, np.nan), np.append(y, 1.0)
    assert pearson(*with_nan)[2] == 40  # pairs with a non-finite value are left out
    assert np.isnan(pearson([1, 2, 3], [1, 1, 1])[0])
    low, high = wilson(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook value
    assert mean_and_stderr([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1 / np.sqrt(3)))
    assert np.isnan(fisher_interval(0.5, 3)[0])


@pytest.mark.parametrize("study", ["localize", "intervene", "retrieve", "words", "validate"])
def test_every_study_takes_the_estimators_sampler(study):
    from jaxpid.cli.parsers import build_parser
    from jaxpid.cli.options import study_estimator

    parser = build_parser()
    base = ["study", study] + ([] if study == "validate" else ["demo"]) + ["--out", "x"]
    default = parser.parse_args(base)
    chosen = parser.parse_args(base + ["--sampler", "logistic", "--samples", "12"])
    assert study_estimator(default).sampler == jaxpid.StratifiedSampler()
    assert study_estimator(chosen) == jaxpid.EstimatorConfig(n_samples=12, sampler=jaxpid.LogisticSampler())
