"""Applying a module to parameters jaxpid's loader has already checked, without flax checking
them again on every trace.

Inside ``apply``, flax compares every existing parameter with ``jax.eval_shape`` of its
initializer (``flax.core.scope.Scope.param``): for the demo's UNet and text encoder that is
hundreds of traced initializers, about 0.7 s of each trace on a 2-core CPU — more than a
compiled program read from the persistent cache takes to run. jaxpid's loader has already matched
every tensor's name and shape with the module's own parameter tree (:mod:`jaxpid.sd.weights`,
:mod:`jaxpid.sd.models.shapes`), so :func:`apply_checked` skips flax's repeat of it. Everywhere
else flax behaves as it ships: the skip is a context variable read by a wrapper of
``Scope.param`` installed on first use, and a module applied outside :func:`apply_checked` (or to
parameters missing from the tree) goes through flax's own ``param``.
"""

from __future__ import annotations

import contextvars
from typing import Any

import flax.linen as nn
from flax.core import meta
from flax.core import scope as flax_scope

_SKIP = contextvars.ContextVar("jaxpid_params_checked", default=False)
_MARK = "_jaxpid_checked_params"


def _install() -> None:
    """Wrap ``Scope.param`` once: with the flag set, an existing parameter is returned as stored."""
    flax_param = flax_scope.Scope.param
    if getattr(flax_param, _MARK, False):
        return

    def param(self, name, init_fn, *init_args, unbox=True, **init_kwargs):
        if _SKIP.get() and self.has_variable("params", name):
            self.reserve(name, "params")
            value = self.get_variable("params", name)
            return meta.unbox(value) if unbox else value
        return flax_param(self, name, init_fn, *init_args, unbox=unbox, **init_kwargs)

    setattr(param, _MARK, True)
    param.__doc__ = flax_param.__doc__
    flax_scope.Scope.param = param


def apply_checked(module: nn.Module, params: Any, *args, **kwargs) -> Any:
    """``module.apply({"params": params}, *args, **kwargs)`` for parameters whose names and
    shapes jaxpid's loader (or ``module.init``) produced: flax's per-parameter shape check is
    skipped while it traces."""
    _install()
    token = _SKIP.set(True)
    try:
        return module.apply({"params": params}, *args, **kwargs)
    finally:
        _SKIP.reset(token)
