"""ARO's four benchmarks (Yuksekgonul et al., ICLR 2023) as retrieval items, from their published files.

The annotation files are the ones ARO's loaders read (mertyg/vision-language-models-are-bows,
``dataset_zoo/aro_datasets.py``); the images are the user's (``--images DIR``):

- ``vg_relation`` (``visual_genome_relation.json``) and ``vg_attribution``
  (``visual_genome_attribution.json``): a JSON list of ``{"image_path", "bbox_x", "bbox_y",
  "bbox_w", "bbox_h", "true_caption", "false_caption", ...}`` with ``relation_name`` (VG-R) or
  ``attributes`` (two words, VG-A). As ARO does, the image is **cropped to the bounding box**
  and the captions are ``[false, true]`` (label 1); the group is the relation, or the two
  attributes joined by ``_``. ``image_path`` is relative to DIR (ARO's ``<root>/images``).
- ``coco_order`` / ``flickr_order``: either the **test cases** (a JSON list of ``{"image",
  "caption_options"}``, the true caption first — what ARO builds in memory and Info-Decomp writes
  as ``coco_order_<k>.json`` / ``flickr_order_<k>.json``) or the **Karpathy annotation file**
  ARO starts from (``coco_karpathy_test.json`` / ``flickr30k_test.json``: ``{"image", "caption":
  [...]}``), in which case jaxpid builds the five options of each caption as ARO does: the
  caption and its four shuffles (nouns and adjectives among themselves, everything else, words
  within trigrams, the trigrams), each through ARO's ``pre_caption`` (lower case, punctuation
  removed, 30 words at most). ARO shuffles with Python's unseeded global RNG; here each test
  case has its own seeded generator (reproducible, not ARO's draws). The noun/adjective shuffles
  need a part-of-speech tagger: spaCy's ``en_core_web_sm`` (as ARO), or ``tagger=`` in Python.
  ``image`` is relative to DIR.

ARO's published VG numbers are **macro** accuracies (``MACRO_RULES``; the retrieval summary
reports them beside the accuracy over all items): the accuracy of each group — the relation
(VG-R) or the attribute pair ``a_b`` (VG-A), each item's ``group`` — then the mean over groups.
``evaluate_scores`` in ARO's ``dataset_zoo/aro_datasets.py`` (and its copy in Info-Decomp's
``utils/aro_datasets.py``) keeps every relation of VG-R and drops the attribute pairs with fewer
than 25 items of VG-A; ARO's notebook ("Replicate ARO! VG-Relation, VG-Attribution.ipynb")
then leaves out the relations in ``SYMMETRIC_RELATIONS`` before averaging VG-R. The order sets
report one accuracy (Precision@1) over all test cases: no groups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError

ARO_SETS = ("vg_relation", "vg_attribution", "coco_order", "flickr_order")
MAX_WORDS = 30  # ARO's pre_caption truncation for the order sets
NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
ADJECTIVE_TAGS = ("JJ", "JJR", "JJS")
# nltk.word_tokenize's Treebank split, closely enough for captions: words, numbers with
# punctuation inside them, "n't"/"'s"-style clitics, and each other symbol alone.
_TOKEN = re.compile(r"n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.,']\w+)*|[^\w\s]", re.IGNORECASE)

Tagger = Callable[[str], list[tuple[str, str]]]  # caption -> [(token, Penn Treebank tag), ...]

# VG-Relation's relations that ARO's notebook leaves out of the macro accuracy (its list
# ``symmetric``: relations whose swapped caption may be as true as the original), sorted here.
SYMMETRIC_RELATIONS = frozenset((
    "adjusting", "around", "attached to", "beside", "between", "bigger than", "biting", "boarding",
    "brushing", "by", "chewing", "cleaning", "climbing", "close to", "coming from", "coming out of",
    "contain", "crossing", "dragging", "draped over", "drinking", "drinking from", "driving", "driving down",
    "driving on", "eating from", "eating in", "enclosing", "exiting", "facing", "filled with", "floating in",
    "floating on", "flying", "flying above", "flying in", "flying over", "flying through", "full of",
    "going down", "going into", "going through", "grazing in", "growing in", "growing on", "guiding",
    "hanging from", "hanging in", "hanging off", "hanging over", "higher than", "holding onto", "hugging",
    "in between", "jumping off", "jumping on", "jumping over", "kept in", "larger than", "leading",
    "leaning over", "leaving", "licking", "longer than", "looking in", "looking into", "looking out",
    "looking over", "looking through", "lying next to", "lying on top of", "making", "mixed with",
    "mounted on", "moving", "near", "next to", "of", "on the back of", "on the edge of", "on the front of",
    "on the other side of", "on the side of", "opening", "painted on", "parked at", "parked beside",
    "parked by", "parked in", "parked in front of", "parked near", "parked next to", "perched on", "petting",
    "piled on", "playing", "playing in", "playing on", "playing with", "pouring", "reaching for", "reading",
    "reflected on", "riding on", "running in", "running on", "running through", "seen through",
    "sitting behind", "sitting beside", "sitting by", "sitting in front of", "sitting near",
    "sitting next to", "sitting under", "skiing down", "skiing on", "sleeping in", "sleeping on",
    "smiling at", "sniffing", "splashing", "sprinkled on", "stacked on", "standing against",
    "standing around", "standing behind", "standing beside", "standing in front of", "standing near",
    "standing next to", "staring at", "stuck in", "surrounding", "swimming in", "swinging", "talking to",
    "topped with", "touching", "traveling down", "traveling on", "tying", "typing on", "underneath",
    "wading in", "waiting for", "walking across", "walking by", "walking down", "walking next to",
    "walking through", "with", "working in", "working on", "worn on", "wrapped around", "wrapped in",
))
MIN_ATTRIBUTE_PAIR_ITEMS = 25  # VG-A's evaluate_scores drops the attribute pairs with fewer items


def load_aro(kind: str, annotations: str | Path, images: str | Path, *, limit: int | None = None,
             tagger: Tagger | None = None, seed: int = 0) -> list[dict]:
    """Retrieval items (``jaxpid.studies.retrieval``'s manifest fields) of one ARO set.

    Args:
      kind: one of ``ARO_SETS``.
      annotations: the set's JSON file in its published layout (module docstring).
      images: the folder the file's image paths are relative to.
      limit: keep the first ``limit`` items.
      tagger: part-of-speech tagger for building the order sets' shuffles from captions
        (default: spaCy's ``en_core_web_sm``).
      seed: seeds each test case's shuffles (order sets from captions).

    Raises:
      ConfigError: an unknown set, an unreadable file, an entry missing a field, a missing
        image — naming the file and the entry (0-based, as in the JSON list).
    """
    if kind not in ARO_SETS:
        raise ConfigError(f"--aro must name one of {ARO_SETS}, got {kind!r}")
    path, folder = Path(annotations), Path(images)
    if not path.is_file():
        raise ConfigError(f"{kind} annotations {path}: no such file")
    if not folder.is_dir():
        raise ConfigError(f"{kind} images {folder}: no such folder")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{kind} annotations {path}: not JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{kind} annotations {path}: expected a non-empty JSON list of entries")
    if limit is not None:
        entries = entries[:limit]
    read = _vg_item if kind.startswith("vg_") else _order_items
    items = []
    for number, entry in enumerate(entries):
        at = f"{path} entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a JSON object, got {type(entry).__name__}")
        items.extend(read(kind, entry, folder, at, tagger, seed + number))
    return items[:limit] if limit is not None else items


def _field(entry: dict, name: str, at: str):
    if name not in entry:
        raise ConfigError(f"{at}: missing {name!r} (have {sorted(entry)})")
    return entry[name]


def _image(folder: Path, name, at: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{at}: expected an image path, got {name!r}")
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"{at}: image {path} does not exist")
    return str(path)


def _vg_item(kind: str, entry: dict, folder: Path, at: str, tagger, seed) -> list[dict]:
    box = [_field(entry, f"bbox_{k}", at) for k in ("x", "y", "w", "h")]
    if not all(isinstance(v, (int, float)) for v in box) or box[2] <= 0 or box[3] <= 0:
        raise ConfigError(f"{at}: bbox_x/y/w/h must be numbers with a positive size, got {box}")
    if kind == "vg_relation":
        group = str(_field(entry, "relation_name", at))
    else:
        attributes = _field(entry, "attributes", at)
        group = "_".join(str(a) for a in attributes[:2]) if isinstance(attributes, list) else str(attributes)
    captions = [_field(entry, "false_caption", at), _field(entry, "true_caption", at)]
    return [{"image": _image(folder, _field(entry, "image_path", at), at), "crop": box, "captions": captions,
             "label": 1, "group": group}]


def _order_items(kind: str, entry: dict, folder: Path, at: str, tagger, seed) -> list[dict]:
    image = _image(folder, _field(entry, "image", at), at)
    if "caption_options" in entry:
        options = entry["caption_options"]
        if not isinstance(options, list) or len(options) < 2:
            raise ConfigError(f"{at}: caption_options must list the true caption and its perturbations")
        return [{"image": image, "captions": [str(c) for c in options], "label": 0}]
    captions = _field(entry, "caption", at)
    captions = [captions] if isinstance(captions, str) else captions
    if tagger is None:
        tagger = spacy_tagger(kind)
    rng = np.random.default_rng(seed)
    return [{"image": image, "captions": order_options(c, tagger, rng), "label": 0} for c in captions]


def pre_caption(caption: str, max_words: int = MAX_WORDS) -> str:
    """ARO's caption normalisation: lower case, ``.!"()*#:;~`` to spaces, spaces collapsed,
    at most ``max_words`` words."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


def order_options(caption: str, tagger: Tagger, rng: np.random.Generator) -> list[str]:
    """The caption and ARO's four perturbations of it, each through ``pre_caption``."""
    tagged = tagger(caption)
    tokens = np.array([t for t, _ in tagged], dtype=object)
    nouns = np.array([i for i, (_, tag) in enumerate(tagged) if tag in NOUN_TAGS], int)
    adjectives = np.array([i for i, (_, tag) in enumerate(tagged) if tag in ADJECTIVE_TAGS], int)
    shuffled = tokens.copy()
    shuffled[nouns] = rng.permutation(tokens[nouns])
    shuffled[adjectives] = rng.permutation(tokens[adjectives])
    rest = np.setdiff1d(np.arange(len(tokens)), np.concatenate([nouns, adjectives]))
    others = tokens.copy()
    others[rest] = rng.permutation(tokens[rest])
    words = _TOKEN.findall(caption)
    trigrams = [words[i:i + 3] for i in range(0, len(words), 3)]
    within = [w for tri in trigrams for w in rng.permutation(np.array(tri, dtype=object))]
    across = [w for j in rng.permutation(len(trigrams)) for w in trigrams[j]]
    options = [caption, " ".join(shuffled), " ".join(others), " ".join(within), " ".join(across)]
    return [pre_caption(o) for o in options]


def spacy_tagger(kind: str) -> Tagger:
    """spaCy's ``en_core_web_sm`` tagger (what ARO uses), or an error saying what to do."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm")
    except (ImportError, OSError) as error:
        raise ConfigError(
            f"{kind} from a caption file needs spaCy's en_core_web_sm to shuffle nouns and adjectives as ARO "
            f"does ({error}): pip install spacy && python -m spacy download en_core_web_sm, or give the test "
            "cases instead (a JSON list of {\"image\", \"caption_options\"}, the true caption first)"
        ) from None
    return lambda text: [(token.text, token.tag_) for token in nlp(text)]
