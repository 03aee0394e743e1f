"""The tokenizer jaxpid still takes from transformers (BERT's WordPiece, for the word priors),
imported on first use and without transformers' "PyTorch was not found" notice.

Importing transformers costs about half a second, so nothing imports it at module load: CLIP's
tokenizer is jaxpid's own (:mod:`jaxpid.sd.clip_bpe`), and :func:`bert_tokenizer_class` imports
transformers only when a BERT prior is loaded. jaxpid uses only transformers' tokenizers (backed
by the compiled ``tokenizers`` package), never its models, so the notice would only confuse
every ``jaxpid`` run. Only that one message is dropped (a filter on transformers' logger); every
other transformers message still shows.
"""

import logging

_NOTICE = "PyTorch was not found"


class _DropNoTorchNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOTICE)


def bert_tokenizer_class() -> type:
    """transformers' ``BertTokenizer`` (transformers is imported here, on the first call)."""
    logger = logging.getLogger("transformers")
    if not any(isinstance(f, _DropNoTorchNotice) for f in logger.filters):
        logger.addFilter(_DropNoTorchNotice())
    from transformers import BertTokenizer  # after the filter

    return BertTokenizer


__all__ = ["bert_tokenizer_class"]
