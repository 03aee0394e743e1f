"""Run a saved analysis again from its ``result.json`` alone (bit for bit on the same setup).

A result folder's record holds the run configuration (estimator with its key, decomposition,
word removal, generation, seeds, priors), the prompt and its words, where the images came from
and the model's identity; that is all ``rerun`` uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.images import Images, given_images
from jaxpid.analysis.prompt_pid import PromptPID, Stage, analyze
from jaxpid.analysis.words import WordInformation, word_information
from jaxpid.errors import ConfigError
from jaxpid.sd.pipeline import ModelSpec, Pipeline, load_image
from jaxpid.sd.prompts import Source, source_spec


def read_record(result: str | Path | dict) -> dict:
    """A result record: a dict as it is, or ``result.json`` (or the folder holding it) read."""
    if isinstance(result, dict):
        return result
    path = Path(result)
    if path.is_dir():
        path = path / "result.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such result file (a jaxpid pid / mi --out folder holds result.json)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not readable as a jaxpid result ({error})") from None
    if record.get("kind") not in ("pid", "mi") or "run" not in record.get("config", {}):
        raise ConfigError(f"{path}: not a jaxpid pid / mi result this version can run again "
                          "(results written before jaxpid recorded its run configuration have no 'run' entry)")
    return record


def load_recorded_model(record: dict) -> Pipeline:
    """The pipeline named in a record, with its dtype, parameter dtype, attention and variant."""
    return ModelSpec.from_identity(record["config"]["model"]).load()


def rerun(
    result: str | Path | dict,
    pipeline: Pipeline | None = None,
    *,
    devices=None,
    on_stage: Stage | None = None,
) -> PromptPID | WordInformation:
    """The analysis recorded in ``result`` (a result.json, its folder, or its dict), run again.

    Args:
      pipeline: the model to use; default: loaded as recorded. Its content fingerprint must
        match the record's.

    Raises:
      ConfigError: not a result record, a model whose content differs from the recorded one,
        or a given image file that is no longer there.
    """
    record = read_record(result)
    config = record["config"]
    pipeline = pipeline or load_recorded_model(record)
    if pipeline.fingerprint != config["model"]["fingerprint"]:
        raise ConfigError(f"the model {pipeline.name!r} is not the one recorded ({config['model']['name']!r}): "
                          "their content fingerprints differ")
    run = RunConfig.from_dict(config["run"])
    images = _recorded_images(pipeline, config["images"])
    if record["kind"] == "mi":
        words = [source_spec(config["prompt"], Source(w["word"], w["position"])) for w in config["words"]]
        return word_information(pipeline, config["prompt"], words, run, images=images, devices=devices,
                                on_stage=on_stage)
    sources = [source_spec(config["prompt"], Source(s["word"], s["position"])) for s in config["sources"]]
    prior = config.get("prior") or {}
    return analyze(pipeline, config["prompt"], sources, run, images=images, alternatives=config.get("alternatives"),
                   log_prior=np.asarray(prior["log_prior"]) if prior.get("log_prior") is not None else None,
                   allow_large_k=bool(config.get("allow_large_k")), devices=devices, on_stage=on_stage)


def _recorded_images(pipeline: Pipeline, origin: dict) -> Images | None:
    """None for generated images (the run regenerates them from its seeds); given images read."""
    if "generated" in origin:
        return None
    path = Path(origin["image"])
    if not path.is_file():
        raise ConfigError(f"the analysed image {path} is not there any more; it is needed to run the analysis again")
    return given_images(pipeline, load_image(path), str(path))


__all__ = ["load_recorded_model", "read_record", "rerun"]
