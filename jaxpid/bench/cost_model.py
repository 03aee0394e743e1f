"""The cost model of docs/cost_model.md: time and price of the papers' studies on accelerators, as
estimates from FLOP counts and stated assumptions.

    python -m jaxpid.bench.cost_model               # counts SD 2.1-base's FLOPs, prints assumptions + table
    python -m jaxpid.bench.cost_model --mfu 0.25    # another assumed MFU (time scales as 1 / MFU)

Each study is a number of UNet evaluations, text encodings and VAE encodings / decodings (from
the papers' settings, below). Its FLOPs are those counts times the analytic FLOPs of each SD
2.1-base network at 64x64 latents (``jaxpid.bench.models.pipeline_flops``: 2·MACs of every matmul
and convolution; a UNet evaluation is 804 GFLOP). Time = FLOPs / (the platform's dense bf16 peak ×
the assumed MFU × its multi-chip efficiency); cost = time × an assumed hourly price. None of this
is a measurement: ``benchmarks/device_check.sh`` measures evaluations/s and MFU on a real device,
and those measurements should replace the assumed MFU here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from jaxpid.bench.models import pipeline_flops
from jaxpid.bench.results import markdown_table

ARO_SETS = {  # ARO (Yuksekgonul et al., ICLR 2023): test cases and caption options per case
    "VG-Relation": (23_937, 2),
    "VG-Attribution": (28_748, 2),
    "COCO-Order": (25_010, 5),
    "Flickr30k-Order": (5_000, 5),
}
BIAS_PROMPTS = 188 * 6  # DiffusionPID: 188 occupations x (2 gender + 4 ethnicity words)


@dataclasses.dataclass(frozen=True)
class Study:
    """One study's work, in network calls."""

    name: str
    items: int  # jobs, (image, word) pairs or test cases
    unet_evaluations: int
    text_prompts: int  # prompts encoded
    vae_encodes: int  # images encoded to latents (given images)
    vae_decodes: int  # latents decoded to images (generated images)
    basis: str  # where the counts come from


def per_item(name: str, items: int, unet: int, prompts: int, encodes: int, decodes: int, basis: str) -> Study:
    return Study(name, items, items * unet, items * prompts, items * encodes, items * decodes, basis)


def aro_study() -> Study:
    """Info-Decomp's ARO retrieval: every caption option and the empty prompt at 100 log-SNR samples
    (one noise draw each) per case, the image encoded once."""
    cases = sum(n for n, _ in ARO_SETS.values())
    evaluations = sum(n * (options + 1) * 100 for n, options in ARO_SETS.values())
    prompts = sum(n * (options + 1) for n, options in ARO_SETS.values())
    sets = ", ".join(f"{name} {n:,} x {options + 1} conditionings" for name, (n, options) in ARO_SETS.items())
    return Study("Info-Decomp ARO retrieval", cases, evaluations, prompts, cases, 0,
                 f"{sets}; 100 log-SNR samples each (scripts/eval_retrieval.py: n_samples_per_point 100)")


STUDIES = (
    per_item("DiffusionPID bias study, 1 seed", BIAS_PROMPTS, 50 * 2 + 4 * 50, 6, 0, 1,
             "188 occupations x 6 attribute words, seed 42; generate 50 DDIM steps with guidance (2 evaluations "
             "each) + PID of 2 words: 4 subset prompts x 50 log-SNR samples; 6 prompts encoded; 1 VAE decode"),
    per_item("DiffusionPID bias study, 5 seeds", 5 * BIAS_PROMPTS, 50 * 2 + 4 * 50, 6, 0, 1,
             "as above with 5 image seeds per prompt (an assumption: 'several seeds')"),
    per_item("Info-Decomp COCO-IT localization", 6_927, 3 * 100, 3, 1, 0,
             "COCO-IT.csv: 6,927 (image, word) rows over 4,550 COCO val2017 images; 3 conditionings (caption, "
             "caption without the word, empty) x 100 log-SNR points, 1 noise draw each; 1 VAE encode"),
    aro_study(),
)


@dataclasses.dataclass(frozen=True)
class Platform:
    """An accelerator set-up: its dense bf16 peak and an assumed price."""

    chips: int
    peak_tflops_per_chip: float  # dense bf16 data-sheet peak
    efficiency: float  # share of linear scaling kept across chips (1 for one chip)
    usd_per_hour: float  # assumed on-demand price of the whole set-up
    note: str
    evals_per_s: float | None = None  # a measured or estimated rate instead of peak x MFU

    def flop_rate(self, mfu: float, unet_flops: float) -> float:
        if self.evals_per_s is not None:
            return self.evals_per_s * unet_flops
        return self.chips * self.peak_tflops_per_chip * 1e12 * mfu * self.efficiency


@dataclasses.dataclass(frozen=True)
class Assumptions:
    mfu: float  # model FLOP utilisation assumed for jaxpid on every accelerator
    date: str  # when the prices were written down
    platforms: dict
    studies: tuple[Study, ...]


ASSUMPTIONS = Assumptions(
    mfu=0.40,
    date="2026-11-26",
    platforms={
        "1x H100": Platform(1, 989.0, 1.0, 3.00, "H100 SXM, 989 TFLOP/s dense bf16; $3.00 per GPU-hour assumed "
                                                  "(on-demand at GPU clouds)"),
        "8x H100": Platform(8, 989.0, 0.95, 24.00, "one 8-GPU host (or `jaxpid sweep --backend distributed`): jobs are "
                                                   "independent batches; 95 % scaling assumed (per-process "
                                                   "compilation, the last partial round); $24.00 per hour"),
        "TPU v5e-8": Platform(8, 197.0, 0.95, 9.60, "8 v5e chips, 197 TFLOP/s dense bf16 each; $1.20 per "
                                                    "chip-hour assumed (on-demand list price); 95 % scaling"),
        "1x A6000, reference loop": Platform(1, 0.0, 1.0, 0.80, "for scale: Info-Decomp's PyTorch loop in fp32, "
                                             "~27 UNet evaluations/s (REFERENCES.md's estimate); $0.80 per hour "
                                             "assumed", evals_per_s=27.0),
    },
    studies=STUDIES,
)


def study_flops(study: Study, flops: dict) -> float:
    return (study.unet_evaluations * flops["unet_per_evaluation"]
            + study.text_prompts * flops["text_encoder_per_prompt"]
            + study.vae_encodes * flops["vae_encode_per_image"]
            + study.vae_decodes * flops["vae_decode_per_image"])


def cost_rows(flops: dict, assumptions: Assumptions = ASSUMPTIONS) -> list[dict]:
    """One row per (study, platform): UNet evaluations, PFLOP, hours and dollars."""
    rows = []
    for study in assumptions.studies:
        total = study_flops(study, flops)
        for name, platform in assumptions.platforms.items():
            hours = total / platform.flop_rate(assumptions.mfu, flops["unet_per_evaluation"]) / 3600
            rows.append({"study": study.name, "platform": name, "items": study.items,
                         "unet_evaluations": study.unet_evaluations, "pflop": total / 1e15, "hours": hours,
                         "usd": hours * platform.usd_per_hour})
    return rows


def duration(hours: float) -> str:
    if hours < 1:
        return f"{60 * hours:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def dollars(usd: float) -> str:
    return f"${usd:,.2f}" if usd < 10 else f"${usd:,.0f}"


def markdown(rows: list[dict]) -> str:
    shown = [{**r, "_items": f"{r['items']:,}", "_evals": f"{r['unet_evaluations'] / 1e6:.2f} M",
              "_pflop": f"{r['pflop']:,.0f}", "_time": duration(r["hours"]), "_usd": dollars(r["usd"])} for r in rows]
    return markdown_table(shown, [("study", "study"), ("platform", "platform"), ("_items", "items"),
                                  ("_evals", "UNet evaluations"), ("_pflop", "PFLOP"), ("_time", "time"),
                                  ("_usd", "cost")])


def describe(flops: dict, assumptions: Assumptions = ASSUMPTIONS) -> str:
    """The assumptions, in words, as the doc shows them."""
    lines = [f"FLOPs (analytic, SD 2.1-base at 64x64 latents): UNet {flops['unet_per_evaluation'] / 1e9:.1f} GFLOP per "
             f"evaluation, text encoder {flops['text_encoder_per_prompt'] / 1e9:.1f} GFLOP per prompt, VAE encode "
             f"{flops['vae_encode_per_image'] / 1e9:.0f} / decode {flops['vae_decode_per_image'] / 1e9:.0f} GFLOP "
             "per image",
             f"assumed MFU of jaxpid: {assumptions.mfu:.0%} of the dense bf16 peak, on every accelerator "
             f"(jaxpid's goal on an H100 is >= 50 %; not yet measured)",
             f"prices: assumptions written down on {assumptions.date}, not quotes"]
    lines += [f"  {name}: {p.note}" for name, p in assumptions.platforms.items()]
    lines += [f"  {s.name}: {s.basis}" for s in assumptions.studies]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mfu", type=float, default=ASSUMPTIONS.mfu, help="assumed MFU (default %(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.mfu <= 1:
        parser.error(f"--mfu must be in (0, 1], got {args.mfu}")
    flops = pipeline_flops("sd21-base", 64)
    assumptions = dataclasses.replace(ASSUMPTIONS, mfu=args.mfu)
    print(describe(flops, assumptions))
    print()
    print(markdown(cost_rows(flops, assumptions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
