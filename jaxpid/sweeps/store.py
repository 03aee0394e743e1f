"""A sweep directory: ``_sweep.json`` and one Parquet part per finished batch.

``_sweep.json`` holds the configuration, its fingerprint, the model's identity and the job
table's digest. Each batch's rows are one ``part-<batch>.parquet``, written atomically (by
``jaxpid.io.atomic``), then its record ``_part-<batch>.json`` (row count and SHA-256): a run
killed at any moment leaves only whole parts, and a restart verifies every part against its
record, sets a damaged one aside into ``_damaged/`` (named in the run's output) and computes
the batches that have no good part; a directory holding another sweep is refused with what
differs. ``pyarrow.dataset.dataset(DIR)`` reads the parts as one table (it skips names starting
with ``_`` or ``.``); ``read_sweep`` verifies them first and names a damaged one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jaxpid.errors import ConfigError
from jaxpid.io.atomic import holds_output, lock_output, make_directory, move_aside, remove_file, write_file, write_json

MANIFEST = "_sweep.json"
PART_PREFIX = "part-"
DAMAGED = "_damaged"  # where damaged parts are set aside


class SweepStore:
    """A sweep directory: the manifest and one atomically written Parquet part per batch."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.damaged: list[str] = []  # what ``done`` set aside: "part-000003.parquet: why"

    def part_path(self, batch: int) -> Path:
        return self.out / f"{PART_PREFIX}{batch:06d}.parquet"

    def record_path(self, batch: int) -> Path:
        return self.out / f"_{PART_PREFIX}{batch:06d}.json"

    def parts(self) -> dict[int, Path]:
        """batch -> its part file, for every file with a part's name."""
        out = {}
        for p in self.out.glob(f"{PART_PREFIX}*.parquet") if self.out.is_dir() else ():
            stem = p.name[len(PART_PREFIX):-len(".parquet")]
            if stem.isdigit():
                out[int(stem)] = p
        return out

    def problem(self, batch: int, path: Path) -> str | None:
        """Why part ``batch`` cannot be trusted, or None: its bytes must match the checksum and
        row count recorded when it was written (a part without a record, from a run killed
        between the two writes or an older jaxpid, must at least read as Parquet)."""
        data = path.read_bytes()
        record = None
        if self.record_path(batch).is_file():
            try:
                record = json.loads(self.record_path(batch).read_text())
            except ValueError:
                record = None
        if record is not None and record.get("sha256") != hashlib.sha256(data).hexdigest():
            return "its bytes differ from the checksum recorded when it was written"
        try:
            rows = pq.read_metadata(pa.BufferReader(data)).num_rows
        except (pa.ArrowException, OSError) as error:
            return f"it is not a readable Parquet file ({error})"
        if record is not None and record.get("rows") != rows:
            return f"it has {rows} rows where {record.get('rows')} were written"
        return None

    def open(self, manifest: dict) -> None:
        """Create the directory and its manifest, or check that it holds the same sweep.

        Takes the folder's lock first (one writer per folder: a second run into it fails at once,
        naming the first; the lock goes with this process).

        Raises:
          ConfigError: the directory holds another sweep (names what differs), or stray files.
          OutputBusyError: another process writes into it.
        """
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
        if not holds_output(self.out):  # a study's store (DIR/parts) is covered by the study's lock on DIR
            lock_output(self.out)
        path = self.out / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except ValueError as error:
                raise ConfigError(f"{path} is not a readable sweep manifest ({error})") from None
            check_same_sweep(old, manifest, path)
            return
        if self.out.is_dir() and any(p for p in self.out.iterdir() if not p.name.startswith(".")):
            raise ConfigError(f"--out {self.out} is not empty and has no {MANIFEST}: not a sweep directory")
        make_directory(self.out)
        write_json(path, manifest)

    def done(self) -> set[int]:
        """Batches with a verified part; a damaged part is set aside into ``_damaged/`` (and
        listed in ``self.damaged``), so its batch is computed again."""
        out = set()
        for batch, path in sorted(self.parts().items()):
            why = self.problem(batch, path)
            if why is None:
                out.add(batch)
                continue
            if move_aside(path, self.out / DAMAGED) is not None:
                remove_file(self.record_path(batch))
                self.damaged.append(f"{path.name}: {why}")
        return out

    def write_part(self, batch: int, rows: pa.Table) -> Path:
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink)
        data = sink.getvalue().to_pybytes()
        path = write_file(self.part_path(batch), data)
        write_json(self.record_path(batch), {"rows": rows.num_rows, "sha256": hashlib.sha256(data).hexdigest()})
        return path


def check_same_sweep(old: dict, new: dict, path: Path) -> None:
    """Refuse to resume into a directory that holds another sweep, saying what differs."""
    if old.get("jaxpid_sweep") != new["jaxpid_sweep"]:
        raise ConfigError(
            f"{path.parent} holds a sweep written by another jaxpid (format {old.get('jaxpid_sweep')!r} there, "
            f"{new['jaxpid_sweep']} now: its manifest or rows differ); use a new --out"
        )
    old_jobs = old.get("jobs", {})
    if old_jobs.get("digest") != new["jobs"]["digest"]:
        raise ConfigError(
            f"{path.parent} holds a sweep over another job table ({old_jobs.get('count')} jobs from "
            f"{old_jobs.get('source')!r} there, {new['jobs']['count']} jobs from {new['jobs']['source']!r} now; "
            f"digests differ); resume with the same table or use a new --out"
        )
    if old.get("fingerprint") != new["fingerprint"]:
        before = _flat({"config": old.get("config", {}), "model": old.get("model", {}),
                        "ppid priors": old.get("priors_digest")})
        now = _flat({"config": new["config"], "model": new["model"], "ppid priors": new.get("priors_digest")})
        diffs = [f"{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(before) | set(now))
                 if before.get(k) != now.get(k) and k != "model.name"]
        raise ConfigError(
            f"{path.parent} holds a sweep with another configuration ({'; '.join(diffs) or 'fingerprints differ'}); "
            f"resume with the same options or use a new --out"
        )


def _flat(record: Mapping, prefix: str = "") -> dict:
    """{"config": {"estimator": {"n_samples": 8}}} -> {"config.estimator.n_samples": 8}."""
    out = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_sweep(out: str | Path) -> pa.Table:
    """The sweep's results as one pyarrow Table, sorted by (job, measure, form, level).

    Raises:
      ConfigError: no such folder, no parts, or a damaged part (named, with how to repair it).
    """
    store = SweepStore(out)
    if not store.out.is_dir():
        raise ConfigError(f"{out}: no such sweep or study folder")
    parts = store.parts()
    if not parts:
        raise ConfigError(f"{out}: no finished parts ({PART_PREFIX}*.parquet) to read yet")
    damaged = [f"{p.name}: {why}" for b, p in sorted(parts.items()) if (why := store.problem(b, p))]
    if damaged:
        raise ConfigError(f"{out}: damaged part(s): {'; '.join(damaged)}. Run the same `jaxpid sweep` (or study) "
                          "command again: it sets damaged parts aside into _damaged/ and computes their batches again")
    table = ds.dataset([str(p) for _, p in sorted(parts.items())], format="parquet").to_table()
    keys = [k for k in ("job", "measure", "form", "level") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys]) if keys else table
