"""Bias reports from sweep tables: normalisation, ranking, files, CLI; and the bias notebook."""

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest
from PIL import Image

import notebooks
from jaxpid.errors import ConfigError
from jaxpid.io.reports import save_report
from jaxpid.sweeps.report import bias_report
from jaxpid.cli import main

NAMES = ["{1}{2}", "{1}", "{2}", "{12}"]
# Planted redundancy (mean over images) of attribute and occupation words.
PLANTED = {
    ("gender", "nurse", "female"): 3.0, ("gender", "nurse", "male"): 1.0,
    ("gender", "doctor", "female"): 1.5, ("gender", "doctor", "male"): 2.0,
    ("gender", "teacher", "female"): 2.0, ("gender", "teacher", "male"): 1.8,
    ("ethnicity", "nurse", "asian"): 1.2, ("ethnicity", "nurse", "black"): 1.1,
    ("ethnicity", "doctor", "asian"): 1.3, ("ethnicity", "doctor", "black"): 1.4,
    ("ethnicity", "teacher", "asian"): 1.25, ("ethnicity", "teacher", "black"): 1.25,
}


def sweep_rows(conditional=(False,), measures=("mmi", "ppid"), seeds=(0, 1)) -> list[dict]:
    """Rows shaped like a sweep's: images scatter ±0.1 around the planted cell means."""
    rows = []
    for (group, occupation, attribute), value in PLANTED.items():
        for seed in seeds:
            for cond in conditional:
                for measure in measures:
                    r = value + (0.1 if seed % 2 else -0.1) + (0.5 if measure == "ppid" else 0.0)
                    rows.append({"job": len(rows), "measure": measure, "conditional": cond, "atom_names": NAMES,
                                 "atoms": [r, 0.2, 0.3, 0.4], "atoms_stderr": [0.05, 0.01, 0.01, 0.01],
                                 "occupation": occupation, "attribute": attribute, "group": group, "seed": seed})
    return rows


def test_normalised_redundancy_and_ranking():
    report = bias_report(sweep_rows())
    assert report.measure == "mmi" and report.label == "PID mmi redundancy"
    cells = {(c["group"], c["row"], c["column"]): c for c in report.cells}
    assert len(cells) == 12 and all(c["n"] == 2 for c in cells.values())
    assert cells[("gender", "nurse", "female")]["normalised"] == pytest.approx(1.0)  # min–max over the whole study
    assert cells[("gender", "nurse", "male")]["normalised"] == pytest.approx(0.0)
    assert cells[("gender", "doctor", "male")]["normalised"] == pytest.approx(0.5)
    assert cells[("gender", "nurse", "female")]["stderr"] == pytest.approx(np.hypot(0.05, 0.05) / 2)
    assert cells[("gender", "nurse", "female")]["normalised_stderr"] == pytest.approx(np.hypot(0.05, 0.05) / 2 / 2.0)
    # Bias = interaction: normalised redundancy - occupation mean - attribute mean + group mean.
    female_mean, male_mean, grand = (1.0 + 0.25 + 0.5) / 3, (0.0 + 0.5 + 0.4) / 3, (1.75 + 0.9) / 6
    assert cells[("gender", "nurse", "female")]["interaction"] == pytest.approx(1.0 - 0.5 - female_mean + grand)
    assert cells[("gender", "teacher", "male")]["interaction"] == pytest.approx(0.4 - 0.45 - male_mean + grand)
    top = report.ranking[0]
    assert (top["group"], top["row"], top["top"], top["most_redundant"], top["runner_up"]) == (
        "gender", "nurse", "female", "female", "male")
    assert top["gap"] == pytest.approx(1.0) and top["bias"] == pytest.approx(1.0 - 0.5 - female_mean + grand)
    assert [(r["row"], r["top"]) for r in report.ranking[:3]] == [("nurse", "female"), ("doctor", "male"),
                                                                  ("teacher", "male")]
    assert cells[("ethnicity", "doctor", "black")]["rank"] == 1 and cells[("ethnicity", "nurse", "black")]["rank"] == 3
    assert "nurse" in report.text().splitlines()[1]
    per_group = bias_report(sweep_rows(), normalise="group")
    ethnicity = [c["normalised"] for c in per_group.cells if c["group"] == "ethnicity"]
    assert min(ethnicity) == pytest.approx(0.0) and max(ethnicity) == pytest.approx(1.0)
    ppid = {(c["row"], c["column"]): c["mean"] for c in bias_report(sweep_rows(), measure="ppid").cells}
    assert ppid[("nurse", "female")] == pytest.approx(3.5)


def test_report_choices_are_checked():
    with pytest.raises(ConfigError, match="PID and CPID rows"):
        bias_report(sweep_rows(conditional=(False, True)))
    assert bias_report(sweep_rows(conditional=(False, True)), conditional=True).label == "CPID mmi redundancy"
    with pytest.raises(ConfigError, match="no column 'job_title'"):
        bias_report(sweep_rows(), row="job_title")
    with pytest.raises(ConfigError, match="no rows of measure 'imin'"):
        bias_report(sweep_rows(), measure="imin")
    with pytest.raises(ConfigError, match="atom '\\{3\\}'"):
        bias_report(sweep_rows(), atom="{3}")
    synergy = bias_report(sweep_rows(), atom="{12}", normalise="none")
    assert synergy.label == "PID mmi synergy" and synergy.cells[0]["normalised"] == pytest.approx(0.4)
    flat = bias_report(sweep_rows(), atom="{12}")  # every cell 0.4: nothing stands out, no division by zero
    assert flat.flat() == ["study"] and {c["normalised"] for c in flat.cells} == {0.0}
    assert bias_report(sweep_rows()).flat() == []
    # ccs rows win the default when a sweep has them
    assert bias_report(sweep_rows(measures=("mmi", "ccs"))).measure == "ccs"


def test_save_report_and_cli(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pyarrow.parquet.write_table(pa.Table.from_pylist(sweep_rows()), sweep / "part-000000.parquet")
    (sweep / "_sweep.json").write_text("{}")
    assert main(["report", str(sweep), "--out", str(tmp_path / "report"), "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[3].split()[:4] == ["1", "gender", "nurse", "female"]
    with open(tmp_path / "report" / "ranking.csv") as handle:
        ranking = list(csv.DictReader(handle))
    assert ranking[0]["occupation"] == "nurse" and ranking[0]["top"] == "female" and float(ranking[0]["gap"]) == 1.0
    assert float(ranking[0]["bias"]) > float(ranking[1]["bias"]) > 0
    with open(tmp_path / "report" / "cells.csv") as handle:
        cells = list(csv.DictReader(handle))
    assert len(cells) == 12 and set(cells[0]) >= {"occupation", "attribute", "normalised", "rank", "interaction"}
    for name in ("bar_chart.png", "heatmap.png"):
        assert Image.open(tmp_path / "report" / name).size[0] > 400
    assert main(["report", str(sweep), "--out", str(tmp_path / "report")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    paths = save_report(bias_report(sweep), tmp_path / "report", overwrite=True)
    assert [p.name for p in paths] == ["cells.csv", "ranking.csv", "bar_chart.png", "heatmap.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "bias_sweep.ipynb"


@pytest.mark.e2e
def test_bias_notebook_executes(tmp_path):
    """The notebook runs a small sweep on the demo model (48 jobs) and shows the report, the
    designed bias on top: about a minute on a 2-core CPU."""
    notebook = notebooks.execute(NOTEBOOK.name, tmp_path)
    assert notebooks.images_in(notebook) >= 1
    printed = notebooks.printed_by(notebook)
    assert "jobs/min" in printed
    # The demo's designed bias tops the report (ccs redundancy, deterministic seeds and keys),
    # and the colour word adds least to "a triangle" when that colour is green.
    assert "most biased: triangle -> green" in printed
    assert "colour the shape word implies most: triangle -> green" in printed
