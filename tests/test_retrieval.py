"""Compositional retrieval: the choice against an independent per-caption NLL computation, one
compilation per shape, ties, bad items refused by line, ARO's published layouts (small fixtures
written here), the demo's items and the notebook. End-to-end runs use a tiny random pipeline with
a VAE; images are PNG files the tests write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import notebooks
import jaxpid
from jaxpid.cli.app import main
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.estimator import information
from jaxpid.demo import dataset
from jaxpid.errors import ConfigError, PromptError
from jaxpid.studies.aro import load_aro, order_options, pre_caption
from jaxpid.studies.base import run_study
from jaxpid.studies.retrieval import (
    RetrievalConfig,
    check_items,
    choose,
    demo_items,
    load_item_image,
    plan_retrieval,
    read_retrieval_manifest,
    run_retrieval,
)
from jaxpid.studies.retrieval_summary import (
    MACRO_RULES,
    benchmark_of,
    macro_accuracy,
    retrieval_summary,
)

CONFIG = RetrievalConfig(EstimatorConfig(n_samples=6, chunk_size=3), batch_size=2)
FAST = ["--samples", "6", "--chunk-size", "3", "--batch-size", "2", "--no-progress"]
CAPTIONS = [["a red car", "a blue car", "a red dog"], ["a photo of a dog", "a photo of a cat", "a dog on a car"],
            ["the man on the beach", "the beach on the man", "a woman on the beach"]]


@pytest.fixture(scope="module")
def folder(sd1_folder):
    return sd1_folder


@pytest.fixture(scope="module")
def pipeline(folder):
    return jaxpid.load_pipeline(folder)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four PNG files of different sizes (the study resizes them to the model's)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i, size in enumerate([(16, 16), (20, 12), (9, 30), (16, 16)]):
        Image.fromarray(rng.integers(0, 256, size=size + (3,), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _items(images: Path, captions=CAPTIONS) -> list[dict]:
    return [{"image": str(images / f"{i}.png"), "captions": c, "label": i % len(c), "group": "ab"[i % 2]}
            for i, c in enumerate(captions)]


def test_choice_equals_an_independent_per_caption_nll(pipeline, images, tmp_path):
    study = run_retrieval(pipeline, _items(images), tmp_path / "study", CONFIG)
    rows = study.run.rows.to_pylist()
    base = CONFIG.estimator.prng_key()
    for i, row in enumerate(rows):
        pixels = load_item_image(_items(images)[i], pipeline.image_size)
        latents = pipeline.encode_images(pixels[None])
        key = jax.random.fold_in(base, i)[None]  # the item's key: the same (alpha, eps) draws as the study
        nll = []
        for caption in row["captions"]:  # each caption in a pass of its own (with "" as a second conditioning)
            res = information(pipeline.denoiser, latents, pipeline.encode_prompt([caption, ""]), key=key,
                              n_samples=6, chunk_size=3)
            nll.append(res.nll[0, 0])
        np.testing.assert_allclose(row["nll"], nll, rtol=1e-6)  # float32 rounding of another batch layout
        assert np.diff(np.sort(nll)).min() > 1e-2  # the captions' NLLs are far apart compared with it
        assert row["choice"] == int(np.argmin(nll)) and row["correct"] == float(np.argmin(nll) == row["label"])
        assert row["choice_mi"] == int(np.argmax(row["mi_orthogonal"]))
        others = [n for c, n in enumerate(nll) if c != row["label"]]
        assert row["margin"] == pytest.approx(nll[row["label"]] - min(others), abs=2e-3)
        # the standard-form information against "" ranks the captions as the NLL does
        assert int(np.argmax(row["mi_standard"])) == row["choice"]
    summary = study.summary
    assert summary["n_items"] == 3 and summary["chance"] == pytest.approx(1 / 3)
    assert summary["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert set(summary["groups"]) == {"a", "b"} and summary["expected_ties"] is None
    # micro = accuracy over items (the `accuracy` key, unchanged); macro = mean of the two groups' accuracies
    assert summary["accuracy_micro"] == summary["accuracy"] and summary["n_groups_macro"] == 2
    assert summary["accuracy_macro"] == pytest.approx(np.mean([g["accuracy"] for g in summary["groups"].values()]))
    assert summary["macro"]["rule"] == "groups" and len(summary["accuracy_macro_ci"]) == 2
    assert sorted(p.name for p in study.paths) == ["groups.png", "items.parquet", "summary.json"]
    record = json.loads((tmp_path / "study" / "summary.json").read_text())
    assert record["study"] == "retrieval" and record["accuracy_ci"][0] <= record["accuracy"] <= record["accuracy_ci"][1]


def test_one_compilation_per_shape_and_resume(pipeline, images, tmp_path, compilations):
    captions = [c[:2] for c in CAPTIONS] + [["a red car", "a car"]]
    plan = plan_retrieval(_items(images, captions), CONFIG, pipeline.identity())
    assert [b.jobs for b in plan.batches] == [(0, 1), (2, 3)]
    assert not run_study(plan, tmp_path / "study", pipeline=pipeline, shard=(0, 2)).complete
    with compilations() as count:  # the second batch: same shape, nothing compiles
        study = run_retrieval(pipeline, _items(images, captions), tmp_path / "study", CONFIG)
    assert count[0] == 0 and study.run.summary.computed == (1,) and study.summary["n_items"] == 4


def test_ties_earn_a_share_and_expected_ties_are_reported_apart():
    assert choose([3.0, 1.0, 2.0], 1, lowest=True).credit == 1.0
    tie = choose([1.0, 1.0, 2.0], 1, lowest=True)
    assert tie.index == 0 and tie.credit == 0.5
    assert choose([1.0, 5.0], 1, lowest=False).credit == 1.0
    rows = [{"correct": c, "correct_mi": c, "margin": m, "n_captions": 2, "group": g, "expect": e,
             "margin_stderr": 0.1, "margin_stderr_independent": 1.0}
            for c, m, g, e in [(1.0, -2.0, "x", None), (0.0, 1.0, "x", None), (0.5, 0.0, "y", None),
                               (1.0, -0.1, "syn", "tie"), (0.0, 0.3, "syn", "tie")]]
    s = retrieval_summary(pa.Table.from_pylist(rows))
    assert s["n_items"] == 3 and s["accuracy"] == pytest.approx(1.5 / 3) and s["ties"] == 1
    assert s["groups"]["x"]["accuracy"] == 0.5 and s["n_items_total"] == 5
    assert s["expected_ties"]["n_items"] == 2 and s["expected_ties"]["other_preferred"] == 0.5
    assert s["margin_mc_stderr"]["ratio"] == pytest.approx(10.0)


def _rows(spec) -> pa.Table:
    """Synthetic item rows: (credit, group, expect) each."""
    return pa.Table.from_pylist([{"correct": c, "correct_mi": c, "margin": 0.0, "n_captions": 2, "group": g,
                                  "expect": e, "margin_stderr": 0.1, "margin_stderr_independent": 0.2}
                                 for c, g, e in spec])


def test_macro_and_micro_accuracy_on_groups_of_unequal_size():
    # group a: 3 of 4 right, group b: 0 of 1, a tie in c (1/2), one expected tie (left out of both)
    spec = [(1.0, "a", None)] * 3 + [(0.0, "a", None), (0.0, "b", None), (0.5, "c", None), (1.0, "syn", "tie")]
    s = retrieval_summary(_rows(spec))
    assert s["accuracy"] == s["accuracy_micro"] == pytest.approx(3.5 / 6)  # the key users read stays the micro one
    assert s["accuracy_micro_ci"] == s["accuracy_ci"]
    assert s["accuracy_macro"] == pytest.approx((0.75 + 0.0 + 0.5) / 3) and s["n_groups_macro"] == 3
    lo, hi = s["accuracy_macro_ci"]
    assert lo < s["accuracy_macro"] < hi and s["macro"]["n_items"] == 6 and s["macro"]["groups_left_out"] == {}
    # the bootstrap's s.d. is the stratified binomial s.e. sqrt(sum p(1-p)/n_g) / G (b and c have no spread)
    assert s["accuracy_macro_stderr"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4) / 3, rel=0.1)
    again = retrieval_summary(_rows(spec))  # seeded
    assert again["accuracy_macro_ci"] == s["accuracy_macro_ci"] and again["macro"] == s["macro"]

    # ARO's rules: VG-A drops attribute pairs with < 25 items, VG-R the notebook's symmetric relations
    pairs = [(1.0, "red_blue", None)] * 20 + [(0.0, "red_blue", None)] * 5 + [(1.0, "big_small", None)] * 3
    vga = retrieval_summary(_rows(pairs), "vg_attribution")
    assert vga["accuracy_macro"] == pytest.approx(0.8) and vga["n_groups_macro"] == 1
    assert vga["macro"]["groups_left_out"] == {"big_small": 3} and vga["accuracy_micro"] == pytest.approx(23 / 28)
    assert vga["macro"]["without_exclusions"]["accuracy"] == pytest.approx(0.9)
    assert retrieval_summary(_rows(pairs))["accuracy_macro"] == pytest.approx(0.9)  # a plain manifest keeps all
    relations = [(1.0, "on", None), (0.0, "on", None), (1.0, "near", None), (1.0, "next to", None)]
    vgr = retrieval_summary(_rows(relations), "vg_relation")
    assert vgr["accuracy_macro"] == 0.5 and vgr["macro"]["groups_left_out"] == {"near": 1, "next to": 1}
    # order sets and manifests without groups: one accuracy over all items, macro = micro
    for benchmark, rows in (("coco_order", relations), (None, [(c, None, e) for c, _, e in spec])):
        flat = retrieval_summary(_rows(rows), benchmark)
        assert flat["accuracy_macro"] == flat["accuracy_micro"] and flat["accuracy_macro_ci"] == flat["accuracy_ci"]
        assert flat["n_groups_macro"] == 0 and "macro = micro" in flat["macro"]["note"]
    with pytest.raises(ConfigError, match="benchmark must be one of"):
        retrieval_summary(_rows(spec), "vg_relations")
    everything_out = macro_accuracy([{"correct": 1.0, "group": "near"}], MACRO_RULES["vg_relation"])
    assert everything_out["n_groups"] == 0 and np.isnan(everything_out["accuracy"])
    assert benchmark_of("aro:vg_attribution:/data/visual_genome_attribution.json") == "vg_attribution"
    assert benchmark_of("demo") is None and benchmark_of("items") is None and benchmark_of(None) is None


def test_bad_items_are_refused_by_line_and_nothing_is_written(folder, pipeline, images, tmp_path):
    good = json.dumps({"image": str(images / "0.png"), "captions": ["a red car", "a blue car"]})
    cases = [
        ({"image": str(images / "0.png"), "captions": ["a red car"]}, "line 2: an item needs at least two captions"),
        ({"image": str(images / "0.png"), "captions": ["a red car", "a dog"], "label": 2},
         r"line 2: label 2 is out of range for 2 captions"),
        ({"image": "missing.png", "captions": ["a red car", "a dog"]}, r"line 2: .*missing.png does not exist"),
        ({"image": str(images / "0.png"), "captions": ["a", "b"], "crop": [0, 0, 0, 4]}, "line 2: crop must be"),
        ({"image": str(images / "0.png"), "captions": ["a", "b"], "caption": "a"}, r"line 2: unknown field"),
    ]
    path = tmp_path / "items.jsonl"
    for item, message in cases:
        path.write_text(good + "\n" + json.dumps(item) + "\n")
        with pytest.raises(ConfigError, match=message):
            read_retrieval_manifest(path)
        out = tmp_path / "out"
        assert main(["study", "retrieve", str(path), "--model", str(folder), "--out", str(out), *FAST]) == 2
        assert not out.exists()
    long = {"image": str(images / "0.png"), "captions": ["a red car", "a red " + "car " * 80]}
    path.write_text(good + "\n" + json.dumps(long) + "\n")
    with pytest.raises(PromptError, match="line 2: .*tokens"):
        run_study(plan_retrieval(path, CONFIG, pipeline.identity()), tmp_path / "long", pipeline=pipeline)
    assert not (tmp_path / "long").exists()
    with pytest.raises(ConfigError, match="item 0: an item needs at least two captions"):
        check_items([{"render": "a red circle", "captions": ["a red circle"]}])


# ------------------------------------------------------------------------------------------ ARO


def _write_image(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size[::-1] + (3,), np.uint8)
    pixels[5:15, 10:30] = (255, 0, 0)  # a red box at x 10..30, y 5..15
    Image.fromarray(pixels).save(path, format="PNG")  # lossless, whatever the name says


@pytest.fixture
def aro_files(tmp_path):
    """Small files in ARO's published layouts, and their images."""
    images = tmp_path / "images"
    for name in ("1.jpg", "2.jpg", "val2014/COCO_val2014_1.jpg", "flickr30k-images/7.jpg"):
        _write_image(images / name)
    vg = {"image_path": "1.jpg", "image_id": "1", "bbox_x": 10, "bbox_y": 5, "bbox_w": 20, "bbox_h": 10,
          "true_caption": "the dog is on the car", "false_caption": "the car is on the dog"}
    files = {
        "vg_relation": [{**vg, "relation_name": "on", "subj": "dog", "obj": "car"},
                        {**vg, "image_path": "2.jpg", "relation_name": "near"}],
        "vg_attribution": [{**vg, "attributes": ["red", "blue"], "obj1_name": "car", "obj2_name": "dog",
                            "true_caption": "the red car and the blue dog",
                            "false_caption": "the blue car and the red dog"},
                           {**vg, "image_path": "2.jpg", "attributes": ["small", "wooden"],
                            "true_caption": "the small car and the wooden dog",
                            "false_caption": "the wooden car and the small dog"},
                           {**vg, "attributes": ["red", "blue"], "true_caption": "the red dog and the blue car",
                            "false_caption": "the blue dog and the red car"}],
        "coco_order": [{"image": "val2014/COCO_val2014_1.jpg", "caption_options": [
            "a red car on the beach", "a beach car on the red", "red a car on beach the", "car a red the on beach",
            "the beach a red car on"]}],
        "flickr_order": [{"image": "flickr30k-images/7.jpg", "caption": ["A man, on the beach.", "A red dog."],
                          "image_id": "7"}],
    }
    paths = {}
    for kind, entries in files.items():
        paths[kind] = tmp_path / f"{kind}.json"
        paths[kind].write_text(json.dumps(entries))
    return paths, images


def _tagger(text: str) -> list[tuple[str, str]]:
    """A stand-in part-of-speech tagger: nouns and adjectives of the fixtures' vocabulary."""
    tags = {"man": "NN", "beach": "NN", "dog": "NN", "red": "JJ"}
    return [(t, tags.get(t.lower(), "DT")) for t in re.findall(r"\w+|[^\w\s]", text)]


def test_aro_loaders_read_the_published_layouts(aro_files):
    paths, images = aro_files
    relation = load_aro("vg_relation", paths["vg_relation"], images)
    assert [r["group"] for r in relation] == ["on", "near"]
    assert relation[0]["captions"] == ["the car is on the dog", "the dog is on the car"] and relation[0]["label"] == 1
    assert relation[0]["crop"] == [10, 5, 20, 10] and relation[0]["image"] == str(images / "1.jpg")
    # cropped to the bounding box as ARO does: the red box fills the image
    crop = load_item_image(relation[0], (8, 8))
    assert crop.shape == (8, 8, 3) and (crop == (255, 0, 0)).all()
    whole = load_item_image({k: v for k, v in relation[0].items() if k != "crop"}, (8, 8))
    assert (whole[..., 0] < 100).any()
    attributions = load_aro("vg_attribution", paths["vg_attribution"], images)
    # the grouping key ARO's macro accuracy averages over: the relation (VG-R), the attribute pair (VG-A)
    assert [a["group"] for a in attributions] == ["red_blue", "small_wooden", "red_blue"]
    attribution = attributions[0]
    assert attribution["captions"][1] == "the red car and the blue dog" and attribution["label"] == 1
    (coco,) = load_aro("coco_order", paths["coco_order"], images)
    assert coco["label"] == 0 and len(coco["captions"]) == 5 and coco["captions"][0] == "a red car on the beach"
    flickr = load_aro("flickr_order", paths["flickr_order"], images, tagger=_tagger)
    assert len(flickr) == 2 and all(len(f["captions"]) == 5 and f["label"] == 0 for f in flickr)
    assert flickr[0]["captions"][0] == pre_caption("A man, on the beach.") == "a man, on the beach"
    for item in flickr:  # every option reorders the same words
        words = [sorted(re.findall(r"\w+", c)) for c in item["captions"]]
        assert all(w == words[0] for w in words)
    assert flickr == load_aro("flickr_order", paths["flickr_order"], images, tagger=_tagger)  # seeded
    check_items(relation + [attribution, coco] + flickr)
    assert len(load_aro("vg_relation", paths["vg_relation"], images, limit=1)) == 1


def test_aro_loaders_name_the_entry_at_fault(aro_files, tmp_path):
    paths, images = aro_files
    entries = json.loads(paths["vg_relation"].read_text())
    entries[1]["image_path"] = "missing.jpg"
    paths["vg_relation"].write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=r"vg_relation.json entry 1: image .*missing.jpg does not exist"):
        load_aro("vg_relation", paths["vg_relation"], images)
    del entries[0]["true_caption"]
    paths["vg_relation"].write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=r"entry 0: missing 'true_caption'"):
        load_aro("vg_relation", paths["vg_relation"], images)
    with pytest.raises(ConfigError, match="must name one of"):
        load_aro("vg_relations", paths["vg_relation"], images)
    with pytest.raises(ConfigError, match="no such folder"):
        load_aro("coco_order", paths["coco_order"], tmp_path / "nowhere")
    options = order_options("A man, on the beach.", _tagger, np.random.default_rng(0))
    assert options[0] == "a man, on the beach" and len(options) == 5


def test_cli_runs_aro_files(folder, aro_files, tmp_path, capsys):
    paths, images = aro_files
    out = tmp_path / "out"
    args = ["study", "retrieve", "--aro", "vg_relation", str(paths["vg_relation"]), "--images", str(images),
            "--model", str(folder), "--out", str(out), *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy of the lowest-NLL caption" in printed and "items/min" in printed
    record = json.loads((out / "summary.json").read_text())
    assert set(record["groups"]) == {"on", "near"} and record["chance"] == 0.5 and record["n_items"] == 2
    # --aro vg_relation: the macro accuracy follows ARO's rule ("near" is one of its symmetric relations)
    assert record["macro"]["rule"] == "vg_relation" and record["macro"]["groups_left_out"] == {"near": 1}
    assert record["n_groups_macro"] == 1 and record["accuracy_macro"] == record["groups"]["on"]["accuracy"]
    assert record["accuracy_micro"] == record["accuracy"]
    assert "micro (every item, Wilson)" in printed and "macro (mean over 1 group, 1 left out" in printed
    assert main(["study", "retrieve", "--aro", "vg_relation", str(paths["vg_relation"]), "--out", str(out)]) == 2


def test_demo_items_have_known_answers():
    items = demo_items(8, seed=3)
    assert items == demo_items(8, seed=3) and len(items) == 32
    check_items(items)
    for item in items:
        true = item["captions"][item["label"]]
        assert item["render"] == true and len(item["captions"]) == 2
        specs = [dataset.parse_caption(c) for c in item["captions"]]  # captions of the demo's grammar
        if item["group"] == "synonym":
            assert item["expect"] == "tie" and specs[0] == specs[1]  # crimson = red: the same scene
        else:
            assert "expect" not in item and specs[0] != specs[1]
    pixels = load_item_image(items[0], (20, 20))
    assert pixels.shape == (20, 20, 3) and pixels.dtype == np.uint8
    assert {i["group"] for i in items} == {"attribute", "order", "relation", "synonym"}


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "retrieval.ipynb"


@pytest.mark.e2e
def test_retrieval_notebook_executes(tmp_path):
    """notebooks/retrieval.ipynb scores the demo's swaps and synonyms."""
    notebook = notebooks.execute("retrieval.ipynb", tmp_path)
    assert notebooks.images_in(notebook) >= 1
    printed = notebooks.printed_by(notebook)
    assert "items/min" in printed and "attribute" in printed and "synonym" in printed
