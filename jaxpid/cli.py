"""The ``jaxpid`` command line. Only this module parses arguments and prints."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError, JaxpidError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser: arguments after "--" go to the scripts
        from jaxpid.bench import run_bench

        return run_bench(argv[1:])
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

    _add_pid(sub)
    _add_mi(sub)
    _add_generate(sub)
    from jaxpid.sweep_cli import add_sweep_parsers

    handlers = {"toy": _toy, "pid": _pid, "mi": _mi, "generate": _generate, **add_sweep_parsers(sub)}
    sub.add_parser("bench", help="benchmarks against PyTorch and throughput (jaxpid bench --help)", add_help=False)

    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except JaxpidError as error:
        print(f"jaxpid {args.command}: error: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------
# Shared options


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo",
                   help="'demo' (the small model shipped with jaxpid, the default), a local diffusers "
                        "folder, or a Hugging Face hub id such as stabilityai/stable-diffusion-2-1-base")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="compute dtype (bf16: bfloat16 matmuls with float32 accumulation)")
    p.add_argument("--variant", default=None, help="weights variant, e.g. fp16")


def _image_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--image", type=Path, default=None, help="analyse this image instead of generating one")
    group.add_argument("--seed", type=int, nargs="+", default=None,
                       help="generate the image(s) from the prompt with these seeds (default 0; "
                            "diffusionpid preset: 42); several seeds are analysed together in one pass")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps for generation (default 50)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")


def _estimator_options(p: argparse.ArgumentParser, samples: int = 100) -> None:
    p.add_argument("--samples", type=int, default=None, help=f"log-SNR samples per image (default {samples})")
    p.add_argument("--sampler", choices=("logistic", "uniform"), default=None,
                   help="importance sampler over log-SNR (default: logistic, loc 1, scale 2, clip 3)")
    p.add_argument("--chunk-size", type=int, default=None, help="log-SNR samples per device per step (default: auto)")
    p.add_argument("--key", type=int, default=0, help="seed of the estimator's (log-SNR, noise) draws")
    p.add_argument("--form", choices=("orthogonal", "standard"), default=None,
                   help="pointwise information: orthogonal (default, >= 0, lower variance) or standard")
    p.add_argument("--removal", choices=("delete", "placeholder"), default="delete",
                   help="how an absent word is removed from the prompt (default: delete)")
    p.add_argument("--out", type=Path, required=True, help="directory for result.json, maps.npz, images, panel.png")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")


def _add_pid(sub) -> None:
    p = sub.add_parser(
        "pid",
        help="PID of prompt words: redundancy, uniqueness, synergy (numbers and maps)",
        description=(
            "Partial information decomposition of what k prompt words (2 to 4) tell about an image: "
            "for two words, redundancy (information both carry), uniqueness (only one) and synergy "
            "(only together), per image and per pixel. The image is generated from the prompt (--seed) "
            "or given (--image). Example: jaxpid pid \"a red circle and a blue square\" --sources circle square --out out/"
        ),
    )
    p.add_argument("prompt", help="the prompt (quote it)")
    p.add_argument("--sources", nargs="+", required=True,
                   help="source words of the prompt; a repeated word as word@N (its N-th occurrence)")
    p.add_argument("--conditional", action="store_true",
                   help="conditional PID: keep the rest of the prompt as context in every conditioning")
    p.add_argument("--preset", choices=("diffusionpid", "infodecomp"), default=None,
                   help="a paper's settings in one flag (explicit options override it): diffusionpid = "
                        "ppid with BERT priors, 50 samples, seed 42, mean-of-map level; infodecomp = "
                        "mmi, 100 samples, nats per image")
    p.add_argument("--measure", choices=("mmi", "imin", "ppid", "ccs"), default=None,
                   help="redundancy measure: mmi (minimum information), imin (Williams-Beer, needs "
                        "--alternatives), ppid (Finn-Lizier pointwise, needs --prior), ccs (Ince's common "
                        "change in surprisal: sees one word implying the other)")
    p.add_argument("--alternatives", action="append", default=[], metavar="WORD=ALT1,ALT2",
                   help="imin: alternative words for a source (repeat per source)")
    p.add_argument("--prior", default=None,
                   help="ppid: word priors: 'bert:PATH_OR_HUB_ID' (masked-LM probability, as DiffusionPID), "
                        "'uniform', or 'file:PRIORS.json' ({word: probability})")
    p.add_argument("--level", choices=("sum", "mean"), default=None,
                   help="image-level information: sum of the pixel map (nats/image, Info-Decomp; default) "
                        "or its mean (DiffusionPID)")
    p.add_argument("--allow-large-k", action="store_true", help="allow more than 4 source words")
    _model_options(p)
    _image_options(p)
    _estimator_options(p)


def _add_mi(sub) -> None:
    p = sub.add_parser(
        "mi",
        help="Info-Decomp: MI of the prompt and CMI of each word given the rest, with maps",
        description="Pointwise MI between the prompt and the image, and each word's conditional MI "
                    "given the rest of the prompt, image-level and per pixel.",
    )
    p.add_argument("prompt")
    p.add_argument("--words", nargs="+", required=True, help="words of the prompt (word@N for a repeated word)")
    _model_options(p)
    _image_options(p)
    _estimator_options(p)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt (DDIM + classifier-free guidance)")
    p.add_argument("prompt")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="one image per seed")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--out", type=Path, required=True,
                   help="a PNG file (one seed) or a directory (image_<seed>.png per seed)")
    _model_options(p)


# ---------------------------------------------------------------------------------------------
# Commands on models


class _Stages:
    """A progress bar over the stages of a run, with the elapsed time of each."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, bar_format="{desc} [{elapsed}] {n_fmt}/{total_fmt}", file=sys.stderr)
        self.count = 0

    def __call__(self, description: str) -> None:
        if self.count:
            self.bar.update(1)
        self.count += 1
        self.bar.set_description_str(description)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.set_description_str("done")
        self.bar.close()


def _load(args, stages):
    import jax.numpy as jnp

    import jaxpid
    from jaxpid.demo import resolve_model_name

    name = resolve_model_name(args.model)
    stages(f"loading model {args.model}")
    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[args.dtype]
    return jaxpid.load_pipeline(name, dtype=dtype, variant=args.variant)


def _image_input(args):
    if getattr(args, "image", None) is None:
        return None
    from jaxpid.pipeline import load_image

    return load_image(args.image)


def _sampler(args):
    import jaxpid

    return jaxpid.LogisticSampler() if args.sampler == "logistic" else jaxpid.UniformSampler()


def _parse_alternatives(items: list[str]) -> dict[str, list[str]] | None:
    out = {}
    for item in items:
        word, sep, alts = item.partition("=")
        if not sep or not word.strip() or not alts.strip():
            raise ConfigError(f"--alternatives {item!r}: expected WORD=ALT1,ALT2")
        out[word.strip()] = [a.strip() for a in alts.split(",") if a.strip()]
    return out or None


def _priors(args, subsets):
    """ppid's word priors from --prior: bert:PATH (masked LM), uniform, or file:PRIORS.json."""
    from jaxpid.priors import load_prior_spec

    if args.prior is None:
        raise ConfigError("measure 'ppid' needs word priors: --prior bert:PATH, --prior uniform or --prior file:PRIORS.json")
    values = load_prior_spec(args.prior).evaluate(
        args.prompt, list(subsets.sources), args.conditional, removal=args.removal
    )
    return values.log_prior, values.to_dict()


def _resolve(args, preset: str | None = None) -> None:
    """Fill unset options from the preset, then the defaults (explicit options win)."""
    from jaxpid.presets import resolve

    settings = resolve(preset, {k: getattr(args, k, None) for k in ("measure", "samples", "sampler", "seed",
                                                                    "level", "form", "prior")})
    for name, value in settings.items():
        if hasattr(args, name):
            setattr(args, name, value)


def _pid(args) -> int:
    from jaxpid.analysis import analyze
    from jaxpid.output import check_output_dir, save_pid
    from jaxpid.prompts import subset_prompts

    _resolve(args, args.preset)
    # Everything that can be checked without a model is checked before loading one.
    check_output_dir(args.out, args.overwrite)
    subsets = subset_prompts(args.prompt, args.sources, conditional=args.conditional, removal=args.removal,
                             allow_large_k=args.allow_large_k)
    alternatives = _parse_alternatives(args.alternatives)
    log_prior, prior_info = (None, None)
    if args.measure == "ppid":
        log_prior, prior_info = _priors(args, subsets)
    image = _image_input(args)
    stages = _Stages(total=5)
    pipeline = _load(args, stages)
    import jax

    analysis = analyze(
        pipeline, args.prompt, args.sources, measure=args.measure, conditional=args.conditional, form=args.form,
        level=args.level, removal=args.removal, seeds=args.seed if image is None else None, image=image,
        image_origin=str(args.image) if image is not None else None, n_samples=args.samples,
        key=jax.random.key(args.key), sampler=_sampler(args), steps=args.steps, guidance_scale=args.guidance,
        log_prior=log_prior, prior_info=prior_info, alternatives=alternatives, chunk_size=args.chunk_size,
        allow_large_k=args.allow_large_k, on_stage=stages,
    )
    analysis.config["preset"] = args.preset
    stages("writing results")
    out = save_pid(analysis, args.out, overwrite=args.overwrite)
    stages.close()
    _print_pid(analysis)
    print(f"\nwrote {out}/result.json, maps.npz, panel.png, image_*.png")
    return 0


def _print_pid(analysis) -> None:
    res = analysis.result
    unit = "nats" if res.level == "sum" else "nats/px"
    kind = "conditional PID" if analysis.subsets.conditional else "PID"
    print(f"\n{kind} of {' + '.join(s.word for s in analysis.subsets.sources)} in \"{analysis.subsets.prompt}\" "
          f"({res.measure}, {res.form} form, {res.config['n_samples']} log-SNR samples)")
    origin = analysis.images.origin
    for i in range(len(analysis.images.latents)):
        where = f"seed {origin['generated']['seeds'][i]}" if "generated" in origin else origin.get("image")
        print(f"\n  image: {where}")
        print(f"  {'atom':<28} {unit:>9} {'± s.e.':>8} {'bits':>8}")
        for name in res.names:
            value, se = res.atoms[name][i], res.atoms_stderr[name][i]
            print(f"  {analysis.atom_label(name):<28} {value:9.4f} {se:8.4f} {value / np.log(2):8.4f}")
        print(f"  {'joint i(x; sources | c)':<28} {res.joint[i]:9.4f} {res.subset_stderr[i, -1]:8.4f} "
              f"{res.joint[i] / np.log(2):8.4f}")
        if res.conditional_information is not None:
            for j, source in enumerate(analysis.subsets.sources):
                value, se = res.conditional_information[i, j], res.conditional_stderr[i, j]
                print(f"  {'i(x; ' + source.word + ' | others)':<28} {value:9.4f} {se:8.4f} {value / np.log(2):8.4f}")
    t = analysis.timings
    print(f"\n  time: images {t['images_s']:.1f} s, text {t['text_s']:.1f} s, "
          f"fused pass {t['estimate_s']:.1f} s (incl. compilation)")


def _mi(args) -> int:
    from jaxpid.analysis import word_information
    from jaxpid.output import check_output_dir, save_mi
    from jaxpid.prompts import resolve_sources

    _resolve(args)
    check_output_dir(args.out, args.overwrite)
    resolve_sources(args.prompt, args.words, allow_large_k=True)
    image = _image_input(args)
    stages = _Stages(total=4)
    pipeline = _load(args, stages)
    import jax

    info = word_information(
        pipeline, args.prompt, args.words, removal=args.removal, seeds=args.seed if image is None else None,
        image=image, image_origin=str(args.image) if image is not None else None, n_samples=args.samples,
        key=jax.random.key(args.key), sampler=_sampler(args), form=args.form, steps=args.steps,
        guidance_scale=args.guidance, chunk_size=args.chunk_size, on_stage=stages,
    )
    stages("writing results")
    out = save_mi(info, args.out, overwrite=args.overwrite)
    stages.close()
    print(f"\nInformation of \"{info.prompt}\" ({args.form} form, {args.samples} log-SNR samples; nats)")
    for i in range(len(info.images.latents)):
        print(f"  image {i}: MI(prompt) = {info.mi[i]:.4f} ± {info.mi_stderr[i]:.4f}")
        for j, w in enumerate(info.words):
            print(f"    CMI({w.word} | rest) = {info.cmi[i, j]:.4f} ± {info.cmi_stderr[i, j]:.4f}")
    print(f"\nwrote {out}/result.json, maps.npz, panel.png")
    return 0


def _generate(args) -> int:
    from jaxpid.generate import generate
    from jaxpid.output import save_images

    if args.out.suffix.lower() == ".png" and len(args.seed) > 1:
        raise ConfigError("--out is a single .png file but several seeds were given; pass a directory")
    stages = _Stages(total=3)
    pipeline = _load(args, stages)
    pipeline.tokenizer.encode([args.prompt])
    stages(f"generating {len(args.seed)} image(s), {args.steps} DDIM steps")
    out = generate(pipeline, [args.prompt] * len(args.seed), seeds=args.seed, steps=args.steps,
                   guidance_scale=args.guidance)
    stages("writing images")
    if args.out.suffix.lower() == ".png":
        targets = [args.out]
    else:
        targets = [args.out / f"image_{seed}.png" for seed in args.seed]
    paths = save_images(np.asarray(out.images), targets)
    stages.close()
    for p in paths:
        print(f"wrote {p}")
    return 0


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
