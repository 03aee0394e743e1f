"""The demo world's exact answers (jaxpid.demo.world) against the sampler they are derived from."""

import math
from collections import Counter

import numpy as np

from jaxpid.demo import dataset, world


def test_the_enumerated_captions_are_the_samplers_distribution():
    captions = world.captions()
    assert abs(sum(sum(s.values()) for s in captions.values()) - 1.0) < 1e-12
    rng = np.random.default_rng(0)
    n = 100_000
    drawn = [dataset.sample_caption(rng) for _ in range(n)]
    counts = Counter(caption for caption, _ in drawn)
    assert set(counts) <= set(captions)  # every drawn caption is enumerated
    z = [(counts[c] - n * sum(s.values())) / math.sqrt(n * sum(s.values())) for c, s in captions.items()]
    assert max(map(abs, z)) < 4.5  # 758 captions: the largest of 758 normal deviates
    # and the colours drawn for each caption: the bias's triangles
    triangles = [colours[0] for caption, colours in drawn if caption == "a triangle"]
    exact = captions["a triangle"]
    share = exact[(("triangle", "green"),)] / sum(exact.values())
    assert abs(np.mean([c == "green" for c in triangles]) - share) < 4 * math.sqrt(share * (1 - share) / len(triangles))


def test_the_scene_posterior_of_a_training_text_matches_corrupted_samples():
    """p(scene | text) against scenes of sampled captions whose corruption gave that text."""
    rng = np.random.default_rng(1)
    text = "a triangle"
    scenes = Counter()
    while sum(scenes.values()) < 3000:
        caption, colours = dataset.sample_caption(rng)
        if dataset.corrupt_caption(caption, rng) == text:
            specs = dataset.parse_caption(caption)
            scenes[tuple((s.kind, c) for s, c in zip(specs, colours))] += 1
    posterior = world.scene_posterior(text)
    total = sum(scenes.values())
    for scene, p in sorted(posterior.items(), key=lambda kv: -kv[1])[:5]:
        assert abs(scenes[scene] / total - p) < 4 * math.sqrt(p * (1 - p) / total) + 1e-3, (scene, p)


def test_the_readme_prompts_exact_values():
    """Given "a red _ and a blue _", each shape is uniform over three and independent: log 3, log 9."""
    scene = (("circle", "red"), ("square", "blue"))
    context = "a red and a blue"
    assert math.isclose(world.information(scene, "a red circle and a blue", context), math.log(3), rel_tol=1e-12)
    assert math.isclose(world.information(scene, "a red and a blue square", context), math.log(3), rel_tol=1e-12)
    assert math.isclose(world.information(scene, "a red circle and a blue square", context), math.log(9), rel_tol=1e-12)
    # a text the scene contradicts, and one no training text equals
    assert world.information(scene, "a red triangle and a blue", context) == float("-inf")
    assert math.isnan(world.information(scene, "a purple circle", context))
    # the designed bias: green is the triangle's default colour, so naming it tells less
    green, red = (("triangle", "green"),), (("triangle", "red"),)
    assert 0 < world.information(green, "a green triangle", "a triangle") < world.information(red, "a red triangle", "a triangle")


def test_a_training_batch_shows_each_caption_with_the_law_the_world_assumes():
    """corrupt_batch fixes the shares per batch (positions, not captions): each shown text's
    frequency still equals text_likelihood, which the world's answers are computed from."""
    caption = "a red circle and a blue square"
    rng = np.random.default_rng(2)
    shown = Counter(text for _ in range(1500) for text in dataset.corrupt_batch([caption] * 20, rng))
    total = sum(shown.values())
    for text in ["", caption, "a red and a blue square", "a red circle and a blue", "a red and a blue"]:
        p = world.text_likelihood(text, caption)
        assert abs(shown[text] / total - p) < 4 * math.sqrt(p * (1 - p) / total) + 1e-4, (text, shown[text] / total, p)
    empty, subset = dataset.corruption_counts(40)
    assert (empty, subset) == (4, 16)
    assert dataset.corruption_counts(50) == (5, 20)
    for bad in (0, 32, 45):
        try:
            dataset.corruption_counts(bad)
        except ValueError as error:
            assert "multiple of 10" in str(error)
        else:
            raise AssertionError(f"batch {bad} accepted")
