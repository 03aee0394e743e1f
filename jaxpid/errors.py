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
