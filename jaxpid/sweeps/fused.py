"""The one per-batch fused pass that every sweep and study batch runs.

A plan (a sweep's, a study's) gives two functions: ``prepare(pipeline, batch)`` -> a
``PreparedBatch`` (images, conditioning prompts, item indices, the pass's pairs) and
``rows(pipeline, batch, prepared, result, positions)`` -> the result rows of the items at
``positions`` of the batch, from their ``InformationResult``. ``compute_batch`` runs them with one
fused pass of N samples; ``jaxpid.sweeps.adaptive`` runs them with per-item rounds until each
item's standard errors reach a target, refilling finished items' slots.

A batch is B items (padded to a fixed B by repeating the last, so each shape compiles once),
each with its own S conditioning prompts. Item i draws its log-SNRs and noise from
``fold_in(key(estimator.key), index_i)``, so an item's numbers depend on its index and the key,
never on which batch or worker computed it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import pyarrow as pa

from jaxpid.core.config import EstimatorConfig
from jaxpid.core.estimator import FusedPass
from jaxpid.core.results import InformationResult
from jaxpid.errors import ConfigError, NonFiniteError


def item_keys(estimator: EstimatorConfig, indices: Sequence[int]) -> jax.Array:
    """One key per item: ``fold_in(key(estimator.key), index)``."""
    base = estimator.prng_key()
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray(indices, np.uint32))


def encode_per_item(pipeline, prompts: Sequence[Sequence[str]]):
    """Every item's S prompts encoded in one call, as leaves (B, S, ...) (an array, or SDXL's pytree)."""
    sizes = {len(group) for group in prompts}
    if len(sizes) != 1:
        raise ConfigError(f"a batch's items must have the same number of conditionings, got {sorted(sizes)}")
    (size,) = sizes
    conds = pipeline.encode_prompt([p for group in prompts for p in group])
    return jax.tree.map(lambda a: a.reshape((len(prompts), size) + a.shape[1:]), conds)


@dataclasses.dataclass(frozen=True)
class PreparedBatch:
    """One batch's inputs to the fused pass (``plan.prepare``), and what its rows need besides
    the pass's result (``context``: the plan's own — generated images, subset prompts, ...)."""

    latents: Any  # (B, C, h, w): one image per item, padded to the batch size by repetition
    prompts: list  # B lists of S conditioning prompts (S fixed within the batch)
    indices: list  # B item indices (their keys; a padding item repeats its item's index)
    n_real: int  # the first n_real items are real, the rest padding
    label: str  # names the batch in errors: "batch 3 (jobs [12, 13])"
    reference: int = 0
    pairs: tuple = ()
    collect_aux: bool = False
    context: Any = None

    def __post_init__(self):
        if not len(self.prompts) == len(self.indices) == self.latents.shape[0]:
            raise ConfigError(f"{self.label}: {self.latents.shape[0]} images, {len(self.prompts)} prompt lists and "
                              f"{len(self.indices)} indices: one of each per item")


def fused_batch(pipeline, estimator: EstimatorConfig, batch: PreparedBatch, *,
                devices: Sequence | None = None) -> InformationResult:
    """One fused pass over a prepared batch: item i's image under each of its prompts, with the
    item's own key ``fold_in(key(estimator.key), index_i)``.

    Returns:
      The pass's ``InformationResult`` (padding included); ``timings['compile_s']`` is 0 when
      this shape was compiled before in this process.
    """
    fused = FusedPass.from_config(pipeline.denoiser, estimator, reference=batch.reference, pairs=tuple(batch.pairs),
                                  devices=list(jax.local_devices() if devices is None else devices),
                                  collect_aux=batch.collect_aux)
    try:
        return fused(batch.latents, encode_per_item(pipeline, batch.prompts), key=item_keys(estimator, batch.indices),
                     conds_per_image=True)
    except NonFiniteError as error:  # its image index counts within the batch: name the items
        raise NonFiniteError(f"{batch.label}, images in that order: {error}") from None


def compute_batch(pipeline, plan, batch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
    """A plan's batch the fixed-N way: ``plan.prepare``, one fused pass, ``plan.rows`` of the
    real items. -> (rows, timings with ``seconds``, ``compile_s`` and the pass's denoiser
    ``evaluations``, padding included)."""
    started = time.perf_counter()
    prepared = plan.prepare(pipeline, batch)
    res = fused_batch(pipeline, plan.config.estimator, prepared, devices=devices)
    positions = list(range(prepared.n_real))
    rows = plan.rows(pipeline, batch, prepared, res.select(positions), positions)
    return rows, {"seconds": time.perf_counter() - started, "compile_s": res.timings.get("compile_s", 0.0),
                  "evaluations": res.timings.get("evaluations", 0)}
