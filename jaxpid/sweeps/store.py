"""A sweep directory: ``_sweep.json`` and one Parquet part per finished batch.

``_sweep.json`` holds the configuration, its fingerprint, the model's identity and the job
table's digest. Each batch's rows are one ``part-<batch>.parquet``, written atomically (by
``jaxpid.io.atomic``): a run killed at any moment leaves only whole parts, and a restart
computes the batches that have no part yet; a directory holding another sweep is refused with
what differs. ``pyarrow.dataset.dataset(DIR)`` reads the parts as one table (it skips names
starting with ``_`` or ``.``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jaxpid.errors import ConfigError
from jaxpid.io.atomic import make_directory, write_file, write_json

MANIFEST = "_sweep.json"
PART_PREFIX = "part-"


class SweepStore:
    """A sweep directory: the manifest and one atomically written Parquet part per batch."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def part_path(self, batch: int) -> Path:
        return self.out / f"{PART_PREFIX}{batch:06d}.parquet"

    def open(self, manifest: dict) -> None:
        """Create the directory and its manifest, or check that it holds the same sweep.

        Raises:
          ConfigError: the directory holds another sweep (names what differs), or stray files.
        """
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
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
        """Batches whose part file exists (only whole files ever get a part name)."""
        if not self.out.is_dir():
            return set()
        out = set()
        for p in self.out.glob(f"{PART_PREFIX}*.parquet"):
            stem = p.name[len(PART_PREFIX):-len(".parquet")]
            if stem.isdigit():
                out.add(int(stem))
        return out

    def write_part(self, batch: int, rows: pa.Table) -> Path:
        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink)
        return write_file(self.part_path(batch), sink.getvalue().to_pybytes())


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
    """The sweep's results as one pyarrow Table, sorted by (job, measure, form, level)."""
    table = ds.dataset(str(out), format="parquet").to_table()
    keys = [k for k in ("job", "measure", "form", "level") if k in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys]) if keys else table
