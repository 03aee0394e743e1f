"""apply_checked: the loaded models are traced without flax re-checking every parameter's shape
(an eval_shape of its initializer each), with the same outputs; outside it flax still checks."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpid
from jaxpid.sd.models.checked import apply_checked


@pytest.fixture(scope="module")
def demo():
    return jaxpid.load_pipeline("demo")


def _count_eval_shape(monkeypatch) -> list[int]:
    calls = []
    original = jax.eval_shape

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(jax, "eval_shape", counting)
    return calls


def test_the_unet_traces_without_a_shape_check_per_parameter_and_gives_the_same_output(demo, monkeypatch):
    unet = demo.denoiser.unet
    params = demo.denoiser.params
    size = demo.image_size
    x = jax.random.normal(jax.random.key(0), (2, 3, *size))
    t = jnp.array([10, 500])
    cond = demo.encode_prompt(["a red circle", "a blue square"])
    calls = _count_eval_shape(monkeypatch)
    plain = jax.jit(lambda p, *a: unet.apply({"params": p}, *a))(params, x, t, cond)
    plain_checks = len(calls)
    calls.clear()
    checked = jax.jit(lambda p, *a: apply_checked(unet, p, *a))(params, x, t, cond)
    n_params = len(jax.tree.leaves(params))
    assert plain_checks >= n_params // 2  # flax: one eval_shape per parameter (kernel and bias: one each)
    assert len(calls) == 0
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(checked))


def test_outside_apply_checked_flax_still_rejects_a_wrong_shape(demo):
    encoder = demo.text_encoder
    ids = jnp.asarray(demo.tokenizer.encode(["a red circle"]))
    apply_checked(encoder.module, encoder.params, ids)  # installs the wrapper
    bad = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.zeros((leaf.shape[0] + 1,) + leaf.shape[1:], leaf.dtype)
        if "final_layer_norm" in jax.tree_util.keystr(path) and leaf.ndim == 1 else leaf, encoder.params)
    with pytest.raises(flax.errors.ScopeParamShapeError):
        encoder.module.apply({"params": bad}, ids)
    # a parameter the tree lacks is still an error inside apply_checked (flax's own path)
    missing = {k: v for k, v in encoder.params.items() if k != next(iter(encoder.params))}
    with pytest.raises(flax.errors.ScopeParamNotFoundError):
        apply_checked(encoder.module, missing, ids)
