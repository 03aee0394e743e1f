"""The retrieval study's summary, figure and one-call run (docs/studies.md#compositional-retrieval).

Accuracy of the lowest-NLL choice over all items (micro: ``accuracy`` = ``accuracy_micro``) with
a 95 % Wilson interval; the macro accuracy (the mean over groups of each group's accuracy, by ARO's
rules for its sets: ``MacroRule``) with a 95 % bootstrap interval; the chance level (mean of
1/#captions), per-group accuracy, the orthogonal-MI choice's accuracy, and the mean NLL margin
(true caption minus the best other; negative when right) with its standard error over items.
Items that expect a tie (equivalent captions) are reported apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxpid.errors import ConfigError
from jaxpid.io.studies import save_study
from jaxpid.io.study_plots import retrieval_bars
from jaxpid.sd.pipeline import Pipeline
from jaxpid.studies.aro import ARO_SETS, MIN_ATTRIBUTE_PAIR_ITEMS, SYMMETRIC_RELATIONS
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


# ---------------------------------------------------------------------------------------------
# Macro accuracy: each group's accuracy, then their mean


@dataclasses.dataclass(frozen=True)
class MacroRule:
    """How a set's macro accuracy averages: over which groups, leaving out which."""

    name: str
    key: str  # what an item's ``group`` is
    grouped: bool = True  # False: the set reports one accuracy over all items (macro = micro)
    min_items: int = 1  # groups with fewer scored items are left out
    excluded: frozenset[str] = frozenset()  # groups left out by name
    source: str = ""  # where the rule comes from


MACRO_RULES = {
    "groups": MacroRule("groups", "the item's group field", source="jaxpid: every group, none left out"),
    "vg_relation": MacroRule(
        "vg_relation", "relation_name", excluded=SYMMETRIC_RELATIONS,
        source="ARO (mertyg/vision-language-models-are-bows): VG_Relation.evaluate_scores in "
               "dataset_zoo/aro_datasets.py keeps every relation; the notebook 'Replicate ARO! VG-Relation, "
               "VG-Attribution.ipynb' averages them leaving out its list of symmetric relations"),
    "vg_attribution": MacroRule(
        "vg_attribution", "attributes[0]_attributes[1]", min_items=MIN_ATTRIBUTE_PAIR_ITEMS,
        source="ARO: VG_Attribution.evaluate_scores in dataset_zoo/aro_datasets.py drops attribute pairs with "
               f"fewer than {MIN_ATTRIBUTE_PAIR_ITEMS} items; the notebook averages the rest"),
    "coco_order": MacroRule("coco_order", "none", grouped=False,
                            source="ARO: COCO_Order.evaluate_scores reports Precision@1 over all test cases"),
    "flickr_order": MacroRule("flickr_order", "none", grouped=False,
                              source="ARO: Flickr30k_Order.evaluate_scores reports Precision@1 over all test cases"),
}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MACRO_INTERVAL = (f"95 % percentile interval of a bootstrap over items ({BOOTSTRAP_RESAMPLES} resamples, seed "
                  f"{BOOTSTRAP_SEED}): each group's items resampled with replacement within the group, the groups "
                  "fixed as the benchmark fixes them (item sampling only, as the micro accuracy's Wilson "
                  "interval); accuracy_macro_stderr is the bootstrap's s.d.")


def macro_rule(benchmark: str | None) -> MacroRule:
    """The macro rule of an ARO set (``ARO_SETS``), or of a plain manifest (None: every group)."""
    if benchmark is None:
        return MACRO_RULES["groups"]
    if benchmark not in ARO_SETS:
        raise ConfigError(f"benchmark must be one of {ARO_SETS} or None, got {benchmark!r}")
    return MACRO_RULES[benchmark]


def benchmark_of(source: str | None) -> str | None:
    """The ARO set a plan's source names (``aro:<set>:<file>``, what the CLI writes), else None."""
    parts = (source or "").split(":", 2)
    return parts[1] if len(parts) == 3 and parts[0] == "aro" and parts[1] in ARO_SETS else None


def _bootstrap_macro(credits: Sequence[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Macro accuracies of ``resamples`` stratified bootstrap draws: within each group, the
    counts of its distinct credit values (1, 0, 1/m for ties) are multinomial — the same law as
    resampling its items with replacement."""
    total = np.zeros(resamples)
    for c in credits:
        values, counts = np.unique(c, return_counts=True)
        draws = rng.multinomial(c.size, counts / c.size, size=resamples)
        total += draws @ values / c.size
    return total / len(credits)


def macro_accuracy(records: Sequence[Mapping], rule: MacroRule = MACRO_RULES["groups"], *,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """The mean over groups of each group's accuracy (``correct``: 1, 0 or a tie's 1/m), the
    groups and exclusions of ``rule``, with a 95 % stratified-bootstrap interval.

    Items without a group are left out of it. With no groups (an order set, a manifest without
    ``group``) the macro accuracy is the micro one, with its Wilson interval.
    """
    by_group: dict[str, list[float]] = {}
    for r in records:
        if r.get("group") is not None:
            by_group.setdefault(r["group"], []).append(float(r["correct"]))
    out = {"rule": rule.name, "key": rule.key, "rule_source": rule.source}
    if not rule.grouped or not by_group or not records:
        why = ("this set reports one accuracy over all items" if not rule.grouped
               else "the items have no group")
        n, correct = len(records), float(sum(r["correct"] for r in records))
        out.update({"accuracy": correct / n if n else float("nan"), "ci": list(wilson(correct, n)),
                    "stderr": None, "n_groups": 0, "n_items": n,
                    "interval": "95 % Wilson (the micro accuracy's)", "note": f"no groups ({why}): macro = micro"})
        return out
    kept = {g: v for g, v in by_group.items() if len(v) >= rule.min_items and g not in rule.excluded}
    left_out = {g: len(v) for g, v in sorted(by_group.items()) if g not in kept}
    out["groups_left_out"] = left_out
    out["n_items_ungrouped"] = sum(r.get("group") is None for r in records)
    if left_out:
        everything = [np.mean(v) for v in by_group.values()]
        out["without_exclusions"] = {"accuracy": float(np.mean(everything)), "n_groups": len(everything),
                                     "note": "the mean over every group (no group left out)"}
    if not kept:
        out.update({"accuracy": float("nan"), "ci": [float("nan"), float("nan")], "stderr": float("nan"),
                    "n_groups": 0, "n_items": 0, "interval": MACRO_INTERVAL,
                    "note": "every group was left out by the rule"})
        return out
    credits = [np.asarray(v, np.float64) for _, v in sorted(kept.items())]
    means = np.array([c.mean() for c in credits])
    boot = _bootstrap_macro(credits, np.random.default_rng(seed), resamples)
    between = float(means.std(ddof=1) / np.sqrt(means.size)) if means.size > 1 else float("nan")
    out.update({
        "accuracy": float(means.mean()), "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "stderr": float(boot.std(ddof=1)), "n_groups": int(means.size), "n_items": int(sum(c.size for c in credits)),
        "interval": MACRO_INTERVAL,
        "stderr_between_groups": between,
        "stderr_between_groups_note": ("s.d. of the group accuracies / sqrt(n_groups): the groups taken as a sample "
                                       "of such groups (relations, attribute pairs); wider, it adds how much the "
                                       "groups differ"),
    })
    return out


def retrieval_summary(rows: pa.Table, benchmark: str | None = None) -> dict:
    """The study's numbers from its rows (``items.parquet``).

    Args:
      benchmark: the ARO set the items come from (``ARO_SETS``), whose rules the macro accuracy
        follows; None: a plain manifest or the demo (the mean over every ``group``).
    """
    rule = macro_rule(benchmark)
    records = rows.to_pylist()
    scored = [r for r in records if r["expect"] != "tie"]
    tied = [r for r in records if r["expect"] == "tie"]
    summary = accuracy(scored)
    if scored:
        macro = macro_accuracy(scored, rule)
        summary.update({
            "accuracy_micro": summary["accuracy"], "accuracy_micro_ci": summary["accuracy_ci"],
            "accuracy_macro": macro.pop("accuracy"), "accuracy_macro_ci": macro.pop("ci"),
            "accuracy_macro_stderr": macro.pop("stderr"), "n_groups_macro": macro.pop("n_groups"),
            "macro": macro,
            "accuracy_note": ("accuracy = accuracy_micro: over all scored items (95 % Wilson interval); "
                              "accuracy_macro: each group's accuracy, then their mean (ARO's published VG "
                              "numbers; see macro)"),
        })
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


def save_retrieval(out: str | Path, rows: pa.Table, plan: RetrievalPlan, run: StudyRun | None = None, *,
                   benchmark: str | None = None) -> tuple[dict, list[Path]]:
    """Summarise the rows and write ``summary.json``, ``items.parquet`` and ``groups.png`` into
    ``out`` (each atomically). -> (summary, paths).

    Args:
      benchmark: the ARO set of the items (the macro accuracy's rules); default: the one the
        plan's source names (``aro:<set>:<file>``, the CLI's ``--aro``), else none.
    """
    summary = retrieval_summary(rows, benchmark or benchmark_of(plan.manifest["jobs"]["source"]))
    record = {**summary, "config": plan.config.to_dict(), "items": plan.manifest["jobs"]}
    if run is not None and run.summary.jobs_computed:
        record["run"] = throughput(run)
    record = finite(record)
    figure = retrieval_bars(summary["groups"], summary, summary.get("chance", float("nan")))
    paths = save_study(out, "retrieval", record, tables={"items": rows}, figures={"groups": figure},
                       model=plan.model)
    return record, paths


def run_retrieval(pipeline: Pipeline, items, out: str | Path, config: RetrievalConfig = RetrievalConfig(), *,
                  progress: bool = False, devices: Sequence | None = None,
                  benchmark: str | None = None) -> FinishedStudy:
    """Run (or resume) the study in this process and write its outputs into ``out``.

    Args:
      items: a JSONL manifest path or item dicts (``demo_items()``, ``aro.load_aro(...)``).
      benchmark: the ARO set of ``load_aro`` items (``"vg_relation"``, ...): the macro accuracy
        follows its rules; None: the mean over every group.
    """
    macro_rule(benchmark)  # an unknown name is refused before any model work
    plan = plan_retrieval(items, config, pipeline.identity())
    run = run_study(plan, out, pipeline=pipeline, progress=progress, devices=devices)
    if not run.complete:
        return FinishedStudy(run, None, [])
    summary, paths = save_retrieval(out, run.rows, plan, run, benchmark=benchmark)
    return FinishedStudy(run, summary, paths)
