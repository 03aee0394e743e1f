"""Info-Decomp's analyses of a prompt (``jaxpid mi``): the MI of the whole prompt and the CMI
of each word given the rest of the prompt, image-level and per pixel."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.images import Images, generated_images
from jaxpid.analysis.prompt_pid import Stage, round_note, run_config
from jaxpid.core.estimator import information
from jaxpid.core.results import InformationResult
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import Source, resolve_sources, without_word


@dataclasses.dataclass(frozen=True)
class WordInformation:
    """MI of the whole prompt and CMI of each word given the rest."""

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
    run: RunConfig
    config: dict  # the record saved as result.json's "config": enough to run it again
    timings: dict


def word_information(
    pipeline: Pipeline,
    prompt: str,
    words: Sequence[str],
    config: RunConfig | None = None,
    *,
    images: Images | None = None,
    devices: Sequence[jax.Device] | None = None,
    on_stage: Stage | None = None,
    **options,
) -> WordInformation:
    """Info-Decomp's MI of the prompt and CMI of each word given the rest, with maps.

    One fused pass over [prompt, "", prompt without each word], measured against the full
    prompt: orthogonal-form information is symmetric, so i(x; w | rest) is the gap between
    the full prompt and the prompt without w; the standard form flips sign. ``config`` (or
    keyword ``options``) as in :func:`jaxpid.analysis.analyze`; of the decomposition settings
    only the form applies (the anchored form, the default, gives the orthogonal values: every
    gap here ends at the full prompt).
    """
    config = run_config(config, options)
    stage = on_stage or (lambda _: None)
    timings: dict[str, float] = {}
    found = resolve_sources(prompt, list(words), allow_large_k=True)
    conditionings = [prompt, ""] + [without_word(prompt, w, **config.removal.arguments()) for w in found]
    pipeline.tokenizer.encode(conditionings)
    t0 = time.perf_counter()
    if images is None:
        stage(f"generating {len(config.seeds)} image(s)")
        images = generated_images(pipeline, prompt, config.seeds, config.generation)
    timings["images_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage(f"fused pass: {len(images.latents)} image(s) x {config.estimator.n_samples} samples x "
          f"{len(conditionings)} conditionings")
    conds = pipeline.encode_prompt(conditionings)
    # Every gap here ends at the full prompt, the anchored form's own: the prompt's MI is
    # gap(∅ → prompt) and a word's CMI is gap(rest → prompt), the orthogonal gaps
    # (docs/method.md#the-anchored-form).
    form = "orthogonal" if config.pid.form == "anchored" else config.pid.form
    reported = lambda r: r.stderr(form)[:, 1:]  # noqa: E731  (the prompt's MI and each word's CMI)
    res = information(pipeline.denoiser, images.latents, conds, reference=0, devices=devices,
                      **config.estimator.arguments(), reported=reported,
                      on_round=round_note(stage, config.estimator, lambda r: r.config["n_samples"],
                                          lambda r: float(np.max(reported(r)))))
    timings["estimate_s"] = time.perf_counter() - t0
    timings["compile_s"] = res.timings.get("compile_s", 0.0)
    sign = 1.0 if form == "orthogonal" else -1.0
    mi, se, maps = sign * res.mi(form), res.stderr(form), sign * res.maps(form)
    run = config.to_dict()
    run.update(pid={"form": form}, prior=None)  # the measure and level do not apply to MI
    record = {
        "analysis": "mi",
        "run": run,
        "prompt": prompt,
        "words": [{"word": w.word, "position": w.position} for w in found],
        "conditionings": conditionings,
        "removal": config.removal.mode,
        "form": form,
        "images": images.origin,
        "estimator": res.config,
        "model": pipeline.identity(),
    }
    return WordInformation(
        prompt, found, tuple(conditionings), images, mi[:, 1], se[:, 1], mi[:, 2:], se[:, 2:], maps[:, 1],
        maps[:, 2:], res, config, record, timings,
    )
