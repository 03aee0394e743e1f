"""The localization study's items: an image, a prompt, the word (or phrase) of the prompt that
names an object, and that object's mask — from a JSONL manifest, from COCO annotations (built
the way Info-Decomp built COCO-IT), or drawn by the demo's renderer (exact masks).

Every item is checked when it is built — files exist and decode, a mask has the size of its
image (unless masks are resized), the word is in the prompt — so a bad input fails before any
model work, naming its line (manifests), image and category (COCO) or item. Items are plain
JSON-able dicts (they key the study's fingerprint); ``ItemLoader`` turns one into its pixels and
mask when its batch is computed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxpid.demo import dataset
from jaxpid.errors import ConfigError, ImageReadError, PromptError
from jaxpid.sd.pipeline import load_image
from jaxpid.sd.prompts import phrase_starts, split_punctuation
from jaxpid.studies.manifest import read_manifest, resolve_path

KINDS_DEMO = ("colour", "shape")


# ---------------------------------------------------------------------------------------------
# The word in its prompt


def locate_word(prompt: str, word: str, where: str, *, first: bool = False) -> tuple[int, int]:
    """(first position, number of words) of ``word`` — a word or a phrase of consecutive words,
    ``word@N`` for its N-th occurrence — among ``prompt.split()``.

    Raises:
      PromptError: not in the prompt, or ambiguous (several occurrences, no @N, not ``first``).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"{where}: the prompt is empty")
    if not isinstance(word, str) or not word.strip():
        raise PromptError(f"{where}: the word is empty")
    phrase, _, occurrence = word.strip().rpartition("@") if "@" in word else (word.strip(), "", "")
    starts = phrase_starts(prompt, phrase)
    if not starts:
        raise PromptError(f"{where}: {phrase!r} is not in the prompt {prompt!r}")
    if occurrence:
        if not occurrence.isdigit() or not 1 <= int(occurrence) <= len(starts):
            raise PromptError(f"{where}: {phrase!r} occurs {len(starts)} time(s) in {prompt!r}; "
                              f"use {phrase}@1..{phrase}@{len(starts)}")
        start = starts[int(occurrence) - 1]
    elif len(starts) > 1 and not first:
        raise PromptError(f"{where}: {phrase!r} occurs {len(starts)} times in {prompt!r}; say which: "
                          + ", ".join(f"{phrase}@{n + 1}" for n in range(len(starts))))
    else:
        start = starts[0]
    return start, len(phrase.split())


# ---------------------------------------------------------------------------------------------
# Manifests


def manifest_items(path: str | Path, *, resize_masks: bool = False) -> list[dict]:
    """Items of a JSONL manifest: ``{"image", "prompt", "word", "mask"}`` per line (optional
    ``kind``, e.g. "noun"; other fields pass through), paths relative to the manifest.

    Raises:
      ConfigError / PromptError / ImageReadError, naming the line: a missing or unreadable image
      or mask, a mask of another size than its image (without ``resize_masks``), a word not in
      its prompt, an empty manifest.
    """
    path = Path(path)
    base = path.parent
    items = []
    for entry in read_manifest(path, required=("image", "prompt", "word", "mask"), what="localization manifest"):
        where = f"{path} line {entry['line']}"
        image = resolve_path(entry["image"], base, f"{where}: image")
        mask = resolve_path(entry["mask"], base, f"{where}: mask")
        image_size, mask_size = _image_size(image, where), _image_size(mask, where)
        if image_size != mask_size and not resize_masks:
            raise ConfigError(f"{where}: the mask {mask.name} is {_wxh(mask_size)} but the image {image.name} is "
                              f"{_wxh(image_size)}; pass --resize-masks (resize_masks=True) to resize masks to "
                              "their images")
        start, length = locate_word(entry["prompt"], entry["word"], where)
        kind = entry.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise ConfigError(f"{where}: kind must be a string, got {kind!r}")
        extra = {k: v for k, v in entry.items() if k not in ("image", "mask", "prompt", "word", "kind", "line")}
        items.append({"source": "manifest", "line": entry["line"], "image": str(image), "mask": str(mask),
                      "prompt": entry["prompt"], "word": entry["word"], "start": start, "length": length,
                      "kind": kind, "objects": None, "size": list(image_size), "extra": extra})
    return items


def _image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image file that decodes whole."""
    try:
        with Image.open(path) as image:
            # The header alone passes a truncated file, found only once the study reaches it.
            image.load()
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"{where}: {path} cannot be read as an image ({error})") from None


def _wxh(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]} (width x height)"


# ---------------------------------------------------------------------------------------------
# COCO (Info-Decomp's COCO-IT)

# English plurals of the COCO category names that adding "s" / "es" gets wrong.
_IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                      "scissors": "scissors", "bus": "buses", "glass": "glasses", "couch": "couches",
                      "sandwich": "sandwiches", "toothbrush": "toothbrushes", "bench": "benches",
                      "broccoli": "broccoli", "wine glass": "wine glasses", "dining table": "dining tables",
                      "hair drier": "hair driers", "sports ball": "sports balls", "bicycle": "bicycles"}


def plural(name: str) -> str:
    """The plural of a (COCO category) noun or noun phrase: its last word pluralised."""
    if name in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[name]
    *head, last = name.split()
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join(head + [last])


def coco_items(instances: str | Path, captions: str | Path, images: str | Path, *, limit: int | None = None,
               resize_masks: bool = False) -> tuple[list[dict], dict]:
    """COCO-IT items (Info-Decomp's ``coco_it_generator``): for each image, each category it has
    instances of, the first caption that contains the category's name or plural as whole words
    (case-insensitive; the plural when both occur); the word is that name as the caption writes it
    (phrases like "traffic light" included), the mask the union of the category's instance masks
    (polygons and RLE, crowd regions included).

    Returns:
      (items, segmentations): per item a dict; per item index the (segmentations, height, width)
      its mask is drawn from (``ItemLoader``). Only the first ``limit`` items are kept.

    Raises:
      ConfigError: a file that is not COCO JSON, a captions file without captions, an instances
        file without instances; ConfigError / ImageReadError naming the image: a missing image,
        one whose size differs from the annotation (unless ``resize_masks``).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    _coco_api()  # before reading anything
    instances, captions, images = Path(instances), Path(captions), Path(images)
    data = _read_json(instances, "instances")
    caption_data = _read_json(captions, "captions")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConfigError(f"{instances}: no {key!r} list: not a COCO instances file")
    caption_list = [a for a in caption_data.get("annotations") or [] if isinstance(a, dict) and "caption" in a]
    if not caption_list:
        raise ConfigError(f"{captions}: no captions (expected 'annotations' entries with a 'caption' field, as in "
                          "captions_val2017.json)")
    annotations = [a for a in data["annotations"] if isinstance(a, dict) and a.get("segmentation")]
    if not annotations:
        raise ConfigError(f"{instances}: no instance annotations with a segmentation")
    if not images.is_dir():
        raise ConfigError(f"--images {images}: no such folder")
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    captions_of: dict[int, list[str]] = {}
    for annotation in caption_list:
        captions_of.setdefault(annotation["image_id"], []).append(" ".join(str(annotation["caption"]).split()))
    items, segmentations = [], {}
    for info in data["images"]:
        image_id = info["id"]
        seen = set()
        for annotation in by_image.get(image_id, []):
            category = annotation["category_id"]
            if category in seen or category not in names:
                continue
            found = _caption_naming(captions_of.get(image_id, []), names[category])
            if found is None:
                continue
            seen.add(category)
            caption, start, length = found
            where = f"COCO image {image_id} ({info.get('file_name')}), category {names[category]!r}"
            path = images / str(info.get("file_name", ""))
            if not path.is_file():
                raise ConfigError(f"{where}: image {path} does not exist")
            size = _image_size(path, where)
            annotated = (int(info["width"]), int(info["height"]))
            if size != annotated and not resize_masks:
                raise ConfigError(f"{where}: the image file is {_wxh(size)} but its annotations are for "
                                  f"{_wxh(annotated)}; pass --resize-masks to resize the masks to the image")
            index = len(items)
            segmentations[index] = ([a["segmentation"] for a in by_image[image_id] if a["category_id"] == category],
                                    annotated[1], annotated[0])
            items.append({"source": "coco", "image": str(path), "mask": None, "prompt": caption,
                          "word": " ".join(split_punctuation(w)[1] for w in caption.split()[start:start + length]),
                          "start": start, "length": length,
                          "kind": None, "objects": None, "size": list(size),
                          "extra": {"coco_image_id": image_id, "category": names[category], "category_id": category}})
            if limit is not None and len(items) >= limit:
                return items, segmentations
    if not items:
        raise ConfigError(f"{captions}: no caption names a category of its image's instances ({instances})")
    return items, segmentations


def _coco_api():
    try:
        from pycocotools import mask as coco_mask_api  # optional: COCO files only
    except ImportError:
        raise ConfigError("COCO masks need pycocotools: pip install 'jaxpid[coco]'") from None
    return coco_mask_api


def _caption_naming(captions: Sequence[str], name: str) -> tuple[str, int, int] | None:
    """The first caption containing ``name`` (or its plural) and where: (caption, start, length)."""
    for caption in captions:
        for phrase in (plural(name), name):  # the plural first: "dogs" is the object word, not "dog"
            starts = phrase_starts(caption, phrase)
            if starts:
                return caption, starts[0], len(phrase.split())
    return None


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"COCO {what} file {path}: no such file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"COCO {what} file {path}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"COCO {what} file {path}: expected a JSON object")
    return value


def coco_mask(segmentations: Sequence, height: int, width: int) -> np.ndarray:
    """The union of instance segmentations (polygons, uncompressed or compressed RLE), (H, W) bool."""
    coco_mask_api = _coco_api()
    union = np.zeros((height, width), bool)
    for segmentation in segmentations:
        if isinstance(segmentation, list):  # polygons
            rle = coco_mask_api.merge(coco_mask_api.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = coco_mask_api.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        with warnings.catch_warnings():  # pycocotools' numpy-2 notice about __array__(copy=...)
            warnings.simplefilter("ignore", DeprecationWarning)
            union |= coco_mask_api.decode(rle).astype(bool)
    return union


# ---------------------------------------------------------------------------------------------
# The demo's known-answer set


def demo_items(n: int = 64, seed: int = 0) -> list[dict]:
    """``n`` items drawn by the demo's renderer, cycling through (colour word, one object),
    (shape word, one object), (colour word, two objects), (shape word, two objects).

    Two objects get different shapes and colours, so each word names one object; the target
    object is drawn at random, and positions and sizes jitter as in the demo's training data. The
    mask is the exact set of pixels the named object covers at least half.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    size = dataset.IMAGE_SIZE
    items = []
    for i in range(n):
        kind = KINDS_DEMO[i % 2]
        count = 1 + (i // 2) % 2
        shapes = [dataset.SHAPES[j] for j in rng.choice(len(dataset.SHAPES), count, replace=False)]
        colours = [dataset.COLOURS[j] for j in rng.choice(len(dataset.COLOURS), count, replace=False)]
        objects = []
        for shape, colour, (x, y) in zip(shapes, colours, dataset.slot_centres(count, size)):
            dx, dy = rng.uniform(-dataset.JITTER, dataset.JITTER, size=2)
            radius = dataset.OBJECT_RADIUS * size * rng.uniform(0.94, 1.02)
            objects.append([shape, colour, float(x + dx), float(y + dy), float(radius)])
        phrases = [f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}" for shape, colour in zip(shapes, colours)]
        prompt = " and ".join(phrases)
        target = int(rng.integers(count))
        word = colours[target] if kind == "colour" else shapes[target]
        start, length = locate_word(prompt, word, f"demo item {i}")
        items.append({"source": "demo", "image": f"demo:{i}", "mask": None, "prompt": prompt, "word": word,
                      "start": start, "length": length, "kind": kind, "objects": count, "size": [size, size],
                      "extra": {"scene": objects, "target": target}})
    return items


def demo_scene(item: Mapping) -> dataset.Scene:
    objects = tuple(dataset.SceneObject(kind, colour, (x, y), radius)
                    for kind, colour, x, y, radius in item["extra"]["scene"])
    return dataset.Scene(item["prompt"], objects)


# ---------------------------------------------------------------------------------------------
# Loading an item


class ItemLoader:
    """An item's pixels (H, W, 3) and its object's mask (H, W) bool, at the image's resolution."""

    def __init__(self, segmentations: Mapping[int, tuple] | None = None, *, resize_masks: bool = False):
        self.segmentations = dict(segmentations or {})
        self.resize_masks = resize_masks

    def load(self, item: Mapping) -> tuple[np.ndarray, np.ndarray]:
        if item["source"] == "demo":
            image, masks = dataset.render(demo_scene(item))
            return image, masks[item["extra"]["target"]]
        image = load_image(item["image"])
        if item["source"] == "coco":
            segmentations, height, width = self.segmentations[item["index"]]
            mask = coco_mask(segmentations, height, width)
        else:
            try:
                with Image.open(item["mask"]) as file:
                    mask = np.asarray(file.convert("L")) != 0
            except (OSError, UnidentifiedImageError, ValueError) as error:
                raise ImageReadError(f"line {item.get('line')}: mask {item['mask']} cannot be read ({error})") from None
        if mask.shape != image.shape[:2]:
            if not self.resize_masks:  # files changed since the items were checked
                raise ConfigError(f"{item['image']}: mask {mask.shape[::-1]} and image {image.shape[1::-1]} "
                                  "(width, height) differ; pass --resize-masks")
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.shape[1::-1], Image.NEAREST)
            mask = np.asarray(resized) > 127
        return image, mask
