"""Per-item rounds with slot refill: each item gets rounds of N samples until its own stopping
rule holds, and a finished item's slot takes the next item, in one compiled program.

A ``FusedPass`` of B images × N samples is one round for B *slots*. Slot b holds an item (its
image, conditionings and key) and the index of its next sample; a round draws samples
first_b … first_b + N − 1 of every slot's item (the first sample is a per-image argument of the
program). After each round every item's samples so far are summarised on the host; an item whose
``done(tag, result)`` holds, or that reached ``max_samples``, is handed back and its slot is refilled
from the queue. Once the queue runs dry, spare slots draw an item's *next* blocks of N samples in
the same round (those of the items that needed the most rounds so far), so the last items finish
in fewer rounds instead of leaving slots idle. The rule is still asked after each block, in
order, and blocks past the one where it holds are dropped: an item's samples never depend on
which other items shared its rounds. Slots with nothing to do repeat a block, output dropped.

Item i's sample s uses ``fold_in(key_i, s)`` whatever slot or round it lands in, so an item that
stopped after R rounds has exactly the result of one pass of RN samples with its key — alone, in
any batch, resumed or not (the stratified sampler's strata must divide N, as for
``FusedPass.rounds``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxpid.core.estimator import _COMPILED, FusedPass, join_rounds
from jaxpid.core.results import InformationResult
from jaxpid.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SlotItem:
    """One item for ``per_item_rounds``: its image, its S conditionings and its key."""

    tag: Any  # handed back with the item's result (e.g. (batch, position))
    x: Any  # (C, H, W)
    conds: Any  # pytree of the item's conditionings, leaves (S, ...)
    key: jax.Array  # a typed key: sample s of this item uses fold_in(key, s)


@dataclasses.dataclass
class _Slot:
    item: SlotItem
    key_data: np.ndarray  # the item's key as raw data (stacked on the host: no device op per round)
    first: int = 0  # the item's next sample index
    total: dict | None = None  # its raw outputs so far (per-sample terms side by side, sums added)
    rounds: int = 0  # blocks of N samples so far (the stopping rule is asked after each)


def per_item_rounds(
    fused: FusedPass,
    items: Iterable[SlotItem],
    *,
    slots: int,
    done: Callable[[Any, InformationResult], bool],
    max_samples: int,
    on_round: Callable[[dict], None] | None = None,
) -> Iterator[tuple[Any, InformationResult]]:
    """Run ``items`` through ``fused`` in rounds of its N samples with ``slots`` images per round.

    Args:
      fused: the pass (its N is one round; reference, pairs, sampler, devices as usual).
      items: ``SlotItem``s, consumed lazily (the next is taken when a slot frees).
      slots: images per round (one compiled shape for the whole run).
      done: the stopping rule, given an item's tag and its result so far (one image).
      max_samples: an item stops at this many samples at the latest (a multiple of N is reached
        exactly; the cap is rounded down to whole rounds).
      on_round: called after each round with {"round", "active", "finished", "evaluations" (so
        far, padding and empty slots included), "compile_s" (0 when the program was cached)}.

    Yields:
      (tag, result) per item as it finishes — in finishing order, not input order. The result's
      config records ``rounds`` (blocks of N samples; ``done`` was asked after each),
      ``samples_per_round``, ``max_samples`` and ``stopped``.
    """
    n = fused.n_samples
    if max_samples < n:
        raise ConfigError(f"max_samples ({max_samples}) is below the samples of one round ({n})")
    if n % fused.sampler.strata:
        raise ConfigError(f"rounds of {n} samples cannot keep {fused.sampler.strata} strata balanced: use an even "
                          f"number of samples per round (strata = samples // 2) or strata that divide it")
    slots = int(slots)
    if slots < 1:
        raise ConfigError(f"slots must be at least 1, got {slots}")
    queue = iter(items)
    live: list[_Slot] = []
    exhausted, round_index, finished, evaluations = False, 0, 0, 0
    compiled, compile_s = None, 0.0
    while True:
        while len(live) < slots and not exhausted:
            item = next(queue, None)
            if item is None:
                exhausted = True
            else:
                live.append(_Slot(item, np.asarray(jax.random.key_data(item.key))))
        if not live:
            return
        blocks = _assign(live, slots, n, max_samples)  # per slot: (live item, its block this round)
        fill = [live[i] for i, _ in blocks]
        x = np.stack([np.asarray(s.item.x) for s in fill])
        conds = jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]), *[s.item.conds for s in fill])
        keys = jax.random.wrap_key_data(np.stack([s.key_data for s in fill]), impl=jax.random.key_impl(fill[0].item.key))
        inputs = fused.prepare(x, conds, key=keys, conds_per_image=True)
        if compiled is None:
            fresh = (inputs.plan, inputs.signature()) not in _COMPILED
            compiled = fused.compile(inputs)
            compile_s = (compiled.compile_seconds if fresh else 0.0) + inputs.probe_compile_s
        first = np.asarray([live[i].first + j * n for i, j in blocks], np.int32)
        t0 = time.perf_counter()
        raw = jax.device_get(jax.block_until_ready(fused.run(inputs, compiled, first_sample=first)))
        run_s = time.perf_counter() - t0
        evaluations += compiled.evaluations
        round_index += 1
        still = []
        for i, slot in enumerate(live):
            mine = sorted((j, b) for b, (owner, j) in enumerate(blocks) if owner == i and j >= 0)
            result, stop = None, False
            for _, b in mine:  # block by block, the rule asked after each: as if one block per round
                part = jax.tree.map(lambda a: a[b:b + 1], raw)
                slot.total = part if slot.total is None else join_rounds(slot.total, part)
                slot.first += n
                slot.rounds += 1
                # the summary reads the inputs' shapes and key record only: no device slicing per item
                one = dataclasses.replace(inputs, key_record=_key_record(slot))
                result = fused.summarise(slot.total, one, {"run_s": run_s})
                stop = done(slot.item.tag, result)
                if stop or slot.first + n > max_samples:
                    break  # later blocks of this round (drawn ahead in spare slots) are dropped
            if stop or slot.first + n > max_samples:
                config = {**result.config, "rounds": slot.rounds, "samples_per_round": n,
                          "max_samples": max_samples, "stopped": "target reached" if stop else "max_samples reached"}
                finished += 1
                yield slot.item.tag, dataclasses.replace(result, config=config)
            else:
                still.append(slot)
        live = still
        if on_round is not None:
            on_round({"round": round_index, "active": len(live), "finished": finished, "evaluations": evaluations,
                      "compile_s": compile_s})


def _assign(live: list[_Slot], slots: int, n: int, max_samples: int) -> list[tuple[int, int]]:
    """Each slot's (live item, block): every live item its next block; spare slots (the queue ran
    dry) take further blocks of the items that have needed the most rounds so far, within their
    caps; slots left over repeat a block whose output is dropped (block -1)."""
    blocks = [(i, 0) for i in range(len(live))]
    count = [1] * len(live)
    room = [(max_samples - s.first) // n for s in live]
    order = sorted(range(len(live)), key=lambda i: -live[i].rounds)
    while len(blocks) < slots and any(count[i] < room[i] for i in order):
        for i in order:
            if len(blocks) < slots and count[i] < room[i]:
                blocks.append((i, count[i]))
                count[i] += 1
    return blocks + [(0, -1)] * (slots - len(blocks))


def _key_record(slot: _Slot) -> dict:
    return {"impl": str(jax.random.key_impl(slot.item.key)), "data": slot.key_data.tolist()}


def stack_results(results: list[InformationResult]) -> InformationResult:
    """Single-image results with the same number of samples as one result (images in order)."""
    if not results:
        raise ConfigError("no results to stack")
    samples = {r.samples_standard.shape[1] for r in results}
    if len(samples) != 1:
        raise ConfigError(f"results with different numbers of samples ({sorted(samples)}) cannot be stacked")
    first = results[0]
    stacked = {}
    for field in dataclasses.fields(first):
        value = getattr(first, field.name)
        if field.name == "aux":
            stacked["aux"] = None if value is None else jax.tree.map(lambda *a: np.concatenate(a), *[r.aux for r in results])
        elif isinstance(value, np.ndarray):
            stacked[field.name] = np.concatenate([getattr(r, field.name) for r in results])
    return dataclasses.replace(first, **stacked)
