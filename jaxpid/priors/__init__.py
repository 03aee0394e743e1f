"""Word priors p(y_j) for DiffusionPID's ``ppid`` measure (docs/method.md#ppid).

    word_priors    the priors by spec: 'bert:PATH' (masked LM), 'uniform', 'file:PRIORS.json'
    bert           the Flax BERT masked language model and its strict loader
"""

from jaxpid.priors.bert import BertConfig, BertForMaskedLM, load_bert, write_test_bert
from jaxpid.priors.word_priors import (
    FilePrior,
    MaskedLMPrior,
    PriorValues,
    UniformPrior,
    WordPriors,
    load_prior_spec,
    parse_prior_spec,
    uniform_log_prior,
)

__all__ = [
    "BertConfig", "BertForMaskedLM", "FilePrior", "MaskedLMPrior", "PriorValues", "UniformPrior", "WordPriors",
    "load_bert", "load_prior_spec", "parse_prior_spec", "uniform_log_prior", "write_test_bert",
]
