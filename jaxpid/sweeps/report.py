"""A bias study's numbers from a sweep table (DiffusionPID's bias analysis).

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

``bias_report(table)`` returns the numbers (its figures are drawn by ``jaxpid.io.plots``);
``jaxpid.io.reports.save_report`` writes them (CSV tables and PNG plots, atomically). Column names default to the bias preset's
(``occupation``, ``attribute``, ``group``), and can name any pass-through columns of a sweep.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from jaxpid.core.lattice import TWO_SOURCE_ATOMS
from jaxpid.errors import ConfigError
from jaxpid.io.plots import bias_bar_chart, bias_heatmap
from jaxpid.sweeps.store import read_sweep

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
        return bias_bar_chart(self, top)

    def heatmap(self):
        """Occupations (rows, most biased first) × attributes (columns): normalised redundancy."""
        return bias_heatmap(self)

    @property
    def label(self) -> str:
        """E.g. 'PID mmi redundancy': which rows and atom the report compares."""
        label = TWO_SOURCE_ATOMS.get(self.atom, self.atom)
        return f"{'CPID' if self.conditional else 'PID'} {self.measure} {label}"


def bias_report(
    table: Any,
    *,
    measure: str | None = None,
    form: str | None = None,
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
        an occupation word implying the attribute: see ``jaxpid.core.measures``), else the only
        one, else "mmi".
      form: which pointwise form's rows, when the sweep has several.
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
    forms = sorted({(r.get("form"), r.get("level")) for r in rows}, key=str)
    if form is not None:
        rows = [r for r in rows if r.get("form") == form]
        if not rows:
            raise ConfigError(f"the sweep table has no {measure!r} rows in the {form!r} form (it has {forms})")
    elif len(forms) > 1:
        raise ConfigError(f"the sweep table has {measure!r} rows of several forms and levels {forms}: pass form=... "
                          "(--form)")
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
