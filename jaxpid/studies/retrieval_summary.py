"""The retrieval study's summary, figure and one-call run (docs/studies.md#compositional-retrieval).

Accuracy of the lowest-NLL choice with a 95 % Wilson interval, the chance level (mean of
1/#captions), per-group accuracy, the orthogonal-MI choice's accuracy, and the mean NLL margin
(true caption minus the best other; negative when right) with its standard error over items.
Items that expect a tie (equivalent captions) are reported apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxpid.io.studies import save_study
from jaxpid.io.study_plots import retrieval_bars
from jaxpid.sd.pipeline import Pipeline
from jaxpid.studies.base import FinishedStudy, StudyRun, finite, run_study, throughput
from jaxpid.studies.retrieval import RetrievalConfig, RetrievalPlan, plan_retrieval
from jaxpid.studies.stats import mean_and_stderr, wilson


def accuracy(records: Sequence[Mapping]) -> dict:
    """Accuracy (NLL and orthogonal-MI choice) with Wilson intervals, chance, margin, over records."""
    n = len(records)
    if n == 0:
        return {"n_items": 0}
    correct = float(sum(r["correct"] for r in records))
    correct_mi = float(sum(r["correct_mi"] for r in records))
    margin, margin_se = mean_and_stderr([r["margin"] for r in records])
    return {
        "n_items": n,
        "n_correct": correct,
        "accuracy": correct / n, "accuracy_ci": list(wilson(correct, n)),
        "accuracy_mi": correct_mi / n, "accuracy_mi_ci": list(wilson(correct_mi, n)),
        "chance": float(np.mean([1.0 / r["n_captions"] for r in records])),
        "margin_mean": margin, "margin_stderr": margin_se,
        "ties": int(sum(0 < r["correct"] < 1 for r in records)),
    }


def retrieval_summary(rows: pa.Table) -> dict:
    """The study's numbers from its rows (``items.parquet``)."""
    records = rows.to_pylist()
    scored = [r for r in records if r["expect"] != "tie"]
    tied = [r for r in records if r["expect"] == "tie"]
    summary = accuracy(scored)
    summary["n_items_total"] = len(records)
    summary["choice"] = "lowest NLL (standard form); accuracy_mi: largest orthogonal i(x; caption) against \"\""
    summary["margin"] = ("NLL of the true caption minus the lowest NLL of the others, nats per image "
                         "(negative: the true caption is more likely)")
    summary["ties_note"] = "a tie at the best score earns 1/m (m captions tied): a random tie-break's expectation"
    groups = sorted({r["group"] for r in scored if r["group"] is not None})
    summary["groups"] = {g: accuracy([r for r in scored if r["group"] == g]) for g in groups}
    # what common random numbers buy: the margin's Monte-Carlo error, shared draws vs independent ones
    shared = np.mean([r["margin_stderr"] for r in records])
    independent = np.mean([r["margin_stderr_independent"] for r in records])
    summary["margin_mc_stderr"] = {"shared_draws": float(shared), "independent_draws": float(independent),
                                   "ratio": float(independent / shared) if shared > 0 else None}
    summary["expected_ties"] = _expected_ties(tied) if tied else None
    return summary


def _expected_ties(records: Sequence[Mapping]) -> dict:
    """Items whose captions should score alike (e.g. synonyms): how often the other caption is
    preferred, and the margin, which should be about 0."""
    preferred = float(sum(1 - r["correct"] for r in records))
    n = len(records)
    margin, margin_se = mean_and_stderr([r["margin"] for r in records])
    out = {
        "n_items": n,
        "other_preferred": preferred / n, "other_preferred_ci": list(wilson(preferred, n)),
        "margin_mean": margin, "margin_stderr": margin_se,
        "abs_margin_mean": mean_and_stderr([abs(r["margin"]) for r in records])[0],
        "note": "captions meant to be equivalent (expect: tie): neither should be preferred; about half either "
                "way and a margin near 0 is the designed answer",
    }
    groups = sorted({r["group"] for r in records if r["group"] is not None})
    if len(groups) > 1:
        out["groups"] = {g: _expected_ties([r for r in records if r["group"] == g]) for g in groups}
    return out


def save_retrieval(out: str | Path, rows: pa.Table, plan: RetrievalPlan, run: StudyRun | None = None
                   ) -> tuple[dict, list[Path]]:
    """Summarise the rows and write ``summary.json``, ``items.parquet`` and ``groups.png`` into
    ``out`` (each atomically). -> (summary, paths)."""
    summary = retrieval_summary(rows)
    record = {**summary, "config": plan.config.to_dict(), "items": plan.manifest["jobs"]}
    if run is not None and run.summary.jobs_computed:
        record["run"] = throughput(run)
    record = finite(record)
    figure = retrieval_bars(summary["groups"], summary, summary.get("chance", float("nan")))
    paths = save_study(out, "retrieval", record, tables={"items": rows}, figures={"groups": figure},
                       model=plan.model)
    return record, paths


def run_retrieval(pipeline: Pipeline, items, out: str | Path, config: RetrievalConfig = RetrievalConfig(), *,
                  progress: bool = False, devices: Sequence | None = None) -> FinishedStudy:
    """Run (or resume) the study in this process and write its outputs into ``out``.

    Args:
      items: a JSONL manifest path or item dicts (``demo_items()``, ``aro.load_aro(...)``).
    """
    plan = plan_retrieval(items, config, pipeline.identity())
    run = run_study(plan, out, pipeline=pipeline, progress=progress, devices=devices)
    if not run.complete:
        return FinishedStudy(run, None, [])
    summary, paths = save_retrieval(out, run.rows, plan, run)
    return FinishedStudy(run, summary, paths)
