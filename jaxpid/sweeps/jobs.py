"""Job tables of sweeps: reading JSONL / CSV / Parquet into jobs, and the bias preset.

A job table has one job per row: ``prompt``, ``sources`` (two or more words of the prompt; a
list, JSON text of one, or whitespace-separated words), ``seed`` (of the generated image; a row
without one uses seed 0, recorded in its result rows like any other seed), and
optionally ``conditional`` (CPID), ``alternatives`` (imin's candidate words per source: a
``{word: [alternatives]}`` object or a list per source) and ``log_prior`` (ppid's natural-log
p(word) per source). Every other column passes through to the result rows untouched (e.g.
``occupation``, ``attribute``). Reading checks every row before any model work and names the
row at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet

from jaxpid.errors import ConfigError, JaxpidError, PromptError
from jaxpid.sd.prompts import resolve_sources

ANALYSES = ("pid", "cpid", "both")
OPTION_COLUMNS = ("prompt", "sources", "seed", "conditional", "alternatives", "log_prior")


# ---------------------------------------------------------------------------------------------
# Jobs


@dataclasses.dataclass(frozen=True)
class Job:
    """One PID to compute: a prompt's source words in the image generated with ``seed``."""

    index: int  # position in the sweep's job list: the ``job`` column of its rows
    row: int  # the job table row it came from (with analysis "both" a row gives two jobs)
    prompt: str
    sources: tuple[str, ...]
    seed: int
    conditional: bool
    alternatives: tuple[tuple[str, ...], ...]  # per source; empty tuples when not given
    log_prior: tuple[float, ...] | None  # per source, or None: the sweep's priors

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class JobTable:
    """The normalised job list and the pass-through columns of the table it came from."""

    jobs: tuple[Job, ...]
    extras: Any  # pyarrow.Table, one row per table row: the columns that pass through
    digest: str  # sha256 of the jobs and the pass-through columns
    source: str  # where it was read from (for the manifest)

    def __len__(self) -> int:
        return len(self.jobs)


def read_jobs(
    jobs: str | Path | Sequence[Mapping] | Any,
    *,
    analysis: str = "pid",
) -> JobTable:
    """A job table from a file (``.jsonl``, ``.csv``, ``.parquet``), a pyarrow Table or rows.

    Args:
      analysis: for rows without a ``conditional`` value: ``"pid"``, ``"cpid"`` (the rest of
        the prompt is context) or ``"both"`` (two jobs per row, PID first).

    Raises:
      ConfigError: an unreadable table, a missing column, a reserved column name, bad options.
      PromptError: a source word that is not in its prompt (names the row).
    """
    if analysis not in ANALYSES:
        raise ConfigError(f"analysis must be one of {ANALYSES}, got {analysis!r}")
    source = "rows"
    if isinstance(jobs, (str, Path)):
        source = str(jobs)
        rows, extras, places = _read_table_file(Path(jobs))
    elif isinstance(jobs, pa.Table):
        rows, extras = jobs.to_pylist(), jobs.drop_columns([c for c in OPTION_COLUMNS if c in jobs.column_names])
        places = [f"row {r + 1}" for r in range(len(rows))]
    else:
        rows = [dict(r) for r in jobs]
        extras = _extras_from_rows(rows)
        places = [f"row {r + 1}" for r in range(len(rows))]
    if not rows:
        raise ConfigError(f"the job table {source} has no rows")

    out: list[Job] = []
    for r, row in enumerate(rows):
        for conditional in _conditionals(row, places[r], analysis):
            out.append(_job(len(out), r, places[r], row, conditional))
    digest = hashlib.sha256(
        json.dumps(
            {"jobs": [j.to_dict() for j in out], "extras": extras.to_pylist(), "schema": str(extras.schema)},
            sort_keys=True, default=str,
        ).encode()
    ).hexdigest()
    return JobTable(tuple(out), extras, digest, source)


def _read_table_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"job table {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            rows, places = [], []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        value = json.loads(line)
                    except ValueError as error:
                        raise ConfigError(f"job table {path} line {n}: not valid JSON ({error.msg})") from None
                    if not isinstance(value, dict):
                        raise ConfigError(f"job table {path} line {n}: expected one JSON object per line")
                    rows.append(value)
                    places.append(f"{path} line {n}")
            return rows, _extras_from_rows(rows), places
        if suffix == ".csv":
            table = pyarrow.csv.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            table = pyarrow.parquet.read_table(path)
        else:
            raise ConfigError(f"job table {path}: expected a .jsonl, .csv or .parquet file")
    except (ValueError, OSError, pa.ArrowException) as error:
        if isinstance(error, JaxpidError):
            raise
        raise ConfigError(f"job table {path}: cannot read it ({error})") from None
    first = 2 if suffix == ".csv" else 1  # a CSV's line 1 is its header
    places = [f"{path} {'line' if suffix == '.csv' else 'row'} {r + first}" for r in range(table.num_rows)]
    return table.to_pylist(), table.drop_columns([c for c in OPTION_COLUMNS if c in table.column_names]), places


def _extras_from_rows(rows: list[dict]):
    names = list(dict.fromkeys(k for r in rows for k in r if k not in OPTION_COLUMNS))
    try:
        return pa.table({name: pa.array([r.get(name) for r in rows]) for name in names}) if names \
            else pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    except (pa.ArrowException, TypeError) as error:
        raise ConfigError(f"job table: a pass-through column mixes value types ({error})") from None


def _conditionals(row: dict, where: str, analysis: str) -> list[bool]:
    value = row.get("conditional")
    if value is None:
        return {"pid": [False], "cpid": [True], "both": [False, True]}[analysis]
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return [value.lower() in ("true", "1", "yes")]
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return [bool(value)]
    raise ConfigError(f"job table {where}: conditional must be true or false, got {value!r}")


def _listish(value: Any, what: str, where: str) -> Any:
    """Accept lists, or JSON text of one (CSV cells), or whitespace-separated words."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except ValueError:
                raise ConfigError(f"job table {where}: {what} is not valid JSON: {value!r}") from None
        return text.split()
    return value


def _job(index: int, r: int, where: str, row: dict, conditional: bool) -> Job:
    """Job ``index`` from table row ``r`` (0-based, as results record it); ``where`` names the
    row for messages (1-based: a file's line, or the row's number)."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"job table {where}: needs a non-empty 'prompt'")
    sources = _listish(row.get("sources"), "sources", where)
    # one word is no decomposition: said here, not later as a measure's complaint about k = 1
    if not isinstance(sources, (list, tuple)) or len(sources) < 2 or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"job table {where}: 'sources' must be a list of two or more words of the prompt, e.g. "
                          f"[\"red\", \"car\"] (or words separated by spaces), got {row.get('sources')!r}")
    try:
        resolved = resolve_sources(prompt, list(sources))
    except PromptError as error:
        raise PromptError(f"job table {where}: {error}") from None
    seed = row.get("seed", 0)
    if seed is None:
        seed = 0
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= int(seed) < 2**32:
        raise ConfigError(f"job table {where}: seed must be an integer in 0..2**32-1 (0 when absent), got {seed!r}")
    return Job(
        index=index,
        row=r,
        prompt=prompt,
        sources=tuple(sources),
        seed=int(seed),
        conditional=conditional,
        alternatives=_alternatives(row.get("alternatives"), [s.word.lower() for s in resolved], sources, where),
        log_prior=_log_prior(row.get("log_prior"), len(sources), where),
    )


def _alternatives(value, words: list[str], sources, where: str) -> tuple[tuple[str, ...], ...]:
    value = _listish(value, "alternatives", where) if value is not None else None
    if value is None:
        return tuple(() for _ in words)
    if isinstance(value, dict):
        given = {str(w).lower(): v for w, v in value.items()}
        unknown = sorted(set(given) - set(words))
        if unknown:
            raise ConfigError(f"job table {where}: alternatives given for {unknown}, which are not sources {list(sources)}")
        value = [given.get(w, []) for w in words]
    if not isinstance(value, (list, tuple)) or len(value) != len(words):
        raise ConfigError(f"job table {where}: alternatives must map each source to a list of words")
    out = []
    for alts in value:
        alts = alts.split(",") if isinstance(alts, str) else list(alts or [])
        out.append(tuple(a.strip() for a in alts if isinstance(a, str) and a.strip()))
    return tuple(out)


def _log_prior(value, k: int, where: str) -> tuple[float, ...] | None:
    value = _listish(value, "log_prior", where) if value is not None else None
    if value is None:
        return None
    try:
        lp = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"job table {where}: log_prior must be {k} numbers, got {value!r}") from None
    if len(lp) != k or not all(math.isfinite(v) and v <= 0 for v in lp):
        raise ConfigError(f"job table {where}: log_prior must be {k} finite log probabilities (<= 0), got {value!r}")
    return lp


# ---------------------------------------------------------------------------------------------
# The bias preset


def bias_data() -> dict:
    """The shipped bias-study vocabulary: occupations, attribute groups, prompt templates."""
    folder = resources.files("jaxpid") / "data" / "bias"
    occupations = [
        line.strip() for line in (folder / "occupations.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {
        "occupations": occupations,
        "attributes": json.loads((folder / "attributes.json").read_text(encoding="utf-8")),
        "templates": json.loads((folder / "templates.json").read_text(encoding="utf-8")),
    }


def bias_jobs(
    occupations: Sequence[str] | None = None,
    attributes: Mapping[str, Sequence[str]] | None = None,
    templates: Sequence[str] | None = None,
    seeds: Sequence[int] = (42,),
) -> list[dict]:
    """Job rows of a bias study: every occupation × attribute word × template × seed.

    Defaults are the shipped data (``bias_data``), its first template and DiffusionPID's seed
    42. Templates use ``{attribute}``, ``{occupation}`` and ``{article}`` ("a" or "an" for the
    attribute word). Sources are ``[attribute, occupation]``; the rows carry ``occupation``,
    ``attribute``, ``group`` and ``template`` through to the results.
    """
    data = bias_data()
    occupations = data["occupations"] if occupations is None else list(occupations)
    attributes = data["attributes"] if attributes is None else dict(attributes)
    templates = data["templates"][:1] if templates is None else list(templates)
    rows = []
    for t, template in enumerate(templates):
        for occupation in occupations:
            for group, words in attributes.items():
                for attribute in words:
                    for word in (attribute, occupation):
                        if len(word.split()) != 1:
                            raise ConfigError(f"bias study words must be single words (sources are words); got {word!r}")
                    article = "an" if attribute[:1].lower() in "aeiou" else "a"
                    prompt = template.format(attribute=attribute, occupation=occupation, article=article)
                    for seed in seeds:
                        rows.append({"prompt": prompt, "sources": [attribute, occupation], "seed": int(seed),
                                     "occupation": occupation, "attribute": attribute, "group": group, "template": t})
    return rows


def bias_study_jobs(
    groups: Sequence[str] | None = None,
    occupations: Sequence[str] | None = None,
    templates: str = "first",
    seeds: Sequence[int] = (42,),
) -> list[dict]:
    """The shipped bias study's job rows, restricted to some attribute groups, occupations and
    templates (``"first"``, ``"all"`` or indices like ``"0,2"``), for the given image seeds."""
    data = bias_data()
    attributes = data["attributes"]
    if groups:
        unknown = sorted(set(groups) - set(attributes))
        if unknown:
            raise ConfigError(f"groups {unknown}: the bias study's groups are {sorted(attributes)}")
        attributes = {g: attributes[g] for g in groups}
    chosen = data["templates"]
    if templates == "first":
        chosen = chosen[:1]
    elif templates != "all":
        try:
            chosen = [chosen[int(i)] for i in str(templates).split(",")]
        except (ValueError, IndexError):
            raise ConfigError(f"templates {templates!r}: 'first', 'all' or indices 0..{len(chosen) - 1}") from None
    return bias_jobs(occupations=occupations, attributes=attributes, templates=chosen, seeds=seeds)
