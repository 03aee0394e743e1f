"""The embedded demo model: a tiny text-to-image diffusion model of coloured shapes.

It was trained by :mod:`jaxpid.demo.train` on the synthetic world of
:mod:`jaxpid.demo.dataset`, whose captions and exact object masks give the information
decomposition known answers. It ships inside the package as a diffusers pipeline folder
(pixel space, no VAE), so it loads like any Stable Diffusion folder::

    import jaxpid
    from jaxpid.demo import demo_path

    pipe = jaxpid.load_pipeline(demo_path())
"""

from __future__ import annotations

from pathlib import Path

from jaxpid.errors import ModelNotFoundError

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


def demo_path() -> Path:
    """The shipped demo pipeline folder.

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


def resolve_model_name(name: str) -> str:
    """The CLI's model names: ``"demo"`` is the shipped folder, anything else is passed on
    (a local folder or a hub id)."""
    return str(demo_path()) if name == "demo" else name
