"""The retrieval study's summary and figure (docs/studies.md#compositional-retrieval).

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

import numpy as np
import pyarrow as pa

from jaxpid.errors import ConfigError
from jaxpid.io.study_plots import retrieval_bars
from jaxpid.studies.aro import ARO_SETS, MIN_ATTRIBUTE_PAIR_ITEMS, SYMMETRIC_RELATIONS
from jaxpid.studies.base import StudyRun, StudySummary, finite, throughput
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


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalSummary(StudySummary):
    """The retrieval study's summary (``summary.json``'s keys: ``retrieval_summary``'s, plus
    ``config``, ``items`` and ``run``) and its ``groups.png``."""

    @property
    def accuracy(self) -> float | None:
        """Micro accuracy of the lowest-NLL choice over the scored items (None: no scored items)."""
        return self.record.get("accuracy")

    @property
    def accuracy_ci(self) -> tuple[float, float] | None:
        ci = self.record.get("accuracy_ci")
        return None if ci is None else tuple(ci)

    @property
    def n_items(self) -> int:
        return int(self.record["n_items"])

    def text(self) -> str:
        s, lines = self.record, []
        if s.get("n_items"):
            lines.append("accuracy of the lowest-NLL caption (95 % Wilson interval):")
            lines += [_group_line(name, g) for name, g in s["groups"].items()]
            lines += [_group_line("all", s), _macro_line(s)]
        ties = s.get("expected_ties")
        if ties:
            lo, hi = ties["other_preferred_ci"]
            lines.append(f"  expected ties ({ties['n_items']} items): the other caption preferred in "
                         f"{ties['other_preferred']:.2f} [{lo:.2f}, {hi:.2f}]; margin {ties['margin_mean']:+.3f} ± "
                         f"{ties['margin_stderr']:.3f} nats")
        seq = s.get("sequential")
        if seq:
            lines.append(f"  sequential ({seq['confidence']:g}): {seq['decided_by_bound']}/{seq['n_items']} items decided "
                         f"by the bound, {seq['mean_rounds']:.1f} rounds on average; {s['evaluations']:,} UNet "
                         f"evaluations vs {s['evaluations_fixed']:,} at a fixed {seq['max_samples']} samples "
                         f"({s['evaluations_ratio']:.1f}x fewer)")
        mc = s["margin_mc_stderr"]
        if mc["ratio"] is not None:
            lines.append(f"  margin Monte-Carlo s.e.: {mc['shared_draws']:.3f} nats with shared draws, "
                         f"{mc['independent_draws']:.3f} if the captions had independent draws ({mc['ratio']:.1f}x)")
        return "\n".join(lines)


def retrieval_study_summary(rows: pa.Table, *, config: Mapping, items: Mapping, run: StudyRun | None = None,
                            benchmark: str | None = None) -> RetrievalSummary:
    """The study's summary from its rows: ``retrieval_summary``'s numbers with the study's
    ``config``, its ``items`` record and the run's throughput, and the per-group bar chart."""
    summary = retrieval_summary(rows, benchmark)
    record = {**summary, "config": dict(config), "items": dict(items), **evaluations(rows, config)}
    if run is not None and run.summary.jobs_computed:
        record["run"] = throughput(run)
    figure = retrieval_bars(summary["groups"], summary, summary.get("chance", float("nan")))
    return RetrievalSummary("retrieval", finite(record), tables={"items": rows}, figures={"groups": figure})


def evaluations(rows: pa.Table, config: Mapping) -> dict:
    """UNet evaluations the rows used (samples x (captions + 1) per item); for a sequential run
    also what the fixed-N run of the same items at its sample cap would use, and how many items
    the bound decided before the cap."""
    columns = rows.select([c for c in ("n_samples", "n_captions", "rounds", "decided") if c in rows.column_names])
    columns = columns.to_pydict()
    used = int(sum(n * (c + 1) for n, c in zip(columns["n_samples"], columns["n_captions"])))
    out = {"evaluations": used}
    sequential = config.get("sequential")
    if sequential and "decided" in columns:
        fixed = int(sum(sequential["max_samples"] * (c + 1) for c in columns["n_captions"]))
        n = len(columns["decided"])
        out.update({
            "evaluations_fixed": fixed,
            "evaluations_ratio": fixed / used if used else None,
            "sequential": {"decided_by_bound": int(sum(columns["decided"])), "n_items": n,
                           "mean_rounds": float(np.mean(columns["rounds"])) if n else None,
                           "confidence": sequential["confidence"], "max_samples": sequential["max_samples"],
                           "note": "decided_by_bound: items whose lowest-NLL caption cleared the always-valid bound "
                                   "before the cap (the rest take the fixed-N choice at max_samples); "
                                   "evaluations_fixed: the same items at max_samples samples each"},
        })
    return out


def _group_line(name: str, g: dict) -> str:
    lo, hi = g["accuracy_ci"]
    margin = "n/a" if g["margin_mean"] is None else f"{g['margin_mean']:+.3f}"
    margin_se = "n/a" if g["margin_stderr"] is None else f"{g['margin_stderr']:.3f}"
    return (f"  {name:>10s}: {g['n_correct']:g}/{g['n_items']} = {g['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]; "
            f"by orthogonal MI {g['accuracy_mi']:.3f}; chance {g['chance']:.2f}; NLL margin {margin} ± {margin_se}")


def _interval(value, ci) -> str:
    if value is None:
        return "n/a"
    lo, hi = ci if ci else (None, None)
    return f"{value:.3f}" + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")


def _macro_line(s: Mapping) -> str:
    """Micro (every item) and macro (mean over groups, as ARO reports its VG sets) accuracy."""
    micro = f"  micro (every item, Wilson): {_interval(s.get('accuracy_micro'), s.get('accuracy_micro_ci'))}"
    m = s.get("macro")
    if m is None:
        return micro
    if not s.get("n_groups_macro"):
        return f"{micro}; macro = micro ({m['note']})"
    left_out = m.get("groups_left_out") or {}
    dropped = f", {len(left_out)} left out by rule {m['rule']}" if left_out else ""
    n = s["n_groups_macro"]
    return (f"{micro}; macro (mean over {n} group{'s' * (n != 1)}{dropped}, bootstrap over items): "
            f"{_interval(s.get('accuracy_macro'), s.get('accuracy_macro_ci'))}")
