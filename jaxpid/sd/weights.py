"""Files of a diffusers pipeline folder: configs, safetensors weights, hub downloads, identity.

This module reads files and nothing else: no Flax, no models. It returns component weights as
``dict[str, np.ndarray]`` under their PyTorch names; :mod:`jaxpid.sd.models.convert` maps them onto
the Flax modules.

Pickle checkpoints (``.bin``, ``.ckpt``, ``.pt``) are refused, never unpickled: unpickling runs
arbitrary code from the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import huggingface_hub
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so bf16 safetensors load)
import numpy as np
import safetensors.numpy

from jaxpid.errors import (
    ConfigError,
    MissingShardError,
    ModelNotFoundError,
    NotAPipelineError,
    PickleRefusedError,
    WeightsError,
)

# The file names diffusers (models) and transformers (text encoders) save weights under.
WEIGHT_BASENAMES = ("diffusion_pytorch_model", "model")
PIPELINE_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2",
                       "transformer", "text_encoder_3", "tokenizer_3")
SDXL_COMPONENTS = ("text_encoder_2", "tokenizer_2")  # OpenCLIP bigG with projection and its tokenizer
# SD 1.x / 2.x (one text encoder), SDXL base (two, pooled + size ids), SD3 / 3.5 (rectified-flow MMDiT,
# CLIP-L + CLIP-G + optional T5)
FAMILIES = ("sd", "sdxl", "sd3")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
DEMO_MODEL = "demo"  # the model name of the small demo pipeline shipped in the package
DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
_FINGERPRINT_EDGE_BYTES = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_VARIANT = r"[A-Za-z0-9_]+"


# --------------------------------------------------------------------------------------------
# configs


def read_json_config(folder: str | Path, filename: str = "config.json") -> dict[str, Any]:
    """The JSON object in ``folder/filename``.

    Raises:
      ConfigError: the file is missing, is not valid JSON, or does not hold a JSON object.
    """
    path = Path(folder) / filename
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (every diffusers component folder has one)")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not readable as JSON ({error})") from error
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_model_index(folder: str | Path) -> dict[str, Any]:
    """``model_index.json`` of a pipeline folder, checked to name the parts jaxpid needs.

    ``vae`` may be absent or null (a pixel-space model); ``unet``, ``text_encoder``,
    ``tokenizer`` and ``scheduler`` must be listed. A folder with a ``transformer`` instead must
    be a Stable Diffusion 3 pipeline (``SD3_COMPONENTS``).

    Raises:
      NotAPipelineError: no ``model_index.json``, a required component missing from it, an
        SDXL refiner-only folder, or a transformer pipeline of another family (naming the component).
    """
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise NotAPipelineError(
            f"{folder} is not a diffusers pipeline folder: it has no model_index.json "
            "(a pipeline saved with `DiffusionPipeline.save_pretrained` has one, next to the "
            "unet/, text_encoder/, tokenizer/, scheduler/ and vae/ folders)"
        )
    index = read_json_config(folder, "model_index.json")
    if _listed(index, "transformer") or str(index.get("_class_name", "")).startswith("StableDiffusion3"):
        _check_sd3_index(folder, index)  # a transformer pipeline: SD3, or refused naming its component
        return index
    _refuse_refiner(folder, index)
    missing = [
        name for name in ("unet", "text_encoder", "tokenizer", "scheduler") if not _listed(index, name)
    ]
    if missing:
        raise NotAPipelineError(
            f"{folder / 'model_index.json'} does not list the component(s) {missing}; jaxpid needs "
            "a text-conditioned pipeline with unet, text_encoder, tokenizer and scheduler"
        )
    return index


def _refuse_refiner(folder: Path, index: dict[str, Any]) -> None:
    refiner = index.get("requires_aesthetics_score") or (
        _listed(index, "text_encoder_2") and not _listed(index, "text_encoder")
    )
    if refiner:
        raise NotAPipelineError(
            f"{folder / 'model_index.json'}: an SDXL refiner-only folder ({index.get('_class_name')}: "
            "text_encoder_2 without text_encoder, aesthetic-score time ids) is not supported; jaxpid "
            "analyses text-to-image SDXL base pipelines (text_encoder + text_encoder_2)"
        )


def pipeline_family(folder: str | Path, index: dict[str, Any]) -> str:
    """``"sdxl"`` for a Stable Diffusion XL base folder, ``"sd"`` for SD 1.x / 2.x, ``"sd3"`` for a
    Stable Diffusion 3 folder (an index ``read_model_index`` accepted with a transformer; see ``FAMILIES``).

    A folder is SDXL when its pipeline class says so, it lists ``text_encoder_2``, or its UNet has
    the ``text_time`` addition embedding; it must then hold ``text_encoder_2`` and ``tokenizer_2``.

    Raises:
      NotAPipelineError: an SDXL folder missing ``text_encoder_2`` or ``tokenizer_2`` (in
        model_index.json or on disk).
      ConfigError: an unreadable ``unet/config.json``.
    """
    folder = Path(folder)
    if _listed(index, "transformer"):  # read_model_index let only SD3's MMDiT through
        return "sd3"
    unet = read_json_config(folder / "unet")
    marks = []
    if "XL" in str(index.get("_class_name", "")):
        marks.append(f"model_index.json _class_name {index.get('_class_name')!r}")
    if _listed(index, "text_encoder_2"):
        marks.append("model_index.json lists text_encoder_2")
    if unet.get("addition_embed_type") == "text_time":
        marks.append("unet addition_embed_type 'text_time'")
    if not marks:
        return "sd"
    for name, kind in zip(SDXL_COMPONENTS, ("CLIPTextModelWithProjection", "CLIPTokenizer")):
        if not _listed(index, name):
            problem = "model_index.json does not list it"
        elif not (folder / name).is_dir():
            problem = f"the folder {folder / name} is missing"
        else:
            continue
        raise NotAPipelineError(
            f"{folder}: an SDXL pipeline ({'; '.join(marks)}) needs component {name} ({kind}), but {problem}"
        )
    return "sdxl"


# --------------------------------------------------------------------------------------------
# Stable Diffusion 3 folders (a transformer instead of a unet)

SD3_COMPONENTS = {  # component -> the class model_index.json must name (library, class)
    "transformer": "SD3Transformer2DModel",
    "text_encoder": "CLIPTextModelWithProjection",
    "text_encoder_2": "CLIPTextModelWithProjection",
    "tokenizer": None,
    "tokenizer_2": None,
    "scheduler": "FlowMatchEulerDiscreteScheduler",
}
SD3_OPTIONAL = {"text_encoder_3": "T5EncoderModel", "tokenizer_3": None, "vae": "AutoencoderKL"}


def _check_sd3_index(folder: Path, index: dict[str, Any]) -> None:
    """A transformer pipeline is supported when it is Stable Diffusion 3's; otherwise name the part.

    Raises:
      NotAPipelineError: a component of another class (Flux's transformer or T5 text_encoder_2, ...),
        or a required SD3 component missing, or text_encoder_3 without tokenizer_3.
    """
    where = f"{folder / 'model_index.json'} ({index.get('_class_name')})"
    for name, wanted in {**SD3_COMPONENTS, **SD3_OPTIONAL}.items():
        listed = _listed(index, name)
        if not listed:
            if name in SD3_COMPONENTS:
                raise NotAPipelineError(f"{where}: does not list component {name}, which a Stable Diffusion 3 "
                                        f"pipeline needs ({wanted or 'its tokenizer'})")
            continue
        entry = index[name]
        found = entry[-1] if isinstance(entry, (list, tuple)) and entry else entry
        if wanted is not None and found != wanted:
            raise NotAPipelineError(
                f"{where}: component {name} is {found!r}; jaxpid supports transformer pipelines of the Stable "
                f"Diffusion 3 family only ({name}: {wanted})")
    if _listed(index, "text_encoder_3") != _listed(index, "tokenizer_3"):
        raise NotAPipelineError(f"{where}: text_encoder_3 and tokenizer_3 must be listed together")


def has_component(index: dict[str, Any], name: str) -> bool:
    """Whether ``model_index.json`` lists component ``name`` with a non-null entry."""
    return _listed(index, name)


def _listed(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    if entry is None:
        return False
    # diffusers writes [library, class]; an unused optional part is [null, null].
    if isinstance(entry, (list, tuple)):
        return any(item is not None for item in entry)
    return True


# --------------------------------------------------------------------------------------------
# weights


def find_weight_files(folder: str | Path, variant: str | None = None) -> list[Path]:
    """The safetensors file(s) that hold one component's weights.

    Order of preference: the single file or index of ``variant`` if one is given; otherwise the
    plain single file or index, then -- if the folder holds exactly one variant and no plain
    weights -- that variant. A sharded checkpoint returns all its shards (from the index's
    ``weight_map``).

    Raises:
      WeightsError: no safetensors weights (or not the requested variant), or several variants
        with none chosen.
      PickleRefusedError: only pickle checkpoints (``.bin`` / ``.ckpt`` / ``.pt``) are present.
      MissingShardError: the index names a shard that does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: component folder not found")
    names = {path.name for path in folder.iterdir() if path.is_file()}
    chosen = variant if variant is not None else ""
    for base in WEIGHT_BASENAMES:
        single, index = _weight_names(base, chosen)
        if single in names:
            return [folder / single]
        if index in names:
            return _shards_from_index(folder / index)
    if variant is not None:
        raise WeightsError(
            f"{folder}: no weights of variant {variant!r} (looked for "
            f"{[_weight_names(base, variant)[0] for base in WEIGHT_BASENAMES]}); "
            f"available variants: {sorted(_variants(names)) or 'none'}"
        )
    found = _variants(names)
    if len(found) == 1:
        return find_weight_files(folder, next(iter(found)))
    if len(found) > 1:
        raise WeightsError(
            f"{folder}: several weight variants {sorted(found)} and no plain weights; "
            "choose one with variant=..."
        )
    pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise PickleRefusedError(
            f"{folder / pickles[0]}: jaxpid reads safetensors only and will not unpickle "
            f"{pickles}. Convert once, in a trusted environment with diffusers: "
            "`DiffusionPipeline.from_pretrained(path).save_pretrained(new_path, "
            "safe_serialization=True)` (or the component class's from_pretrained/save_pretrained)."
        )
    raise WeightsError(
        f"{folder}: no weights found (expected diffusion_pytorch_model.safetensors, "
        "model.safetensors or a *.safetensors.index.json)"
    )


def _weight_names(base: str, variant: str) -> tuple[str, str]:
    """(single file, shard index) names; diffusers/transformers put the variant before the suffix."""
    if not variant:
        return f"{base}.safetensors", f"{base}.safetensors.index.json"
    return f"{base}.{variant}.safetensors", f"{base}.safetensors.index.{variant}.json"


def _variants(names: set[str]) -> set[str]:
    found: set[str] = set()
    for base in WEIGHT_BASENAMES:
        single = re.compile(rf"^{base}\.({_VARIANT})\.safetensors$")
        index = re.compile(rf"^{base}\.safetensors\.index\.({_VARIANT})\.json$")
        for name in names:
            match = single.match(name) or index.match(name)
            if match:
                found.add(match.group(1))
    return found


def _shards_from_index(index_path: Path) -> list[Path]:
    index = read_json_config(index_path.parent, index_path.name)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index_path}: no 'weight_map' in the shard index")
    shards = sorted(set(weight_map.values()))
    missing = [name for name in shards if not (index_path.parent / name).is_file()]
    if missing:
        raise MissingShardError(
            f"{index_path.parent}: shard(s) {missing} listed in {index_path.name} are missing "
            "(an interrupted download or copy?)"
        )
    return [index_path.parent / name for name in shards]


def load_component_weights(folder: str | Path, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of one component folder, by PyTorch name, in the file's dtype (fp16/bf16 kept).

    Raises:
      WeightsError (and subclasses): see :func:`find_weight_files`; also an unreadable file or a
        tensor present in two shards.
    """
    state: dict[str, np.ndarray] = {}
    for path in find_weight_files(folder, variant):
        try:
            tensors = safetensors.numpy.load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError and OSError
            raise WeightsError(f"{path}: not a readable safetensors file ({error})") from error
        duplicated = sorted(set(tensors) & set(state))
        if duplicated:
            raise WeightsError(f"{path}: tensors {duplicated[:10]} also appear in another shard")
        state.update(tensors)
    return state


def read_safetensors_header(path: str | Path) -> bytes:
    """The raw JSON header of a safetensors file (tensor names, dtypes, shapes, offsets)."""
    with open(path, "rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) != 8:
            raise WeightsError(f"{path}: too short to be a safetensors file")
        (size,) = struct.unpack("<Q", size_bytes)
        header = handle.read(size)
    if len(header) != size:
        raise WeightsError(f"{path}: truncated safetensors header")
    return header


# --------------------------------------------------------------------------------------------
# identity


def fingerprint(folder: str | Path, variant: str | None = None) -> str:
    """A sha256 hex digest identifying a pipeline folder's content, cheap for multi-GB weights.

    It covers every JSON / text file of the pipeline (model_index, configs, tokenizer files) in
    full, and for each safetensors file its name, size, header (names, dtypes, shapes and
    offsets of all tensors) and the bytes of its first and last MiB. Hashing all weights (5 GB
    for SD 2.1) would take seconds on every load; a retrained or fine-tuned checkpoint changes
    values throughout, so the edges change with them. An edit of values strictly inside a
    file, keeping its size and header, is not detected -- acceptable for naming results and
    caches, not an integrity check. The requested ``variant`` is part of the identity.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    digest.update(f"variant={variant or ''}\n".encode())
    for path in sorted(_fingerprint_files(folder)):
        relative = path.relative_to(folder).as_posix()
        digest.update(f"file={relative}\n".encode())
        if path.suffix == ".safetensors":
            size = path.stat().st_size
            digest.update(f"size={size}\n".encode())
            digest.update(read_safetensors_header(path))
            with open(path, "rb") as handle:
                digest.update(handle.read(_FINGERPRINT_EDGE_BYTES))
                handle.seek(max(0, size - _FINGERPRINT_EDGE_BYTES))
                digest.update(handle.read(_FINGERPRINT_EDGE_BYTES))
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _fingerprint_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    if (folder / "model_index.json").is_file():
        files.append(folder / "model_index.json")
    for component in PIPELINE_COMPONENTS:
        part = folder / component
        if part.is_dir():
            files.extend(
                path for path in part.iterdir()
                if path.is_file() and path.suffix in (".json", ".txt", ".safetensors")
            )
    return files


# --------------------------------------------------------------------------------------------
# hub


def hub_allow_patterns(variant: str | None = None) -> list[str]:
    """Files of a hub pipeline jaxpid downloads: configs, tokenizer, safetensors weights only.

    No pickle checkpoints, no safety checker or feature extractor, no single-file checkpoints
    at the repository root (SD repositories keep a 5 GB one there).
    """
    patterns = ["model_index.json", "scheduler/scheduler_config.json"]
    for tokenizer in ("tokenizer", "tokenizer_2", "tokenizer_3"):  # tokenizer_2: SDXL, SD3; tokenizer_3: SD3's T5
        patterns += [f"{tokenizer}/*.json", f"{tokenizer}/*.txt"]
    for component in ("unet", "vae", "text_encoder", "text_encoder_2", "transformer", "text_encoder_3"):
        patterns.append(f"{component}/config.json")
        for base in WEIGHT_BASENAMES:
            single, index = _weight_names(base, variant or "")
            patterns += [f"{component}/{single}", f"{component}/{index}"]
            shard_stem = f"{base}.{variant}" if variant else base
            patterns.append(f"{component}/{shard_stem}-*-of-*.safetensors")
    return patterns


def demo_path() -> Path:
    """The shipped demo pipeline folder (model name ``"demo"``; see ``jaxpid.demo``).

    Raises:
      ModelNotFoundError: the folder is missing from this installation (e.g. a source tree
        whose package data was not installed); ``python -m jaxpid.demo.train --out DIR`` makes one.
    """
    if not (DEMO_DIR / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"the demo model is missing: no {DEMO_DIR / 'model_index.json'}. Reinstall jaxpid with its "
            "package data, or train one with `python -m jaxpid.demo.train --out DIR` and load DIR"
        )
    return DEMO_DIR


def looks_like_hub_id(name: str) -> bool:
    """``"org/name"`` with hub-legal characters, and not a path-like string."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "~"))


def resolve_model_path(
    path_or_hub_id: str | Path,
    *,
    variant: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local pipeline folder for a path, a Hugging Face hub id, or ``"demo"``.

    ``"demo"`` is the pipeline shipped in the package. An existing local folder is used as it
    is. Otherwise a hub id (``"org/name"``) is fetched with ``huggingface_hub.snapshot_download``,
    restricted to :func:`hub_allow_patterns`.

    Raises:
      ModelNotFoundError: neither the demo, an existing folder nor a hub id, or the download failed.
    """
    if str(path_or_hub_id) == DEMO_MODEL:
        return demo_path()
    local = Path(path_or_hub_id).expanduser()
    if local.is_dir():
        return local
    name = str(path_or_hub_id)
    if local.exists():
        raise ModelNotFoundError(f"{name}: is a file, not a pipeline folder")
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(
            f"{name}: no such folder, and not a hub id of the form 'organisation/model'"
        )
    try:
        downloaded = huggingface_hub.snapshot_download(
            repo_id=name,
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            allow_patterns=hub_allow_patterns(variant),
            local_files_only=local_files_only,
        )
    except Exception as error:  # network, authentication, unknown repository
        raise ModelNotFoundError(
            f"{name}: no local folder of that name, and downloading it from the hub failed: {error}"
        ) from error
    return Path(downloaded)

