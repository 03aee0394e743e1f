"""``jaxpid pid``, ``jaxpid mi``, ``jaxpid rerun`` and ``jaxpid generate``."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.images import given_images
from jaxpid.analysis.prompt_pid import PromptPID, plan_pid, run_pid
from jaxpid.analysis.records import read_record, rerun
from jaxpid.analysis.words import WordInformation, word_information
from jaxpid.cli.options import model_spec, parse_alternatives, run_config
from jaxpid.core.config import NATS_TO_BITS
from jaxpid.core.estimator import PassProgress, report_chunks_to
from jaxpid.core.measures import decomposition_notes
from jaxpid.errors import ConfigError
from jaxpid.io.atomic import check_output_dir, check_output_files, save_images
from jaxpid.io.results import save_mi, save_pid
from jaxpid.sd.ddim import GenerationConfig, generate
from jaxpid.sd.pipeline import ModelSpec, load_image
from jaxpid.sd.prompts import resolve_sources


class Stages:
    """A progress bar over the stages of a run, with the elapsed time of each; when stderr is not
    a terminal (a log file), one plain line per stage and note instead of a redrawn bar.

    ``chunk`` shows the fused pass's own progress (``FusedPass``'s ``on_chunk``): on a terminal
    "chunk 12/80, 0:41 left" after the stage; in a log, for a pass estimated at ``LONG_PASS_S`` or
    more, the evaluations and an estimate from the first two chunks, then a line per tenth done.
    """

    LONG_PASS_S = 10.0  # a pass shorter than this gets no estimate line and no lines per tenth
    REDRAW_S = 0.5  # the bar's chunk count is redrawn at most this often

    def __init__(self, total: int):
        self.lines = not sys.stderr.isatty()
        self.bar = None if self.lines else tqdm(total=total, bar_format="{desc} [{elapsed}] {n_fmt}/{total_fmt}{postfix}",
                                                file=sys.stderr)
        self.total, self.count, self.start = total, 0, time.perf_counter()
        self._redrawn, self._tenth = 0.0, 0  # when the bar last showed a chunk; the last tenth given a line

    def _line(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {text}", file=sys.stderr, flush=True)

    def __call__(self, description: str) -> None:
        if self.lines:
            self.count += 1
            self._line(f"{self.count}/{self.total} {description}")
            return
        self.bar.set_postfix_str("", refresh=False)  # the last stage's note is not this one's
        if self.count:
            self.bar.update(1)
        self.count += 1
        self.bar.set_description_str(description)

    def note(self, text: str) -> None:
        """More about the current stage (e.g. a round of a target standard error)."""
        if self.lines:
            self._line(f"    {text}")
        else:
            self.bar.set_postfix_str(text)

    def chunk(self, progress: PassProgress) -> None:
        """The fused pass's progress, as each chunk finishes (called from the runtime's thread)."""
        done, chunks = progress.chunks_done, progress.chunks
        where = f"round {progress.round + 1}: " if progress.round else ""
        estimate = progress.estimated_total_s
        # The first chunk also starts the program: the second gives the rate of the rest.
        if done == min(2, chunks) and estimate >= self.LONG_PASS_S:
            then = f", then {progress.seconds_per_chunk:.2f} s each" if done == 2 else ""
            text = (f"{where}fused pass: {progress.evaluations:,} evaluations in {chunks:,} chunks; first chunk "
                    f"{progress.first_chunk_s:.2f} s{then} -> about {_duration(estimate)}")
            if self.lines:
                self._line(f"    {text}")
            else:
                self.bar.write(text, file=sys.stderr)
        if done == 0:
            self._redrawn, self._tenth = 0.0, 0
            if not self.lines:
                self.bar.set_postfix_str(f"{where}compiled, running {chunks:,} chunks")
            return
        status = f"{where}chunk {done:,}/{chunks:,}, {_clock(progress.remaining_s)} left"
        if self.lines:
            tenth = 10 * done // chunks
            if tenth > self._tenth and estimate >= self.LONG_PASS_S:
                self._tenth = tenth
                self._line(f"    {status} ({100 * done // chunks} %)")
            return
        now = time.perf_counter()
        if now - self._redrawn >= self.REDRAW_S or done == chunks:
            self._redrawn = now
            self.bar.set_postfix_str(status)

    def close(self) -> None:
        if self.lines:
            self._line("done")
            return
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.set_postfix_str("", refresh=False)
        self.bar.set_description_str("done")
        self.bar.close()


def _clock(seconds: float) -> str:
    """0:41, 12:05, 3:02:10."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _duration(seconds: float) -> str:
    """41 s, 7.5 min, 10.7 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def pid_command(args: argparse.Namespace) -> int:
    config = run_config(args)
    # Everything that can be checked without a model is checked before loading one.
    check_output_dir(args.out, args.overwrite)
    plan = plan_pid(args.prompt, args.sources, config, alternatives=parse_alternatives(args.alternatives),
                    allow_large_k=args.allow_large_k)
    pixels = None if args.image is None else load_image(args.image)
    stages = Stages(total=5 + (config.pid.measure == "ppid"))
    stages(f"loading model {args.model}")
    pipeline = model_spec(args).load()
    images = None if pixels is None else given_images(pipeline, pixels, str(args.image.resolve()))
    with report_chunks_to(stages.chunk):
        analysis = run_pid(pipeline, plan, images=images, on_stage=stages)
    stages("writing results")
    out = save_pid(analysis, args.out, overwrite=args.overwrite)
    stages.close()
    print_pid(analysis)
    print(f"\nwrote {out}/result.json, maps.npz, panel.png, image_*.png")
    return 0


def mi_command(args: argparse.Namespace) -> int:
    config = run_config(args)
    check_output_dir(args.out, args.overwrite)
    resolve_sources(args.prompt, args.words, allow_large_k=True)
    pixels = None if args.image is None else load_image(args.image)
    stages = Stages(total=4)
    stages(f"loading model {args.model}")
    pipeline = model_spec(args).load()
    images = None if pixels is None else given_images(pipeline, pixels, str(args.image.resolve()))
    with report_chunks_to(stages.chunk):
        info = word_information(pipeline, args.prompt, args.words, config, images=images, on_stage=stages)
    stages("writing results")
    out = save_mi(info, args.out, overwrite=args.overwrite)
    stages.close()
    print_mi(info)
    print(f"\nwrote {out}/result.json, maps.npz, panel.png")
    return 0


def rerun_command(args: argparse.Namespace) -> int:
    record = read_record(args.result)
    check_output_dir(args.out, args.overwrite)
    stages = Stages(total=5)
    stages("loading the recorded model")
    spec = ModelSpec.from_identity(record["config"]["model"])
    pipeline = (spec if args.model is None else ModelSpec(args.model, spec.dtype, spec.param_dtype, spec.attention,
                                                          spec.variant)).load()
    with report_chunks_to(stages.chunk):
        again = rerun(record, pipeline, on_stage=stages)
    stages("writing results")
    out = (save_pid if isinstance(again, PromptPID) else save_mi)(again, args.out, overwrite=args.overwrite)
    stages.close()
    (print_pid if isinstance(again, PromptPID) else print_mi)(again)
    differences = compare_records(record, read_record(out))
    if differences:
        print(f"\nthe numbers differ from the recorded ones: {len(differences)} values, the largest by "
              f"{max(d for _, d in differences):.3g} nats ({differences[0][0]}, ...)")
    else:
        print("\nevery value is identical to the recorded one")
    print(f"wrote {out}/result.json, maps.npz, panel.png")
    return 1 if differences else 0  # a rerun that does not reproduce is a failed check


def generate_command(args: argparse.Namespace) -> int:
    generation = GenerationConfig(**{k: v for k, v in (("steps", args.steps), ("guidance_scale", args.guidance))
                                     if v is not None})
    if args.out.suffix.lower() == ".png" and len(args.seed) > 1:
        raise ConfigError("--out is a single .png file but several seeds were given; pass a directory")
    RunConfig(seeds=args.seed)  # checks the seeds
    # one writer per --out, and a place that can be written, before the model loads
    check_output_files(args.out, folder=args.out.suffix.lower() != ".png")
    stages = Stages(total=3)
    stages(f"loading model {args.model}")
    pipeline = model_spec(args).load()
    pipeline.tokenizer.encode([args.prompt])
    stages(f"generating {len(args.seed)} image(s), {generation.steps} DDIM steps")
    out = generate(pipeline, [args.prompt] * len(args.seed), seeds=args.seed, **generation.arguments())
    stages("writing images")
    targets = [args.out] if args.out.suffix.lower() == ".png" else [args.out / f"image_{s}.png" for s in args.seed]
    paths = save_images(np.asarray(out.images), targets)
    stages.close()
    for p in paths:
        print(f"wrote {p}")
    return 0


# ---------------------------------------------------------------------------------------------
# Printing


def _target_note(config: dict) -> str:
    """' per image, in R rounds: why it stopped (target s.e. X, largest Y)' for a run with a target
    standard error; '' otherwise."""
    if config.get("target_stderr") is None:
        return ""
    return (f" per image, in {config['rounds']} rounds: {config['stopped']} (target s.e. {config['target_stderr']:g}, "
            f"largest {config['largest_stderr']:.4g})")


def _num(value: float, width: int = 9) -> str:
    """A number to 4 decimals that never prints as -0.0000."""
    value = float(value)
    return f"{0.0 if round(value, 4) == 0 else value:{width}.4f}"


def print_pid(analysis: PromptPID) -> None:
    res = analysis.result
    unit = "nats" if res.level == "sum" else "nats/px"
    kind = "conditional PID" if analysis.subsets.conditional else "PID"
    words = [s.word for s in analysis.subsets.sources]
    fixed = analysis.fixed_atoms
    print(f"\n{kind} of {' + '.join(words)} in \"{analysis.subsets.prompt}\" "
          f"({res.measure}, {res.form} form, {res.config['n_samples']} log-SNR samples{_target_note(res.config)})")
    for i in range(len(analysis.images.latents)):
        print(f"\n  image: {analysis.images.label(i)}")
        print(f"  {'atom':<28} {unit:>9} {'± s.e.':>8} {'bits':>8}")
        for name in res.names:
            value, se = res.atoms[name][i], res.atoms_stderr[name][i]
            if name in fixed[i]:  # set by the measure's rule: no estimate, no error
                print(f"  {analysis.atom_label(name):<28} {'0':>9}   ({fixed[i][name]})")
                continue
            print(f"  {analysis.atom_label(name):<28} {_num(value)} {se:8.4f} {_num(value * NATS_TO_BITS, 8)}")
        print(f"  {'joint i(x; sources | c)':<28} {_num(res.joint[i])} {res.subset_stderr[i, -1]:8.4f} "
              f"{_num(res.joint[i] * NATS_TO_BITS, 8)}")
        if res.conditional_information is not None:
            for j, word in enumerate(words):
                value, se = res.conditional_information[i, j], res.conditional_stderr[i, j]
                print(f"  {'i(x; ' + word + ' | others)':<28} {_num(value)} {se:8.4f} {_num(value * NATS_TO_BITS, 8)}")
        if analysis.forms is not None:
            _print_forms(analysis, i, words)
        if res.log_consistency is not None:
            for j, word in enumerate(words):
                options = ", ".join((word,) + analysis.alternatives_of(j))
                log_sum, se = res.log_consistency[i, j], res.log_consistency_stderr[i, j]
                print(f"  consistency over {{{options}}}: sum of p(y') exp(i(x; y' | c)) = {np.exp(log_sum):.3g} "
                      f"(log {log_sum:+.3f} ± {se:.3f}; 1 for a consistent model when these are every option)")
    print()
    for note in decomposition_notes(res.measure, res.form):
        print(f"  note: {note}")
    t = analysis.timings
    print(f"\n  time: images {t['images_s']:.1f} s, text {t['text_s']:.1f} s, "
          f"fused pass {t['estimate_s']:.1f} s (compilation {t['compile_s']:.1f} s)")


def _print_forms(analysis: PromptPID, i: int, words: list[str]) -> None:
    """Image i's word informations in every form (same draws) and the disagreements that matter:
    the result's form against the standard form, which is exact for any image."""
    forms, form = analysis.forms, analysis.result.form
    rows = [(f"i(x; {word} | c)", ("subset", 1 << j)) for j, word in enumerate(words)]
    rows += [(f"i(x; {word} | others)", ("conditional", j)) for j, word in enumerate(words)]
    print(f"  {'every form, same draws':<28} " + "  ".join(f"{f:>17}" for f in forms.forms))
    for label, (kind, index) in rows:
        values = forms.subset_information if kind == "subset" else forms.conditional_information
        errors = forms.subset_stderr if kind == "subset" else forms.conditional_stderr
        print(f"  {label:<28} " + "  ".join(f"{_num(values[f][i, index], 8)} ± {errors[f][i, index]:6.3f}"
                                            for f in forms.forms))
    flagged = [d for d in forms.disagreements if d["image"] == i and set(d["forms"]) == {form, "standard"}]
    for d in flagged:
        kind, index = d["quantity"]
        present = ", ".join(w for j, w in enumerate(words) if index >> j & 1)
        what = f"i(x; {present} | c)" if kind == "subset" else f"i(x; {words[index]} | others)"
        print(f"  ! {d['forms'][0]} and {d['forms'][1]} forms disagree on {what}: {d['values'][0]:.3f} vs "
              f"{d['values'][1]:.3f} (difference {d['difference']:+.3f} ± {d['stderr']:.3f}, paired)")
    if flagged:
        print(f"    the {form} form is unbiased on average over images the model draws from this prompt without "
              "guidance, not per image; large disagreements come from guided or given images or from a model whose "
              "predictions are inconsistent: the standard form is exact for any image "
              "(docs/method.md#which-images-each-form-holds-for)")


def print_mi(info: WordInformation) -> None:
    form, samples = info.run.pid.form, info.information.config["n_samples"]
    print(f"\nInformation of \"{info.prompt}\" ({form} form, {samples} log-SNR samples{_target_note(info.information.config)}"
          "; nats)")
    for i in range(len(info.images.latents)):
        print(f"  image {i}: MI(prompt) = {info.mi[i]:.4f} ± {info.mi_stderr[i]:.4f}")
        for j, w in enumerate(info.words):
            print(f"    CMI({w.word} | rest) = {info.cmi[i, j]:.4f} ± {info.cmi_stderr[i, j]:.4f}")


def compare_records(before: dict, after: dict) -> list[tuple[str, float]]:
    """Every value (nats) of two result records' results that differs: [(where, |difference|)]."""
    differences = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        elif isinstance(a, float) or isinstance(b, float):
            if a != b:
                differences.append((where, abs(a - b) if a is not None and b is not None else float("inf")))
        elif a != b and not where.endswith(".file"):
            differences.append((where, float("inf")))

    walk(before.get("results"), after.get("results"), "results")
    return sorted(differences, key=lambda d: -d[1])
