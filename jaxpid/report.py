"""A bias study's outputs from a sweep table (MATH.md §5, DiffusionPID's bias analysis).

For every (group, occupation, attribute) cell, the image-level redundancy between the attribute
word and the occupation word (``ccs`` when the sweep has it: ``mmi`` and ``ppid`` compute a
two-word redundancy from each word's information alone, so they cannot see the occupation word
implying the attribute) is averaged over the cell's images (seeds, templates), then
min–max normalised over all cells of the study, as DiffusionPID does, so the most redundant
cell is 1 and the least 0. An occupation whose redundancy with one attribute of a group (say
"female") stands far above the others' is one the model ties to that attribute. Attribute words
differ in how much they say about any image (one colour or gender word may be more informative
than another for every occupation), so the bias of a cell is its *interaction*: the normalised
redundancy minus its occupation's mean and its attribute's mean (over the group) plus the
group's mean. Occupations are ranked by their largest interaction; the *gap* between their two
most redundant attributes is reported beside it (for two attributes, the interaction is half
the gap minus the study's average gap).

``bias_report(table)`` returns the numbers and draws the figures; ``save_report`` writes them
(CSV tables and PNG plots, atomically). Column names default to the bias preset's
(``occupation``, ``attribute``, ``group``), and can name any pass-through columns of a sweep.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.sweep import K2_ATOMS

NORMALISATIONS = ("study", "group", "none")


@dataclasses.dataclass(frozen=True)
class BiasReport:
    """Normalised redundancy per (group, occupation, attribute) and the occupations ranked by bias."""

    measure: str
    atom: str  # lattice atom compared, "{1}{2}" = redundancy
    conditional: bool  # CPID rows (context kept) or PID rows
    keys: dict  # {"row": occupation column, "column": attribute column, "group": group column or None}
    cells: list[dict]  # group, row, column, n, mean, stderr, normalised, normalised_stderr, rank, interaction
    ranking: list[dict]  # per (group, row): top, bias, top_value, runner_up, gap, values; sorted by bias
    normalisation: dict  # {"kind": "study" | "group" | "none", "range": {group: [min, max]}}

    def flat(self) -> list[str]:
        """Normalisation scopes whose cells are all equal (nothing stands out there)."""
        if self.normalisation["kind"] == "none":
            return []
        return [scope for scope, (low, high) in self.normalisation["range"].items() if not high > low]

    def table(self, which: str = "ranking"):
        """``"cells"`` or ``"ranking"`` as a pyarrow Table."""
        import pyarrow as pa

        rows = {"cells": self.cells, "ranking": self.ranking}[which]
        return pa.Table.from_pylist([{k: v for k, v in r.items() if k != "values"} for r in rows])

    def groups(self) -> list[str]:
        return list(dict.fromkeys(c["group"] for c in self.cells))

    def attributes(self, group: str) -> list[str]:
        return list(dict.fromkeys(c["column"] for c in self.cells if c["group"] == group))

    def text(self, top: int = 20) -> str:
        """The ranked table as aligned text: the ``top`` most biased (group, occupation) pairs."""
        row_name = self.keys["row"]
        lines = [f"{'rank':>4}  {'group':<10} {row_name:<18} {'attribute':<12} {'bias':>7} {'norm. R':>8} "
                 f"{'most redundant':<15} {'gap':>6}"]
        for i, r in enumerate(self.ranking[:top]):
            lines.append(f"{i + 1:>4}  {r['group']:<10} {r['row']:<18} {r['top']:<12} {r['bias']:7.3f} "
                         f"{r['top_value']:8.3f} {r['most_redundant']:<15} {r['gap']:6.3f}")
        return "\n".join(lines)

    def bar_chart(self, top: int = 15):
        """Grouped bars: normalised redundancy per attribute for the ``top`` most biased
        occupations of each group (error bars: Monte-Carlo standard errors)."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import is_color_like

        groups = self.groups()
        fig, axes = plt.subplots(len(groups), 1, figsize=(max(7.0, 0.55 * top + 2), 3.4 * len(groups)), squeeze=False)
        lookup = {(c["group"], c["row"], c["column"]): c for c in self.cells}
        for ax, group in zip(axes[:, 0], groups):
            rows = [r["row"] for r in self.ranking if r["group"] == group][:top]
            attributes = self.attributes(group)
            width = 0.8 / max(1, len(attributes))
            x = np.arange(len(rows))
            for a, attribute in enumerate(attributes):
                cells = [lookup.get((group, row, attribute)) for row in rows]
                values = [c["normalised"] if c else np.nan for c in cells]
                errors = [c["normalised_stderr"] if c else 0.0 for c in cells]
                colour = {"color": attribute} if is_color_like(attribute) else {}  # colour words draw in their colour
                ax.bar(x + (a - (len(attributes) - 1) / 2) * width, values, width, yerr=errors, capsize=2,
                       label=attribute, edgecolor="black", linewidth=0.5, **colour)
            ax.set_xticks(x, rows, rotation=45, ha="right")
            ax.set_ylabel("normalised redundancy")
            ax.set_title(f"{group}: {self.keys['row']}s ranked by bias (largest interaction first)")
            ax.legend(title=self.keys["column"], fontsize=8, ncols=min(4, len(attributes)))
            ax.set_ylim(0, 1.1 if self.normalisation["kind"] != "none" else None)
        fig.suptitle(f"Redundancy of {self.keys['column']} and {self.keys['row']} words "
                     f"({self.label}, min-max normalised over the {self.normalisation['kind']})", fontsize=10)
        fig.tight_layout()
        return fig

    def heatmap(self):
        """Occupations (rows, most biased first) × attributes (columns, grouped): normalised redundancy."""
        import matplotlib.pyplot as plt

        columns = [(g, a) for g in self.groups() for a in self.attributes(g)]
        order = list(dict.fromkeys(r["row"] for r in self.ranking))
        lookup = {(c["group"], c["row"], c["column"]): c["normalised"] for c in self.cells}
        grid = np.array([[lookup.get((g, row, a), np.nan) for g, a in columns] for row in order], float)
        fig, ax = plt.subplots(figsize=(2.0 + 0.75 * len(columns), 1.4 + 0.22 * len(order)))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid), vmax=np.nanmax(grid))
        ax.set_xticks(range(len(columns)), [f"{a}\n({g})" if len(self.groups()) > 1 else a for g, a in columns],
                      fontsize=8)
        ax.set_yticks(range(len(order)), order, fontsize=7 if len(order) > 40 else 9)
        if grid.size <= 400:
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value < 0.6 * np.nanmax(grid) else "black")
        fig.colorbar(image, ax=ax, label="normalised redundancy")
        ax.set_title(f"{self.label}: redundancy of {self.keys['column']} and {self.keys['row']}", fontsize=10)
        fig.tight_layout()
        return fig

    @property
    def label(self) -> str:
        """E.g. 'PID mmi redundancy': which rows and atom the report compares."""
        label = K2_ATOMS.get(self.atom, self.atom)
        return f"{'CPID' if self.conditional else 'PID'} {self.measure} {label}"


def bias_report(
    table: Any,
    *,
    measure: str | None = None,
    atom: str = "{1}{2}",
    conditional: bool | None = None,
    row: str = "occupation",
    column: str = "attribute",
    group: str | None = "group",
    normalise: str = "study",
) -> BiasReport:
    """Normalised redundancy per occupation × attribute, and occupations ranked by bias.

    Args:
      table: a sweep table (pyarrow Table, list of row dicts) or a sweep directory.
      measure: which measure's rows; default "ccs" if the table has it (the redundancy that sees
        an occupation word implying the attribute: see ``jaxpid.measures``), else the only
        one, else "mmi".
      atom: which atom (lattice name) is compared; default the redundancy "{1}{2}".
      conditional: PID (False) or CPID (True) rows; needed only when the table has both.
      row, column, group: the pass-through columns naming occupation, attribute and attribute
        group (``group=None`` or a missing column: one group, "all").
      normalise: "study" (min–max over every cell, DiffusionPID), "group" (within each group)
        or "none".

    Raises:
      ConfigError: a missing column, an unknown measure or atom, a table mixing PID and CPID
        rows without ``conditional``.
    """
    rows = _rows(table)
    if normalise not in NORMALISATIONS:
        raise ConfigError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    for name in (row, column):
        if rows and name not in rows[0]:
            raise ConfigError(f"the sweep table has no column {name!r} (columns: {sorted(rows[0])})")
    measures = sorted({r["measure"] for r in rows})
    if measure is None:
        measure = "ccs" if "ccs" in measures else measures[0] if len(measures) == 1 else "mmi"
    if measure not in measures:
        raise ConfigError(f"the sweep table has no rows of measure {measure!r} (it has {measures})")
    rows = [r for r in rows if r["measure"] == measure]
    kinds = sorted({bool(r["conditional"]) for r in rows})
    if conditional is None:
        if len(kinds) > 1:
            raise ConfigError("the sweep table has PID and CPID rows: pass conditional=False or True (--conditional)")
        conditional = kinds[0]
    rows = [r for r in rows if bool(r["conditional"]) == conditional]
    if not rows:
        raise ConfigError(f"no {'CPID' if conditional else 'PID'} rows of measure {measure!r}")
    use_group = group is not None and group in rows[0]

    sums: dict[tuple, list] = {}
    for r in rows:
        names = list(r["atom_names"])
        if atom not in names:
            raise ConfigError(f"atom {atom!r} is not in the lattice of row job {r['job']} (atoms: {names})")
        a = names.index(atom)
        key = (str(r[group]) if use_group else "all", str(r[row]), str(r[column]))
        sums.setdefault(key, []).append((r["atoms"][a], r["atoms_stderr"][a]))
    cells = []
    for (g, occupation, attribute), values in sums.items():
        v = np.array(values, float)
        cells.append({"group": g, "row": occupation, "column": attribute, "n": len(v), "mean": float(v[:, 0].mean()),
                      "stderr": float(math.sqrt(np.sum(v[:, 1] ** 2)) / len(v)),
                      "spread": float(v[:, 0].std(ddof=1)) if len(v) > 1 else None})
    ranges = _normalise(cells, normalise)
    _rank(cells)
    _interaction(cells)
    return BiasReport(
        measure=measure, atom=atom, conditional=conditional,
        keys={"row": row, "column": column, "group": group if use_group else None},
        cells=cells,
        ranking=_ranking(cells), normalisation={"kind": normalise, "range": ranges},
    )


def _rows(table) -> list[dict]:
    if isinstance(table, (str, Path)):
        from jaxpid.sweep import read_sweep

        table = read_sweep(table)
    if hasattr(table, "to_pylist"):
        table = table.to_pylist()
    rows = list(table)
    if not rows:
        raise ConfigError("the sweep table is empty")
    return rows


def _normalise(cells: list[dict], kind: str) -> dict:
    scopes: dict[str, list[dict]] = {}
    for c in cells:
        scopes.setdefault(c["group"] if kind == "group" else "study", []).append(c)
    ranges = {}
    for scope, members in scopes.items():
        values = np.array([c["mean"] for c in members])
        low, high = (float(values.min()), float(values.max())) if kind != "none" else (0.0, 1.0)
        ranges[scope] = [low, high]
        # All cells equal (e.g. ccs finds no shared information anywhere): nothing stands out,
        # every cell is 0 rather than a division by zero.
        span = high - low if high > low else math.inf
        for c in members:
            c["normalised"] = (c["mean"] - low) / span
            c["normalised_stderr"] = c["stderr"] / span
    return ranges


def _rank(cells: list[dict]) -> None:
    """Rank of each cell among the occupations of its (group, attribute), 1 = most redundant."""
    by_column: dict[tuple, list[dict]] = {}
    for c in cells:
        by_column.setdefault((c["group"], c["column"]), []).append(c)
    for members in by_column.values():
        for rank, c in enumerate(sorted(members, key=lambda c: -c["normalised"])):
            c["rank"] = rank + 1


def _interaction(cells: list[dict]) -> None:
    """Normalised redundancy minus its occupation's and its attribute's means plus the group's."""
    for group in dict.fromkeys(c["group"] for c in cells):
        members = [c for c in cells if c["group"] == group]
        grand = np.mean([c["normalised"] for c in members])
        row_mean = {r: np.mean([c["normalised"] for c in members if c["row"] == r]) for r in {c["row"] for c in members}}
        column_mean = {a: np.mean([c["normalised"] for c in members if c["column"] == a])
                       for a in {c["column"] for c in members}}
        for c in members:
            c["interaction"] = float(c["normalised"] - row_mean[c["row"]] - column_mean[c["column"]] + grand)


def _ranking(cells: list[dict]) -> list[dict]:
    per_row: dict[tuple, list[dict]] = {}
    for c in cells:
        per_row.setdefault((c["group"], c["row"]), []).append(c)
    out = []
    for (g, occupation), members in per_row.items():
        biased = max(members, key=lambda c: c["interaction"])
        ordered = sorted(members, key=lambda c: -c["normalised"])
        second = ordered[1] if len(ordered) > 1 else None
        out.append({
            "group": g, "row": occupation, "top": biased["column"], "bias": biased["interaction"],
            "top_value": biased["normalised"], "top_stderr": biased["normalised_stderr"],
            "most_redundant": ordered[0]["column"], "runner_up": second["column"] if second else None,
            "gap": ordered[0]["normalised"] - second["normalised"] if second else 0.0,
            "values": {c["column"]: c["normalised"] for c in members},
            **{f"value_{c['column']}": c["normalised"] for c in members},
        })
    return sorted(out, key=lambda r: (-r["bias"], r["group"], r["row"]))


def save_report(report: BiasReport, out: str | Path, *, overwrite: bool = False, top: int = 15) -> list[Path]:
    """Write ``cells.csv``, ``ranking.csv``, ``bar_chart.png`` and ``heatmap.png`` into ``out``
    (staged in a hidden sibling directory and renamed into place). -> the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from jaxpid.output import staged_directory

    out = Path(out)
    with staged_directory(out, overwrite) as staging:
        (staging / "cells.csv").write_text(_csv(report.cells, ["group", "row", "column", "n", "mean", "stderr", "spread",
                                                               "normalised", "normalised_stderr", "rank", "interaction"],
                                                report.keys))
        value_columns = sorted({k for r in report.ranking for k in r if k.startswith("value_")})
        (staging / "ranking.csv").write_text(_csv(report.ranking, ["group", "row", "top", "bias", "top_value",
                                                                   "top_stderr", "most_redundant", "runner_up", "gap",
                                                                   *value_columns], report.keys))
        for name, figure in (("bar_chart.png", report.bar_chart(top)), ("heatmap.png", report.heatmap())):
            figure.savefig(staging / name, dpi=110)
            plt.close(figure)
    return [out / n for n in ("cells.csv", "ranking.csv", "bar_chart.png", "heatmap.png")]


def _csv(rows: Sequence[Mapping], fields: list[str], keys: dict) -> str:
    """CSV text with the occupation / attribute columns under their own names."""
    rename = {"row": keys["row"], "column": keys["column"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([rename.get(f, f) for f in fields])
    for r in rows:
        writer.writerow(["" if r.get(f) is None else (f"{r[f]:.6g}" if isinstance(r.get(f), float) else r[f])
                         for f in fields])
    return buffer.getvalue()
