"""One-flag settings that reproduce each paper's conventions (docs/method.md#presets).

- ``diffusionpid`` (Dewan, Zawar et al., NeurIPS 2024): Finn–Lizier pointwise PID (``ppid``)
  with BERT masked-LM word priors, 50 log-SNR samples from the truncated logistic proposal,
  generation seed 42, image-level atoms from the *mean* of the pixel maps.
- ``infodecomp`` (Kong et al., ICLR 2024): 100 log-SNR samples (logistic proposal), information
  in nats per image (the *sum* of the pixel map), minimum-information redundancy.

Both use the papers' orthogonal form and plain PID (the context is not kept unless asked for),
where jaxpid's own defaults are the anchored form and conditional PID (docs/validation.md).

A preset only names the options it sets; everything else keeps the configuration classes'
defaults, and options given explicitly win over the preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxpid.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "diffusionpid": {
        "measure": "ppid",
        "n_samples": 50,
        "sampler": "logistic",
        "seeds": (42,),
        "level": "mean",
        "prior": "bert:bert-base-uncased",
        "form": "orthogonal",
        "conditional": False,
    },
    "infodecomp": {
        "measure": "mmi",
        "n_samples": 100,
        "sampler": "logistic",
        "level": "sum",
        "form": "orthogonal",
        "conditional": False,
    },
}


def resolve(preset: str | None, explicit: Mapping[str, Any]) -> dict[str, Any]:
    """The options a run uses: the preset's, overridden by the explicit ones that are not None."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    options = dict(PRESETS.get(preset, {}))
    options.update({k: v for k, v in explicit.items() if v is not None})
    return options
