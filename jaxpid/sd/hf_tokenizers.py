"""The tokenizers jaxpid takes from transformers, imported without its "PyTorch was not found"
notice: jaxpid uses only transformers' tokenizers (backed by the compiled ``tokenizers``
package), never its models, so the notice would only confuse every ``jaxpid`` run.

Only that one message is dropped (a filter on transformers' logger); every other transformers
message still shows.
"""

import logging

_NOTICE = "PyTorch was not found"


class _DropNoTorchNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOTICE)


_logger = logging.getLogger("transformers")
if not any(isinstance(f, _DropNoTorchNotice) for f in _logger.filters):
    _logger.addFilter(_DropNoTorchNotice())

from transformers import BertTokenizer, CLIPTokenizer  # noqa: E402  (after the filter)

__all__ = ["BertTokenizer", "CLIPTokenizer"]
