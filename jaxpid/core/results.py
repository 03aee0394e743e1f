"""What the fused pass returns: per-image information terms, their errors, maps and samples."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxpid.core.config import FORMS, check_choice
from jaxpid.core.sampling import stratified_stderr
from jaxpid.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class InformationResult:
    """Pointwise information of each conditioning against a reference, per image (nats).

    I images, S conditionings, N log-SNR samples, (H, W) the latent grid.
    """

    mi_standard: np.ndarray  # (I, S) ½∫ E[‖ε−ε̂_ref‖² − ‖ε−ε̂_s‖²] dα
    mi_orthogonal: np.ndarray  # (I, S) ½∫ E‖ε̂_s − ε̂_ref‖² dα
    nll: np.ndarray  # (I, S) −log p(x | conditioning s)
    stderr_standard: np.ndarray  # (I, S) Monte-Carlo standard errors of the above
    stderr_orthogonal: np.ndarray  # (I, S)
    stderr_nll: np.ndarray  # (I, S)
    maps_standard: np.ndarray  # (I, S, H, W) per latent position; sums to mi_standard
    maps_orthogonal: np.ndarray  # (I, S, H, W); sums to mi_orthogonal
    samples_standard: np.ndarray  # (I, N, S) per-sample weighted integrands (for derived errors)
    samples_orthogonal: np.ndarray  # (I, N, S)
    logsnr: np.ndarray  # (I, N) the log-SNR values used (after snapping to the model's steps)
    config: dict  # sampler, n_samples, reference, chunk_size, devices, the key, ...
    # Information of conditioning s against conditioning t for the requested (s, t) pairs, P of
    # them: the orthogonal form needs its own gap ½∫E‖ε̂_s − ε̂_t‖² (a difference of two
    # reference-based orthogonal values is not one, and is noisier); the standard form is the
    # difference of the reference-based values, so it is derived, not stored.
    pairs: tuple[tuple[int, int], ...] = ()
    pair_mi_orthogonal: np.ndarray | None = None  # (I, P)
    pair_stderr_orthogonal: np.ndarray | None = None  # (I, P)
    pair_maps_orthogonal: np.ndarray | None = None  # (I, P, H, W)
    pair_samples_orthogonal: np.ndarray | None = None  # (I, N, P)
    # The denoiser's auxiliary output (FusedPass(collect_aux=True)), averaged over each image's
    # samples: a pytree whose leaves are (I, S, ...); None when not collected.
    aux: object = None
    timings: dict = dataclasses.field(default_factory=dict)  # compile_s (0 when cached), run_s
    strata: int = 1  # the sampler's strata K (sample n in stratum n mod K): how standard errors are taken

    def select(self, images) -> InformationResult:
        """The result of the images at ``images`` (indices), in that order."""
        images = np.asarray(images, int)
        per_image = {f.name: getattr(self, f.name)[images] for f in dataclasses.fields(self)
                     if f.name != "aux" and isinstance(getattr(self, f.name), np.ndarray)}
        aux = None if self.aux is None else _tree_take(self.aux, images)
        return dataclasses.replace(self, **per_image, aux=aux)

    def mi(self, form: str = "orthogonal") -> np.ndarray:
        return {"orthogonal": self.mi_orthogonal, "standard": self.mi_standard}[_check_form(form)]

    def stderr(self, form: str = "orthogonal") -> np.ndarray:
        return {"orthogonal": self.stderr_orthogonal, "standard": self.stderr_standard}[_check_form(form)]

    def maps(self, form: str = "orthogonal") -> np.ndarray:
        return {"orthogonal": self.maps_orthogonal, "standard": self.maps_standard}[_check_form(form)]

    def samples(self, form: str = "orthogonal") -> np.ndarray:
        return {"orthogonal": self.samples_orthogonal, "standard": self.samples_standard}[_check_form(form)]

    def pair_samples(self, form: str = "orthogonal") -> np.ndarray:
        """(I, N, P) per-sample integrands of i(x; conditioning s | against t) for each pair."""
        if _check_form(form) == "orthogonal":
            return self._pair_field(self.pair_samples_orthogonal)
        s, t = self._pair_index()
        return self.samples_standard[:, :, s] - self.samples_standard[:, :, t]

    def pair_mi(self, form: str = "orthogonal") -> np.ndarray:
        """(I, P) information of conditioning s measured against conditioning t, per pair (s, t)."""
        return self.pair_samples(form).mean(axis=1)

    def pair_stderr(self, form: str = "orthogonal") -> np.ndarray:
        return stratified_stderr(self.pair_samples(form), self.strata)

    def pair_maps(self, form: str = "orthogonal") -> np.ndarray:
        """(I, P, H, W) per latent position; sums to ``pair_mi(form)``."""
        if _check_form(form) == "orthogonal":
            return self._pair_field(self.pair_maps_orthogonal)
        s, t = self._pair_index()
        return self.maps_standard[:, s] - self.maps_standard[:, t]

    def _pair_index(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.pairs:
            raise ConfigError("this pass measured no conditioning pairs: pass pairs=[(s, t), ...] to information()")
        index = np.asarray(self.pairs, int)
        return index[:, 0], index[:, 1]

    def _pair_field(self, value):
        self._pair_index()
        return value


def _tree_take(tree, images: np.ndarray):
    """Every leaf of a pytree of (I, ...) arrays at ``images`` (no jax import: the result is host data)."""
    if isinstance(tree, dict):
        return {k: _tree_take(v, images) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tree_take(v, images) for v in tree)
    return np.asarray(tree)[images]


def _check_form(form: str) -> str:
    return check_choice("form", form, FORMS)
