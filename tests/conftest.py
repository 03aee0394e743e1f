"""Test set-up: 8 fake CPU devices (sharding is exercised everywhere) and shared helpers."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download

# The test helper modules (sd_folders, sd3_folders, notebooks) import by name: pytest's default
# "prepend" import mode puts this folder (no __init__.py) on sys.path for every test module.

import contextlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxpid.devices import default_cache_dir, use_compilation_cache  # noqa: E402

# The persistent compilation cache (its own folder; JAXPID_CACHE_DIR=off runs without): a second
# run of the suite loads its programs instead of compiling them. The CLI, called in-process by
# the tests, resolves the same folder from the variable. Compilation counts are unchanged: JAX
# reports a program loaded from the cache as a compilation too (tests/test_compilation_cache.py).
os.environ.setdefault("JAXPID_CACHE_DIR", str(default_cache_dir().parent / "xla-tests"))
use_compilation_cache()


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations inside the block: ``with count_compilations() as n: ...; n[0]``."""
    counter = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture
def compilations():
    return count_compilations


# ---------------------------------------------------------------------------------------------
# The tiny random models most tests share (session-wide: written once; their compiled programs are
# shared too, since the pass's plan and shapes are the same). A test varies a size only where the
# test is about it. Tests must not modify these folders.


@pytest.fixture(scope="session")
def sd1_folder(tmp_path_factory):
    """A tiny random SD 1.x folder with a VAE (16 px images, 8x8 latents), seed 0."""
    from sd_folders import write_random_pipeline

    return write_random_pipeline(tmp_path_factory.mktemp("shared") / "sd1", "sd1", seed=0)


@pytest.fixture(scope="session")
def sd1_pixel_folder(tmp_path_factory):
    """The same without a VAE (the UNet works on pixels: the fastest pipeline), seed 0."""
    from sd_folders import write_random_pipeline

    return write_random_pipeline(tmp_path_factory.mktemp("shared") / "sd1-pixels", "sd1", seed=0, with_vae=False)


@pytest.fixture(scope="session")
def sd1_pipeline(sd1_folder):
    import jaxpid

    return jaxpid.load_pipeline(sd1_folder)


@pytest.fixture(scope="session")
def sd1_pixel_pipeline(sd1_pixel_folder):
    import jaxpid

    return jaxpid.load_pipeline(sd1_pixel_folder)
