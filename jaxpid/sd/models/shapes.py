"""A model's parameter shapes, remembered across processes beside the compilation cache.

The strict loader checks every checkpoint tensor against the Flax module's parameter tree, which
``jax.eval_shape(module.init, ...)`` derives by tracing the whole model: about half a second for
the demo's UNet on a CPU, paid again by every ``jaxpid`` run. Where JAX's persistent compilation
cache is on (``jaxpid.use_compilation_cache``; the CLI turns it on), the tree of shapes is kept as
a small JSON file in that folder, keyed by the architecture, the parameter dtype, the versions of
jax and flax and the source of the module that defines the model (a changed module computes
afresh). Without the cache, nothing is written and the shapes are traced as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxpid.io.atomic import write_json

FORMAT = 1
FOLDER = "jaxpid-param-shapes"


def remembered_shapes(kind: str, config: Any, dtype: Any, module_file: str, trace: Callable[[], dict]) -> dict:
    """``trace()`` (a params pytree of ``jax.ShapeDtypeStruct``), or the same tree remembered from an
    earlier process for this (kind, config, dtype, module source, jax and flax versions)."""
    cache = jax.config.jax_compilation_cache_dir
    if not cache:
        return trace()
    key = hashlib.sha256(json.dumps({
        "format": FORMAT, "kind": kind, "config": repr(config), "dtype": str(jnp.dtype(dtype)),
        "module": hashlib.sha256(Path(module_file).read_bytes()).hexdigest(),
        "jax": jax.__version__, "flax": flax.__version__,
    }, sort_keys=True).encode()).hexdigest()
    path = Path(cache) / FOLDER / f"{key}.json"
    try:
        return _tree(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # absent, or damaged: trace it (again)
        pass
    tree = trace()
    try:
        write_json(path, _record(tree))
    except OSError:  # a read-only cache folder costs the next run the tracing, nothing else
        pass
    return tree


def _record(tree: dict) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"leaves": [[[_key(k) for k in path], list(leaf.shape), str(leaf.dtype)] for path, leaf in leaves]}


def _key(entry) -> str:
    for name in ("key", "name", "idx"):
        if hasattr(entry, name):
            return str(getattr(entry, name))
    raise TypeError(f"unexpected pytree path entry {entry!r}")


def _tree(record: dict) -> dict:
    tree: dict = {}
    for path, shape, dtype in record["leaves"]:
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
    if not tree:
        raise KeyError("no leaves")
    return tree
