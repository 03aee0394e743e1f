"""How a model sees pairs of words: the PID of synonyms, homonyms and co-hyponyms (DiffusionPID's
last study), for every measure and every form (anchored, orthogonal, standard) from one fused pass per batch.

A PAIRS file is JSONL, one pair per line: ``{"prompt": ..., "sources": [w1, w2], "relation":
"synonym" | "homonym" | "co-hyponym" | any label, "seed": 0}`` (optional ``conditional``; other
fields pass through). The pairs run as a PID sweep (``jaxpid.sweeps``: images generated from the
prompts, fixed batches, the resumable store in ``DIR/parts``); the summary gives, per relation,
measure and form, each atom's mean over pairs and its share of the joint information.

Shipped pair sets (``jaxpid/data/words``, written for this project; ``shipped_pairs``):
synonyms (26: adjective pairs in "a photo of a big large dog", noun pairs), homonyms (20 words
× 2 disambiguating contexts: the homonym and its context word), co-hyponyms (30 curated, "a photo
of a cat and a dog") and 45 WordNet co-hyponym pairs (``jaxpid.studies.wordnet``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.prompt_pid import analyze
from jaxpid.core.config import PID_FORMS as FORMS
from jaxpid.core.config import PIDConfig, check_int
from jaxpid.core.lattice import TWO_SOURCE_ATOMS
from jaxpid.core.measures import MEASURES
from jaxpid.errors import ConfigError, PromptError
from jaxpid.io.plots import pid_panel, relation_shares
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import resolve_sources
from jaxpid.studies.base import StudyRun, StudySummary, finite
from jaxpid.studies.manifest import read_manifest
from jaxpid.studies.stats import mean_and_stderr
from jaxpid.sweeps.config import SweepConfig
from jaxpid.sweeps.jobs import read_jobs
from jaxpid.sweeps.plan import SweepPlan, plan_sweep

SETS = ("synonyms", "homonyms", "co-hyponyms", "co-hyponyms-wordnet")
ATOM_KEYS = tuple(TWO_SOURCE_ATOMS.values())  # redundancy, unique_1, unique_2, synergy


def read_pairs(path: str | Path) -> list[dict]:
    """The pairs of a PAIRS file, checked: a relation, two different source words of the prompt.

    Raises:
      ConfigError / PromptError: naming the line (a missing relation, a source not in its prompt,
        the same word twice, not two sources).
    """
    items = read_manifest(path, required=["prompt", "sources", "relation"], what="pairs file")
    return [check_pair(item, f"{path} line {item['line']}") for item in items]


def check_pair(item: Mapping, where: str) -> dict:
    relation = item.get("relation")
    if not isinstance(relation, str) or not relation.strip():
        raise ConfigError(f"{where}: 'relation' must name the pair's relation (synonym, homonym, co-hyponym, ...)")
    sources = item.get("sources")
    if not isinstance(sources, list) or len(sources) != 2 or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"{where}: 'sources' must be two words of the prompt, got {sources!r}")
    if sources[0].strip().lower() == sources[1].strip().lower():
        raise PromptError(f"{where}: the two sources are the same word {sources[0]!r}")
    try:
        resolve_sources(item["prompt"], sources)
    except PromptError as error:
        raise PromptError(f"{where}: {error}") from None
    return {k: v for k, v in item.items() if k != "line"}


def shipped_pairs(sets: Sequence[str] = SETS, seeds: Sequence[int] = (0,)) -> list[dict]:
    """The shipped pair sets (``jaxpid/data/words/<set>.jsonl``), one pair per seed."""
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ConfigError(f"unknown pair sets {unknown}; the shipped sets are {list(SETS)}")
    folder = resources.files("jaxpid") / "data" / "words"
    rows = []
    for name in sets:
        for line in (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows += [{**json.loads(line), "seed": int(seed), "set": name} for seed in seeds]
    return rows


def demo_pairs(seeds: Sequence[int] = (0, 1, 2, 3)) -> list[dict]:
    """The demo model's version: its designed relations (``jaxpid.demo.dataset``)."""
    pairs = [
        ("a crimson red circle", ["crimson", "red"], "synonym"),
        ("a crimson red square", ["crimson", "red"], "synonym"),
        ("a crimson red triangle", ["crimson", "red"], "synonym"),
        ("a red circle and a blue square", ["red", "blue"], "co-hyponym"),
        ("a green square and a yellow triangle", ["green", "yellow"], "co-hyponym"),
        ("a red circle and a blue square", ["circle", "square"], "co-hyponym"),
        ("a blue triangle and a yellow circle", ["triangle", "circle"], "co-hyponym"),
        ("an orange square", ["orange", "square"], "homonym"),
        ("an orange circle", ["orange", "circle"], "homonym"),
        ("a red square with a contrasting circle", ["red", "contrasting"], "interaction"),
        ("a blue circle with a matching square", ["blue", "matching"], "interaction"),
    ]
    return [{"prompt": p, "sources": s, "relation": r, "seed": int(seed)} for p, s, r in pairs for seed in seeds]


def words_config(sweep: SweepConfig, measures: Sequence[str] | None = None) -> SweepConfig:
    """``sweep`` with every requested measure (default: all but imin, which needs alternatives)
    in every form, from one pass."""
    measures = tuple(measures or [m for m in MEASURES if m != "imin"])
    level = sweep.decompositions[0].level
    return dataclasses.replace(sweep, decompositions=tuple(PIDConfig(m, f, level) for m in measures for f in FORMS))


def job_table(pairs: Sequence[Mapping], source: str, *, conditional: bool = True):
    """The pairs as a sweep's job table (the relation and any other field pass through)."""
    rows = [{**pair, "conditional": bool(pair.get("conditional", conditional))} for pair in pairs]
    table = read_jobs(rows)
    return dataclasses.replace(table, source=source)


# ---------------------------------------------------------------------------------------------
# Summary


def summarise(rows: pa.Table, default: PIDConfig) -> dict:
    """Per relation, measure and form: each atom's mean (± s.e.) over pairs, and its share of
    the joint information per pair (pairs whose joint information is not positive have no
    share; ``n_shares`` counts the others), averaged."""
    data = rows.to_pylist()
    relations: dict[str, dict] = {}
    for relation in sorted({r["relation"] for r in data}):
        mine = [r for r in data if r["relation"] == relation]
        entry = {"n": len({r["job"] for r in mine})}
        for measure in dict.fromkeys(r["measure"] for r in mine):
            entry[measure] = {}
            for form in dict.fromkeys(r["form"] for r in mine if r["measure"] == measure):
                cell = [r for r in mine if r["measure"] == measure and r["form"] == form]
                atoms, shares = {}, {}
                for key in ATOM_KEYS:
                    mean, se = mean_and_stderr([r[key] for r in cell])
                    atoms[key] = {"mean": mean, "stderr": se}
                    values = [r[key] / r["joint"] for r in cell if r["joint"] > 0]
                    mean, se = mean_and_stderr(values)
                    shares[key] = {"mean": mean, "stderr": se}
                joint, joint_se = mean_and_stderr([r["joint"] for r in cell])
                entry[measure][form] = {"atoms": atoms, "shares": shares, "joint": {"mean": joint, "stderr": joint_se},
                                        "n_shares": sum(r["joint"] > 0 for r in cell)}
        relations[relation] = entry
    return {"default": {"measure": default.measure, "form": default.form}, "relations": relations}


def items_table(rows: pa.Table) -> pa.Table:
    """One row per (pair, measure, form): its atoms, errors, shares and pass-through fields."""
    keep = [c for c in rows.column_names if c not in ("atom_names", "atoms", "atoms_stderr", "fingerprint")]
    table = rows.select(keep)
    joint = np.asarray(table["joint"].to_numpy(), np.float64)
    for key in ATOM_KEYS:
        values = np.asarray(table[key].to_numpy(), np.float64)
        share = np.where(joint > 0, values / np.where(joint > 0, joint, 1.0), np.nan)
        table = table.append_column(f"{key}_share", pa.array(share))
    return table


# ---------------------------------------------------------------------------------------------
# The study: a PID sweep of the pairs, summarised by relation


@dataclasses.dataclass(frozen=True)
class WordsPlan(SweepPlan):
    """The word-relations study: the pairs' PID sweep (batches, resume and rows are the sweep's)
    with the study's summary; ``examples`` PID panels per relation are drawn with the model."""

    pairs: tuple = ()  # the pair dicts, for the example panels
    conditional: bool = True  # for pairs without a 'conditional' field
    examples: int = 1  # example panels per relation (0: none)
    study = "words"  # not a field: the study's name in summary.json

    @property
    def model(self) -> dict:
        return dict(self.manifest["model"])

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> WordsSummary:
        """Each atom's mean and share of the joint per relation, measure and form; the shares' bar
        chart and, with the model at hand, example panels of the first pairs of each relation."""
        summary = summarise(run.rows, PIDConfig())
        figures = {"shares": relation_shares(summary)}
        if pipeline is not None and self.examples > 0:
            figures.update(self._examples(pipeline))
        record = {**summary, "n_items": len(self.table), "pairs": self.table.source, "conditional": self.conditional,
                  "config": self.config.to_dict(), "items_per_minute": run.items_per_minute}
        return WordsSummary("words", finite(record), tables={"items": items_table(run.rows)}, figures=figures)

    def _examples(self, pipeline: Pipeline) -> dict:
        """PID panels (maps of every atom) of the first pairs of each relation, default measure and form."""
        figures = {}
        for relation in sorted({p["relation"] for p in self.pairs}):
            for n, pair in enumerate([p for p in self.pairs if p["relation"] == relation][:self.examples]):
                run = RunConfig(estimator=self.config.estimator, generation=self.config.generation,
                                seeds=(pair.get("seed", 0),),
                                conditional=bool(pair.get("conditional", self.conditional)))
                analysis = analyze(pipeline, pair["prompt"], pair["sources"], run)
                figures[f"example_{relation}_{n}".replace(" ", "_")] = pid_panel(analysis)
        return figures


def plan_words(pairs: Sequence[Mapping], config: SweepConfig, model: Mapping, *, source: str,
               conditional: bool = True, examples: int = 1) -> WordsPlan:
    """The study's plan: the pairs as a PID sweep under ``config`` (``words_config``)."""
    sweep = plan_sweep(job_table(pairs, source, conditional=conditional), config, model)
    fields = {f.name: getattr(sweep, f.name) for f in dataclasses.fields(SweepPlan)}
    return WordsPlan(**fields, pairs=tuple(dict(p) for p in pairs), conditional=conditional,
                     examples=check_int("examples", examples, 0))


@dataclasses.dataclass(frozen=True, eq=False)
class WordsSummary(StudySummary):
    """The word-relations summary (``summary.json``: ``default``, ``relations`` and the study's
    record), the items table, the shares' chart and example panels."""

    def redundancy_share(self, relation: str, measure: str, form: str) -> tuple[float, float] | None:
        """(mean, s.e.) over pairs of redundancy / joint information, or None where not measured."""
        share = self.record["relations"][relation].get(measure, {}).get(form, {}).get("shares", {}).get("redundancy")
        return None if share is None else (share["mean"], share["stderr"])

    def text(self) -> str:
        relations = self.record["relations"]
        measures = list(dict.fromkeys(m for r in relations.values() for m in r if m != "n"))
        forms = list(dict.fromkeys(f for r in relations.values() for m in r.values() if isinstance(m, dict)
                                   for f in m))
        lines = ["\nredundancy as a share of the joint information, by relation (mean over pairs ± s.e.):",
                 f"  {'relation':<14} {'n':>4}  " + "  ".join(f"{m + ' ' + f[:5]:>16}" for m in measures for f in forms)]
        for name, entry in relations.items():
            cells = []
            for m in measures:
                for f in forms:
                    share = self.redundancy_share(name, m, f)
                    if share is None or share[0] is None:  # not measured, or no pair with a positive joint
                        cells.append(f"{'–':>16}")
                    else:
                        se = "n/a" if share[1] is None else f"{share[1]:.2f}"
                        cells.append(f"{share[0]:>8.2f} ± {se:<5}")
            lines.append(f"  {name:<14} {entry['n']:>4}  " + "  ".join(cells))
        return "\n".join(lines)


__all__ = ["SETS", "WordsPlan", "WordsSummary", "demo_pairs", "items_table", "job_table", "plan_words", "read_pairs",
           "shipped_pairs", "summarise", "words_config"]
