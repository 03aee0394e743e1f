"""The ``jaxpid`` command's arguments: the top-level commands' options, and nothing else.

This module is light (argparse, and the names of measures, forms, levels and presets), so
``jaxpid --help`` answers at once; each command's handler module, which loads the models, is
imported only when that command runs (``jaxpid.cli.app``). Shared option groups and the rule
for defaults are in ``jaxpid.cli.option_groups``; ``jaxpid study``'s subcommands in
``jaxpid.cli.study_parsers``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxpid.analysis.presets import PRESETS
from jaxpid.cli.option_groups import (
    RUN_CONFIG,
    SWEEP_CONFIG,
    ConfigDefault,
    checked_option,
    conditional_text,
    config_option,
    estimator_options,
    generation_options,
    model_options,
    of_decompositions,
    output_options,
    preset_text,
    removal_option,
    renamed,
    scale_out_options,
)
from jaxpid.cli.study_parsers import LOCALIZE_METHODS, add_study
from jaxpid.core.config import FORMS, LEVELS, PID_FORMS
from jaxpid.core.measures import MEASURES

__all__ = ["LOCALIZE_METHODS", "build_parser"]

DESCRIPTION = (
    "Which words of a prompt put which information into which pixels: pointwise MI, conditional MI "
    "and PID (redundancy, uniqueness, synergy) from diffusion denoising errors."
)
PRESET_HELP = ("a paper's settings in one flag (explicit options override it): "
               + "; ".join(f"{name} = {preset_text(settings)}" for name, settings in PRESETS.items())
               + " (docs/method.md#presets)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxpid", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_toy(sub)
    _add_pid(sub)
    _add_mi(sub)
    _add_rerun(sub)
    _add_generate(sub)
    _add_sweep(sub)
    _add_report(sub)
    add_study(sub)
    sub.add_parser("bench", help="benchmarks against PyTorch and throughput (jaxpid bench --help)", add_help=False)
    return parser


def _image_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--image", type=Path, default=None, help="analyse this image instead of generating one")
    config_option(group, "--seed", type=int, nargs="+", default=ConfigDefault(RUN_CONFIG, "seeds"),
                  help="generate the image(s) from the prompt with these seeds (default %(config_default)s, unless "
                       "the preset sets them); several seeds are analysed together in one pass")
    generation_options(p, RUN_CONFIG)


def _decomposition_options(p: argparse.ArgumentParser, forms: tuple[str, ...]) -> None:
    anchored = "anchored" in forms
    form = ConfigDefault(RUN_CONFIG, "pid.form") if anchored else \
        ConfigDefault(RUN_CONFIG, "pid.form", show=lambda f: "orthogonal" if f == "anchored" else f)  # MI's gaps all
    # end at the full prompt, so the anchored default reads as the orthogonal form (jaxpid.analysis.words)
    config_option(p, "--form", choices=forms, default=form,
                  help="pointwise information (default %(config_default)s): "
                       + ("anchored (gaps that all end at the full prompt, unbiased on average over images drawn from "
                          "it; atoms add up to the joint), " if anchored else "")
                       + "orthogonal (each subset's own gap from the context, >= 0, lower variance) or standard "
                         "(differences of errors: exact per image, noisier)")
    removal_option(p, RUN_CONFIG)


# ---------------------------------------------------------------------------------------------
# Commands


def _add_toy(sub) -> None:
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
    # its own sizes: the exact answer is cheap, so more images and samples than a model run's defaults
    toy.add_argument("--n-images", type=int, default=64, help="images per case (default %(default)s)")
    toy.add_argument("--samples", type=int, default=200, help="log-SNR samples per image (default %(default)s)")
    toy.add_argument("--measure", choices=("mmi", "imin"), default="mmi",
                     help="redundancy measure (default %(default)s)")
    toy.add_argument("--form", choices=PID_FORMS, default="standard",
                     help="pointwise information form (default %(default)s: its exact target is the log-density ratio)")
    toy.add_argument("--key", type=int, default=0,
                     help="seed of the images' and the estimator's draws (default %(default)s)")
    toy.add_argument("--out", type=Path, default=None, help="write result.json (atoms, errors, config) here")
    renamed(toy, "--images", "--n-images", dest="n_images", type=int)
    renamed(toy, "--seed", "--key", dest="key", type=int)


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
    config_option(p, "--conditional", action=argparse.BooleanOptionalAction,
                  default=ConfigDefault(RUN_CONFIG, "conditional", show=conditional_text),
                  help="conditional PID keeps the rest of the prompt as context in every conditioning; "
                       "--no-conditional: plain PID, the source words alone (default %(config_default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    config_option(p, "--measure", choices=MEASURES, default=ConfigDefault(RUN_CONFIG, "pid.measure"),
                  help="redundancy measure (default %(config_default)s): ccs (Ince's common change in surprisal, "
                       "for two sources; sees one word implying the other), mmi (minimum information; any number "
                       "of sources), imin (Williams-Beer, needs --alternatives, standard form), ppid (Finn-Lizier "
                       "pointwise, needs --prior); docs/validation.md compares them")
    p.add_argument("--alternatives", action="append", default=[], metavar="WORD=ALT1,ALT2",
                   help="alternative words for a source (repeat per source): imin's candidates; with any measure "
                        "they give the consistency check, sum over the word and its alternatives of "
                        "p(y') exp(i(x; y' | c)) (uniform p), which is 1 for a consistent model when they are "
                        "every option")
    config_option(p, "--prior", default=ConfigDefault(RUN_CONFIG, "prior", none="none, which ppid refuses"),
                  help="ppid: word priors: 'bert:PATH_OR_HUB_ID' (masked-LM probability, as DiffusionPID), "
                       "'uniform', or 'file:PRIORS.json' ({word: probability}) (default %(config_default)s)")
    config_option(p, "--level", choices=LEVELS, default=ConfigDefault(RUN_CONFIG, "pid.level"),
                  help="image-level information: sum of the pixel map (nats/image, Info-Decomp) or its mean "
                       "(DiffusionPID) (default %(config_default)s)")
    p.add_argument("--allow-large-k", action="store_true", help="allow more than 4 source words")
    model_options(p)
    _image_options(p)
    estimator_options(p, RUN_CONFIG, rounds=True)
    _decomposition_options(p, PID_FORMS)
    output_options(p)


def _add_mi(sub) -> None:
    p = sub.add_parser(
        "mi",
        help="Info-Decomp: MI of the prompt and CMI of each word given the rest, with maps",
        description="Pointwise MI between the prompt and the image, and each word's conditional MI "
                    "given the rest of the prompt, image-level and per pixel.",
    )
    p.add_argument("prompt")
    p.add_argument("--words", nargs="+", required=True, help="words of the prompt (word@N for a repeated word)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    model_options(p)
    _image_options(p)
    estimator_options(p, RUN_CONFIG, rounds=True)
    _decomposition_options(p, FORMS)
    output_options(p)


def _add_rerun(sub) -> None:
    p = sub.add_parser(
        "rerun",
        help="run a saved pid / mi analysis again from its result.json and compare the numbers",
        description="Reads RESULT (a jaxpid pid / mi --out folder, or its result.json), loads the model it "
                    "names with the recorded settings, runs the same analysis with the same key and images, "
                    "writes the new folder to --out and says whether every number is identical.",
    )
    p.add_argument("result", type=Path, help="a result folder or its result.json")
    p.add_argument("--model", default=None, help="the model to load instead of the recorded name (same content)")
    output_options(p)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt (DDIM + classifier-free guidance)")
    p.add_argument("prompt")
    checked_option(p, "--seed", type=int, nargs="+", default=[0], against=ConfigDefault(RUN_CONFIG, "seeds"),
                   help="one image per seed (default %(default)s)")
    generation_options(p, RUN_CONFIG)
    p.add_argument("--out", type=Path, required=True,
                   help="a PNG file (one seed) or a directory (image_<seed>.png per seed)")
    model_options(p)


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="PID of many (prompt, sources, seed) jobs into a resumable Parquet table (e.g. the bias study)",
        description=(
            "Runs a table of jobs (JSONL / CSV / Parquet: prompt, sources; optional seed (0 when absent), conditional, "
            "alternatives, log_prior; any other column passes through) or the shipped 'bias' study, in "
            "batches of equal shape (one fused pass each), writing one part-<batch>.parquet per batch into "
            "--out. Killed and started again with the same arguments, it computes only what is missing; a "
            "changed configuration is refused. pyarrow.dataset.dataset(OUT) reads the results as one table."
        ),
    )
    p.add_argument("jobs", help="a job table (.jsonl, .csv, .parquet) or 'bias' for the shipped bias study")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (created, or resumed)")
    model_options(p)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    estimator_options(p, SWEEP_CONFIG, unit="job", rounds=True)
    decompositions = lambda field: ConfigDefault(SWEEP_CONFIG, "decompositions", show=of_decompositions(field))  # noqa: E731
    config_option(p, "--measure", nargs="+", choices=MEASURES, default=decompositions("measure"),
                  help="redundancy measures, all from one pass (default %(config_default)s; imin needs an "
                       "'alternatives' column)")
    config_option(p, "--form", nargs="+", choices=PID_FORMS, default=decompositions("form"),
                  help="pointwise forms, each measure in each (default %(config_default)s; anchored = gaps that end "
                       "at the full prompt; orthogonal = each subset's own gap; standard = differences of errors)")
    config_option(p, "--prior", default=ConfigDefault(SWEEP_CONFIG, "prior"),
                  help="ppid priors for jobs without a log_prior column (default %(config_default)s; uniform: ppid's "
                       "redundancy is then max(i1, i2)), 'file:PRIORS.json' or 'bert:PATH' (masked-LM word "
                       "probabilities, as DiffusionPID; see jaxpid.priors)")
    checked_option(p, "--analysis", choices=("pid", "cpid", "both"), default="pid",
                   against=ConfigDefault("jaxpid.sweeps.jobs:read_jobs", "analysis"),
                   help="for rows without a 'conditional' column: PID, conditional PID, or both (two jobs; "
                        "default %(default)s)")
    config_option(p, "--level", choices=LEVELS, default=decompositions("level"),
                  help="image-level information: sum of the pixel map (nats/image) or mean (DiffusionPID) "
                       "(default %(config_default)s)")
    removal_option(p, SWEEP_CONFIG)
    generation_options(p, SWEEP_CONFIG)
    config_option(p, "--batch-size", type=int, default=ConfigDefault(SWEEP_CONFIG, "batch_size"),
                  help="jobs per fused pass (default %(config_default)s)")
    bias = p.add_argument_group("bias study (JOBS = bias)")
    bias_jobs = lambda name: ConfigDefault("jaxpid.sweeps.jobs:bias_study_jobs", name)  # noqa: E731
    config_option(bias, "--seeds", type=int, nargs="+", default=bias_jobs("seeds"),
                  help="image seeds per prompt (default %(config_default)s, unless the preset sets them)")
    bias.add_argument("--groups", nargs="+", default=None,
                      help="attribute groups (default: all of the shipped study's, gender ethnicity)")
    bias.add_argument("--occupations", nargs="+", default=None, help="only these occupations (default: all 188)")
    checked_option(bias, "--templates", default="first", against=bias_jobs("templates"),
                   help="'first' (the default), 'all', or indices like 0,2")
    scale_out_options(p)
    renamed(p, "--distributed", "--backend distributed", dest="backend", value="distributed")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="a bias study's outputs from a sweep: normalised redundancy, ranked table, plots",
        description=(
            "Averages the image-level redundancy of each (occupation, attribute) cell over its images, "
            "min-max normalises it over the whole study (DiffusionPID), ranks occupations by their bias (the "
            "cell's normalised redundancy minus its occupation's and attribute's means plus the group's mean), "
            "and writes cells.csv, ranking.csv, bar_chart.png and heatmap.png."
        ),
    )
    report = lambda name: ConfigDefault("jaxpid.sweeps.report:bias_report", name)  # noqa: E731
    p.add_argument("sweep", type=Path, help="a sweep directory (jaxpid sweep --out)")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--measure", choices=MEASURES, default=None,
                   help="which measure's rows: ccs if the sweep has it (the measure that sees an occupation word "
                        "implying an attribute), else the sweep's only measure, else mmi")
    p.add_argument("--form", choices=PID_FORMS, default=None, help="the form's rows, when the sweep has several")
    checked_option(p, "--atom", default="{1}{2}", against=report("atom"),
                   help="lattice atom to compare (default %(default)s: redundancy)")
    p.add_argument("--conditional", choices=("no", "yes"), default=None,
                   help="use the PID (no) or CPID (yes) rows when the sweep has both")
    checked_option(p, "--row", default="occupation", against=report("row"),
                   help="column naming the occupation (default %(default)s)")
    checked_option(p, "--column", default="attribute", against=report("column"),
                   help="column naming the attribute (default %(default)s)")
    checked_option(p, "--group", default="group", against=report("group"),
                   help="column naming the attribute group (default %(default)s)")
    checked_option(p, "--normalise", choices=("study", "group", "none"), default="study", against=report("normalise"),
                   help="min-max normalisation over the whole study, each group, or none (default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="rows of the ranked table printed / bars drawn "
                                                       "(default %(default)s)")
