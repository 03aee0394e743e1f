"""The chunk size chosen from free device memory (jaxpid.core.memory), on made-up memory figures:
no accelerator is needed to pin the arithmetic, and the reader of device statistics is checked
against fake devices shaped like JAX's GPU / TPU / CPU answers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import pytest

from jaxpid.core import (
    FusedPass,
    bytes_per_evaluation,
    chunk_size_for_device,
    chunk_size_for_memory,
    free_device_memory,
)
from jaxpid.errors import ConfigError

GiB = 2**30
MiB = 2**20


class FakeDevice:
    """Answers ``memory_stats()`` as a JAX device does: a dict, None (CPU), or an exception."""

    def __init__(self, stats=None, error: Exception | None = None):
        self.stats, self.error = stats, error

    def memory_stats(self):
        if self.error is not None:
            raise self.error
        return self.stats


# An H100 with JAX's default preallocation (75 % of 80 GB) and SD 2.1 bf16 weights resident.
H100_STATS = {"bytes_limit": 60 * GiB, "bytes_in_use": 2 * GiB, "peak_bytes_in_use": 3 * GiB,
              "largest_free_block_bytes": 58 * GiB}


def test_free_memory_is_the_allocator_limit_minus_what_is_in_use():
    assert free_device_memory(FakeDevice(H100_STATS)) == 58 * GiB
    # a TPU reports the same keys; an older runtime only the reservable limit
    assert free_device_memory(FakeDevice({"bytes_limit": 16 * GiB, "bytes_in_use": 0})) == 16 * GiB
    assert free_device_memory(FakeDevice({"bytes_reservable_limit": 8 * GiB, "bytes_in_use": GiB})) == 7 * GiB
    # more in use than the limit (e.g. a pool grown past it) is no free memory, not negative
    assert free_device_memory(FakeDevice({"bytes_limit": GiB, "bytes_in_use": 2 * GiB})) == 0


@pytest.mark.parametrize("device", [
    FakeDevice(None),  # the CPU backend: memory is not tracked
    FakeDevice({}),
    FakeDevice({"bytes_in_use": 123}),  # no limit reported
    FakeDevice(error=NotImplementedError("memory_stats")),
    object(),  # not a device at all
], ids=["none", "empty", "no-limit", "raises", "no-method"])
def test_free_memory_is_none_where_it_is_not_tracked(device):
    assert free_device_memory(device) is None
    assert chunk_size_for_device(device, MiB, 4) is None


def test_free_memory_of_this_machines_cpu_devices_is_not_tracked():
    assert jax.default_backend() == "cpu"
    assert all(free_device_memory(d) is None for d in jax.devices())


def test_the_rule_is_the_arithmetic_it_states():
    # 58 GiB free, 1 GiB reserved, 80 % usable: 45.6 GiB; a sample of 4 evaluations of 150 MiB = 600 MiB
    usable = 0.8 * (58 * GiB - GiB)
    fits = int(usable // (4 * 150 * MiB))
    assert fits == 77
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB, power_of_two=False) == fits
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB) == 64  # rounded down to 2**6
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB, headroom=1.0, power_of_two=False) \
        == int((57 * GiB) // (600 * MiB))
    # more conditionings (k = 3: S = 8) halve it
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 8, reserved_bytes=GiB, power_of_two=False) == fits // 2
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB, max_chunk=16) == 16


def test_the_chunk_is_balanced_over_the_items_of_a_device():
    # 100 samples on one device, memory for 77 per step: 2 steps of 50, not 64 + 36 padded to 128
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB, items_per_device=100) == 50
    # fewer items than fit: one step holding exactly them
    assert chunk_size_for_memory(58 * GiB, 150 * MiB, 4, items_per_device=13) == 13
    # every balanced chunk fits and takes the fewest steps memory allows
    for items in range(1, 300, 7):
        chunk = chunk_size_for_memory(58 * GiB, 150 * MiB, 4, reserved_bytes=GiB, items_per_device=items)
        assert 1 <= chunk <= min(items, 77)
        assert math.ceil(items / chunk) == math.ceil(items / min(items, 77))


def test_more_free_memory_never_gives_a_smaller_chunk():
    chunks = [chunk_size_for_memory(free * GiB, 150 * MiB, 4) for free in range(1, 81)]
    assert chunks == sorted(chunks) and chunks[0] >= 1 and chunks[-1] == 64
    assert all(c & (c - 1) == 0 for c in chunks)  # powers of two


def test_too_little_memory_is_a_specific_error_naming_the_figures():
    with pytest.raises(ConfigError, match="not even one log-SNR sample fits") as error:
        chunk_size_for_memory(GiB, 300 * MiB, 4)
    assert "1,258,291,200 bytes" in str(error.value) and "4 conditionings" in str(error.value)
    with pytest.raises(ConfigError):
        chunk_size_for_memory(GiB, MiB, 4, reserved_bytes=2 * GiB)


@pytest.mark.parametrize("kwargs", [
    {"free_bytes": -1}, {"bytes_per_item": 0}, {"n_conditionings": 0}, {"headroom": 0.0}, {"headroom": 1.5},
    {"headroom": True}, {"max_chunk": 0}, {"items_per_device": 0}, {"free_bytes": 1.5e9},
])
def test_invalid_figures_are_refused(kwargs):
    args = {"free_bytes": GiB, "bytes_per_item": MiB, "n_conditionings": 4, **kwargs}
    with pytest.raises(ConfigError):
        chunk_size_for_memory(args.pop("free_bytes"), args.pop("bytes_per_item"), args.pop("n_conditionings"), **args)


def test_bytes_per_evaluation_from_a_compiled_pass():
    assert bytes_per_evaluation(640 * MiB, 64) == 10 * MiB
    assert bytes_per_evaluation(640 * MiB + 100, 64, fixed_bytes=100) == 10 * MiB
    assert bytes_per_evaluation(10, 3) == 4  # rounded up
    assert bytes_per_evaluation(0, 8) == 1
    with pytest.raises(ConfigError):
        bytes_per_evaluation(10, 0)


def test_the_fake_gpu_rule_end_to_end_with_a_real_compiled_pass():
    """A compiled pass's scratch size feeds the rule: the chunk it picks for a fake device with
    N times that scratch free lets N times as many evaluations run per step."""
    denoise = lambda z, logsnr, cond: z * jnp.tanh(cond[:, :1, None, None]) + 0.1 * logsnr[:, None, None, None]
    x = jnp.ones((1, 2, 8, 8))
    conds = jnp.arange(4.0)[:, None] * jnp.ones((4, 3))
    fused = FusedPass(denoise, n_samples=64, chunk_size=4, devices=jax.devices()[:1])
    compiled = fused.compile(fused.prepare(x, conds, key=jax.random.key(0)))
    assert compiled.temp_bytes and compiled.temp_bytes > 0
    per_eval = bytes_per_evaluation(compiled.temp_bytes, 4 * 4)
    device = FakeDevice({"bytes_limit": 16 * per_eval * 16, "bytes_in_use": 0})
    chunk = chunk_size_for_device(device, per_eval, 4, headroom=1.0)
    assert chunk == 64  # 16x the scratch of a 4-sample chunk: 64 samples per step
    assert chunk_size_for_device(device, per_eval, 4, headroom=1.0, items_per_device=50) == 50
