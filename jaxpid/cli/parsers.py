"""The ``jaxpid`` command's arguments: every subcommand's options, and nothing else.

This module is light (argparse, and the names of measures, forms, levels and presets), so
``jaxpid --help`` answers at once; each command's handler module, which loads the models, is
imported only when that command runs (``jaxpid.cli.app``). Defaults shown in the help come
from the configuration classes; an option left unset (None) takes the preset's value, then the
configuration's default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxpid.analysis.presets import PRESETS, STUDY_PRESETS
from jaxpid.core.config import FORMS, LEVELS, PID_FORMS, EstimatorConfig
from jaxpid.core.measures import MEASURES

DESCRIPTION = (
    "Which words of a prompt put which information into which pixels: pointwise MI, conditional MI "
    "and PID (redundancy, uniqueness, synergy) from diffusion denoising errors."
)
PRESET_HELP = ("a paper's settings in one flag (explicit options override it): diffusionpid = ppid with BERT "
               "priors, 50 logistic samples (clip 3), seed 42, mean-of-map level; infodecomp = mmi, 100 logistic "
               "samples with clip 4 (its code's), nats per image; both: orthogonal form, plain PID "
               "(docs/method.md#presets)")
SAMPLERS = ("stratified", "logistic", "uniform", "stratified-uniform")
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


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
    _add_study(sub)
    sub.add_parser("bench", help="benchmarks against PyTorch and throughput (jaxpid bench --help)", add_help=False)
    return parser


# ---------------------------------------------------------------------------------------------
# Shared options


def model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo",
                   help="'demo' (the small model shipped with jaxpid, the default), a local diffusers "
                        "folder, or a Hugging Face hub id such as stabilityai/stable-diffusion-2-1-base")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="fp32",
                   help="compute dtype (bf16: bfloat16 matmuls with float32 accumulation)")
    p.add_argument("--param-dtype", choices=DTYPE_CHOICES, default="fp32", help="dtype the weights are stored in")
    p.add_argument("--attention", choices=("auto", "xla", "cudnn"), default="auto",
                   help="attention implementation (auto: cuDNN flash attention on a GPU in bf16/fp16, else XLA)")
    p.add_argument("--variant", default=None, help="weights variant, e.g. fp16")
    p.add_argument("--time-ids", type=int, nargs=6, default=None, metavar=("H0", "W0", "TOP", "LEFT", "H", "W"),
                   help="SDXL only: size conditioning in pixels (original size, crop top-left, target size); "
                        "default: diffusers' (the image size, crop 0 0)")


def _image_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--image", type=Path, default=None, help="analyse this image instead of generating one")
    group.add_argument("--seed", type=int, nargs="+", default=None,
                       help="generate the image(s) from the prompt with these seeds (default 0; "
                            "diffusionpid preset: 42); several seeds are analysed together in one pass")
    _generation_options(p)


def _generation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="DDIM steps for generation (default 50)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 7.5)")


def _estimator_options(p: argparse.ArgumentParser, forms: tuple[str, ...] = PID_FORMS) -> None:
    p.add_argument("--samples", type=int, default=None,
                   help=f"log-SNR samples per image (default {EstimatorConfig.n_samples})")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="importance sampler over log-SNR (default: stratified = the papers' logistic proposal, "
                        "loc 1, scale 2, clip 3, in samples // 2 strata; logistic = independent draws, the presets')")
    p.add_argument("--target-stderr", type=float, default=None, metavar="NATS",
                   help="add rounds of --samples samples per image (one compiled program) until every reported "
                        "standard error is at most NATS, or --max-samples")
    p.add_argument("--max-samples", type=int, default=None,
                   help="cap of the samples per image with --target-stderr (default 10 rounds)")
    p.add_argument("--chunk-size", type=int, default=None, help="log-SNR samples per device per step (default: auto)")
    p.add_argument("--key", type=int, default=None, help="seed of the estimator's (log-SNR, noise) draws (default 0)")
    p.add_argument("--form", choices=forms, default=None,
                   help=("pointwise information: anchored (the default: gaps that all end at the full prompt, "
                         "unbiased on average over images drawn from it; atoms add up to the joint), "
                         if "anchored" in forms else "pointwise information: ")
                        + "orthogonal (each subset's own gap from the context, >= 0, lower variance"
                        + (")" if "anchored" in forms else "; the default)")
                        + " or standard (differences of errors: exact per image, noisier)")
    p.add_argument("--removal", choices=("delete", "placeholder"), default=None,
                   help="how an absent word is removed from the prompt (default: delete)")


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for result.json, maps.npz, images, panel.png")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")


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
    toy.add_argument("--images", type=int, default=64, help="images per case (default 64)")
    toy.add_argument("--samples", type=int, default=200, help="log-SNR samples per image (default 200)")
    toy.add_argument("--measure", choices=("mmi", "imin"), default="mmi", help="redundancy measure")
    toy.add_argument("--form", choices=PID_FORMS, default="standard",
                     help="pointwise information form (standard: exact target is the log-density ratio)")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--out", type=Path, default=None, help="write result.json (atoms, errors, config) here")


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
    p.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=None,
                   help="conditional PID (the default): keep the rest of the prompt as context in every "
                        "conditioning; --no-conditional: plain PID, the source words alone")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help=PRESET_HELP)
    p.add_argument("--measure", choices=MEASURES, default=None,
                   help="redundancy measure: ccs (Ince's common change in surprisal, the default for two sources; "
                        "sees one word implying the other), mmi (minimum information; any number of sources), "
                        "imin (Williams-Beer, needs --alternatives, standard form), ppid (Finn-Lizier pointwise, "
                        "needs --prior); docs/validation.md compares them")
    p.add_argument("--alternatives", action="append", default=[], metavar="WORD=ALT1,ALT2",
                   help="alternative words for a source (repeat per source): imin's candidates; with any measure "
                        "they give the consistency check, sum over the word and its alternatives of "
                        "p(y') exp(i(x; y' | c)) (uniform p), which is 1 for a consistent model when they are "
                        "every option")
    p.add_argument("--prior", default=None,
                   help="ppid: word priors: 'bert:PATH_OR_HUB_ID' (masked-LM probability, as DiffusionPID), "
                        "'uniform', or 'file:PRIORS.json' ({word: probability})")
    p.add_argument("--level", choices=LEVELS, default=None,
                   help="image-level information: sum of the pixel map (nats/image, Info-Decomp; default) "
                        "or its mean (DiffusionPID)")
    p.add_argument("--allow-large-k", action="store_true", help="allow more than 4 source words")
    model_options(p)
    _image_options(p)
    _estimator_options(p)
    _output_options(p)


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
    _estimator_options(p, FORMS)
    _output_options(p)


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
    _output_options(p)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt (DDIM + classifier-free guidance)")
    p.add_argument("prompt")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="one image per seed")
    _generation_options(p)
    p.add_argument("--out", type=Path, required=True,
                   help="a PNG file (one seed) or a directory (image_<seed>.png per seed)")
    model_options(p)


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="PID of many (prompt, sources, seed) jobs into a resumable Parquet table (e.g. the bias study)",
        description=(
            "Runs a table of jobs (JSONL / CSV / Parquet: prompt, sources, seed; optional conditional, "
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
    p.add_argument("--samples", type=int, default=None,
                   help=f"log-SNR samples per image (default {EstimatorConfig.n_samples})")
    p.add_argument("--measure", nargs="+", choices=MEASURES, default=None,
                   help="redundancy measures, all from one pass (default: mmi ppid ccs; imin needs an "
                        "'alternatives' column)")
    p.add_argument("--form", nargs="+", choices=PID_FORMS, default=None,
                   help="pointwise forms, each measure in each (default: anchored = gaps that end at the full "
                        "prompt; orthogonal = each subset's own gap; standard = differences of errors)")
    p.add_argument("--prior", default=None,
                   help="ppid priors for jobs without a log_prior column: 'uniform' (default; ppid's "
                        "redundancy is then max(i1, i2)), 'file:PRIORS.json' or 'bert:PATH' (masked-LM word "
                        "probabilities, as DiffusionPID; see jaxpid.priors)")
    p.add_argument("--analysis", choices=("pid", "cpid", "both"), default="pid",
                   help="for rows without a 'conditional' column: PID, conditional PID, or both (two jobs)")
    p.add_argument("--level", choices=LEVELS, default=None,
                   help="image-level information: sum of the pixel map (nats/image) or mean (DiffusionPID)")
    p.add_argument("--removal", choices=("delete", "placeholder"), default=None)
    p.add_argument("--sampler", choices=SAMPLERS, default=None)
    _generation_options(p)
    p.add_argument("--batch-size", type=int, default=None, help="jobs per fused pass (default 8)")
    p.add_argument("--chunk-size", type=int, default=None, help="log-SNR samples per device per step")
    p.add_argument("--key", type=int, default=None, help="seed of the estimator's draws (job j uses fold_in(key, j))")
    p.add_argument("--shard", default="0/1", help="i/n: compute only batches b with b %% n == i (default 0/1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    bias = p.add_argument_group("bias study (JOBS = bias)")
    bias.add_argument("--seeds", type=int, nargs="+", default=None, help="image seeds per prompt (default 42)")
    bias.add_argument("--groups", nargs="+", default=None, help="attribute groups (default: gender ethnicity)")
    bias.add_argument("--occupations", nargs="+", default=None, help="only these occupations (default: all 188)")
    bias.add_argument("--templates", default="first", help="'first' (default), 'all', or indices like 0,2")
    scale = p.add_argument_group("scale-out")
    scale.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: this process (all its devices); ray: batches as Ray tasks")
    scale.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto', 'ray://host:10001'); "
                       "default: start a local one")
    scale.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray runtime")
    scale.add_argument("--ray-retries", type=int, default=3, help="retries of a task whose worker died (default 3)")
    scale.add_argument("--ray-gpus-per-task", type=float, default=0.0)
    scale.add_argument("--distributed", action="store_true",
                       help="multi-host JAX: jax.distributed.initialize(), every process computes, process 0 writes")
    scale.add_argument("--coordinator", default=None, help="host:port of process 0 (default: from the environment)")
    scale.add_argument("--num-processes", type=int, default=None)
    scale.add_argument("--process-id", type=int, default=None)


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
    p.add_argument("sweep", type=Path, help="a sweep directory (jaxpid sweep --out)")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--measure", choices=MEASURES, default=None,
                   help="default: ccs if the sweep has it (the measure that sees an occupation word implying "
                        "an attribute), else the sweep's only measure, else mmi")
    p.add_argument("--form", choices=PID_FORMS, default=None, help="the form's rows, when the sweep has several")
    p.add_argument("--atom", default="{1}{2}", help="lattice atom to compare (default {1}{2}: redundancy)")
    p.add_argument("--conditional", choices=("no", "yes"), default=None,
                   help="use the PID (no) or CPID (yes) rows when the sweep has both")
    p.add_argument("--row", default="occupation", help="column naming the occupation (default occupation)")
    p.add_argument("--column", default="attribute", help="column naming the attribute (default attribute)")
    p.add_argument("--group", default="group", help="column naming the attribute group (default group)")
    p.add_argument("--normalise", choices=("study", "group", "none"), default="study")
    p.add_argument("--top", type=int, default=20, help="rows of the ranked table printed / bars drawn")


# ---------------------------------------------------------------------------------------------
# Studies: `jaxpid study <name> ...`


def study_options(p: argparse.ArgumentParser, *, samples: int = EstimatorConfig.n_samples) -> None:
    """The options every study shares: model, output, estimator, batching and scale-out."""
    model_options(p)
    p.add_argument("--out", type=Path, required=True,
                   help="study directory (created, or resumed: parts/ holds each finished batch)")
    p.add_argument("--samples", type=int, default=None, help=f"log-SNR samples per image (default {samples})")
    p.add_argument("--key", type=int, default=None, help="seed of the estimator's draws (item i uses fold_in(key, i))")
    p.add_argument("--sampler", choices=SAMPLERS, default=None,
                   help="log-SNR sampler (default stratified; logistic: the papers' independent draws)")
    p.add_argument("--preset", choices=sorted(STUDY_PRESETS), default=None,
                   help="a paper's estimator settings for this study (explicit --samples / --sampler win): "
                        "infodecomp = localize and retrieve 100 logistic samples, clip 4; intervene 2400 samples "
                        "from a logistic fitted to the model's log-SNR range, clip 3 (docs/method.md#presets)")
    p.add_argument("--chunk-size", type=int, default=None, help="log-SNR samples per device per step")
    p.add_argument("--batch-size", type=int, default=None, help="items per fused pass")
    p.add_argument("--shard", default="0/1", help="i/n: compute only batches b with b %% n == i (default 0/1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale = p.add_argument_group("scale-out")
    scale.add_argument("--backend", choices=("local", "ray", "distributed"), default="local",
                       help="local: this process; ray: batches as Ray tasks; distributed: multi-host JAX "
                            "(every process computes, process 0 writes)")
    scale.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    scale.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray runtime")
    scale.add_argument("--ray-retries", type=int, default=3, help="retries of a task whose worker died (default 3)")
    scale.add_argument("--ray-gpus-per-task", type=float, default=0.0)
    scale.add_argument("--coordinator", default=None, help="distributed: host:port of process 0")
    scale.add_argument("--num-processes", type=int, default=None)
    scale.add_argument("--process-id", type=int, default=None)


def _add_study(sub) -> None:
    p = sub.add_parser(
        "study",
        help="the papers' studies on your data and model (localization, intervention, retrieval, words)",
        description="Each study runs its items in fixed batches (one fused pass each) into DIR/parts, resumable "
                    "like a sweep, then writes summary.json, items.parquet and figures into DIR.",
    )
    studies = p.add_subparsers(dest="study", required=True)
    for add in STUDY_PARSERS:
        add(studies)


LOCALIZE_METHODS = ("cmi", "attention", "cmi_x_attention", "unique")  # = jaxpid.studies.localize.METHODS


def _add_localize(studies) -> None:
    p = studies.add_parser(
        "localize",
        help="unsupervised localization: per-word information maps vs cross-attention, mIoU against masks",
        description=(
            "Does the information a word carries sit on the object it names? For each item (image, prompt, word, "
            "object mask) one fused pass over the conditionings '', the word alone, the prompt without the word and "
            "the prompt gives four maps: cmi (the word's conditional information given the rest, Info-Decomp), "
            "attention (DAAM-style cross-attention on the word's tokens, averaged over the same noise levels), "
            "cmi_x_attention (their product) and unique (the word's unique information against the rest, "
            "DiffusionPID). Maps are upsampled to the mask, min-max normalised and thresholded: mIoU with the "
            "threshold chosen on a held-out calibration split, and with the threshold tuned on the evaluation set "
            "(the papers' practice). Writes summary.json, items.parquet and overlays.png into --out. "
            "Examples: jaxpid study localize items.jsonl --model PATH --out runs/loc; "
            "jaxpid study localize demo --out runs/demo-loc --n 64; "
            "jaxpid study localize --coco instances_val2017.json --captions captions_val2017.json "
            "--images val2017 --limit 500 --model PATH --out runs/coco-it"
        ),
    )
    p.add_argument("manifest", nargs="?", default=None,
                   help="a JSONL manifest, one {\"image\", \"prompt\", \"word\", \"mask\"} (optional \"kind\") per line, "
                        "paths relative to it (mask: non-zero pixels are the object; a word may be a phrase, or "
                        "word@N for its N-th occurrence); or 'demo' for the demo's rendered set with exact masks")
    p.add_argument("--n", type=int, default=64, help="demo: items (cycling colour/shape words, one/two objects; default 64)")
    coco = p.add_argument_group("COCO (instead of MANIFEST; needs pip install jaxpid[coco])")
    coco.add_argument("--coco", type=Path, default=None, metavar="INSTANCES_JSON",
                      help="COCO instances file: items built as Info-Decomp's COCO-IT (captions naming a category "
                           "of the image, that category's union of instance masks)")
    coco.add_argument("--captions", type=Path, default=None, metavar="CAPTIONS_JSON", help="COCO captions file")
    coco.add_argument("--images", type=Path, default=None, metavar="DIR", help="the images' folder")
    p.add_argument("--limit", type=int, default=None, help="only the first L items (COCO or manifest)")
    p.add_argument("--methods", nargs="+", choices=LOCALIZE_METHODS, default=None,
                   help="maps to score (default: all four; without unique the word-alone conditioning is dropped: "
                        "Info-Decomp's 3 conditionings)")
    p.add_argument("--measure", choices=("mmi", "ccs"), default="mmi", help="unique's redundancy measure (default mmi)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration split (and of the demo set's scenes)")
    p.add_argument("--calibration-fraction", type=float, default=0.25,
                   help="share of items the held-out threshold is chosen on (default 0.25); mIoU is reported on the rest")
    p.add_argument("--resize-masks", action="store_true",
                   help="resize masks whose size differs from their image's (nearest neighbour) instead of refusing")
    p.add_argument("--fit", choices=("squash", "crop"), default="squash",
                   help="how an image becomes the model's input: squash (resize, every object stays in view; "
                        "Info-Decomp's practice, default) or crop (the centre crop jaxpid's other commands take)")
    p.add_argument("--removal", choices=("delete", "placeholder"), default="delete",
                   help="how the word leaves the prompt (default: delete)")
    p.add_argument("--overlays", type=int, default=8, help="items shown in overlays.png (default 8)")
    study_options(p)


def _add_intervene(studies) -> None:
    p = studies.add_parser(
        "intervene",
        help="prompt intervention: does a word's information predict what deleting or replacing it changes?",
        description=(
            "For each job (JSONL: prompt, word, seed; optional replacement, sources, group) generates the image "
            "and the edited image (word deleted, or replaced) from the same initial noise (DDIM, eta = 0), measures "
            "the change per pixel and in latent space, and in one fused pass over the original image the word's "
            "CMI i(x; word | rest) with its map (and the PID of the word and its sources). Writes summary.json "
            "(image-level Pearson r with its CI and Spearman rho of information vs change, the mean per-job "
            "pixel-level correlation), items.parquet, scatter.png and examples.png. JOBS = demo builds jobs from "
            "the demo model's captions."
        ),
    )
    p.add_argument("jobs", help="a JSONL job file, or 'demo' for jobs over the demo world's captions")
    study_options(p)
    _generation_options(p)
    p.add_argument("--removal", choices=("delete", "placeholder"), default=None,
                   help="how a deleted word leaves the prompt, for the edit and the CMI alike (default: delete)")
    p.add_argument("--measure", choices=("mmi", "ccs"), default=None,
                   help="redundancy measure of the PID atoms of jobs with sources (default mmi)")
    p.add_argument("--form", choices=FORMS, default=None, help="pointwise information form (default orthogonal)")
    p.add_argument("--examples", type=int, default=None,
                   help="the first N jobs keep their images for examples.png (default 4)")
    demo = p.add_argument_group("demo jobs (JOBS = demo)")
    demo.add_argument("--n", type=int, default=None, help="number of jobs (default 64)")
    demo.add_argument("--seeds-per-caption", type=int, default=None, help="images per caption and word (default 2)")
    demo.add_argument("--edit", choices=("delete", "replace", "both"), default=None,
                      help="delete the word (default), replace it by another of its kind, or alternate")
    demo.add_argument("--demo-seed", type=int, default=None, help="seed of the jobs' random draw (default 0)")


def _add_retrieve(studies) -> None:
    p = studies.add_parser(
        "retrieve",
        help="compositional retrieval: choose each image's caption by the model's likelihood (ARO)",
        description=(
            "Scores each image's candidate captions as conditionings of one fused pass with shared log-SNR and "
            "noise draws (plus the empty prompt as the reference), chooses the lowest NLL (and, separately, the "
            "largest orthogonal i(x; caption)), and writes summary.json (accuracy with a Wilson interval, chance, "
            "per-group accuracy, the mean NLL margin with its s.e.), items.parquet and groups.png. MANIFEST is "
            "JSONL: image, captions, label (index of the true caption, default 0), optional group, crop, expect; "
            "or 'demo'; or give --aro SET FILE --images DIR for ARO's published files."
        ),
    )
    p.add_argument("manifest", nargs="?", default=None,
                   help="a JSONL manifest, or 'demo' for the demo world's swaps (omit with --aro)")
    study_options(p)
    aro = p.add_argument_group("ARO (Yuksekgonul et al. 2023) from its published files")
    aro.add_argument("--aro", nargs=2, metavar=("SET", "FILE"), default=None,
                     help="vg_relation | vg_attribution | coco_order | flickr_order and its JSON file "
                          "(VG images are cropped to their bounding box, as ARO does)")
    aro.add_argument("--images", type=Path, default=None, help="the folder the file's image paths are relative to")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    demo = p.add_argument_group("demo items (MANIFEST = demo)")
    demo.add_argument("--n", type=int, default=None,
                      help="items per group: attribute, order and relation swaps, synonyms (default 32)")
    demo.add_argument("--demo-seed", type=int, default=None, help="seed of the items' random draw (default 0)")


def _add_words(studies) -> None:
    p = studies.add_parser(
        "words",
        help="DiffusionPID's word relations: PID of synonym, homonym and co-hyponym pairs under every measure",
        description="PID of word pairs (PAIRS: JSONL {prompt, sources: [w1, w2], relation, seed}; 'shipped' for the "
                    "pair sets that come with jaxpid; 'demo' for the demo model's designed relations) under every "
                    "measure and every pointwise form from one fused pass per batch; summary.json gives each atom's "
                    "mean and share of the joint information per relation.",
    )
    p.add_argument("pairs", help="a PAIRS .jsonl file, 'shipped' or 'demo'")
    study_options(p)
    p.add_argument("--sets", nargs="+", default=None,
                   help="shipped: which pair sets (default all: synonyms homonyms co-hyponyms co-hyponyms-wordnet)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="shipped / demo: image seeds per pair (default 0 / 0 1 2 3)")
    p.add_argument("--measure", nargs="+", choices=MEASURES, default=None,
                   help="measures (default: mmi ppid ccs; imin needs an 'alternatives' field per pair)")
    p.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=True,
                   help="conditional PID (the rest of the prompt as context; the default) for pairs without a "
                        "'conditional' field; --no-conditional: plain PID")
    p.add_argument("--prior", default=None, help="ppid priors (default uniform; 'bert:PATH' as DiffusionPID)")
    p.add_argument("--level", choices=LEVELS, default=None)
    _generation_options(p)
    p.add_argument("--examples", type=int, default=1, help="example panels per relation (default 1; 0: none)")


def _add_validate(studies) -> None:
    p = studies.add_parser(
        "validate",
        help="which measure recovers known structure: the demo's designed phenomena and Gaussian mixtures",
        description="For every designed phenomenon of the demo model (images drawn by its renderer) and every measure, "
                    "form and plain/conditional PID: a statistic, its standard error and pass/fail against the "
                    "designed answer; and the Gaussian-mixture cases against their exact atoms. Writes summary.json, "
                    "items.parquet and table.md.",
    )
    study_options(p, samples=64)
    p.add_argument("--images", type=int, default=8, help="rendered images per case and mode (default 8)")
    p.add_argument("--gmm-images", type=int, default=48, help="Gaussian-mixture images per case (default 48)")
    p.add_argument("--gmm-samples", type=int, default=256, help="their log-SNR samples (default 256)")
    p.add_argument("--truth-samples", type=int, default=4096,
                   help="samples of the orthogonal form's high-sample truth (default 4096)")
    p.add_argument("--known-images", type=int, default=1024,
                   help="images per fixed prompt of the known-answer worlds (default 1024; the gap forms' per-image "
                        "values are heavy-tailed, so few images understate their spread)")
    p.add_argument("--known-samples", type=int, default=64, help="their log-SNR samples (default 64)")


# each study's parser adder, in the order `jaxpid study --help` lists them
STUDY_PARSERS: list = [_add_localize, _add_intervene, _add_retrieve, _add_words, _add_validate]

