"""From a prompt to numbers and maps: the PID of its words, and Info-Decomp's per-word CMI.

This layer ties the pieces together — prompt subsets (``prompts``), the pipeline (text
encoder, sampler, VAE), and the fused estimator (``pid`` / ``information``) — and returns
result objects that carry their full configuration. It writes no files (see ``output``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.estimator import InformationResult, information
from jaxpid.pid import PIDResult, pid
from jaxpid.prompts import Source, SubsetPrompts, replace_source, resolve_sources, subset_prompts, without_word
from jaxpid.sampling import LogisticSampler, LogSNRSampler

NATS_TO_BITS = 1.0 / math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Images:
    """The images analysed: generated from the prompt (seeds) or given by the user."""

    latents: np.ndarray  # (I, C, h, w) what the estimator sees
    pixels: np.ndarray  # (I, H, W, 3) uint8, for display
    origin: dict  # {"generated": {...seeds, steps, guidance}} or {"image": path}


@dataclasses.dataclass(frozen=True)
class PromptPID:
    """The PID of k prompt words for I images."""

    subsets: SubsetPrompts
    images: Images
    result: PIDResult
    config: dict  # everything needed to reproduce it (and the model's identity)
    timings: dict

    def atom_label(self, name: str) -> str:
        return atom_label(name, [s.word for s in self.subsets.sources])


@dataclasses.dataclass(frozen=True)
class WordInformation:
    """Info-Decomp's analyses: MI of the whole prompt, CMI of each word given the rest."""

    prompt: str
    words: tuple[Source, ...]
    conditionings: tuple[str, ...]  # [prompt, "", prompt without word 1, ...]
    images: Images
    mi: np.ndarray  # (I,) i(x; prompt)
    mi_stderr: np.ndarray  # (I,)
    cmi: np.ndarray  # (I, n_words) i(x; word | rest of the prompt)
    cmi_stderr: np.ndarray  # (I, n_words)
    mi_map: np.ndarray  # (I, h, w)
    cmi_maps: np.ndarray  # (I, n_words, h, w)
    information: InformationResult
    config: dict
    timings: dict


def atom_label(name: str, words: Sequence[str]) -> str:
    """'{1}{2}' -> 'redundancy', '{1}' -> 'unique: red', ... (k = 2); other k: words in braces."""
    if len(words) == 2:
        names = {"{1}{2}": "redundancy", "{1}": f"unique: {words[0]}", "{2}": f"unique: {words[1]}", "{12}": "synergy"}
        return names[name]
    return "".join(
        "{" + " ".join(words[int(d) - 1] for d in part) + "}" for part in name.strip("{}").split("}{")
    )


def prepare_images(
    pipeline,
    prompt: str,
    *,
    seeds: Sequence[int] | None = None,
    image: np.ndarray | None = None,
    image_origin: str | None = None,
    steps: int = 50,
    guidance_scale: float = 7.5,
) -> Images:
    """Generate images for the prompt (one per seed) or encode a given image batch."""
    if image is not None:
        pixels = np.asarray(image)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ShapeError(f"images must be (H, W, 3) or (I, H, W, 3) RGB arrays; got shape {pixels.shape}")
        latents = np.asarray(pipeline.encode_images(pixels))
        # Show what the model sees: the cropped, resized image (through the VAE if there is one).
        shown = pipeline.decode_latents(latents)
        return Images(latents, np.asarray(shown), {"image": image_origin or "array", "size": list(pixels.shape[1:3])})
    from jaxpid.generate import generate

    seeds = [0] if seeds is None else list(seeds)
    if not seeds:
        raise ConfigError("give at least one seed")
    out = generate(pipeline, [prompt] * len(seeds), seeds=seeds, steps=steps, guidance_scale=guidance_scale)
    origin = {"generated": {"prompt": prompt, "seeds": seeds, "steps": steps, "guidance_scale": guidance_scale,
                            "sampler": "DDIM (eta=0) + classifier-free guidance"}}
    return Images(np.asarray(out.latents), np.asarray(out.images), origin)


def analyze(
    pipeline,
    prompt: str,
    sources: Sequence[str],
    *,
    measure: str = "mmi",
    conditional: bool = False,
    form: str = "orthogonal",
    level: str = "sum",
    removal: str = "delete",
    placeholder: str = "_",
    seeds: Sequence[int] | None = None,
    image: np.ndarray | None = None,
    image_origin: str | None = None,
    images: Images | None = None,
    n_samples: int = 100,
    key: jax.Array | None = None,
    sampler: LogSNRSampler = LogisticSampler(),
    steps: int = 50,
    guidance_scale: float = 7.5,
    log_prior: np.ndarray | None = None,
    prior_info: dict | None = None,
    alternatives: dict[str, Sequence[str]] | None = None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    allow_large_k: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> PromptPID:
    """PID (or conditional PID) of the words ``sources`` of ``prompt`` in generated or given images.

    All 2**k subset prompts are encoded in one batched call (77 tokens each) and evaluated
    with every log-SNR sample of every image in one fused pass. ``alternatives`` (``imin``):
    source word -> alternative words; ``log_prior`` (``ppid``): (k,) log p(word).
    """
    stage = on_stage or (lambda _: None)
    timings: dict[str, float] = {}
    subsets = subset_prompts(prompt, list(sources), conditional=conditional, removal=removal,
                             placeholder=placeholder, allow_large_k=allow_large_k)
    alt_prompts = _alternative_prompts(subsets, alternatives, measure)
    # Validate every prompt (length, tokens) before any expensive work.
    pipeline.tokenizer.encode(list(subsets.prompts) + [p for group in alt_prompts for p in group])

    t0 = time.perf_counter()
    if images is None:
        stage("generating images" if image is None else "encoding image")
        images = prepare_images(pipeline, prompt, seeds=seeds, image=image, image_origin=image_origin,
                                steps=steps, guidance_scale=guidance_scale)
    timings["images_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage(f"encoding {len(subsets.prompts)} subset prompts")
    conds = pipeline.encode_prompt(list(subsets.prompts))
    alt_conds = [pipeline.encode_prompt(group) for group in alt_prompts] or None
    timings["text_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage(f"fused pass: {len(images.latents)} image(s) x {n_samples} log-SNR samples x "
          f"{len(subsets.prompts) + sum(map(len, alt_prompts))} conditionings")
    key = jax.random.key(0) if key is None else key
    result = pid(
        pipeline.denoiser, images.latents, conds, key=key, n_samples=n_samples, measure=measure, form=form,
        level=level, alternatives=alt_conds, log_prior=log_prior, sampler=sampler, chunk_size=chunk_size,
        devices=devices, allow_large_k=allow_large_k,
    )
    timings["estimate_s"] = time.perf_counter() - t0
    config = {
        "analysis": "pid" if not conditional else "conditional_pid",
        **subsets.to_dict(),
        "alternatives": {w: list(a) for w, a in (alternatives or {}).items()} or None,
        "alternative_prompts": [list(g) for g in alt_prompts] or None,
        "prior": prior_info,
        "images": images.origin,
        "estimator": result.config,
        "model": model_identity(pipeline),
    }
    return PromptPID(subsets, images, result, config, timings)


def _alternative_prompts(subsets: SubsetPrompts, alternatives, measure: str) -> list[list[str]]:
    if measure != "imin":
        if alternatives:
            raise ConfigError(f"alternatives are used by measure 'imin' only (measure is {measure!r})")
        return []
    words = [s.word.lower() for s in subsets.sources]
    if not alternatives:
        raise ConfigError(
            "measure 'imin' needs alternative words for every source, e.g. "
            + " ".join(f"--alternatives {w}=OTHER1,OTHER2" for w in words)
        )
    given = {w.lower(): list(a) for w, a in alternatives.items()}
    unknown = sorted(set(given) - set(words))
    if unknown:
        raise ConfigError(f"alternatives given for {unknown}, which are not sources ({words})")
    groups = []
    for j, word in enumerate(words):
        alts = [a.strip() for a in given.get(word, []) if a.strip()]
        if not alts:
            raise ConfigError(f"measure 'imin': no alternatives for source {word!r}")
        groups.append([replace_source(subsets, j, a) for a in alts])
    return groups


def word_information(
    pipeline,
    prompt: str,
    words: Sequence[str],
    *,
    removal: str = "delete",
    placeholder: str = "_",
    seeds: Sequence[int] | None = None,
    image: np.ndarray | None = None,
    image_origin: str | None = None,
    images: Images | None = None,
    n_samples: int = 100,
    key: jax.Array | None = None,
    sampler: LogSNRSampler = LogisticSampler(),
    form: str = "orthogonal",
    steps: int = 50,
    guidance_scale: float = 7.5,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> WordInformation:
    """Info-Decomp's MI of the prompt and CMI of each word given the rest, with maps.

    One fused pass over [prompt, "", prompt without each word], measured against the full
    prompt: orthogonal-form information is symmetric, so i(x; w | rest) is the gap between
    the full prompt and the prompt without w; the standard form flips sign.
    """
    stage = on_stage or (lambda _: None)
    timings: dict[str, float] = {}
    found = resolve_sources(prompt, list(words), allow_large_k=True)
    conditionings = [prompt, ""] + [without_word(prompt, w, removal=removal, placeholder=placeholder) for w in found]
    pipeline.tokenizer.encode(conditionings)
    t0 = time.perf_counter()
    if images is None:
        stage("generating images" if image is None else "encoding image")
        images = prepare_images(pipeline, prompt, seeds=seeds, image=image, image_origin=image_origin,
                                steps=steps, guidance_scale=guidance_scale)
    timings["images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(f"fused pass: {len(images.latents)} image(s) x {n_samples} samples x {len(conditionings)} conditionings")
    conds = pipeline.encode_prompt(conditionings)
    res = information(pipeline.denoiser, images.latents, conds, key=jax.random.key(0) if key is None else key,
                      n_samples=n_samples, reference=0, sampler=sampler, chunk_size=chunk_size, devices=devices)
    timings["estimate_s"] = time.perf_counter() - t0
    sign = 1.0 if form == "orthogonal" else -1.0
    mi, se, maps = sign * res.mi(form), res.stderr(form), sign * res.maps(form)
    config = {
        "analysis": "mi",
        "prompt": prompt,
        "words": [{"word": w.word, "position": w.position} for w in found],
        "conditionings": conditionings,
        "removal": removal,
        "form": form,
        "images": images.origin,
        "estimator": res.config,
        "model": model_identity(pipeline),
    }
    return WordInformation(
        prompt, found, tuple(conditionings), images, mi[:, 1], se[:, 1], mi[:, 2:], se[:, 2:], maps[:, 1],
        maps[:, 2:], res, config, timings,
    )


def threshold_map(info_map: np.ndarray, n_std: float = 1.5) -> np.ndarray:
    """Pixels above mean + n_std·std of their own map: (..., h, w) -> bool (..., h, w)."""
    m = np.asarray(info_map, np.float64)
    mean = m.mean(axis=(-2, -1), keepdims=True)
    std = m.std(axis=(-2, -1), keepdims=True)
    return m > mean + n_std * std


def baseline_redundancy_map(map_a: np.ndarray, map_b: np.ndarray, n_std: float = 1.5) -> np.ndarray:
    """DiffusionPID's baseline (its App. 6.5): two MI / CMI (or attention) maps, each
    thresholded at mean + 1.5·std, intersected. (..., h, w) -> bool (..., h, w)."""
    return threshold_map(map_a, n_std) & threshold_map(map_b, n_std)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boolean masks over the last two axes (NaN if both empty)."""
    inter = np.sum(a & b, axis=(-2, -1))
    union = np.sum(a | b, axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def model_identity(pipeline) -> dict:
    return {
        "name": str(getattr(pipeline, "name", "?")),
        "fingerprint": getattr(pipeline, "fingerprint", None),
        "dtype": str(np.dtype(getattr(pipeline, "dtype", np.float32))),
        "prediction_type": pipeline.schedule.prediction_type,
        "latent_shape": list(pipeline.latent_shape),
    }


def to_bits(nats: Any) -> Any:
    return np.asarray(nats) * NATS_TO_BITS
