"""The demo model's synthetic world: captioned images of coloured shapes with exact masks.

Every image is drawn from its caption by :func:`render`, so the answer to "which pixels does
this word describe" is known exactly. The vocabulary is chosen so that the information
decomposition has known answers (DATASET_VERSION 2):

===============  =============================================  ===================================
phenomenon       words                                          expected structure
===============  =============================================  ===================================
distinct objects circle, square, triangle (two objects: first   unique information of each shape
                 on the left, second on the right)              word on that object's mask
co-hyponyms      colours red, green, blue, yellow, orange;      two colour words of two objects:
                 shapes circle, square, triangle                different pixels, little redundancy
synonyms         crimson = red (same colour; "red", "crimson",  redundancy the largest atom of
                 or "crimson red")                              (crimson, red)
interaction      "X with a matching / contrasting Y": Y has X's  synergy of (first colour, relation):
                 colour / its complement (red<->green,          the pair fixes the second colour,
                 blue<->yellow)                                 each word alone does not
homonym          orange: a colour before a shape ("an orange    one word, two looks chosen by
                 square"), the fruit as a noun ("an orange":    context
                 an orange disc with a green leaf)
designed bias    a triangle whose colour is not named is green  a bias sweep over "a triangle"
                 80 % of the time (else red/blue/yellow/orange  finds green 80 %
                 5 % each); circles and squares uniform
===============  =============================================  ===================================

Caption grammar (all lower case, 2 to 8 words, well under CLIP's 77 tokens)::

    caption   := object | object " and " object | object " with " article relation shape
    object    := article colour? shape | "an orange"          (the fruit)
                 (" with ..." only after a first object with a stated colour other than orange;
                 its own connective keeps the colours of "and" captions independent even when a
                 training caption loses its relation word)
    colour    := "red" | "crimson" | "crimson red" | "green" | "blue" | "yellow" | "orange"
    shape     := "circle" | "square" | "triangle"
    relation  := "matching" | "contrasting"
    article   := "an" before a vowel, else "a"

Layout: one object sits in the centre; with two, the first is centred in the left half and the
second in the right half. Every object gets the same radius (``OBJECT_RADIUS`` of the image
side, times a small random factor) and a small random offset. Pixel values are the palette
colours over a dark background, antialiased by 4x4 supersampling; an object's mask is the set of
pixels it covers at least half.

Training sees each caption as written (``P_FULL``), the empty caption "" (``P_EMPTY``, so the
unconditional branch is meaningful) or a random subset of its words in order (the rest), so the
model learns p(x | any subset of a caption's words): the deleted-word conditionings of MI, CMI
and PID then ask the model questions it was trained to answer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

DATASET_VERSION = 3
IMAGE_SIZE = 20
OBJECT_RADIUS = 0.2  # of the image side
JITTER = 0.6  # largest random offset of an object's centre, pixels
SUPERSAMPLE = 4

BACKGROUND = (30, 30, 36)
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 50),
    "orange": (245, 135, 25),
}
COLOURS = tuple(PALETTE)
COLOUR_WORDS = {"crimson": "red", **{colour: colour for colour in COLOURS}}
SHAPES = ("circle", "square", "triangle")
KINDS = SHAPES + ("fruit",)  # "fruit": the orange, drawn as an orange disc with a green leaf
RELATIONS = ("matching", "contrasting")
COMPLEMENT = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue"}
VOCABULARY = ("a", "an", "and", "with", "crimson", *COLOURS, *SHAPES, *RELATIONS)

# Caption sampling probabilities.
P_TWO_OBJECTS = 0.65
P_FRUIT = 0.08
P_COLOUR_STATED = 0.75
RED_WORDS = (("red", 0.5), ("crimson", 0.3), ("crimson red", 0.2))
P_RELATION = 0.35  # of second objects, when the first has a colour a relation can refer to
BIASED_SHAPE, BIASED_COLOUR, BIAS = "triangle", "green", 0.8

# Training-time caption corruption. Each word is kept with 0.8 (it was 0.5 up to dataset version
# 2): the conditionings information measures ask for delete one or two words of a caption, and at
# 0.5 any one such text was 1 in 128 of a caption's subsets, too rare for the model to learn them
# consistently (docs/validation.md#why-the-demo-reads-high).
P_EMPTY = 0.1
P_FULL = 0.5
P_KEEP_WORD = 0.8


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """What a caption says about one object. ``colour`` None: not determined by the caption."""

    kind: str  # one of KINDS
    colour: str | None  # palette name


@dataclasses.dataclass(frozen=True)
class SceneObject:
    kind: str
    colour: str  # palette name
    centre: tuple[float, float]  # (x, y) in pixels, (0, 0) the image's top-left corner
    radius: float  # pixels


@dataclasses.dataclass(frozen=True)
class Scene:
    caption: str
    objects: tuple[SceneObject, ...]  # left to right


# --------------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _colour_phrase(colour: str, rng: np.random.Generator) -> str:
    if colour != "red":
        return colour
    words, probs = zip(*RED_WORDS)
    return words[rng.choice(len(words), p=probs)]


def default_colour_probs(kind: str) -> dict[str, float]:
    """p(colour | kind) when the caption names no colour (the designed bias lives here)."""
    if kind == "fruit":
        return {"orange": 1.0}
    if kind == BIASED_SHAPE:
        rest = (1.0 - BIAS) / (len(COLOURS) - 1)
        return {c: BIAS if c == BIASED_COLOUR else rest for c in COLOURS}
    return {c: 1.0 / len(COLOURS) for c in COLOURS}


def _sample_object(rng: np.random.Generator) -> tuple[str, str, bool]:
    """-> (phrase, colour, colour_stated)."""
    if rng.random() < P_FRUIT:
        return "an orange", "orange", False
    kind = SHAPES[rng.integers(len(SHAPES))]
    if rng.random() < P_COLOUR_STATED:
        colour = COLOURS[rng.integers(len(COLOURS))]
        words = f"{_colour_phrase(colour, rng)} {kind}"
        return f"{_article(words)} {words}", colour, True
    probs = default_colour_probs(kind)
    colour = COLOURS[rng.choice(len(COLOURS), p=[probs[c] for c in COLOURS])]
    return f"{_article(kind)} {kind}", colour, False


def sample_caption(rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """A caption from the grammar and the colour actually drawn for each object."""
    first, colour, stated = _sample_object(rng)
    if rng.random() >= P_TWO_OBJECTS:
        return first, (colour,)
    if stated and colour in COMPLEMENT and rng.random() < P_RELATION:
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        kind = SHAPES[rng.integers(len(SHAPES))]
        second_colour = colour if relation == "matching" else COMPLEMENT[colour]
        return f"{first} with a {relation} {kind}", (colour, second_colour)
    second, second_colour, _ = _sample_object(rng)
    return f"{first} and {second}", (colour, second_colour)


def parse_caption(caption: str) -> tuple[ObjectSpec, ...]:
    """The objects a full caption describes, left to right, relations resolved.

    Raises:
      ValueError: the caption is not in the grammar (see the module docstring).
    """
    words = caption.split()
    phrases: list[list[str]] = [[]]
    connective = None
    for word in words:
        if word in ("and", "with"):
            phrases.append([])
            connective = word
        else:
            phrases[-1].append(word)
    if not 1 <= len(phrases) <= 2 or not all(phrases):
        raise ValueError(f"caption {caption!r}: expected one object or two joined by 'and' or 'with'")
    specs: list[ObjectSpec] = []
    for phrase in phrases:
        article, *rest = phrase
        if article not in ("a", "an") or not rest:
            raise ValueError(f"caption {caption!r}: each object starts with 'a' or 'an' and names something")
        *modifiers, kind = rest
        relational = bool(modifiers) and modifiers[0] in RELATIONS
        if relational != (connective == "with" and len(specs) == 1):
            raise ValueError(f"caption {caption!r}: 'with' joins a phrase with a relation {RELATIONS}, 'and' one without")
        if rest == ["orange"]:
            specs.append(ObjectSpec("fruit", "orange"))
        elif kind not in SHAPES:
            raise ValueError(f"caption {caption!r}: {kind!r} is not a shape {SHAPES}")
        elif not modifiers:
            specs.append(ObjectSpec(kind, None))
        elif relational:
            if len(modifiers) != 1 or specs[0].colour not in COMPLEMENT or specs[0].kind == "fruit":
                raise ValueError(f"caption {caption!r}: a relation needs a first object coloured {tuple(COMPLEMENT)}")
            base = specs[0].colour
            specs.append(ObjectSpec(kind, base if modifiers[0] == "matching" else COMPLEMENT[base]))
        else:
            colours = {COLOUR_WORDS.get(m) for m in modifiers}
            if None in colours or len(colours) != 1 or len(modifiers) > 2:
                raise ValueError(f"caption {caption!r}: {' '.join(modifiers)!r} is not a colour")
            specs.append(ObjectSpec(kind, colours.pop()))
    return tuple(specs)


def corrupt_caption(caption: str, rng: np.random.Generator) -> str:
    """What training feeds the text encoder: the caption, "" or a random subset of its words."""
    u = rng.random()
    if u < P_EMPTY:
        return ""
    if u < P_EMPTY + P_FULL:
        return caption
    return " ".join(w for w in caption.split() if rng.random() < P_KEEP_WORD)


def corruption_counts(batch: int) -> tuple[int, int]:
    """(empty, subset) captions in a training batch of ``batch``, exactly ``corrupt_caption``'s
    shares: the rest are shown in full. Needs ``batch`` a multiple of 10."""
    empty, full = batch * P_EMPTY, batch * P_FULL
    if batch < 1 or abs(empty - round(empty)) > 1e-9 or abs(full - round(full)) > 1e-9:
        raise ValueError(
            f"a training batch of {batch} cannot hold exactly {P_EMPTY:.0%} empty and {P_FULL:.0%} full "
            "captions; use a multiple of 10 (e.g. 20, 40)"
        )
    return round(empty), batch - round(empty) - round(full)


def corrupt_batch(captions: Sequence[str], rng: np.random.Generator) -> list[str]:
    """The batch's captions as training shows them: the first ``corruption_counts`` ones "" and a
    random subset of their words, the rest in full. The scenes are independent draws, so which
    positions are corrupted does not matter: each (caption, shown) pair has exactly the law of
    ``corrupt_caption`` (``jaxpid.demo.world`` computes the world's answers from it)."""
    empty, subset = corruption_counts(len(captions))
    shown = [""] * empty
    for caption in captions[empty:empty + subset]:
        shown.append(" ".join(w for w in caption.split() if rng.random() < P_KEEP_WORD))
    return shown + list(captions[empty + subset:])


# --------------------------------------------------------------------------------- rendering


def slot_centres(n_objects: int, size: int = IMAGE_SIZE) -> list[tuple[float, float]]:
    """Nominal (x, y) centres: the middle for one object, the halves' middles for two."""
    if n_objects == 1:
        return [(size / 2, size / 2)]
    if n_objects == 2:
        return [(size / 4, size / 2), (3 * size / 4, size / 2)]
    raise ValueError(f"scenes hold one or two objects, got {n_objects}")


def sample_scene(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Scene:
    """A caption and the scene it describes, with random offsets and sizes."""
    caption, colours = sample_caption(rng)
    specs = parse_caption(caption)
    objects = []
    for spec, colour, (x, y) in zip(specs, colours, slot_centres(len(specs), size)):
        dx, dy = rng.uniform(-JITTER, JITTER, size=2)
        radius = OBJECT_RADIUS * size * rng.uniform(0.94, 1.02)
        objects.append(SceneObject(spec.kind, colour, (x + dx, y + dy), radius))
    return Scene(caption, tuple(objects))


def scene_for_caption(caption: str, colours: Sequence[str] | None = None, size: int = IMAGE_SIZE,
                      rng: np.random.Generator | None = None) -> Scene:
    """The scene of a caption; ``colours`` fill in the colours the caption leaves open (default:
    the most likely one). Without ``rng`` the nominal scene (no offsets, nominal radius); with it,
    offsets and sizes drawn as for training scenes (``sample_scene``)."""
    specs = parse_caption(caption)
    objects = []
    for i, (spec, (x, y)) in enumerate(zip(specs, slot_centres(len(specs), size))):
        colour = spec.colour
        if colour is None:
            probs = default_colour_probs(spec.kind)
            colour = colours[i] if colours is not None else max(probs, key=probs.get)
        radius = OBJECT_RADIUS * size
        if rng is not None:
            dx, dy = rng.uniform(-JITTER, JITTER, size=2)
            x, y, radius = x + dx, y + dy, radius * rng.uniform(0.94, 1.02)
        objects.append(SceneObject(spec.kind, colour, (x, y), radius))
    return Scene(caption, tuple(objects))


def _coverage(kind: str, centre: tuple[float, float], radius: float, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Fraction of each pixel covered: (body (H, W), leaf (H, W) or None) in [0, 1]."""
    fine = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    x, y = fine[None, :] - centre[0], fine[:, None] - centre[1]
    leaf = None
    # Sizes chosen so that the shapes differ in many pixels (a circle of the square's size
    # would differ from it in its four corners only, a few pixels at 20 px).
    if kind == "circle":
        inside = x**2 + y**2 <= (0.85 * radius) ** 2
    elif kind == "square":
        inside = (np.abs(x) <= radius) & (np.abs(y) <= radius)
    elif kind == "triangle":  # equilateral, pointing up, its bounding box centred
        r = 1.25 * radius
        y = y + r / 4
        slope = np.sqrt(3.0)
        inside = (y <= r / 2) & (y >= -r + slope * np.abs(x))
    elif kind == "fruit":
        inside = x**2 + (y - 0.15 * radius) ** 2 <= (0.9 * radius) ** 2
        leaf_inside = (x - 0.4 * radius) ** 2 + (y + 0.95 * radius) ** 2 <= (0.42 * radius) ** 2
        leaf = _downsample(leaf_inside, size)
    else:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {KINDS}")
    return _downsample(inside, size), leaf


def _downsample(inside: np.ndarray, size: int) -> np.ndarray:
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def render(scene: Scene, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Draw a scene.

    Returns:
      image: (size, size, 3) float32 in [0, 1].
      masks: (n_objects, size, size) bool, pixels each object covers at least half.
    """
    image = np.broadcast_to(np.asarray(BACKGROUND, np.float32) / 255, (size, size, 3)).copy()
    masks = []
    for obj in scene.objects:
        body, leaf = _coverage(obj.kind, obj.centre, obj.radius, size)
        image = image * (1 - body[..., None]) + body[..., None] * (np.asarray(PALETTE[obj.colour]) / 255)
        covered = body
        if leaf is not None:
            image = image * (1 - leaf[..., None]) + leaf[..., None] * (np.asarray(PALETTE["green"]) / 255)
            covered = np.maximum(body, leaf)
        masks.append(covered >= 0.5)
    return image.astype(np.float32), np.stack(masks)


def sample_batch(rng: np.random.Generator, batch: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """``batch`` random scenes: images (B, size, size, 3) float32 in [0, 1] and their captions."""
    images, captions = [], []
    for _ in range(batch):
        scene = sample_scene(rng, size)
        images.append(render(scene, size)[0])
        captions.append(scene.caption)
    return np.stack(images), captions


# --------------------------------------------------------------------------------- recognition


def foreground(image: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """(H, W, 3) image in [0, 1] -> (H, W) bool: pixels far from the background colour."""
    background = np.asarray(BACKGROUND, np.float32) / 255
    return np.linalg.norm(np.asarray(image, np.float32) - background, axis=-1) > threshold


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour nearest to an (3,) RGB value in [0, 1]."""
    names = list(PALETTE)
    table = np.asarray([PALETTE[n] for n in names], np.float32) / 255
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=-1)))]


def recognise(image: np.ndarray, n_objects: int, size: int = IMAGE_SIZE) -> list[ObjectSpec]:
    """Read the objects in an image back with the renderer's own templates.

    In each object's slot (the whole image for one object, a half for two) the colour is the
    palette colour nearest to the median foreground pixel. The pixels' opacity towards that
    colour is then compared (squared error) with every kind's rendered coverage over a grid of
    offsets and radii spanning the training jitter; the best-fitting kind wins.

    Args:
      image: (size, size, 3) uint8 or float in [0, 1].
      n_objects: 1 or 2, as the caption says.
    Returns:
      One ``ObjectSpec`` per slot, ``ObjectSpec("none", None)`` for an empty slot.
    """
    image = np.asarray(image)
    image = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
    background = np.asarray(BACKGROUND, np.float32) / 255
    fg = foreground(image)
    half = np.arange(size) // (size // 2)
    found = []
    for i, (x, y) in enumerate(slot_centres(n_objects, size)):
        region = np.ones((size, size), bool) if n_objects == 1 else np.broadcast_to(half[None, :] == i, (size, size))
        if (fg & region).sum() < 4:
            found.append(ObjectSpec("none", None))
            continue
        pixels = image[fg & region]
        colour = nearest_colour(np.median(pixels, axis=0))
        if colour == "green" and _greenest_share(pixels) < 0.6:  # a fruit's leaf alone is not the colour
            colour = nearest_colour(np.median(pixels[_not_green(pixels)], axis=0))
        target = np.asarray(PALETTE[colour], np.float32) / 255 - background
        opacity = np.clip(np.linalg.norm(image - background, axis=-1) / np.linalg.norm(target), 0, 1)
        errors = {
            kind: np.min(np.sum(((templates - opacity) * region) ** 2, axis=(1, 2)))
            for kind, templates in _templates(n_objects, i, size).items()
        }
        best_kind = min(errors, key=errors.get)
        found.append(ObjectSpec(best_kind, colour))
    return found


@functools.lru_cache(maxsize=8)
def _templates(n_objects: int, slot: int, size: int) -> dict[str, np.ndarray]:
    """kind -> (M, size, size) coverages of that kind over offsets and radii around the slot."""
    x, y = slot_centres(n_objects, size)[slot]
    offsets = np.linspace(-JITTER - 0.5, JITTER + 0.5, 7)
    out = {}
    for kind in KINDS:
        stack = []
        for scale in (0.94, 0.98, 1.02):
            for dx in offsets:
                for dy in offsets:
                    body, leaf = _coverage(kind, (x + dx, y + dy), scale * OBJECT_RADIUS * size, size)
                    stack.append(body if leaf is None else np.maximum(body, _LEAF_OPACITY * leaf))
        out[kind] = np.stack(stack)
    return out


_GREEN = np.asarray(PALETTE["green"], np.float32) / 255
# How opaque the fruit's green leaf looks when measured against the orange body's colour.
_LEAF_OPACITY = float(
    np.linalg.norm(_GREEN - np.asarray(BACKGROUND) / 255)
    / np.linalg.norm(np.asarray(PALETTE["orange"]) / 255 - np.asarray(BACKGROUND) / 255)
)


def _not_green(pixels: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pixels - _GREEN, axis=-1) > 0.25


def _greenest_share(pixels: np.ndarray) -> float:
    return float(np.mean(~_not_green(pixels)))


def matches(found: Sequence[ObjectSpec], expected: Sequence[ObjectSpec]) -> bool:
    """Kind and colour right for every object (a colour the caption leaves open always matches)."""
    return len(found) == len(expected) and all(
        f.kind == e.kind and (e.colour is None or f.colour == e.colour) for f, e in zip(found, expected)
    )
