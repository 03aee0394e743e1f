"""``jaxpid toy``: the estimator on Gaussian mixtures, against their exact answer."""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from jaxpid.core.decomposition import pid
from jaxpid.core.ground_truth import CANONICAL_CASES, canonical_case
from jaxpid.core.lattice import atom_label, redundancy_lattice
from jaxpid.core.measures import redundancies
from jaxpid.io.atomic import write_json
from jaxpid.io.provenance import environment


def toy_command(args: argparse.Namespace) -> int:
    if args.n_images < 1 or args.samples < 2:
        print("jaxpid toy: --n-images must be >= 1 and --samples >= 2", file=sys.stderr)
        return 2
    lattice = redundancy_lattice(2)
    rows, started = [], time.perf_counter()
    for index, name in enumerate(tqdm(CANONICAL_CASES, desc="cases", unit="case")):
        case = canonical_case(name)
        pairs, x = case.sample(jax.random.fold_in(jax.random.key(args.key), index), args.n_images)
        subset = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)
        kwargs = {}
        if args.measure == "imin":
            kwargs["alternatives"] = [
                np.stack([case.single_source_log_weights(j, 1 - p[j]) for p in pairs])[:, None].astype(np.float32)
                for j in range(2)
            ]
        res = pid(case.denoiser, x, subset, key=jax.random.key(args.key + 1000 + index), n_samples=args.samples,
                  measure=args.measure, form=args.form, conds_per_image=True, **kwargs)
        exact_info = case.exact_information(x, pairs)
        exact_kwargs = {}
        if args.measure == "imin":
            alt = lambda j: np.array(  # noqa: E731
                [case.exact_single_source_information(x[i : i + 1], j, 1 - pairs[i][j])[0] for i in range(len(x))]
            )
            exact_kwargs["candidate_info"] = [np.stack([exact_info[:, 1 << j], alt(j)], axis=1) for j in range(2)]
        exact = lattice.atoms(redundancies(lattice, exact_info, args.measure, **exact_kwargs)).mean(axis=0)
        for a, node in enumerate(res.names):
            rows.append({
                "case": name,
                "atom": node,
                "estimate_nats": float(res.atoms[node].mean()),
                "stderr_nats": float(np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / args.n_images),
                "exact_nats": float(exact[a]) if args.form == "standard" else None,
            })
    elapsed = time.perf_counter() - started

    print(f"\nPID of the canonical cases ({args.measure}, {args.form} form, {args.n_images} images x "
          f"{args.samples} log-SNR samples; nats, mean over images)")
    header = f"{'case':<5} {'atom':<12} {'estimate':>9} {'± s.e.':>7}" + (f" {'exact':>8}" if args.form == "standard" else "")
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['case']:<5} {atom_label(row['atom'], ['y1', 'y2']):<12} {row['estimate_nats']:9.4f} " \
               f"{row['stderr_nats']:7.4f}"
        if row["exact_nats"] is not None:
            line += f" {row['exact_nats']:8.4f}"
        print(line)
    devices = jax.devices()
    print(f"\n{len(rows) // 4} cases in {elapsed:.1f} s on {len(devices)} x {devices[0].platform.upper()} "
          f"({devices[0].device_kind})")
    if args.out is not None:
        record = {"rows": rows, "config": {**vars(args), "out": str(args.out)}, "environment": environment()}
        path = write_json(args.out / "result.json", record)
        print(f"wrote {path}")
    return 0
