"""The localization study: items from manifests, COCO files and the demo's renderer, the maps of
one fused pass, thresholds (tuned and held out), the command end to end and resumed, its errors,
and the notebook."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import notebooks
import jaxpid
from jaxpid.cli.app import main
from jaxpid.cli.parsers import LOCALIZE_METHODS
from jaxpid.core.estimator import FusedPass
from jaxpid.errors import PromptError
from jaxpid.studies.localize import (
    METHODS,
    ROW_SCHEMA,
    THRESHOLDS,
    LocalizeConfig,
    LocalizePlan,
    conditioning_prompts,
    overlay_items,
    summarise,
)
from jaxpid.studies.localize_items import coco_items, coco_mask, demo_items, locate_word, plural

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "localization.ipynb"
FAST = ["--samples", "2", "--batch-size", "4", "--no-progress"]  # one compiled pass shape for every CLI run here


@pytest.fixture(scope="module")
def tiny_model(sd1_folder):
    """The shared tiny random SD 1.x-like pipeline folder (VAE, 16 px images, 8x8 latents)."""
    return sd1_folder


def _cli(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------------- items


def test_words_phrases_and_conditionings():
    assert locate_word("A Traffic light, next to people.", "traffic light", "x") == (1, 2)
    assert locate_word("a red dog and a blue dog", "dog@2", "x") == (6, 1)
    with pytest.raises(PromptError, match="occurs 2 times.*dog@1, dog@2"):
        locate_word("a red dog and a blue dog", "dog", "line 4")
    with pytest.raises(PromptError, match="line 7: 'cat' is not in the prompt"):
        locate_word("a red dog", "cat", "line 7")
    assert [plural(n) for n in ("dog", "person", "bus", "traffic light", "teddy bear", "skis", "knife")] == [
        "dogs", "people", "buses", "traffic lights", "teddy bears", "skis", "knives"]
    item = {"prompt": "a red car, on the beach", "start": 2, "length": 1}
    assert conditioning_prompts(item, LocalizeConfig()) == ["", "car", "a red, on the beach", "a red car, on the beach"]
    three = LocalizeConfig(methods=("cmi", "attention"))
    assert conditioning_prompts(item, three) == ["", "a red, on the beach", "a red car, on the beach"]
    assert three.pairs == [(2, 1)] and LocalizeConfig().pairs == [(3, 2), (3, 1)]  # the CMI pair first
    assert tuple(LOCALIZE_METHODS) == METHODS  # the parser's choices are the study's methods


def test_demo_set_has_exact_masks_of_both_word_kinds():
    items = demo_items(8, seed=3)
    assert [(i["kind"], i["objects"]) for i in items[:4]] == [("colour", 1), ("shape", 1), ("colour", 2), ("shape", 2)]
    plan = LocalizePlan(items, LocalizeConfig(overlays=4), {"name": "m"}, source="demo")
    for item in plan.items:
        image, mask = plan.loader.load(item)
        assert image.shape == (20, 20, 3) and mask.shape == (20, 20) and 20 < mask.sum() < 150
        words = item["prompt"].split()
        assert words[item["start"]] == item["word"] and words.count(item["word"]) == 1
        target = item["extra"]["scene"][item["extra"]["target"]]
        assert item["word"] in target[:2]  # the word names the masked object's shape or colour
        centre_x = target[2]
        assert abs(np.nonzero(mask)[1].mean() - centre_x) < 2.5  # and the mask is that object
    assert demo_items(8, seed=3) == items and demo_items(8, seed=4) != items
    assert {plan.items[i]["kind"] for i in plan.overlays} == {"colour", "shape"}
    assert overlay_items(plan.items, 2) == (0, 1)


def _rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.T.ravel().astype(int)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return np.diff(np.concatenate([[0], changes])).tolist()


@pytest.fixture
def coco_fixture(tmp_path):
    """A small COCO-format set: 3 images of different sizes, polygons, uncompressed and compressed
    RLE, plural and phrase category names, a category no caption names, an image no caption names."""
    from pycocotools import mask as api

    folder = tmp_path / "coco"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {1: (24, 16), 2: (16, 16), 3: (20, 12)}  # (width, height)
    for image_id, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "images" / f"{image_id:012d}.png")
    rectangle = np.zeros((16, 24), bool)
    rectangle[9:14, 14:22] = True
    cat = np.zeros((16, 24), bool)
    cat[1:6, 1:7] = True
    dog3 = np.zeros((12, 20), bool)
    dog3[2:10, 5:15] = True
    compressed = lambda m: {**(r := api.encode(np.asfortranarray(m.astype(np.uint8)))), "counts": r["counts"].decode()}
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": [[2.0, 2.0, 10.0, 2.0, 10.0, 8.0, 2.0, 8.0]]},
        {"id": 2, "image_id": 1, "category_id": 17, "iscrowd": 0, "segmentation": compressed(cat)},
        {"id": 3, "image_id": 1, "category_id": 18, "iscrowd": 1,
         "segmentation": {"counts": _rle_counts(rectangle), "size": [16, 24]}},
        {"id": 4, "image_id": 2, "category_id": 10, "iscrowd": 0, "segmentation": [[1.0, 1.0, 6.0, 1.0, 6.0, 12.0, 1.0, 12.0]]},
        {"id": 5, "image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": [[8.0, 3.0, 14.0, 3.0, 14.0, 14.0, 8.0, 14.0]]},
        {"id": 6, "image_id": 3, "category_id": 6, "iscrowd": 0, "segmentation": [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]]},
        {"id": 7, "image_id": 3, "category_id": 18, "iscrowd": 0, "segmentation": compressed(dog3)},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 6, "name": "bus"}, {"id": 10, "name": "traffic light"},
                  {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    images = [{"id": i, "file_name": f"{i:012d}.png", "width": w, "height": h} for i, (w, h) in sizes.items()]
    captions = [
        {"id": 11, "image_id": 1, "caption": "Two dogs and a cat on a sofa."},
        {"id": 12, "image_id": 1, "caption": "a cat sleeping"},
        {"id": 13, "image_id": 2, "caption": "A traffic light next to people."},
        {"id": 14, "image_id": 3, "caption": "a red car on the beach"},
        {"id": 15, "image_id": 3, "caption": "A Dog in the rain"},
    ]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": categories}))
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    return folder, {"rectangle": rectangle, "cat": cat, "dog3": dog3}


def test_coco_items_as_info_decomp_built_coco_it(coco_fixture):
    folder, truth = coco_fixture
    items, segmentations = coco_items(folder / "instances.json", folder / "captions.json", folder / "images")
    assert [(i["extra"]["coco_image_id"], i["extra"]["category"], i["word"]) for i in items] == [
        (1, "dog", "dogs"), (1, "cat", "cat"), (2, "traffic light", "traffic light"), (2, "person", "people"),
        (3, "dog", "Dog")]
    assert items[0]["prompt"] == "Two dogs and a cat on a sofa." and items[2]["length"] == 2
    dog = coco_mask(*segmentations[0])  # a polygon and a crowd region's uncompressed RLE: their union
    assert dog.shape == (16, 24) and (dog & truth["rectangle"]).sum() == truth["rectangle"].sum()
    assert dog[3:8, 3:10].all() and not dog[:, 11:14].any() and not dog[:1].any()
    np.testing.assert_array_equal(coco_mask(*segmentations[1]), truth["cat"])  # compressed RLE
    np.testing.assert_array_equal(coco_mask(*segmentations[4]), truth["dog3"])
    limited, _ = coco_items(folder / "instances.json", folder / "captions.json", folder / "images", limit=2)
    assert len(limited) == 2


# ---------------------------------------------------------------------------------- summary


def test_thresholds_tuned_on_every_item_and_held_out_on_a_calibration_split():
    items = demo_items(8, seed=0)
    config = LocalizeConfig(methods=("cmi",), overlays=0)
    plan = LocalizePlan(items, config, {"name": "m"}, source="demo")
    rng = np.random.default_rng(1)
    curves = rng.uniform(0, 1, (8, len(THRESHOLDS)))
    rows = []
    for i, item in enumerate(plan.items):
        rows.append({"item": i, "method": "cmi", "kind": item["kind"], "objects": item["objects"],
                     "ious": curves[i].tolist(), "iou_mean_std": 0.5, "whole_image_iou": 0.1,
                     "mask_pixels": 0 if i == 5 else 10, "frame": [0, 0, 20, 20], "map": None,
                     "map_height": 20, "map_width": 20, "batch": i // 4, "batch_seconds": 2.0,
                     "batch_compile_seconds": 1.0 - i // 4})
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    result = summarise(plan, table, calibration_fraction=0.25, seed=7)
    calibration = np.zeros(8, bool)
    calibration[np.random.default_rng(7).permutation(8)[:2]] = True
    valid = np.arange(8) != 5  # an empty mask in the frame: left out and counted
    held = np.argmax(curves[valid & calibration].mean(0))
    tuned = np.argmax(curves[valid].mean(0))
    s = result.summary["methods"]["cmi"]
    assert s["threshold"] == pytest.approx(THRESHOLDS[held]) and s["threshold_tuned"] == pytest.approx(THRESHOLDS[tuned])
    assert s["miou"] == pytest.approx(curves[valid & ~calibration, held].mean())
    assert s["miou_tuned"] == pytest.approx(curves[valid, tuned].mean()) and s["n"] == int((valid & ~calibration).sum())
    assert result.summary["excluded"]["empty_mask_in_frame"] == 1
    colour = np.array([it["kind"] == "colour" for it in plan.items])
    assert result.summary["kinds"]["colour"]["cmi"]["miou"] == pytest.approx(
        curves[valid & ~calibration & colour, held].mean())
    rate = result.summary["throughput"]  # from each batch's stored wall time: 8 items in 2 x 2 s, 1 s compiling
    assert rate["items_per_minute"] == pytest.approx(120.0) and rate["items_per_minute_without_compiling"] == pytest.approx(160.0)
    out = result.items.to_pydict()
    assert out["split"].count("calibration") == 2 and out["iou_tuned"][0] == pytest.approx(curves[0, tuned])


# ---------------------------------------------------------------------------------- the command


def test_bad_inputs_are_refused_naming_the_line_and_write_nothing(tmp_path, capsys, coco_fixture):
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
    good = {"image": "a.png", "prompt": "a red car on the beach", "word": "car", "mask": "a_mask.png"}
    cases = [
        ({**good, "image": "missing.png"}, r"line 2: image: .*missing.png does not exist"),
        ({**good, "mask": "gone.png"}, r"line 2: mask: .*gone.png does not exist"),
        ({**good, "mask": "small_mask.png"}, r"line 2: the mask small_mask.png is 10x10 .* image a.png is 24x16 .*--resize-masks"),
        ({**good, "word": "dog"}, r"line 2: 'dog' is not in the prompt 'a red car on the beach'"),
    ]
    out = tmp_path / "out"
    for bad, message in cases:
        manifest = tmp_path / "items.jsonl"
        manifest.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        rc, _, err = _cli(["study", "localize", manifest, "--out", out], capsys)
        assert rc == 2 and __import__("re").search(message, err), err
        assert not out.exists()
    manifest.write_text("\n")
    rc, _, err = _cli(["study", "localize", manifest, "--out", out], capsys)
    assert rc == 2 and "has no items" in err and not out.exists()
    folder, _ = coco_fixture
    (folder / "no_captions.json").write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1}]}))
    rc, _, err = _cli(["study", "localize", "--coco", folder / "instances.json", "--captions",
                       folder / "no_captions.json", "--images", folder / "images", "--out", out], capsys)
    assert rc == 2 and "no_captions.json: no captions" in err and not out.exists()
    (folder / "images" / "000000000002.png").unlink()
    rc, _, err = _cli(["study", "localize", "--coco", folder / "instances.json", "--captions", folder / "captions.json",
                       "--images", folder / "images", "--out", out], capsys)
    assert rc == 2 and "COCO image 2 (000000000002.png), category 'traffic light': image" in err
    rc, _, err = _cli(["study", "localize", "demo", "--calibration-fraction", "1", "--out", out], capsys)
    assert rc == 2 and "calibration-fraction" in err and not out.exists()
    # a mask of another size is resized on request
    manifest.write_text(json.dumps({**good, "mask": "small_mask.png"}) + "\n")
    from jaxpid.studies.localize_items import manifest_items

    (item,) = manifest_items(manifest, resize_masks=True)
    plan = LocalizePlan([item], LocalizeConfig(resize_masks=True), {"name": "m"}, source="test")
    image, mask = plan.loader.load(plan.items[0])
    assert image.shape[:2] == mask.shape == (16, 24)


def test_coco_fixture_end_to_end_through_the_cli(tiny_model, coco_fixture, tmp_path, capsys):
    folder, _ = coco_fixture
    out = tmp_path / "coco-it"
    rc, printed, err = _cli(["study", "localize", "--coco", folder / "instances.json", "--captions",
                             folder / "captions.json", "--images", folder / "images", "--model", tiny_model,
                             "--out", out, *FAST], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "localize" and summary["n_items"] == 5 and set(summary["methods"]) == set(METHODS)
    for scores in summary["methods"].values():
        assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["miou_tuned"] <= 1.0
        assert np.isclose(THRESHOLDS, scores["threshold"]).any()
    assert "tuned on the evaluation set" in summary["binarisation"]["miou_tuned"]
    assert summary["config"]["fit"] == "squash" and summary["provenance"]["model"]["fingerprint"]
    items = pq.read_table(out / "items.parquet").to_pydict()
    assert len(items["item"]) == 5 * len(METHODS)
    assert {json.loads(e)["category"] for e in items["extra"]} == {"dog", "cat", "traffic light", "person"}
    assert all(len(c) == 4 for c in items["conditionings"])  # "", the word, the rest, the prompt
    phrase = items["item"].index(2)
    assert items["conditionings"][phrase][:3] == ["", "traffic light", "A next to people."]
    assert len(items["tokens"][phrase]) > 2  # the test tokenizer spells unknown words in characters: all summed
    assert (out / "overlays.png").stat().st_size > 0 and "mIoU" in printed and "held-out" in printed


def test_demo_set_resumes_after_an_interruption(tiny_model, tmp_path, capsys):
    """A study stopped after some batches (here: --shard 1/2 computes one of two) finishes where it
    stopped, and ends with the numbers of an uninterrupted run."""
    out, again = tmp_path / "demo", tmp_path / "demo-again"
    args = ["study", "localize", "demo", "--n", "6", "--model", tiny_model, *FAST]
    rc, printed, _ = _cli([*args, "--out", out, "--shard", "1/2"], capsys)
    assert rc == 0 and "not every batch is done" in printed and not (out / "summary.json").exists()
    rc, printed, _ = _cli([*args, "--out", out], capsys)
    assert rc == 0 and "1 batches computed now, 1 were done" in printed and (out / "summary.json").exists()
    rc, _, _ = _cli([*args, "--out", again], capsys)
    resumed, whole = (pq.read_table(d / "items.parquet").to_pydict() for d in (out, again))
    np.testing.assert_array_equal(resumed["ious"], whole["ious"])
    np.testing.assert_array_equal(resumed["cmi"], whole["cmi"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["kinds"]) == {"colour", "shape"} and set(summary["objects"]) == {"1", "2"}
    rc, _, err = _cli([*args[:4], "8", *args[5:], "--out", out], capsys)  # other items: refused, named
    assert rc == 2 and "another job table" in err


def test_attention_maps_of_the_sd_denoiser_come_from_the_same_fused_pass(tiny_model):
    pipe = jaxpid.load_pipeline(tiny_model)
    latents = jax.random.normal(jax.random.key(0), (4,) + pipe.latent_shape)
    conds = pipe.encode_prompt(["", "a red car", "a car on the beach", "a red car on the beach"])
    kwargs = dict(n_samples=2, reference=0, pairs=[(3, 2), (3, 1)])  # the study's pass shape above: compiled once
    res = FusedPass(pipe.denoiser, collect_aux=True, **kwargs)(latents, conds, key=jax.random.key(1))
    plain = FusedPass(pipe.denoiser, **kwargs)(latents, conds, key=jax.random.key(1))
    np.testing.assert_array_equal(res.mi_orthogonal, plain.mi_orthogonal)  # capturing changes no number
    np.testing.assert_array_equal(res.pair_maps_orthogonal, plain.pair_maps_orthogonal)
    assert res.aux.shape == (4, 4, 77) + pipe.latent_shape[1:]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(pipe.unet.params)[0]]
    layers = sum("attn2" in p and "to_q" in p for p in paths)
    assert layers >= 2
    np.testing.assert_allclose(res.aux.sum(axis=2), layers, rtol=1e-5)  # each layer's probabilities sum to 1


# ---------------------------------------------------------------------------------- notebook


@pytest.mark.e2e
def test_localization_notebook_executes(tmp_path):
    """notebooks/localization.ipynb runs the study on the demo set and shows the overlays and the table."""
    notebook = notebooks.execute(NOTEBOOK.name, tmp_path)
    assert notebooks.images_in(notebook) >= 1
    printed = notebooks.printed_by(notebook)
    assert "held-out" in printed and "word kind = shape" in printed
