"""The parameter shapes the strict loader checks against, remembered beside the compilation cache:
the same tree as tracing the module, keyed so that another architecture, dtype or module source
traces afresh, and a damaged file is traced again."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from jaxpid.sd.models import shapes, unet
from jaxpid.sd.models.unet import UNetConfig


@contextlib.contextmanager
def cache_dir(value):
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", value)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def _config():
    from sd_folders import unet_config

    return UNetConfig.from_dict(unet_config("sd1"))


def test_remembered_shapes_equal_the_traced_ones_and_are_keyed_by_what_decides_them(tmp_path):
    with cache_dir(str(tmp_path)):
        _check_remembered(tmp_path)


def _check_remembered(tmp_path):
    config = _config()
    traced = unet._trace_params(config, jnp.float32)
    first = unet.expected_params(config)  # traces and writes
    files = list((tmp_path / shapes.FOLDER).glob("*.json"))
    assert len(files) == 1
    calls = []
    again = shapes.remembered_shapes("unet", config, jnp.float32, unet.__file__, lambda: calls.append(1) or {})
    assert calls == []  # read back, not traced
    assert jax.tree.map(lambda a: (a.shape, a.dtype), again) == jax.tree.map(lambda a: (a.shape, a.dtype), traced)
    assert jax.tree.structure(first) == jax.tree.structure(traced)
    # another dtype or module source: another key, traced afresh
    unet.expected_params(config, jnp.bfloat16)
    other = tmp_path / "module.py"
    other.write_text("# another source\n")
    shapes.remembered_shapes("unet", config, jnp.float32, str(other), lambda: calls.append(2) or traced)
    assert calls == [2] and len(list((tmp_path / shapes.FOLDER).glob("*.json"))) == 3
    # a damaged file is traced again (and rewritten)
    files[0].write_text("{not json")
    assert jax.tree.structure(unet.expected_params(config)) == jax.tree.structure(traced)


def test_without_a_cache_nothing_is_written():
    calls = []
    with cache_dir(None):
        assert shapes.remembered_shapes("unet", _config(), jnp.float32, unet.__file__,
                                        lambda: calls.append(1) or {"a": 1}) == {"a": 1}
    assert calls == [1]


