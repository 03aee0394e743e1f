"""PyTorch (diffusers / transformers) state dicts -> Flax parameter trees, strictly.

The Flax modules name their submodules after the PyTorch tensor names, so the mapping is a
rule, not a table: ``down_blocks.0.resnets.1.conv1.weight`` becomes
``("down_blocks_0", "resnets_1", "conv1", "kernel")``. A numeric component joins the one before
it with ``_``; the leaf ``weight`` becomes ``kernel`` (conv / dense, transposed into Flax
layout), ``scale`` (norms) or ``embedding`` (embeddings), whichever the Flax module declares.

Every tensor is checked against the module's expected parameter tree, and *all* problems are
reported together, by their PyTorch names, in one :class:`WeightsMismatchError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxpid.errors import WeightsMismatchError

_MAX_LISTED = 40  # per category; a wholly wrong checkpoint should not print thousands of lines


def torch_name_to_path(name: str) -> tuple[tuple[str, ...], str]:
    """``"a.0.b.weight"`` -> ``(("a_0", "b"), "weight")``: module path and leaf name."""
    parts = name.split(".")
    merged: list[str] = []
    for part in parts:
        if part.isdigit() and merged:
            merged[-1] = f"{merged[-1]}_{part}"
        else:
            merged.append(part)
    return tuple(merged[:-1]), merged[-1]


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def flax_path_to_torch_name(path: tuple[str, ...], *, ndim: int | None = None) -> str:
    """Inverse of the rule, used to name expected tensors in errors and to write checkpoints."""
    module, leaf = path[:-1], path[-1]
    parts: list[str] = []
    for component in module:
        head, sep, tail = component.rpartition("_")
        # Only list-built names (``down_blocks_0``) carry an index; ``linear_1`` is a real name.
        parts.append(component if not (sep and tail.isdigit() and head in _LIST_NAMES) else f"{head}.{tail}")
    torch_leaf = "weight" if leaf in ("kernel", "scale", "embedding") else leaf
    return ".".join(parts + [torch_leaf])


# Names of list attributes in diffusers / transformers modules; their numeric suffix is an index.
_LIST_NAMES = frozenset(
    {
        "down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers",
        "transformer_blocks", "layers", "layer", "to_out", "net", "blocks",
        "block",  # T5's encoder.block.N
    }
)


def _to_flax_layout(array: np.ndarray, leaf: str, expected_shape: tuple[int, ...]) -> np.ndarray:
    if leaf != "kernel":
        return array
    if array.ndim == 4 and len(expected_shape) == 4:  # conv [out, in, kh, kw] -> [kh, kw, in, out]
        return np.transpose(array, (2, 3, 1, 0))
    if array.ndim == 2 and len(expected_shape) == 2:  # linear [out, in] -> [in, out]
        return array.T
    if array.ndim == 4 and len(expected_shape) == 2 and array.shape[2:] == (1, 1):
        return array[:, :, 0, 0].T  # a 1x1 conv stored where Flax uses a dense layer
    if array.ndim == 2 and len(expected_shape) == 4 and expected_shape[:2] == (1, 1):
        return array.T[None, None]  # a linear layer stored where Flax uses a 1x1 conv
    return array  # let the shape check report it


def convert_state_dict(
    state: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    *,
    what: str,
    rename: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """Convert a PyTorch state dict into the Flax params tree ``expected`` describes.

    Args:
      state: tensor name -> array, as read from safetensors.
      expected: the model's params pytree (arrays or ``jax.ShapeDtypeStruct``).
      what: the component's name for error messages (``"unet"``, ``"text_encoder"``...).
      rename: maps a checkpoint name to its canonical name, or ``None`` to ignore the tensor
        (e.g. transformers' ``position_ids`` buffer).

    Returns:
      A nested dict of numpy arrays with exactly the structure of ``expected``; dtypes are the
      checkpoint's (cast later, once, to the chosen ``param_dtype``).

    Raises:
      WeightsMismatchError: listing every missing, unexpected and mis-shaped tensor.
    """
    expected_flat = _flatten(expected)
    modules: dict[tuple[str, ...], set[str]] = {}
    for path in expected_flat:
        modules.setdefault(path[:-1], set()).add(path[-1])

    converted: dict[tuple[str, ...], np.ndarray] = {}
    source_name: dict[tuple[str, ...], str] = {}
    unexpected: list[str] = []
    misshaped: list[str] = []
    misshaped_paths: set[tuple[str, ...]] = set()
    for original_name, array in state.items():
        name = rename(original_name) if rename is not None else original_name
        if name is None:
            continue
        module, leaf = torch_name_to_path(name)
        leaves = modules.get(module, set())
        if leaf == "weight":
            candidates = [c for c in ("kernel", "scale", "embedding", "weight") if c in leaves]
            leaf = candidates[0] if candidates else "kernel"
        path = module + (leaf,)
        if path not in expected_flat:
            unexpected.append(f"{original_name} {tuple(np.shape(array))}")
            continue
        if path in converted:
            unexpected.append(f"{original_name} (duplicate of {source_name[path]})")
            continue
        want = tuple(expected_flat[path].shape)
        value = _to_flax_layout(np.asarray(array), leaf, want)
        if tuple(value.shape) != want:
            misshaped.append(
                f"{original_name}: checkpoint {tuple(np.shape(array))}, model expects "
                f"{_torch_shape(want, leaf)} (Flax {want})"
            )
            misshaped_paths.add(path)
            continue
        converted[path] = value
        source_name[path] = original_name

    missing = [
        f"{flax_path_to_torch_name(path)} {_torch_shape(tuple(spec.shape), path[-1])}"
        for path, spec in expected_flat.items()
        if path not in converted and path not in misshaped_paths
    ]
    if missing or unexpected or misshaped:
        raise WeightsMismatchError(_mismatch_message(what, missing, unexpected, misshaped))
    return _unflatten(converted)


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if leaf == "kernel" and len(flax_shape) == 4:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    if leaf == "kernel" and len(flax_shape) == 2:
        return (flax_shape[1], flax_shape[0])
    return flax_shape


def _mismatch_message(what: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> str:
    lines = [f"{what}: checkpoint does not match the model configuration"]
    for title, items in (
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("tensors with the wrong shape", misshaped),
    ):
        if not items:
            continue
        lines.append(f"  {len(items)} {title}:")
        lines.extend(f"    {item}" for item in sorted(items)[:_MAX_LISTED])
        if len(items) > _MAX_LISTED:
            lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    lines.append("  Check that config.json belongs to these weights (same model family and size).")
    return "\n".join(lines)


def flax_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax params -> PyTorch-layout state dict (the inverse rule), for writing test folders."""
    state: dict[str, np.ndarray] = {}
    for path, value in _flatten(params).items():
        array = np.asarray(jax.device_get(value))
        leaf = path[-1]
        if leaf == "kernel" and array.ndim == 4:
            array = np.transpose(array, (3, 2, 0, 1))
        elif leaf == "kernel" and array.ndim == 2:
            array = array.T
        state[flax_path_to_torch_name(path)] = np.ascontiguousarray(array)
    return state
