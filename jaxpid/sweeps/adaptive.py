"""A plan's batches with per-item precision targets: slot refill across the batches of a shape.

With a target standard error (``EstimatorConfig.target_stderr``), or a plan's own stopping rule
(``plan.stop``, e.g. retrieval's sequential decision), the batches of one shape run as one stream
of items through ``jaxpid.core.adaptive.per_item_rounds``: every item gets rounds of N samples
until each standard error its rows report is at most the target (or ``max_samples``), and its
slot takes the next item — one compiled program per shape for the whole run. A batch's part is
written when its last item finishes, so the store, resume and the parts' rows are those of a
fixed-N run (a resumed run recomputes the batches that have no part: each item's result depends
only on its key and its own stopping rule, so the table is the same). Rows record ``n_samples``
and ``rounds`` per item.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
import pyarrow as pa

from jaxpid.core.adaptive import SlotItem, per_item_rounds, stack_results
from jaxpid.core.estimator import FusedPass
from jaxpid.core.results import InformationResult
from jaxpid.errors import NonFiniteError
from jaxpid.sweeps.fused import PreparedBatch, encode_per_item, item_keys


def adaptive(plan) -> bool:
    """Whether a plan's items run with per-item stopping (a target s.e., or the plan's own rule)."""
    estimator = getattr(plan.config, "estimator", None)  # a plan of no fused pass has none
    target = getattr(estimator, "target_stderr", None)
    return target is not None or getattr(plan, "stop", None) is not None


def largest_stderr(rows: pa.Table) -> float:
    """The largest standard error a batch's rows report: every ``*stderr*`` column (numbers and
    lists of numbers), except what-if errors (``*_independent``). NaN when there is none."""
    largest = -math.inf
    for name in rows.column_names:
        if "stderr" not in name or name.endswith("_independent"):
            continue
        for value in rows.column(name).to_pylist():
            values = value if isinstance(value, list) else [value]
            finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
            largest = max([largest] + finite)
    return largest if largest > -math.inf else math.nan


def run_batches_adaptive(
    pipeline,
    plan,
    batches: Sequence,
    write: Callable[[object, pa.Table], None],
    *,
    devices: Sequence | None = None,
    on_item: Callable[[int], None] | None = None,
) -> dict:
    """Compute ``batches`` of ``plan`` with per-item stopping and slot refill; ``write(batch,
    rows)`` is called as each batch's last item finishes. -> {"compile_s", "evaluations"}."""
    estimator = plan.config.estimator
    max_samples = getattr(plan, "max_samples", None) or estimator.max_samples or 10 * estimator.n_samples
    shapes: dict = {}
    for batch in batches:
        shapes.setdefault(_shape_of(batch), []).append(batch)
    stats = {"compile_s": 0.0, "evaluations": 0}
    for group in shapes.values():
        _run_shape(pipeline, plan, group, write, stats, devices=devices, max_samples=max_samples, on_item=on_item)
    return stats


def _shape_of(batch):
    return getattr(batch, "shape", None) if hasattr(batch, "shape") else (batch.k, batch.candidates)


def _run_shape(pipeline, plan, batches, write, stats, *, devices, max_samples, on_item) -> None:
    estimator = plan.config.estimator
    prepared: dict[int, PreparedBatch] = {}
    results: dict[int, dict[int, InformationResult]] = {}
    by_index = {b.index: b for b in batches}
    first = plan.prepare(pipeline, batches[0])  # fixes the pass (its pairs, reference, aux)
    fused = FusedPass.from_config(pipeline.denoiser, estimator, reference=first.reference, pairs=tuple(first.pairs),
                                  devices=list(jax.local_devices() if devices is None else devices),
                                  collect_aux=first.collect_aux)

    def items() -> Iterator[SlotItem]:
        for n, batch in enumerate(batches):
            ready = first if n == 0 else plan.prepare(pipeline, batch)
            prepared[batch.index], results[batch.index] = ready, {}
            conds = encode_per_item(pipeline, ready.prompts)
            keys = item_keys(estimator, ready.indices)
            for p in range(ready.n_real):
                yield SlotItem((batch.index, p), ready.latents[p], jax.tree.map(lambda a: a[p], conds), keys[p])

    stop = getattr(plan, "stop", None)

    def done(tag: tuple[int, int], res: InformationResult) -> bool:
        if stop is not None:
            return bool(stop(res))
        index, position = tag
        rows = plan.rows(pipeline, by_index[index], prepared[index], res, [position])
        return largest_stderr(rows) <= estimator.target_stderr

    started, last = time.perf_counter(), {}
    stream = per_item_rounds(fused, items(), slots=len(first.indices), done=done, max_samples=max_samples,
                             on_round=lambda r: last.update(r))
    try:
        for (index, position), res in stream:
            results[index][position] = res
            if on_item is not None:
                on_item(1)
            if len(results[index]) == prepared[index].n_real:
                write(by_index[index], _batch_rows(pipeline, plan, by_index[index], prepared.pop(index),
                                                   results.pop(index)))
    except NonFiniteError as error:
        raise NonFiniteError(f"items of shape {_shape_of(batches[0])}: {error}") from None
    stats["evaluations"] += last.get("evaluations", 0)
    stats["compile_s"] += last.get("compile_s", 0.0)
    stats["seconds"] = stats.get("seconds", 0.0) + time.perf_counter() - started


def _batch_rows(pipeline, plan, batch, prepared: PreparedBatch, results: dict[int, InformationResult]) -> pa.Table:
    """A finished batch's rows: its items grouped by their number of samples (results of a group
    stack into one), each group through ``plan.rows``, in item order."""
    groups: dict[int, list[int]] = {}
    for position, res in results.items():
        groups.setdefault(res.samples_standard.shape[1], []).append(position)
    tables = []
    for positions in groups.values():
        positions = sorted(positions)
        tables.append(plan.rows(pipeline, batch, prepared, stack_results([results[p] for p in positions]), positions))
    table = pa.concat_tables(tables, promote_options="default")
    key = "job" if "job" in table.column_names else "item"
    order = np.argsort(np.asarray(table.column(key).to_pylist()), kind="stable")
    return table.take(pa.array(order))
