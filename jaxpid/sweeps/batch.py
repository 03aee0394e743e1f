"""One sweep batch: its images and conditionings (``prepare_batch``), and a result row per
(job, decomposition) from the fused pass (``batch_rows``).

A batch is one ``generate`` call and one fused pass (``conds_per_image``, one key per job:
``fold_in(key(config.estimator.key), job)``), padded to ``batch_size`` by repeating its last
job, so each (batch size, shape) compiles once; every requested decomposition (measure × form
× level) comes from that one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from jaxpid.core.decomposition import decompose, pairs_for
from jaxpid.core.lattice import TWO_SOURCE_ATOMS
from jaxpid.sd.ddim import generate
from jaxpid.sd.prompts import replace_source, subset_prompts
from jaxpid.sweeps.fused import PreparedBatch


def batch_prompts(jobs: Sequence, config) -> tuple[list[list[str]], list]:
    """Per job: its conditioning prompts (2**k subsets, then imin's alternatives) and subsets."""
    use_imin = "imin" in config.measures
    prompts, subsets = [], []
    for job in jobs:
        sp = subset_prompts(job.prompt, list(job.sources), conditional=job.conditional, **config.removal.arguments())
        extra = [replace_source(sp, j, alt) for j, alts in enumerate(job.alternatives) for alt in alts] if use_imin else []
        prompts.append(list(sp.prompts) + extra)
        subsets.append(sp)
    return prompts, subsets


def prepare_batch(pipeline, plan, batch) -> PreparedBatch:
    """One batch's generated images and conditionings (padded to the batch size by repeating the
    last job: static shapes)."""
    config = plan.config
    real = [plan.table.jobs[j] for j in batch.jobs]
    jobs = real + [real[-1]] * (config.batch_size - len(real))
    prompts, subsets = batch_prompts(jobs, config)
    images = generate(pipeline, [j.prompt for j in jobs], seeds=[j.seed for j in jobs], **config.generation.arguments())
    # the anchored form's gaps: the full prompt against every other conditioning, imin's candidates too
    pairs = pairs_for(batch.k, [d.form for d in config.decompositions], len(prompts[0]))
    return PreparedBatch(images.latents, prompts, [j.index for j in jobs], len(real),
                         f"batch {batch.index} (jobs {list(batch.jobs)})", pairs=tuple(pairs),
                         context={"jobs": jobs, "subsets": subsets})


def batch_rows(pipeline, plan, batch, prepared: PreparedBatch, res, positions: Sequence[int]) -> pa.Table:
    """The rows (one per (job, decomposition)) of the jobs at ``positions`` of the batch, from
    their result ``res`` (those jobs' images, in that order)."""
    config = plan.config
    jobs = [prepared.context["jobs"][p] for p in positions]
    subsets = [prepared.context["subsets"][p] for p in positions]
    results = []
    for decomposition in config.decompositions:
        kwargs = {}
        if decomposition.measure == "ppid":
            kwargs["log_prior"] = np.array([plan.priors[j.index][0] for j in jobs])
        if decomposition.measure == "imin":
            offsets = np.cumsum((1 << batch.k,) + batch.candidates)
            kwargs["candidates"] = [[1 << s] + list(range(offsets[s], offsets[s] + m)) for s, m in enumerate(batch.candidates)]
        results.append(decompose(res, batch.k, **decomposition.arguments(), **kwargs))
    return _rows(plan, batch, jobs, subsets, results, pipeline, res)


def row_schema(extras_schema, adaptive: bool = False) -> pa.Schema:
    """The result table's columns: fixed ones (with ``rounds`` when a target standard error sets
    each job's samples), then the job table's pass-through columns."""
    f64, words = pa.float64(), pa.list_(pa.string())
    fixed = [
        ("job", pa.int64()), ("row", pa.int64()), ("batch", pa.int64()), ("prompt", pa.string()), ("sources", words),
        ("seed", pa.int64()), ("conditional", pa.bool_()), ("alternatives", pa.list_(words)), ("k", pa.int64()),
        ("measure", pa.string()), ("form", pa.string()), ("level", pa.string()), ("prior", pa.string()),
        ("log_prior", pa.list_(f64)), ("atom_names", words), ("atoms", pa.list_(f64)), ("atoms_stderr", pa.list_(f64)),
    ]
    for name in TWO_SOURCE_ATOMS.values():
        fixed += [(name, f64), (f"{name}_stderr", f64)]
    fixed += [
        ("joint", f64), ("joint_stderr", f64), ("subset_prompts", words), ("subset_information", pa.list_(f64)),
        ("subset_stderr", pa.list_(f64)), ("conditional_information", pa.list_(f64)),
        ("conditional_stderr", pa.list_(f64)), ("n_samples", pa.int64()), ("model", pa.string()),
        ("model_fingerprint", pa.string()), ("fingerprint", pa.string()),
    ] + ([("rounds", pa.int64())] if adaptive else [])
    return pa.schema(fixed + list(extras_schema))


def _rows(plan, batch, real, subsets, results, pipeline, information) -> pa.Table:
    rows, extra_rows = [], []
    n_samples = information.config["n_samples"]  # the samples each of these jobs got (all alike)
    adaptive = plan.config.estimator.target_stderr is not None
    for i, job in enumerate(real):
        for res in results:
            log_prior, prior = plan.priors[job.index] if res.measure == "ppid" else (None, None)
            atoms = [float(res.atoms[n][i]) for n in res.names]
            stderr = [float(res.atoms_stderr[n][i]) for n in res.names]
            row = {
                "job": job.index, "row": job.row, "batch": batch.index, "prompt": job.prompt, "sources": list(job.sources),
                "seed": job.seed, "conditional": job.conditional, "alternatives": [list(a) for a in job.alternatives],
                "k": res.k, "measure": res.measure, "form": res.form, "level": res.level, "prior": prior,
                "log_prior": None if log_prior is None else list(log_prior), "atom_names": list(res.names),
                "atoms": atoms, "atoms_stderr": stderr,
                "joint": float(res.joint[i]), "joint_stderr": float(res.subset_stderr[i, -1]),
                "subset_prompts": list(subsets[i].prompts), "subset_information": res.subset_information[i].tolist(),
                "subset_stderr": res.subset_stderr[i].tolist(),
                "conditional_information": res.conditional_information[i].tolist(),
                "conditional_stderr": res.conditional_stderr[i].tolist(), "n_samples": n_samples,
                "model": str(pipeline.name), "model_fingerprint": pipeline.fingerprint, "fingerprint": plan.fingerprint,
            }
            if res.k == 2:
                for a, name in enumerate(res.names):
                    row[TWO_SOURCE_ATOMS[name]], row[f"{TWO_SOURCE_ATOMS[name]}_stderr"] = atoms[a], stderr[a]
            if adaptive:
                row["rounds"] = information.config.get("rounds", 1)
            rows.append(row)
            extra_rows.append(job.row)
    out = pa.Table.from_pylist(rows, schema=row_schema(pa.schema([]), adaptive))
    extras = plan.table.extras.take(pa.array(extra_rows, pa.int64()))
    for name in extras.column_names:
        out = out.append_column(extras.schema.field(name), extras.column(name))
    return out


def rows_to_bytes(rows) -> bytes:
    """A result table as Arrow IPC bytes (to move between processes)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes()


def rows_from_bytes(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
