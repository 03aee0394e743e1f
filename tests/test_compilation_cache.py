"""The persistent compilation cache (jaxpid.use_compilation_cache): a second process reuses the
compiled programs and gets the same numbers; JAXPID_CACHE_DIR moves or turns it off."""

import json
import os
import subprocess
import sys
import textwrap

import jaxpid
from jaxpid.devices import default_cache_dir

# A fresh process: enable the cache, count compilations and cache hits of one fused pass on a
# Gaussian mixture, print them with the result.
PROGRAM = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import jaxpid
    from jaxpid.core.ground_truth import canonical_case
    folder = jaxpid.use_compilation_cache()
    counts = {"compiled": 0, "cache_hits": 0}
    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["compiled"] += 1
    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            counts["cache_hits"] += 1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    case = canonical_case("AND")
    pairs, x = case.sample(jax.random.key(0), 3)
    conds = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)
    res = jaxpid.information(case.denoiser, x, conds, key=jax.random.key(1), n_samples=8, conds_per_image=True)
    print(json.dumps({"folder": None if folder is None else str(folder), **counts,
                      "mi": res.mi_orthogonal.tolist()}))
""")


def _run(env_cache: str) -> dict:
    env = {**os.environ, "JAXPID_CACHE_DIR": env_cache}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_hits_the_cache_and_gets_the_same_numbers(tmp_path):
    first, second = _run(str(tmp_path / "xla")), _run(str(tmp_path / "xla"))
    assert first["folder"] == str(tmp_path / "xla") and any((tmp_path / "xla").iterdir())
    # JAX's compile event fires for a program loaded from the cache too (so the suite's
    # compilation counts hold with the cache on): in the second process every one is a cache hit
    assert first["compiled"] >= 10 and first["cache_hits"] < first["compiled"]
    assert second["cache_hits"] == second["compiled"] == first["compiled"]
    assert second["mi"] == first["mi"]  # a cached program computes exactly what a fresh one does
    off = _run("off")
    assert off["folder"] is None and off["cache_hits"] == 0 and off["mi"] == first["mi"]


def test_the_folder_comes_from_the_argument_the_variable_or_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "jaxpid" / "xla"
    assert str(jaxpid.use_compilation_cache("off")) == "None"
    monkeypatch.setenv("JAXPID_CACHE_DIR", "Off")
    assert jaxpid.use_compilation_cache() is None
    # (enabling is exercised in fresh processes above: the test session's own cache stays as set)
