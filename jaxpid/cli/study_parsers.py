"""``jaxpid study <name>``: each study's options (light, as ``jaxpid.cli.parsers``).

A study's estimator and batch options show the defaults of that study's configuration class
(``STUDY_CONFIGS``): ``jaxpid study validate --help`` says 64 samples where localize says 100.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxpid.analysis.presets import STUDY_PRESETS
from jaxpid.cli.option_groups import (
    SWEEP_CONFIG,
    ConfigDefault,
    Defaults,
    checked_option,
    config_option,
    estimator_options,
    generation_options,
    model_options,
    of_decompositions,
    preset_text,
    removal_option,
    renamed,
    scale_out_options,
)
from jaxpid.core.config import FORMS, LEVELS
from jaxpid.core.measures import MEASURES

LOCALIZE = "jaxpid.studies.localize:LocalizeConfig"
INTERVENE = "jaxpid.studies.intervention:InterventionConfig"
RETRIEVE = "jaxpid.studies.retrieval:RetrievalConfig"
VALIDATE = "jaxpid.studies.validate:ValidateConfig"
# study -> its configuration class, whose defaults the study's options take and show
STUDY_CONFIGS = {
    "localize": LOCALIZE,
    "intervene": INTERVENE,
    "retrieve": RETRIEVE,
    "words": SWEEP_CONFIG,  # a sweep, to which jaxpid.studies.words.words_config adds the measures and forms
    "validate": VALIDATE,
}
LOCALIZE_METHODS = ("cmi", "attention", "cmi_x_attention", "unique")  # = jaxpid.studies.localize.METHODS


def add_study(sub) -> None:
    p = sub.add_parser(
        "study",
        help="the papers' studies on your data and model (localization, intervention, retrieval, words)",
        description="Each study runs its items in fixed batches (one fused pass each) into DIR/parts, resumable "
                    "like a sweep, then writes summary.json, items.parquet and figures into DIR.",
    )
    studies = p.add_subparsers(dest="study", required=True)
    for add in STUDY_PARSERS:
        add(studies)


def study_options(p: argparse.ArgumentParser, study: str) -> None:
    """The options every study shares: model, output, preset, estimator, batching and scale-out."""
    config = STUDY_CONFIGS[study]
    model_options(p)
    p.add_argument("--out", type=Path, required=True,
                   help="study directory (created, or resumed: parts/ holds each finished batch)")
    settings = {name: studies[study] for name, studies in STUDY_PRESETS.items() if study in studies}
    p.add_argument("--preset", choices=sorted(STUDY_PRESETS), default=None,
                   help="a paper's estimator settings for this study (explicit --samples / --sampler win): "
                        + ("; ".join(f"{name} = {preset_text(s)}" for name, s in settings.items()) or "none here")
                        + " (docs/method.md#presets)")
    estimator_options(p, config, unit="item", rounds=True)
    if study != "validate":  # its batch is one (case, mode)'s --n-images images
        config_option(p, "--batch-size", type=int, default=ConfigDefault(config, "batch_size"),
                      help="items per fused pass (default %(config_default)s)")
    scale_out_options(p)


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
    field = lambda name, **kw: ConfigDefault(LOCALIZE, name, **kw)  # noqa: E731
    demo = lambda name: ConfigDefault("jaxpid.studies.localize_items:demo_items", name)  # noqa: E731
    split = lambda name: ConfigDefault("jaxpid.studies.localize:LocalizePlan.__init__", name)  # noqa: E731
    p.add_argument("manifest", nargs="?", default=None,
                   help="a JSONL manifest, one {\"image\", \"prompt\", \"word\", \"mask\"} (optional \"kind\") per line, "
                        "paths relative to it (mask: non-zero pixels are the object; a word may be a phrase, or "
                        "word@N for its N-th occurrence); or 'demo' for the demo's rendered set with exact masks")
    checked_option(p, "--n", type=int, default=64, against=demo("n"),
                   help="demo: items (cycling colour/shape words, one/two objects; default %(default)s)")
    checked_option(p, "--demo-seed", type=int, default=0, against=demo("seed"),
                   help="demo: seed of the scenes' random draw (default %(default)s)")
    coco = p.add_argument_group("COCO (instead of MANIFEST; needs pip install jaxpid[coco])")
    coco.add_argument("--coco", type=Path, default=None, metavar="INSTANCES_JSON",
                      help="COCO instances file: items built as Info-Decomp's COCO-IT (captions naming a category "
                           "of the image, that category's union of instance masks)")
    coco.add_argument("--captions", type=Path, default=None, metavar="CAPTIONS_JSON", help="COCO captions file")
    coco.add_argument("--images", type=Path, default=None, metavar="DIR", help="the images' folder")
    p.add_argument("--limit", type=int, default=None, help="only the first L items (COCO or manifest)")
    config_option(p, "--methods", nargs="+", choices=LOCALIZE_METHODS, default=field("methods"),
                  help="maps to score (default %(config_default)s; without unique the word-alone conditioning is "
                       "dropped: Info-Decomp's 3 conditionings)")
    config_option(p, "--measure", choices=("mmi", "ccs"), default=field("measure"),
                  help="unique's redundancy measure (default %(config_default)s)")
    checked_option(p, "--split-seed", type=int, default=0, against=split("split_seed"),
                   help="seed of the calibration split (default %(default)s)")
    checked_option(p, "--calibration-fraction", type=float, default=0.25, against=split("calibration_fraction"),
                   help="share of items the held-out threshold is chosen on (default %(default)s); mIoU is reported "
                        "on the rest")
    checked_option(p, "--resize-masks", action="store_true", against=field("resize_masks"), default=False,
                   help="resize masks whose size differs from their image's (nearest neighbour) instead of refusing")
    config_option(p, "--fit", choices=("squash", "crop"), default=field("fit"),
                  help="how an image becomes the model's input (default %(config_default)s): squash (resize, every "
                       "object stays in view; Info-Decomp's practice) or crop (the centre crop jaxpid's other "
                       "commands take)")
    removal_option(p, LOCALIZE, "the word")
    config_option(p, "--overlays", type=int, default=field("overlays"),
                  help="items shown in overlays.png (default %(config_default)s)")
    study_options(p, "localize")
    renamed(p, "--seed", "--split-seed and --demo-seed", dest="split_seed", targets=("split_seed", "demo_seed"),
            type=int)


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
    field = lambda name: ConfigDefault(INTERVENE, name)  # noqa: E731
    demo = lambda name: ConfigDefault("jaxpid.studies.intervention:demo_jobs", name)  # noqa: E731
    p.add_argument("jobs", help="a JSONL job file, or 'demo' for jobs over the demo world's captions")
    study_options(p, "intervene")
    generation_options(p, INTERVENE)
    removal_option(p, INTERVENE, "a deleted word, for the edit and the CMI alike,")
    config_option(p, "--measure", choices=("mmi", "ccs"), default=field("measure"),
                  help="redundancy measure of the PID atoms of jobs with sources (default %(config_default)s)")
    config_option(p, "--form", choices=FORMS, default=field("form"),
                  help="pointwise information form (default %(config_default)s)")
    config_option(p, "--examples", type=int, default=field("examples"),
                  help="the first N jobs keep their images for examples.png (default %(config_default)s)")
    group = p.add_argument_group("demo jobs (JOBS = demo)")
    config_option(group, "--n", type=int, default=demo("n"), help="number of jobs (default %(config_default)s)")
    config_option(group, "--seeds-per-caption", type=int, default=demo("seeds_per_caption"),
                  help="images per caption and word (default %(config_default)s)")
    config_option(group, "--edit", choices=("delete", "replace", "both"), default=demo("edit"),
                  help="delete the word, replace it by another of its kind, or alternate (default %(config_default)s)")
    config_option(group, "--demo-seed", type=int, default=demo("seed"),
                  help="seed of the jobs' random draw (default %(config_default)s)")


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
    demo = lambda name: ConfigDefault("jaxpid.studies.retrieval:demo_items", name)  # noqa: E731
    p.add_argument("manifest", nargs="?", default=None,
                   help="a JSONL manifest, or 'demo' for the demo world's swaps (omit with --aro)")
    study_options(p, "retrieve")
    aro = p.add_argument_group("ARO (Yuksekgonul et al. 2023) from its published files")
    aro.add_argument("--aro", nargs=2, metavar=("SET", "FILE"), default=None,
                     help="vg_relation | vg_attribution | coco_order | flickr_order and its JSON file "
                          "(VG images are cropped to their bounding box, as ARO does)")
    aro.add_argument("--images", type=Path, default=None, metavar="DIR",
                     help="the folder the file's image paths are relative to")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    sequential = p.add_argument_group("sequential decisions")
    sequential.add_argument("--sequential", action="store_true",
                            help="rounds of --samples per item until the lowest-NLL caption's paired margin over every "
                                 "rival clears an always-valid bound (alpha spending over the rounds, "
                                 "jaxpid.core.sequential), or --max-samples (then the fixed-N choice there); a decided "
                                 "item's slot takes the next item")
    config_option(sequential, "--confidence", type=float,
                  default=ConfigDefault("jaxpid.studies.retrieval:RetrievalConfig", "confidence"),
                  help="with --sequential: the chance that every decision the bound makes is the model's own "
                       "lowest-NLL caption (default %(config_default)s)")
    group = p.add_argument_group("demo items (MANIFEST = demo)")
    # per group, where localize's and intervene's --n count all: the spelling says so (dest n as before)
    config_option(group, "--n-per-group", dest="n", type=int, default=demo("n"),
                  help="items per group: attribute, order and relation swaps, synonyms (default %(config_default)s)")
    config_option(group, "--demo-seed", type=int, default=demo("seed"),
                  help="seed of the items' random draw (default %(config_default)s)")
    renamed(p, "--n", "--n-per-group", dest="n", type=int)


def _add_words(studies) -> None:
    p = studies.add_parser(
        "words",
        help="DiffusionPID's word relations: PID of synonym, homonym and co-hyponym pairs under every measure",
        description="PID of word pairs (PAIRS: JSONL {prompt, sources: [w1, w2], relation, seed}; 'shipped' for the "
                    "pair sets that come with jaxpid; 'demo' for the demo model's designed relations) under every "
                    "measure and every pointwise form from one fused pass per batch; summary.json gives each atom's "
                    "mean and share of the joint information per relation.",
    )
    words = lambda function, name, **kw: ConfigDefault(f"jaxpid.studies.words:{function}", name, **kw)  # noqa: E731
    p.add_argument("pairs", help="a PAIRS .jsonl file, 'shipped' or 'demo'")
    study_options(p, "words")
    config_option(p, "--sets", nargs="+", default=words("shipped_pairs", "sets"),
                  help="shipped: which pair sets (default %(config_default)s)")
    config_option(p, "--seeds", type=int, nargs="+",
                  default=Defaults({"shipped": words("shipped_pairs", "seeds"), "demo": words("demo_pairs", "seeds")}),
                  help="shipped / demo: image seeds per pair (default %(config_default)s)")
    config_option(p, "--measure", nargs="+", choices=MEASURES,
                  default=words("words_config", "measures", none="every measure but imin"),
                  help="measures (default %(config_default)s; imin needs an 'alternatives' field per pair)")
    checked_option(p, "--conditional", action=argparse.BooleanOptionalAction, default=True,
                   against=words("job_table", "conditional"),
                   help="conditional PID (the rest of the prompt as context) for pairs without a 'conditional' "
                        "field, unless --no-conditional: plain PID")
    config_option(p, "--prior", default=ConfigDefault(SWEEP_CONFIG, "prior"),
                  help="ppid priors (default %(config_default)s; 'bert:PATH' as DiffusionPID)")
    config_option(p, "--level", choices=LEVELS,
                  default=ConfigDefault(SWEEP_CONFIG, "decompositions", show=of_decompositions("level")),
                  help="image-level information: sum of the pixel map or its mean (default %(config_default)s)")
    generation_options(p, SWEEP_CONFIG)
    p.add_argument("--examples", type=int, default=1,
                   help="example panels per relation (default %(default)s; 0: none)")


def _add_validate(studies) -> None:
    p = studies.add_parser(
        "validate",
        help="which measure recovers known structure: the demo's designed phenomena and Gaussian mixtures",
        description="For every designed phenomenon of the demo model (images drawn by its renderer) and every measure, "
                    "form and plain/conditional PID: a statistic, its standard error and pass/fail against the "
                    "designed answer; and the Gaussian-mixture cases against their exact atoms. Writes summary.json, "
                    "items.parquet and table.md.",
    )
    truth = lambda name: ConfigDefault("jaxpid.studies.validate:ground_truth_table", name)  # noqa: E731
    study_options(p, "validate")
    config_option(p, "--n-images", type=int, default=ConfigDefault(VALIDATE, "images"),
                  help="rendered images per case and mode (default %(config_default)s)")
    checked_option(p, "--gmm-images", type=int, default=48, against=truth("n_images"),
                   help="Gaussian-mixture images per case (default %(default)s)")
    checked_option(p, "--gmm-samples", type=int, default=256, against=truth("n_samples"),
                   help="their log-SNR samples (default %(default)s)")
    checked_option(p, "--truth-samples", type=int, default=4096, against=truth("truth_samples"),
                   help="samples of the orthogonal form's high-sample truth (default %(default)s)")
    # larger than known_answer_table's own defaults: the CLI's table is the published one
    p.add_argument("--known-images", type=int, default=1024,
                   help="images per fixed prompt of the known-answer worlds (default %(default)s; the gap forms' "
                        "per-image values are heavy-tailed, so few images understate their spread)")
    p.add_argument("--known-samples", type=int, default=64, help="their log-SNR samples (default %(default)s)")
    renamed(p, "--images", "--n-images", dest="n_images", type=int)


# each study's parser adder, in the order `jaxpid study --help` lists them
STUDY_PARSERS: list = [_add_localize, _add_intervene, _add_retrieve, _add_words, _add_validate]
