"""The word-relations study and the measures' validation table (docs/validation.md): pair files,
errors naming the line, per-relation means equal to a direct computation from items.parquet, and
the validation table's structure and known-answer cells."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sd_folders import write_random_pipeline

from jaxpid.bench.validate import main as validate_bench
from jaxpid.cli import main
from jaxpid.errors import ConfigError, PromptError
from jaxpid.studies.validate import PHENOMENA, ground_truth_table
from jaxpid.studies.words import SETS, check_pair, demo_pairs, read_pairs, shipped_pairs

FAST = ["--samples", "4", "--steps", "2", "--batch-size", "3", "--chunk-size", "2", "--no-progress"]


def test_the_shipped_pair_sets_parse_and_name_two_words_of_their_prompt():
    rows = shipped_pairs()
    sizes = {name: sum(r["set"] == name for r in rows) for name in SETS}
    assert sizes == {"synonyms": 26, "homonyms": 40, "co-hyponyms": 30, "co-hyponyms-wordnet": 45}
    for row in rows:
        check_pair(row, row["set"])  # raises on any bad pair
    assert {r["relation"] for r in rows} == {"synonym", "homonym", "co-hyponym"}
    homonyms = [r for r in rows if r["relation"] == "homonym"]
    assert all(sum(r["word"] == h["word"] for r in homonyms) == 2 for h in homonyms)  # two senses each
    assert len(shipped_pairs(["synonyms"], seeds=[0, 1])) == 52
    with pytest.raises(ConfigError, match="unknown pair sets"):
        shipped_pairs(["antonyms"])
    for pair in demo_pairs([0]):
        check_pair(pair, "demo")


@pytest.mark.parametrize(
    "line, error, message",
    [
        ('{"prompt": "a red car", "sources": ["red", "car"]}', ConfigError, "line 2: missing ['relation']"),
        ('{"prompt": "a red car", "sources": ["red", "boat"], "relation": "x"}', PromptError, "line 2: .*'boat'"),
        ('{"prompt": "a red car", "sources": ["red", "Red"], "relation": "x"}', PromptError, "line 2: .*same word"),
        ('{"prompt": "a red car", "sources": ["red"], "relation": "x"}', ConfigError, "line 2: 'sources' must be two"),
        ('{"prompt": "a red car", "sources": ["red", "car"], "relation": ""}', ConfigError, "line 2: 'relation'"),
    ],
)
def test_bad_pairs_name_their_line(tmp_path, line, error, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "a blue dog", "sources": ["blue", "dog"], "relation": "co-hyponym"}\n' + line + "\n")
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]") if "missing" in message else message):
        read_pairs(path)


def test_words_study_summary_equals_a_direct_computation_from_its_items(tmp_path, capsys):
    folder = write_random_pipeline(tmp_path / "pipe", "sd1", seed=0, with_vae=False)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "a red car on the beach", "sources": ["red", "car"], "relation": "co-hyponym", "seed": s}
            for s in range(2)]
    rows += [{"prompt": "a blue dog on the beach", "sources": ["blue", "dog"], "relation": "synonym", "seed": 0}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "words"
    assert main(["study", "words", str(pairs), "--model", str(folder), "--out", str(out), "--examples", "0", *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    items = pq.read_table(out / "items.parquet").to_pylist()
    assert summary["default"] == {"measure": "ccs", "form": "anchored"} and summary["n_items"] == 3
    assert set(summary["relations"]) == {"co-hyponym", "synonym"}
    for relation, entry in summary["relations"].items():
        assert entry["n"] == sum(r["relation"] == relation for r in rows)
        for measure in ("mmi", "ppid", "ccs"):
            for form in ("anchored", "orthogonal", "standard"):
                mine = [r for r in items if (r["relation"], r["measure"], r["form"]) == (relation, measure, form)]
                for atom in ("redundancy", "unique_1", "unique_2", "synergy"):
                    cell = entry[measure][form]
                    assert cell["atoms"][atom]["mean"] == pytest.approx(np.mean([r[atom] for r in mine]))
                    shares = [r[atom] / r["joint"] for r in mine if r["joint"] > 0]
                    if shares:
                        assert cell["shares"][atom]["mean"] == pytest.approx(np.mean(shares))
                        assert [r[f"{atom}_share"] for r in mine if r["joint"] > 0] == pytest.approx(shares)
    assert (out / "shares.png").is_file() and "redundancy as a share" in capsys.readouterr().out


def test_validation_table_on_gaussian_mixtures_recovers_the_exact_atoms():
    """A small run of the table's known-answer half: every cell passes (the estimator is unbiased
    with the exact denoiser) and the labels of the canonical cases show."""
    cells = ground_truth_table(["mmi", "ccs"], n_images=12, n_samples=64, truth_samples=512)
    assert len(cells) == 8 * 2 * 3 and all(c["passed"] for c in cells), [c for c in cells if not c["passed"]]
    xor = next(c for c in cells if (c["case"], c["measure"], c["form"]) == ("XOR", "mmi", "standard"))
    assert xor["exact"][3] > 0.4 and abs(xor["exact"][0]) < 1e-9  # synergy only


def test_every_phenomenon_states_its_designed_answer_and_statistic():
    names = [p.name for p in PHENOMENA]
    assert len(names) == len(set(names)) and len(names) == 7
    for phenomenon in PHENOMENA:
        assert phenomenon.designed and phenomenon.statistic and phenomenon.cases
        assert phenomenon.passes(1.0, 0.1) != phenomenon.passes(-1.0, 0.1)  # the criterion has a direction
        assert not phenomenon.passes(0.1, 0.1)  # within two standard errors of 0 is no evidence


@pytest.mark.slow  # a minute on 2 CPU cores: 16 rendered cases x 12 decompositions, and the mixtures
def test_validate_study_cells_equal_a_direct_computation_and_become_a_benchmark_row(tmp_path, capsys):
    """A tiny run of `jaxpid study validate` on the demo: every cell's statistic is the mean of its
    per-image values in items.parquet (contrasts: minus the control's), the pass counts add up, and
    the benchmark records the folder as one row."""
    out = tmp_path / "validate"
    assert main(["study", "validate", "--model", "demo", "--out", str(out), "--n-images", "2", "--samples", "4",
                 "--gmm-images", "4", "--gmm-samples", "8", "--truth-samples", "16", "--known-images", "16",
                 "--known-samples", "4", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    items = pq.read_table(out / "items.parquet").to_pylist()
    # phenomena x measures x (3 forms + the world's exact rows) x modes
    assert len(summary["demo"]) == len(PHENOMENA) * 4 * 4 * 2
    by_name = {p.name: p for p in PHENOMENA}
    for cell in summary["demo"]:
        phenomenon = by_name[cell["phenomenon"]]
        means = [np.mean([phenomenon.per_image(r) for r in items
                          if (r["case"], r["measure"], r["form"], r["mode"]) == (case, cell["measure"], cell["form"],
                                                                                  cell["mode"])])
                 for case in phenomenon.cases]
        expected = means[0] - means[1] if phenomenon.contrast else means[0]
        # (the world has no maps: its maps cell is NaN, written as null: summary.json is strict JSON)
        statistic = np.nan if cell["statistic"] is None else cell["statistic"]
        assert statistic == pytest.approx(expected, abs=1e-9, nan_ok=True) and cell["n"] == 2
    world = [c for c in summary["demo"] if c["form"] == "world" and c["phenomenon"] == "distinct objects: atoms"
             and c["measure"] == "ccs" and c["mode"] == "conditional"]
    assert world[0]["statistic"] == pytest.approx(np.log(3), abs=1e-9)  # min(U1, U2): each shape word log 3
    for measure, passed in summary["passed"].items():
        cells = [c for c in summary["demo"] + summary["gaussian_mixtures"]
                 if c["measure"] == measure and c.get("form") != "world"]  # the world is the reference
        assert passed == sum(c["passed"] for c in cells) and summary["cells"][measure] == len(cells)
    table = (out / "table.md").read_text()
    assert table.count("| distinct objects: atoms |") == 8 and "| XOR-hidden | anchored |" in table
    assert "| distinct objects: atoms | world | conditional | ✓ +1.10 ± 0.00 |" in table
    assert "cells passed per measure" in capsys.readouterr().out
    assert validate_bench(["--from", str(out), "--results", str(tmp_path / "results")]) == 0
    row = json.loads((tmp_path / "results" / "validation.jsonl").read_text().splitlines()[-1])
    assert row["passed"] == summary["passed"] and row["table"] == table and "versions" in row["environment"]
