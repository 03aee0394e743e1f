"""The embedded demo model: a tiny text-to-image diffusion model of coloured shapes.

It was trained by :mod:`jaxpid.demo.train` on the synthetic world of
:mod:`jaxpid.demo.dataset`, whose captions and exact object masks give the information
decomposition known answers. It ships inside the package as a diffusers pipeline folder
(pixel space, no VAE) and loads like any Stable Diffusion folder, by the model name "demo"::

    import jaxpid

    pipe = jaxpid.load_pipeline("demo")      # the folder: jaxpid.demo.demo_path()
"""

from jaxpid.sd.weights import DEMO_DIR, DEMO_MODEL, demo_path

__all__ = ["DEMO_DIR", "DEMO_MODEL", "demo_path"]
