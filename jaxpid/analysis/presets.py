"""One-flag settings that reproduce each paper's conventions (docs/method.md#presets).

- ``diffusionpid`` (Dewan, Zawar et al., NeurIPS 2024): Finn–Lizier pointwise PID (``ppid``)
  with BERT masked-LM word priors, 50 log-SNR samples from the truncated logistic proposal,
  generation seed 42, image-level atoms from the *mean* of the pixel maps.
- ``infodecomp`` (Kong et al., ICLR 2024): their code as it runs — 100 log-SNR samples from the
  logistic proposal with loc 1, scale 2 and **clip 4** (their NLL paths call the integrator
  without a clip, so its default applies), information in nats per image (the *sum* of the pixel
  map), minimum-information redundancy. Its studies resolve per study (``STUDY_SETTINGS``): the
  localization and retrieval paths as above, the intervention path with a proposal fitted to the
  model's trained log-SNR range (``FittedLogistic``), clip 3 and 20 × 120 evaluations.

Both use the papers' orthogonal form and plain PID (the context is not kept unless asked for),
where jaxpid's own defaults are the anchored form and conditional PID (docs/validation.md).

Every setting carries its source: a file:line of Info-Decomp's code (kxh001/Info-Decomp at
``INFODECOMP_COMMIT``), a part of a paper, or "jaxpid's choice". docs/method.md#presets prints
the same table, and tests/test_presets.py checks that the two agree.

A preset only names the options it sets; everything else keeps the configuration classes'
defaults, and options given explicitly win over the preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxpid.core.sampling import LogisticSampler
from jaxpid.errors import ConfigError

INFODECOMP_COMMIT = "5348572"  # kxh001/Info-Decomp, the commit the file:line sources below refer to


@dataclasses.dataclass(frozen=True)
class Setting:
    """A preset's value of one option and where it comes from."""

    value: Any
    source: str


@dataclasses.dataclass(frozen=True)
class FittedLogistic:
    """Info-Decomp's intervention proposal: a logistic fitted to the model's trained log-SNR range.

    Its ``image_edit.py`` (:35-37) sets loc to the middle of the scheduler's log-SNR range and
    scale to the range's width / (2·clip), so the truncated support [loc − clip·scale,
    loc + clip·scale] is exactly the range the model was trained on.
    """

    clip: float = 3.0

    def for_range(self, logsnr_range: tuple[float, float]) -> LogisticSampler:
        low, high = (float(v) for v in logsnr_range)
        if not high > low:
            raise ConfigError(f"a fitted logistic proposal needs a log-SNR range low < high, got {logsnr_range!r}")
        return LogisticSampler(loc=low + 0.5 * (high - low), scale=(high - low) / (2.0 * self.clip), clip=self.clip)


_LOGISTIC = "the papers' truncated logistic proposal, independent draws"
_ID = "Info-Decomp"
_CLIP4 = (f"{_ID}: loc, scale eval_itd_configs.py:15-16, eval_retrieval_configs.py:37-42; clip: nll() "
          "itdiffusion.py:155-160, image_level_nll() :295-300 and pixel_level_nll() :353-358 call "
          "logistic_integrate without clip, so its default clip=4. (utils/utils.py:24) applies; the configs' "
          "--clip 3 reaches only ll_ratio (:512-517)")

SETTINGS: dict[str, dict[str, Setting]] = {
    "diffusionpid": {
        "measure": Setting("ppid", "DiffusionPID Eqs. 7–16: Finn–Lizier pointwise PID"),
        "n_samples": Setting(50, "DiffusionPID: 50 log-SNR samples"),
        "sampler": Setting(LogisticSampler(loc=1.0, scale=2.0, clip=3.0),
                           f"DiffusionPID: {_LOGISTIC}; loc, scale, clip not stated: {_ID}'s configured values "
                           "(eval_itd_configs.py:15-17)"),
        "seeds": Setting((42,), "DiffusionPID: generation seed 42"),
        "level": Setting("mean", "DiffusionPID: image-level value = mean of the pixel map"),
        "prior": Setting("bert:bert-base-uncased",
                         "DiffusionPID: word priors from a BERT masked LM; the checkpoint is jaxpid's choice"),
        "form": Setting("orthogonal", "DiffusionPID Eq. 2, second line (the orthogonality principle)"),
        "conditional": Setting(False, "DiffusionPID's PID (its CPID keeps the context: --conditional)"),
    },
    "infodecomp": {
        "measure": Setting("mmi", f"jaxpid's choice ({_ID} decomposes nothing; mmi needs only its MI and CMI)"),
        "n_samples": Setting(100, f"{_ID}: eval_itd_configs.py:13 (num_steps 100), one noise draw each (:12)"),
        "sampler": Setting(LogisticSampler(loc=1.0, scale=2.0, clip=4.0), _CLIP4),
        "level": Setting("sum", f"{_ID}: nats per image, errors summed over all dimensions (itdiffusion.py:84-86)"),
        "form": Setting("orthogonal", f"{_ID}: mi_appx = ½·w·‖ε̂_a − ε̂_b‖² (itdiffusion.py:117-139, :174)"),
        "conditional": Setting(False, f"jaxpid's choice ({_ID} computes no PID)"),
    },
}

# `jaxpid study NAME --preset P`: only the estimator's options, per study (studies not named refuse).
STUDY_SETTINGS: dict[str, dict[str, dict[str, Setting]]] = {
    "infodecomp": {
        "localize": {
            "n_samples": Setting(100, f"{_ID}: eval_itd_configs.py:12-13 → eval_itd.py:126 pixel_level_nll, "
                                      "100 log-SNR values × 1 noise draw"),
            "sampler": Setting(LogisticSampler(loc=1.0, scale=2.0, clip=4.0),
                               f"{_ID}: eval_itd_configs.py:15-16, :19 (logistic); pixel_level_nll() "
                               "itdiffusion.py:353-358 → utils/utils.py:24 (clip=4.)"),
        },
        "retrieve": {
            "n_samples": Setting(100, f"{_ID}: eval_retrieval_configs.py:28-33 (100) → image_level_nll_fast "
                                      "itdiffusion.py:600-606, :422-425 (20 rounds × 5 copies, one draw each)"),
            "sampler": Setting(LogisticSampler(loc=1.0, scale=2.0, clip=4.0),
                               f"{_ID}: eval_retrieval_configs.py:37-42, :44-49 (logistic); nll() "
                               "itdiffusion.py:155-160 → utils/utils.py:24 (clip=4.)"),
        },
        "intervene": {
            "n_samples": Setting(2400, f"{_ID}: 20 log-SNR points (image_edit.py:129) × 120 noise draws each "
                                       "(image_edit_configs.py:12, ll_ratio itdiffusion.py:519-522): jaxpid draws "
                                       "one noise per log-SNR, so the same 2,400 evaluations per conditioning"),
            "sampler": Setting(FittedLogistic(clip=3.0),
                               f"{_ID}: image_edit.py:35-37 (loc, scale from the scheduler's log-SNR range, "
                               "stablediffusion.py:21, :43-46); clip image_edit_configs.py:17 → "
                               "ll_ratio itdiffusion.py:512-517"),
        },
    },
}

PRESETS: dict[str, dict[str, Any]] = {name: {k: s.value for k, s in table.items()} for name, table in SETTINGS.items()}
STUDY_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    name: {study: {k: s.value for k, s in table.items()} for study, table in studies.items()}
    for name, studies in STUDY_SETTINGS.items()
}


def resolve(preset: str | None, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The options a run uses: the preset's, overridden by the explicit ones that are not None."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    options = dict(PRESETS.get(preset, {}))
    options.update({k: v for k, v in explicit.items() if v is not None})
    return options


def resolve_study(preset: str | None, study: str, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """A study's estimator options: the preset's settings for that study, then the explicit ones.

    The sampler may come back as a ``FittedLogistic``: it needs the model's log-SNR range.
    """
    options = {}
    if preset is not None:
        if preset not in STUDY_PRESETS:
            raise ConfigError(f"unknown study preset {preset!r}; expected one of {sorted(STUDY_PRESETS)}")
        if study not in STUDY_PRESETS[preset]:
            raise ConfigError(f"preset {preset!r} has settings for the studies {sorted(STUDY_PRESETS[preset])}, "
                              f"not {study!r}")
        options.update(STUDY_PRESETS[preset][study])
    options.update({k: v for k, v in explicit.items() if v is not None})
    return options
