"""Prototypes of proposed speed-ups to jaxpid.sd.models.layers, measured before adoption.

``apply(...)`` monkeypatches them into ``jaxpid.sd.models.layers`` (and the names ``unet``
imported from it) for the rest of the process; modules built afterwards trace the patched code.
Used by ``python -m jaxpid.bench.throughput --prototypes`` and ``python -m jaxpid.bench.vs_pytorch
--prototypes`` to measure them against the shipped code; nothing outside ``jaxpid.bench`` imports
this module.

There are none pending: the attention, GroupNorm and small-map convolution rewrites measured
here first are now the shipped code in ``jaxpid.sd.models.layers``.
"""

from __future__ import annotations

PATCHES: tuple[str, ...] = ()


def apply(enabled=PATCHES) -> None:
    """Patch in the named prototypes."""
    unknown = set(enabled) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown prototypes {sorted(unknown)}; known: {PATCHES or 'none pending'}")


def apply_requested(requested: list[str] | None) -> str:
    """The scripts' ``--prototypes [NAMES]``: patch in the named ones (none given: all) and
    return the code label their result rows carry ("shipped" when the option was not used)."""
    if requested is None:
        return "shipped"
    chosen = requested or list(PATCHES)
    apply(chosen)
    print(f"measuring with prototypes patched in: {', '.join(chosen) or 'none pending'}")
    return "prototypes:" + ",".join(chosen)
