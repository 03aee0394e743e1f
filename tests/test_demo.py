"""The shipped demo model: it loads, draws what its captions say, and jaxpid recovers the
information structure its synthetic world was built with (see jaxpid/demo/dataset.py).

Everything runs on images the demo model generates (DDIM with classifier-free guidance), judged
with the dataset's own renderer: the recogniser matches rendered templates, the object masks
are the generated image's foreground in each object's slot.
"""

import json

import jax
import numpy as np
import pytest

import notebooks
import jaxpid
from jaxpid.demo import DEMO_DIR, dataset, demo_path
from jaxpid.errors import ModelNotFoundError
from jaxpid.sd.ddim import generate

GUIDANCE = 4.0
STEPS = 25
SEEDS = list(range(8))  # one generate() batch size throughout: one compilation
N_SAMPLES = 64
PID_IMAGES = 4  # images per PID: one estimator compilation throughout


@pytest.fixture(scope="module")
def pipe():
    return jaxpid.load_pipeline(demo_path())


@pytest.fixture(scope="module")
def generated(pipe):
    """prompt -> GenerationResult over SEEDS, cached across the tests of this file."""
    cache = {}

    def get(prompt):
        if prompt not in cache:
            cache[prompt] = generate(pipe, [prompt], seeds=SEEDS, steps=STEPS, guidance_scale=GUIDANCE)
        return cache[prompt]

    return get


def _pid(pipe, latents, prompts, key=0, n_samples=N_SAMPLES):
    """mmi PID (orthogonal form) over the 4 subset prompts (bitmask order) for the first PID_IMAGES images."""
    conds = pipe.encode_prompt(prompts)
    return jaxpid.pid(pipe.denoiser, latents[:PID_IMAGES], conds, key=jax.random.key(key), n_samples=n_samples,
                      measure="mmi", form="orthogonal")


def _object_masks(images: np.ndarray) -> np.ndarray:
    """(I, H, W, 3) uint8 images of two objects -> (I, 2, H, W) masks: foreground per half."""
    size = images.shape[1]
    fg = np.stack([dataset.foreground(image / 255.0) for image in images])
    left = np.arange(size)[None, None, :] < size // 2
    return np.stack([fg & left, fg & ~left], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# ------------------------------------------------------------------------------ the package


def test_demo_folder_ships_and_loads(pipe):
    folder = demo_path()
    assert folder == DEMO_DIR and (folder / "model_index.json").is_file()
    assert jaxpid.load_pipeline("demo").fingerprint == pipe.fingerprint  # "demo" is a model name everywhere
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert total < 20e6, f"the demo folder is {total / 1e6:.1f} MB"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["vae"] == [None, None]
    training = json.loads((folder / "training.json").read_text())
    assert training["dataset_version"] == dataset.DATASET_VERSION
    assert np.isfinite(training["final_loss"]) and training["steps"] > 0
    assert pipe.vae is None and pipe.image_size == (dataset.IMAGE_SIZE, dataset.IMAGE_SIZE)
    assert pipe.latent_shape == (3, dataset.IMAGE_SIZE, dataset.IMAGE_SIZE)
    for word in dataset.VOCABULARY:  # every word of the grammar is one token
        assert len(pipe.tokenizer.token_ids(word)) == 1, word


def test_demo_path_names_a_missing_folder(monkeypatch, tmp_path):
    import jaxpid.sd.weights

    monkeypatch.setattr(jaxpid.sd.weights, "DEMO_DIR", tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="jaxpid.demo.train"):
        jaxpid.demo.demo_path()
    with pytest.raises(ModelNotFoundError, match="the demo model is missing"):
        jaxpid.load_pipeline("demo")


# ------------------------------------------------------------------------------ the dataset


def test_renderer_and_recogniser_agree_on_training_scenes():
    rng = np.random.default_rng(0)
    for _ in range(100):
        scene = dataset.sample_scene(rng)
        image, masks = dataset.render(scene)
        assert masks.shape == (len(scene.objects), dataset.IMAGE_SIZE, dataset.IMAGE_SIZE)
        assert not (masks.sum(0) > 1).any(), "objects overlap"
        expected = [dataset.ObjectSpec(o.kind, o.colour) for o in scene.objects]
        assert dataset.recognise(image, len(expected)) == expected, scene.caption


def test_caption_grammar_and_designed_statistics():
    rng = np.random.default_rng(1)
    scenes = [dataset.sample_scene(rng) for _ in range(4000)]
    for scene in scenes[:500]:
        specs = dataset.parse_caption(scene.caption)
        assert [s.kind for s in specs] == [o.kind for o in scene.objects]
        assert all(s.colour in (None, o.colour) for s, o in zip(specs, scene.objects))
    # The bias: triangles whose colour the caption leaves open are green 80 % of the time.
    open_triangles = [
        o.colour for s in scenes for spec, o in zip(dataset.parse_caption(s.caption), s.objects)
        if spec.kind == "triangle" and spec.colour is None
    ]
    assert len(open_triangles) > 150
    assert abs(np.mean([c == "green" for c in open_triangles]) - dataset.BIAS) < 0.07
    # Synonyms draw the same pixels; the relation words fix the second colour.
    same = dataset.scene_for_caption("a crimson circle"), dataset.scene_for_caption("a red circle")
    np.testing.assert_array_equal(dataset.render(same[0])[0], dataset.render(same[1])[0])
    assert dataset.parse_caption("a blue square with a contrasting circle")[1].colour == "yellow"
    assert dataset.parse_caption("a blue square with a matching circle")[1].colour == "blue"
    with pytest.raises(ValueError, match="'with' joins"):  # relations take "with", plain pairs "and"
        dataset.parse_caption("a blue square and a matching circle")
    assert dataset.parse_caption("an orange")[0].kind == "fruit"
    assert dataset.parse_caption("an orange square")[0] == dataset.ObjectSpec("square", "orange")
    with pytest.raises(ValueError):
        dataset.parse_caption("a purple circle")


def test_training_captions_fit_the_tokenizer(pipe):
    rng = np.random.default_rng(2)
    captions = {dataset.sample_caption(rng)[0] for _ in range(2000)}
    ids = pipe.tokenizer.encode(sorted(captions))  # raises PromptError when one is too long
    assert ids.shape[1] == pipe.tokenizer.max_length


# ------------------------------------------------------------------------------ samples


CAPTIONS = [
    "a red circle and a blue square",
    "a green triangle and a yellow circle",
    "a crimson square",
    "a blue triangle and an orange square",
    "a red square with a contrasting circle",
    "a yellow circle with a matching triangle",
    "an orange",
    "an orange triangle",
]


def test_samples_match_their_captions(generated):
    results = {}
    for caption in CAPTIONS:
        expected = dataset.parse_caption(caption)
        images = generated(caption).images
        results[caption] = [dataset.matches(dataset.recognise(image, len(expected)), expected) for image in images]
    rates = {caption: float(np.mean(hits)) for caption, hits in results.items()}
    overall = float(np.mean([hit for hits in results.values() for hit in hits]))
    print(f"\ncaption match rate {overall:.2f}: {rates}")
    assert overall >= 0.7, rates


def test_designed_bias_is_recovered(generated):
    def colours(prompt):
        return [dataset.recognise(image, 1)[0].colour for image in generated(prompt).images]

    triangles, circles = colours("a triangle"), colours("a circle")
    print(f"\n'a triangle' colours {triangles}\n'a circle' colours {circles}")
    assert np.mean([c == "green" for c in triangles]) >= 0.6
    assert np.mean([c == "green" for c in triangles]) > np.mean([c == "green" for c in circles]) + 0.25


# ------------------------------------------------------------------------------ information


def test_designed_bias_shows_in_conditional_information(pipe, generated):
    """Naming the default colour of a triangle tells the model little; naming a rare one, a lot."""
    green = generated("a green triangle").latents[: PID_IMAGES // 2]
    red = generated("a red triangle").latents[: PID_IMAGES // 2]
    conds = pipe.encode_prompt(["a triangle", "a green triangle", "a red triangle", "a blue triangle"])
    res = jaxpid.information(pipe.denoiser, np.concatenate([green, red]), conds, key=jax.random.key(1),
                             n_samples=N_SAMPLES)
    half = PID_IMAGES // 2
    cmi_green = res.mi_orthogonal[:half, 1]  # i(x; green | a triangle) on green triangles
    cmi_red = res.mi_orthogonal[half:, 2]  # i(x; red | a triangle) on red triangles
    print(f"\nCMI of the colour word given 'a triangle': green {cmi_green}, red {cmi_red} nats")
    assert cmi_red.min() > 3 * cmi_green.max()


def _top_iou(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(I, H, W) maps, (I, H, W) masks -> (I,) IoU of each map's top pixels (> mean + std) with the mask."""
    return np.array([_iou(m > m.mean() + m.std(), k) for m, k in zip(maps, masks)])


def test_unique_information_of_object_words_lies_on_their_objects(pipe, generated):
    prompt = "a red circle and a blue square"
    out = generated(prompt)
    masks = _object_masks(out.images[:PID_IMAGES])  # (I, 2, H, W): circle (left), square (right)
    baseline = masks.mean(axis=(2, 3)).mean(0)  # IoU of the whole image with each mask

    # The colour words, each describing one object (shapes and layout are context): their unique
    # maps must cover their own object's mask, not the other's.
    colours = _pid(pipe, out.latents, ["a circle and a square", "a red circle and a square",
                                       "a circle and a blue square", prompt])
    own = np.stack([_top_iou(colours.atom_maps[n], masks[:, j]) for j, n in enumerate(("{1}", "{2}"))], 1)
    crossed = np.stack([_top_iou(colours.atom_maps[n], masks[:, 1 - j]) for j, n in enumerate(("{1}", "{2}"))], 1)
    print(f"\nunique-map IoU of red / blue with their own object {own.mean(0)}, with the other object "
          f"{crossed.mean(0)}, whole-image baseline {baseline}")
    assert (own.mean(0) > 3 * baseline).all() and (own.mean(0) > 3 * crossed.mean(0)).all()

    # The shape words (colours and layout are context) tell an object's outline, so their unique
    # information sits on and around their own object: most of its mass lies in that object's half.
    shapes = _pid(pipe, out.latents, ["a red and a blue", "a red circle and a blue", "a red and a blue square",
                                      prompt])
    size = masks.shape[-1]
    halves = [np.arange(size) < size // 2, np.arange(size) >= size // 2]
    share = np.stack([
        np.clip(shapes.atom_maps[n], 0, None)[..., halves[j]].sum(axis=(1, 2))
        / np.clip(shapes.atom_maps[n], 0, None).sum(axis=(1, 2))
        for j, n in enumerate(("{1}", "{2}"))
    ], 1)
    shape_iou = np.stack([_top_iou(shapes.atom_maps[n], masks[:, j]) for j, n in enumerate(("{1}", "{2}"))], 1)
    print(f"unique-map mass of circle / square in their own half {share.mean(0)}; "
          f"IoU with their own object {shape_iou.mean(0)}")
    assert (share.mean(0) > 0.65).all()
    assert (shape_iou.mean(0) > baseline).all()


def test_synonyms_are_redundant_and_cohyponyms_are_not(pipe, generated):
    synonyms = generated("a crimson red circle")
    syn = _pid(pipe, synonyms.latents, ["a circle", "a crimson circle", "a red circle", "a crimson red circle"])
    cohyponyms = generated("a red circle and a blue square")
    coh = _pid(pipe, cohyponyms.latents, ["a circle and a square", "a red circle and a square",
                                          "a circle and a blue square", "a red circle and a blue square"])
    names = ("{1}{2}", "{1}", "{2}", "{12}")
    syn_atoms = np.stack([syn.atoms[n] for n in names], axis=1)  # (I, 4)
    print(f"\nsynonyms (crimson, red) atoms R, U1, U2, S per image:\n{syn_atoms}")
    assert (np.argmax(syn_atoms, axis=1) == 0).all(), "redundancy must be the largest atom"

    def co_information(result):  # i1 + i2 - i12 = R - S: > 0 redundant, ≈ 0 independent
        i = result.subset_information
        return (i[:, 1] + i[:, 2] - i[:, 3]) / i[:, 3]

    def pixel_redundancy_share(result):  # the redundancy map's mass where both words act
        return result.atom_maps["{1}{2}"].sum(axis=(1, 2)) / result.joint

    print(f"co-information / joint: synonyms {co_information(syn)}, co-hyponyms {co_information(coh)}")
    print(f"pixel redundancy / joint: synonyms {pixel_redundancy_share(syn)}, "
          f"co-hyponyms {pixel_redundancy_share(coh)}")
    assert co_information(syn).mean() > 0.5 and abs(co_information(coh).mean()) < 0.3
    assert pixel_redundancy_share(syn).mean() > 2 * pixel_redundancy_share(coh).mean()


def test_relation_words_carry_synergy(pipe, generated):
    prompt = "a red square with a contrasting circle"
    out = generated(prompt)
    # Sources: the first colour and the relation; the shapes are context.
    result = _pid(pipe, out.latents, ["a square with a circle", "a red square with a circle",
                                      "a square with a contrasting circle", prompt])
    print(f"\n(red, contrasting) synergy {result.synergy}, joint {result.joint}, "
          f"stderr {result.atoms_stderr['{12}']}")
    # Clearly positive: the mean over images is many standard errors above 0 and every image's
    # synergy is positive; it is a sizeable share of what the two words say together.
    mean_se = np.sqrt(np.sum(result.atoms_stderr["{12}"] ** 2)) / len(result.synergy)
    assert result.synergy.mean() > 4 * mean_se and (result.synergy > 0).all()
    assert result.synergy.mean() > 0.15 * result.joint.mean()


# ------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    from safetensors.numpy import load_file

    from jaxpid.demo.train import train

    tiny = dict(steps=4, batch=20, channels=(8, 8, 8), size=8, checkpoint_every=2, log_every=1)
    whole = train(tmp_path / "whole", **tiny)
    assert train(tmp_path / "parts", stop_at=2, **tiny) is None
    assert not (tmp_path / "parts").exists() and (tmp_path / "parts-checkpoints" / "ckpt-0000002").is_dir()
    with pytest.raises(SystemExit, match="--resume"):
        train(tmp_path / "parts", **tiny)
    resumed = train(tmp_path / "parts", resume=True, **tiny)
    assert [e["loss"] for e in whole["log"]] == [e["loss"] for e in resumed["log"]]
    for weights in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(tmp_path / "whole" / weights), load_file(tmp_path / "parts" / weights)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    pipe = jaxpid.load_pipeline(tmp_path / "parts")
    assert pipe.image_size == (8, 8) and pipe.schedule.prediction_type == "v_prediction"


# ---------------------------------------------------------------------------------- notebook


@pytest.mark.e2e
def test_quickstart_notebook_executes(tmp_path):
    """notebooks/quickstart.ipynb runs top to bottom on the demo model and shows its plots."""
    notebook = notebooks.execute("quickstart.ipynb", tmp_path)
    assert notebooks.images_in(notebook) >= 3  # samples, MI maps, PID panel
    printed = notebooks.printed_by(notebook)
    assert "i(x; prompt)" in printed and "unique information of 'circle'" in printed
