"""The images an analysis looks at: generated from the prompt, or given and encoded."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxpid.errors import ShapeError
from jaxpid.sd.ddim import GenerationConfig, generate
from jaxpid.sd.pipeline import Pipeline

DDIM_DESCRIPTION = "DDIM (eta=0) + classifier-free guidance"
EULER_DESCRIPTION = "flow-matching Euler at the scheduler's shift + classifier-free guidance"  # SD3


@dataclasses.dataclass(frozen=True)
class Images:
    """The images analysed and where they came from."""

    latents: np.ndarray  # (I, C, h, w) what the estimator sees
    pixels: np.ndarray  # (I, H, W, 3) uint8, for display
    origin: dict  # {"generated": {prompt, seeds, steps, guidance_scale, sampler}} or {"image": path, "size"}

    def names(self) -> list[dict]:
        """Per image: its seed or source, and the file name it is saved under."""
        if "generated" in self.origin:
            seeds = self.origin["generated"]["seeds"]
            return [{"seed": seed, "file": f"image_{i}.png"} for i, seed in enumerate(seeds)]
        return [{"source": self.origin.get("image"), "file": f"image_{i}.png"} for i in range(len(self.latents))]

    def label(self, i: int) -> str:
        if "generated" in self.origin:
            return f"seed {self.origin['generated']['seeds'][i]}"
        return str(self.origin.get("image", "image"))


def generated_images(pipeline: Pipeline, prompt: str, seeds: Sequence[int], generation: GenerationConfig) -> Images:
    """One image per seed, generated from the prompt."""
    seeds = [int(s) for s in seeds]
    out = generate(pipeline, [prompt] * len(seeds), seeds=seeds, **generation.arguments())
    origin = {"generated": {"prompt": prompt, "seeds": seeds, **generation.to_dict(),
                                 "sampler": DDIM_DESCRIPTION if pipeline.sd3 is None else EULER_DESCRIPTION}}
    return Images(np.asarray(out.latents), np.asarray(out.images), origin)


def given_images(pipeline: Pipeline, pixels: np.ndarray, origin: str = "array") -> Images:
    """Images given by the user: resized and centre-cropped to the model's size, encoded.

    Args:
      pixels: (H, W, 3) or (I, H, W, 3) RGB, uint8 or float in [0, 1].
      origin: where they came from (a path), recorded with the result.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ShapeError(f"images must be (H, W, 3) or (I, H, W, 3) RGB arrays; got shape {pixels.shape}")
    latents = np.asarray(pipeline.encode_images(pixels))
    # Show what the model sees: the cropped, resized image (through the VAE if there is one).
    shown = pipeline.decode_latents(latents)
    return Images(latents, np.asarray(shown), {"image": origin, "size": list(pixels.shape[1:3])})
