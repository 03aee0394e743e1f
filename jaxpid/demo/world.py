"""The demo world's exact answers (docs/validation.md#the-demo-worlds-exact-answers).

The renderer draws a scene — each object's kind and colour, left to right — from its caption
(:mod:`jaxpid.demo.dataset`), and the training texts are corrupted captions
(:func:`jaxpid.demo.dataset.corrupt_caption`: "", the caption, or a random subset of its words).
So for any text t the world defines

    p(scene | t) ∝ Σ_caption p(caption, scene) · p(t | caption),

computed here exactly by enumerating the grammar (about 760 captions). Position jitter and size
do not depend on the scene's kinds and colours, and an image determines its scene, so the
pointwise information of a text t against a text u for an image x of scene s is

    i(x; t against u) = log p(s | t) − log p(s | u),

what a Bayes-optimal model trained on this world would read (in nats).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence

from jaxpid.demo import dataset

Scene = tuple[tuple[str, str], ...]  # ((kind, colour), ...) left to right


def scene_key(scene: dataset.Scene) -> Scene:
    """The part of a rendered scene the text can inform: each object's kind and colour."""
    return tuple((o.kind, o.colour) for o in scene.objects)


def _object_phrases() -> list[tuple[str, float, dict[str, float], str, str | None]]:
    """Every object phrase of the grammar: (phrase, probability, p(colour), kind, stated colour)."""
    out = [("an orange", dataset.P_FRUIT, {"orange": 1.0}, "fruit", None)]
    p_shape = (1.0 - dataset.P_FRUIT) / len(dataset.SHAPES)
    for kind in dataset.SHAPES:
        for colour in dataset.COLOURS:
            p_colour = p_shape * dataset.P_COLOUR_STATED / len(dataset.COLOURS)
            variants = dataset.RED_WORDS if colour == "red" else ((colour, 1.0),)
            for words, p_words in variants:
                text = f"{words} {kind}"
                out.append((f"{dataset._article(text)} {text}", p_colour * p_words, {colour: 1.0}, kind, colour))
        out.append((f"{dataset._article(kind)} {kind}", p_shape * (1.0 - dataset.P_COLOUR_STATED),
                    dataset.default_colour_probs(kind), kind, None))
    return out


@functools.cache
def captions() -> dict[str, dict[Scene, float]]:
    """caption -> {scene: p(caption, scene)}, every caption :func:`dataset.sample_caption` draws."""
    joint: dict[str, dict[Scene, float]] = defaultdict(lambda: defaultdict(float))
    phrases = _object_phrases()
    for first, p1, colours1, kind1, stated1 in phrases:
        for c1, q1 in colours1.items():
            joint[first][((kind1, c1),)] += p1 * q1 * (1.0 - dataset.P_TWO_OBJECTS)
        p_relation = dataset.P_RELATION if stated1 in dataset.COMPLEMENT else 0.0
        for relation in dataset.RELATIONS:
            second_colour = stated1 if relation == "matching" else dataset.COMPLEMENT.get(stated1)
            for kind2 in dataset.SHAPES:
                if p_relation:
                    p = p1 * dataset.P_TWO_OBJECTS * p_relation / len(dataset.RELATIONS) / len(dataset.SHAPES)
                    joint[f"{first} with a {relation} {kind2}"][((kind1, stated1), (kind2, second_colour))] += p
        for second, p2, colours2, kind2, _ in phrases:
            p = p1 * dataset.P_TWO_OBJECTS * (1.0 - p_relation) * p2
            for c1, q1 in colours1.items():
                for c2, q2 in colours2.items():
                    joint[f"{first} and {second}"][((kind1, c1), (kind2, c2))] += p * q1 * q2
    return {caption: dict(scenes) for caption, scenes in joint.items()}


def _subsequences(words: Sequence[str], target: Sequence[str]) -> int:
    """In how many ways ``target`` is a subsequence of ``words`` (by position)."""
    ways = [1] + [0] * len(target)
    for word in words:
        for j in range(len(target), 0, -1):
            if target[j - 1] == word:
                ways[j] += ways[j - 1]
    return ways[-1]


def text_likelihood(text: str, caption: str) -> float:
    """p(text | caption) under :func:`dataset.corrupt_caption`."""
    words, target = caption.split(), text.split()
    keep = dataset.P_KEEP_WORD
    subset = keep ** len(target) * (1.0 - keep) ** (len(words) - len(target))
    dropped = (1.0 - dataset.P_EMPTY - dataset.P_FULL) * _subsequences(words, target) * subset
    return dropped + dataset.P_EMPTY * (not target) + dataset.P_FULL * (target == words)


@functools.lru_cache(maxsize=4096)
def scene_posterior(text: str) -> dict[Scene, float]:
    """p(scene | text), exactly; an empty dict if no training text is ``text``."""
    posterior: dict[Scene, float] = defaultdict(float)
    for caption, scenes in captions().items():
        weight = text_likelihood(text, caption)
        if weight:
            for scene, p in scenes.items():
                posterior[scene] += weight * p
    total = sum(posterior.values())
    return {scene: p / total for scene, p in posterior.items()} if total else {}


def information(scene: Scene, text: str, against: str) -> float:
    """Exact i(x; text against ``against``) = log p(scene | text) − log p(scene | against), nats;
    −inf where ``text`` rules the scene out, nan where a text never occurs in training."""
    p, q = scene_posterior(text).get(scene), scene_posterior(against).get(scene)
    if not scene_posterior(text) or not scene_posterior(against) or not q:
        return float("nan")
    return math.log(p) - math.log(q) if p else float("-inf")
