"""From a prompt to information: the PID of its words, Info-Decomp's per-word CMI, and reruns.

It ties the estimator core to the models (``jaxpid.sd``) and word priors (``jaxpid.priors``);
it writes no files and prints nothing.

    config       RunConfig: every setting of one analysis, validated once
    presets      the papers' settings in one name (diffusionpid, infodecomp)
    images       the images analysed: generated from the prompt, or given
    prompt_pid   analyze: prompt + source words -> PromptPID (atoms, maps, record)
    words        word_information: MI of the prompt, CMI of each word given the rest
    maps         thresholded maps, DiffusionPID's baseline, IoU; bilinear upsampling, min-max, IoU curves
    records      read a result.json; run a saved analysis again from it (rerun)

The names below load their module on first use, so that ``jaxpid.analysis.presets`` (which the
command line's option parser reads) stays as light to import as it is.
"""

import importlib

_LAZY = {
    "OPTIONS": "config", "RunConfig": "config",
    "PRESETS": "presets",
    "Images": "images", "generated_images": "images", "given_images": "images",
    "PIDPlan": "prompt_pid", "PromptPID": "prompt_pid", "analyze": "prompt_pid", "plan_pid": "prompt_pid",
    "run_pid": "prompt_pid",
    "WordInformation": "words", "word_information": "words",
    "baseline_redundancy_map": "maps", "mask_iou": "maps", "threshold_map": "maps", "upsample_bilinear": "maps",
    "normalise_min_max": "maps", "iou_curve": "maps",
    "load_recorded_model": "records", "read_record": "records", "rerun": "records",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"jaxpid.analysis.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxpid.analysis' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
