"""The ``jaxpid`` command line. Only this module parses arguments and prints."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jaxpid",
        description=(
            "Which words of a prompt put which information into which pixels: pointwise MI, "
            "conditional MI and PID (redundancy, uniqueness, synergy) from diffusion denoising errors."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser(
        "toy",
        help="PID of the canonical two-source cases on Gaussian-mixture data, against the exact answer",
        description=(
            "Runs the full estimator (fused pass over the 4 subset conditionings x N log-SNR samples) "
            "on Gaussian-mixture data whose exact MMSE denoiser and log-densities are known, for the "
            "canonical cases RDN (redundant), UNQ (unique), XOR (synergistic) and AND (a mix), and "
            "prints estimated vs exact PID atoms averaged over images."
        ),
    )
    toy.add_argument("--images", type=int, default=64, help="images per case (default 64)")
    toy.add_argument("--samples", type=int, default=200, help="log-SNR samples per image (default 200)")
    toy.add_argument("--measure", choices=("mmi", "imin"), default="mmi", help="redundancy measure")
    toy.add_argument("--form", choices=("standard", "orthogonal"), default="standard",
                     help="pointwise information form (standard: exact target is the log-density ratio)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--out", type=Path, default=None, help="write result.json (atoms, errors, config) here")

    args = parser.parse_args(argv)
    if args.command == "toy":
        return _toy(args)
    return 2  # pragma: no cover


def _toy(args) -> int:
    import jax
    from tqdm import tqdm

    import jaxpid
    from jaxpid.gmm import CANONICAL_CASES, canonical_case
    from jaxpid.lattice import redundancy_lattice
    from jaxpid.measures import redundancies

    if args.images < 1 or args.samples < 2:
        print("jaxpid toy: --images must be >= 1 and --samples >= 2", file=sys.stderr)
        return 2
    lattice = redundancy_lattice(2)
    rows, started = [], time.perf_counter()
    for index, name in enumerate(tqdm(CANONICAL_CASES, desc="cases", unit="case")):
        case = canonical_case(name)
        pairs, x = case.sample(jax.random.fold_in(jax.random.key(args.seed), index), args.images)
        subset = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)
        kwargs = {}
        if args.measure == "imin":
            kwargs["alternatives"] = [
                np.stack([case.single_source_log_weights(j, 1 - p[j]) for p in pairs])[:, None].astype(np.float32)
                for j in range(2)
            ]
        res = jaxpid.pid(
            case.denoiser, x, subset, key=jax.random.key(args.seed + 1000 + index), n_samples=args.samples,
            measure=args.measure, form=args.form, conds_per_image=True, **kwargs,
        )
        exact_info = case.exact_information(x, pairs)
        exact_kwargs = {}
        if args.measure == "imin":
            alt = lambda j: np.array(
                [case.exact_single_source_information(x[i : i + 1], j, 1 - pairs[i][j])[0] for i in range(len(x))]
            )
            exact_kwargs["candidate_info"] = [np.stack([exact_info[:, 1 << j], alt(j)], axis=1) for j in range(2)]
        exact = lattice.atoms(redundancies(lattice, exact_info, args.measure, **exact_kwargs)).mean(axis=0)
        for a, node in enumerate(res.names):
            rows.append({
                "case": name,
                "atom": node,
                "estimate_nats": float(res.atoms[node].mean()),
                "stderr_nats": float(np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / args.images),
                "exact_nats": float(exact[a]) if args.form == "standard" else None,
            })
    elapsed = time.perf_counter() - started

    label = {"{1}{2}": "redundancy", "{1}": "unique y1", "{2}": "unique y2", "{12}": "synergy"}
    print(f"\nPID of the canonical cases ({args.measure}, {args.form} form, {args.images} images x "
          f"{args.samples} log-SNR samples; nats, mean over images)")
    header = f"{'case':<5} {'atom':<12} {'estimate':>9} {'± s.e.':>7}" + (f" {'exact':>8}" if args.form == "standard" else "")
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['case']:<5} {label[row['atom']]:<12} {row['estimate_nats']:9.4f} {row['stderr_nats']:7.4f}"
        if row["exact_nats"] is not None:
            line += f" {row['exact_nats']:8.4f}"
        print(line)
    print(f"\n{len(rows) // 4} cases in {elapsed:.1f} s on {_device_summary()}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"rows": rows, "config": {**vars(args), "out": str(args.out)}, "environment": environment()}
        _write_json_atomic(args.out / "result.json", record)
        print(f"wrote {args.out / 'result.json'}")
    return 0


def environment() -> dict:
    import jax

    import jaxpid

    return {
        "jaxpid": jaxpid.__version__,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "devices": [str(d) for d in jax.devices()],
    }


def _device_summary() -> str:
    import jax

    devices = jax.devices()
    return f"{len(devices)} x {devices[0].platform.upper()} ({devices[0].device_kind})"


def _write_json_atomic(path: Path, record: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
