"""The estimator core: denoiser + images + conditionings + key -> information terms and PID atoms.

It sees only a denoiser function and arrays (never a model, tokenizer, prompt or file), so it
can be checked against closed-form denoisers (``ground_truth``). It imports nothing of jaxpid
but ``jaxpid.errors``, and no Flax, transformers, pyarrow, matplotlib or torch.

    sampling       log-SNR importance samplers
    config         EstimatorConfig, PIDConfig (validated once, recorded in results)
    estimator      FusedPass / information: the fused, sharded pass
    results        InformationResult: MI, NLL, maps, standard errors, per-sample terms
    lattice        Williams–Beer redundancy lattice, Möbius inversion, atom labels
    measures       redundancy measures mmi, imin, ppid, ccs
    decomposition  pid / decompose: atoms, maps and standard errors
    memory         the chunk size chosen from a device's free memory (a pure rule)
    ground_truth   Gaussian mixtures with exact denoisers and log-densities
"""

from jaxpid.core.config import FORMS, LEVELS, NATS_TO_BITS, PID_FORMS, EstimatorConfig, PIDConfig
from jaxpid.core.decomposition import (
    FormComparison,
    PIDResult,
    anchored_pairs,
    compare_forms,
    conditional_pairs,
    decompose,
    pairs_for,
    pid,
    rule_fixed_atoms,
)
from jaxpid.core.estimator import CompiledPass, FusedPass, PassInputs, information
from jaxpid.core.lattice import TWO_SOURCE_ATOMS, Lattice, atom_label, redundancy_lattice
from jaxpid.core.measures import MEASURES, TWO_SOURCE_MEASURES, check_measure, redundancies
from jaxpid.core.memory import bytes_per_evaluation, chunk_size_for_device, chunk_size_for_memory, free_device_memory
from jaxpid.core.results import InformationResult
from jaxpid.core.sampling import (LogisticSampler, LogSNRSampler, StratifiedSampler, UniformSampler, jackknife_replicates,
                                  jackknife_stderr, sampler_from_dict, stratified_stderr)

__all__ = [
    "FORMS", "LEVELS", "MEASURES", "NATS_TO_BITS", "PID_FORMS", "TWO_SOURCE_ATOMS", "TWO_SOURCE_MEASURES",
    "CompiledPass", "EstimatorConfig", "FormComparison", "FusedPass", "InformationResult", "Lattice", "LogSNRSampler",
    "LogisticSampler", "PIDConfig", "PIDResult", "PassInputs", "StratifiedSampler", "UniformSampler",
    "anchored_pairs", "atom_label", "compare_forms", "bytes_per_evaluation", "check_measure", "chunk_size_for_device",
    "chunk_size_for_memory", "conditional_pairs", "decompose", "free_device_memory", "information",
    "jackknife_replicates", "jackknife_stderr", "pairs_for", "pid", "redundancies", "rule_fixed_atoms", "redundancy_lattice",
    "sampler_from_dict", "stratified_stderr",
]
