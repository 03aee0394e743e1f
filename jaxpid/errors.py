"""Exceptions jaxpid raises. Each names the input at fault so a user can act on it."""


class JaxpidError(Exception):
    """Base class of every error jaxpid raises on purpose."""


class ShapeError(JaxpidError, ValueError):
    """Arrays or pytrees whose shapes do not fit together."""


class NonFiniteError(JaxpidError, FloatingPointError):
    """A denoiser or a result produced NaN or infinity."""


class ConfigError(JaxpidError, ValueError):
    """A model or run configuration holds a value jaxpid does not support."""


class WeightsError(JaxpidError):
    """Model weights that cannot be read."""


class WeightsMismatchError(WeightsError, ValueError):
    """Checkpoint tensors that do not match the model: missing, unexpected or mis-shaped."""


class PickleRefusedError(WeightsError):
    """Only a pickle checkpoint (.bin/.ckpt/.pt) was found; jaxpid reads safetensors only."""


class PromptError(JaxpidError, ValueError):
    """A prompt or source word that cannot be used as given."""


class ModelNotFoundError(JaxpidError, FileNotFoundError):
    """A model name that is neither an existing folder nor a downloadable hub id."""


class NotAPipelineError(ConfigError):
    """A folder without the ``model_index.json`` of a diffusers pipeline, or one lacking a part."""


class MissingShardError(WeightsError, FileNotFoundError):
    """A sharded checkpoint whose index names a shard file that is not in the folder."""


class ImageReadError(JaxpidError, OSError):
    """An image file that does not exist or cannot be decoded."""


class OutputBusyError(ConfigError):
    """Another jaxpid run is writing the same output folder."""
