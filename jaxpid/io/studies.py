"""A study's outputs: ``summary.json``, its tables (Parquet) and figures (PNG), each written atomically.

The study's resumable parts live in ``DIR/parts`` (the sweep store); these files appear next to
them once every batch is done, so a folder either has a complete summary or none.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jaxpid.io.atomic import json_default, write_file
from jaxpid.io.provenance import provenance_record
from jaxpid.io.results import write_figure

STUDY_FORMAT = 1


def save_study(
    out: str | Path,
    study: str,
    summary: Mapping,
    *,
    tables: Mapping[str, pa.Table] | None = None,
    figures: Mapping[str, object] | None = None,
    texts: Mapping[str, str] | None = None,
    model: Mapping | None = None,
) -> list[Path]:
    """Write ``summary.json`` (the summary, the study's name, the time and provenance), each table
    as ``<name>.parquet``, each figure as ``<name>.png`` and each text (e.g. a Markdown table)
    under its file name into ``out``. -> the paths written."""
    out = Path(out)
    record = {
        "jaxpid_study": STUDY_FORMAT,
        "study": study,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **summary,
        "provenance": provenance_record(None if model is None else dict(model)),
    }
    paths = [write_file(out / "summary.json", json.dumps(record, indent=2, default=json_default) + "\n")]
    for name, table in (tables or {}).items():
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        paths.append(write_file(out / f"{name}.parquet", sink.getvalue().to_pybytes()))
    for name, figure in (figures or {}).items():
        paths.append(write_figure(figure, out / f"{name}.png"))
    for name, text in (texts or {}).items():
        paths.append(write_file(out / name, text))
    return paths
