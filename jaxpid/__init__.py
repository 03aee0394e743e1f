"""jaxpid: which words of a prompt put which information into which pixels.

Pointwise mutual information, conditional MI and partial information decomposition
(redundancy, uniqueness, synergy) between prompt words and diffusion-model images, estimated
from denoising errors in one fused, jit-compiled pass. The packages follow the pipeline
(docs/architecture.md):

    core      denoiser + arrays -> information terms, PID atoms (FusedPass, information, pid)
    sd        Stable Diffusion in Flax: weights, models, tokenizer, schedule, pipeline, DDIM
    priors    word priors for DiffusionPID's measure (Flax BERT masked LM, uniform, file)
    analysis  prompt -> PID of its words / CMI of each word (RunConfig, analyze, rerun)
    sweeps    many jobs: batches, resumable Parquet store, multi-host and Ray runners, bias report
    studies   the papers' studies
    io        everything that writes files: result folders, reports, figures, provenance
    cli       the ``jaxpid`` command

Importing jaxpid configures nothing: call ``jaxpid.use_cpu_cores()`` (right after importing JAX)
to give a CPU-only machine one JAX device per core, and ``jaxpid.use_compilation_cache()`` to keep
compiled programs across processes, as the ``jaxpid`` command does.
"""

import importlib

from jaxpid.core import (
    CompiledPass,
    EstimatorConfig,
    FusedPass,
    InformationResult,
    Lattice,
    LogisticSampler,
    PIDConfig,
    PIDResult,
    StratifiedSampler,
    UniformSampler,
    decompose,
    information,
    pid,
    redundancy_lattice,
)
from jaxpid.devices import use_compilation_cache, use_cpu_cores
from jaxpid.errors import (
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

__version__ = "0.1.0"

# The model edge (Flax modules, tokenizers, priors, the prompt analysis) loads Flax and
# transformers, so it is imported on first use: `import jaxpid.core` stays light.
_LAZY = {
    "load_pipeline": "jaxpid.sd",
    "Pipeline": "jaxpid.sd",
    "ModelSpec": "jaxpid.sd",
    "load_image": "jaxpid.sd",
    "generate": "jaxpid.sd",
    "GenerationConfig": "jaxpid.sd",
    "GenerationResult": "jaxpid.sd",
    "NoiseSchedule": "jaxpid.sd",
    "load_prior_spec": "jaxpid.priors",
    "MaskedLMPrior": "jaxpid.priors",
    "PriorValues": "jaxpid.priors",
    "uniform_log_prior": "jaxpid.priors",
    "load_bert": "jaxpid.priors",
    "RunConfig": "jaxpid.analysis",
    "analyze": "jaxpid.analysis",
    "word_information": "jaxpid.analysis",
    "rerun": "jaxpid.analysis",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxpid' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CompiledPass", "ConfigError", "EstimatorConfig", "FusedPass", "GenerationConfig", "GenerationResult",
    "ImageReadError", "InformationResult", "JaxpidError", "Lattice", "LogisticSampler", "MaskedLMPrior",
    "MissingShardError", "ModelNotFoundError", "ModelSpec", "NoiseSchedule", "NonFiniteError", "NotAPipelineError",
    "PIDConfig", "PIDResult", "PickleRefusedError", "Pipeline", "PriorValues", "PromptError", "RunConfig",
    "ShapeError", "StratifiedSampler", "UniformSampler", "WeightsError", "WeightsMismatchError", "analyze", "decompose", "generate",
    "information", "load_bert", "load_image", "load_pipeline", "load_prior_spec", "pid", "redundancy_lattice",
    "rerun", "uniform_log_prior", "use_compilation_cache", "use_cpu_cores", "word_information",
]
