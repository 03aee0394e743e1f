"""Report folders: a bias study's tables and figures (``jaxpid report``), written atomically."""

from __future__ import annotations

import csv
import io as stdlib_io
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxpid.io.atomic import staged_directory, write_file
from jaxpid.io.plots import bias_bar_chart, bias_heatmap
from jaxpid.io.results import write_figure

CELL_FIELDS = ["group", "row", "column", "n", "mean", "stderr", "spread", "normalised", "normalised_stderr", "rank",
               "interaction"]
RANKING_FIELDS = ["group", "row", "top", "bias", "top_value", "top_stderr", "most_redundant", "runner_up", "gap"]


def save_report(report, out: str | Path, *, overwrite: bool = False, top: int = 15) -> list[Path]:
    """Write ``cells.csv``, ``ranking.csv``, ``bar_chart.png`` and ``heatmap.png`` of a
    ``jaxpid.sweeps.BiasReport`` into ``out`` (staged, then renamed into place). -> the paths."""
    out = Path(out)
    with staged_directory(out, overwrite) as staging:
        write_file(staging / "cells.csv", csv_text(report.cells, CELL_FIELDS, report.keys))
        value_columns = sorted({k for r in report.ranking for k in r if k.startswith("value_")})
        write_file(staging / "ranking.csv", csv_text(report.ranking, RANKING_FIELDS + value_columns, report.keys))
        write_figure(bias_bar_chart(report, top), staging / "bar_chart.png")
        write_figure(bias_heatmap(report), staging / "heatmap.png")
    return [out / n for n in ("cells.csv", "ranking.csv", "bar_chart.png", "heatmap.png")]


def csv_text(rows: Sequence[Mapping], fields: list[str], keys: dict) -> str:
    """CSV text with the occupation / attribute columns under their own names."""
    rename = {"row": keys["row"], "column": keys["column"]}
    buffer = stdlib_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([rename.get(f, f) for f in fields])
    for r in rows:
        writer.writerow(["" if r.get(f) is None else (f"{r[f]:.6g}" if isinstance(r.get(f), float) else r[f])
                         for f in fields])
    return buffer.getvalue()
