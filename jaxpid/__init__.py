"""jaxpid: which words of a prompt put which information into which pixels.

Pointwise mutual information, conditional MI and partial information decomposition
(redundancy, uniqueness, synergy) between prompt words and diffusion-model images, estimated
from denoising errors in one fused, jit-compiled pass.

Pipeline, one module per step:
    sampling (log-SNR proposals) -> estimator (fused pass: MI, NLL, maps)
    -> lattice + measures (redundancy) -> pid (atoms, maps, standard errors)
The model edge: weights (safetensors folders) -> models (Flax UNet, CLIP, VAE) -> pipeline
(prompt encoding, discrete-time denoiser) -> generate (DDIM with classifier-free guidance).
"""

from jaxpid.cpu import configure_cpu_devices as _configure_cpu_devices

_configure_cpu_devices()  # before anything starts JAX's backends (see jaxpid.cpu)

from jaxpid.errors import (  # noqa: E402
    ConfigError,
    ImageReadError,
    JaxpidError,
    MissingShardError,
    ModelNotFoundError,
    NonFiniteError,
    NotAPipelineError,
    PickleRefusedError,
    PromptError,
    ShapeError,
    WeightsError,
    WeightsMismatchError,
)
from jaxpid.estimator import InformationResult, information  # noqa: E402
from jaxpid.lattice import Lattice, redundancy_lattice  # noqa: E402
from jaxpid.pid import PIDResult, decompose, pid  # noqa: E402
from jaxpid.sampling import LogisticSampler, UniformSampler  # noqa: E402

__version__ = "0.1.0"

# The model edge (Flax modules, tokenizer, loader) imports transformers and is loaded on first
# use, so the estimator core stays light to import.
_LAZY = {
    "load_pipeline": "jaxpid.pipeline",
    "Pipeline": "jaxpid.pipeline",
    "load_image": "jaxpid.pipeline",
    "generate": "jaxpid.generate",
    "GenerationResult": "jaxpid.generate",
    "NoiseSchedule": "jaxpid.schedule",
    "load_prior_spec": "jaxpid.priors",
    "MaskedLMPrior": "jaxpid.priors",
    "PriorValues": "jaxpid.priors",
    "uniform_log_prior": "jaxpid.priors",
    "load_bert": "jaxpid.models.bert",
    "analyze": "jaxpid.analysis",
    "word_information": "jaxpid.analysis",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxpid' has no attribute {name!r}")

__all__ = [
    "ConfigError",
    "GenerationResult",
    "ImageReadError",
    "MissingShardError",
    "ModelNotFoundError",
    "NoiseSchedule",
    "NotAPipelineError",
    "Pipeline",
    "decompose",
    "MaskedLMPrior",
    "PriorValues",
    "analyze",
    "generate",
    "load_bert",
    "load_image",
    "load_prior_spec",
    "load_pipeline",
    "InformationResult",
    "JaxpidError",
    "Lattice",
    "LogisticSampler",
    "NonFiniteError",
    "PIDResult",
    "PickleRefusedError",
    "PromptError",
    "ShapeError",
    "UniformSampler",
    "WeightsError",
    "WeightsMismatchError",
    "information",
    "pid",
    "redundancy_lattice",
    "uniform_log_prior",
    "word_information",
]
