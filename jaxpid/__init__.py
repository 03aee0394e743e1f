"""jaxpid: which words of a prompt put which information into which pixels.

Pointwise mutual information, conditional MI and partial information decomposition
(redundancy, uniqueness, synergy) between prompt words and diffusion-model images, estimated
from denoising errors in one fused, jit-compiled pass.

Pipeline, one module per step:
    sampling (log-SNR proposals) -> estimator (fused pass: MI, NLL, maps)
    -> lattice + measures (redundancy) -> pid (atoms, maps, standard errors)
"""

from jaxpid.errors import (
    ConfigError,
    JaxpidError,
    NonFiniteError,
    PickleRefusedError,
    PromptError,
    ShapeError,
    WeightsError,
    WeightsMismatchError,
)
from jaxpid.estimator import InformationResult, information
from jaxpid.lattice import Lattice, redundancy_lattice
from jaxpid.pid import PIDResult, pid
from jaxpid.sampling import LogisticSampler, UniformSampler

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
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
]
