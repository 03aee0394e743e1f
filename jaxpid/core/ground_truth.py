"""Gaussian-mixture data with a closed-form MMSE denoiser: jaxpid's ground truth
(docs/method.md#ground-truth).

x | y ~ Σ_m π_m(y) N(μ_m, s² I). A conditioning y is the vector of log mixture weights
log π(y) (shape (M,)), so every "prompt" of the canonical PID cases is just a reweighting of the
same components. For such data log p(x | y) is exact, hence so is every pointwise information
i(x; y) = log p(x|y) − log p(x), and the exact MMSE denoiser makes the estimator's only error
the Monte-Carlo one.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError


@functools.partial(jax.tree_util.register_dataclass, data_fields=["means"], meta_fields=["std"])
@dataclasses.dataclass(frozen=True)
class MixtureDenoiser:
    """Exact ε-prediction for x ~ Σ_m π_m N(μ_m, s² I) given z_α = √σ(α)·x + √σ(−α)·ε.

    Called as ``denoise(z (B, C, H, W), logsnr (B,), log_weights (B, M))``. A pytree: the means
    are traced arguments of the fused pass, the standard deviation is static.
    """

    means: jax.Array  # (M, C, H, W)
    std: float = 0.5

    def __call__(self, z: jax.Array, logsnr: jax.Array, log_weights: jax.Array) -> jax.Array:
        a = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None]  # (B, 1)
        b = jnp.sqrt(jax.nn.sigmoid(-logsnr))[:, None]
        var = a**2 * self.std**2 + b**2  # variance of z given the component
        zf = z.reshape(z.shape[0], 1, -1)  # (B, 1, d)
        mu = self.means.reshape(1, self.means.shape[0], -1)  # (1, M, d)
        resid = zf - a[..., None] * mu  # (B, M, d)
        log_post = log_weights - 0.5 * jnp.sum(resid**2, axis=-1) / var  # (B, M)
        post = jax.nn.softmax(log_post, axis=-1)
        eps_hat = (b / var)[..., None] * jnp.einsum("bm,bmd->bd", post, resid)[:, None]
        return eps_hat[:, 0].reshape(z.shape)


def mixture_log_density(x: np.ndarray, means: np.ndarray, std: float, log_weights: np.ndarray) -> np.ndarray:
    """log p(x) for x (I, C, H, W), means (M, C, H, W), log_weights (..., M) -> (I, ...)."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    mu = np.asarray(means, np.float64).reshape(means.shape[0], -1)
    d = x.shape[1]
    sq = ((x[:, None, :] - mu[None]) ** 2).sum(-1)  # (I, M)
    log_comp = -0.5 * sq / std**2 - 0.5 * d * math.log(2 * math.pi * std**2)
    lw = np.asarray(log_weights, np.float64)
    joint = log_comp.reshape((x.shape[0],) + (1,) * (lw.ndim - 1) + (mu.shape[0],)) + lw[None]
    top = joint.max(-1, keepdims=True)
    return (top + np.log(np.exp(joint - top).sum(-1, keepdims=True)))[..., 0]


@dataclasses.dataclass(frozen=True)
class PIDCase:
    """Two binary sources y1, y2 with joint p(y1, y2); x ~ N(μ_{f(y1, y2), h}, s² I).

    ``outcome[y1][y2]`` names the outcome drawn for that pair; with ``hidden`` > 1 a hidden
    value h, uniform and independent of the sources, picks one of ``hidden`` means per outcome
    (component ``outcome * hidden + h``), so the sources never determine the mean fully.
    """

    name: str
    p_joint: np.ndarray  # (2, 2) p(y1, y2)
    outcome: np.ndarray  # (2, 2) int, outcome index
    means: np.ndarray  # (M, C, H, W), M = number of outcomes × hidden
    std: float
    hidden: int = 1

    def subset_log_weights(self, y1: int, y2: int) -> np.ndarray:
        """Log mixture weights of the 4 subset conditionings of the pair (y1, y2), bitmask order:
        b=0 nothing, b=1 y1, b=2 y2, b=3 both (docs/method.md#prompt-words-and-subset-conditionings).
        Shape (4, M)."""
        return np.stack([self._log_weights(mask, y1, y2) for mask in range(4)])

    def single_source_log_weights(self, source: int, value: int) -> np.ndarray:
        """Log weights of p(x | y_source = value): conditioning on one source alone. (M,)"""
        y = (value, 0) if source == 0 else (0, value)
        return self._log_weights(1 << source, *y)

    def _log_weights(self, mask: int, y1: int, y2: int) -> np.ndarray:
        keep = np.ones((2, 2), bool)
        if mask & 1:
            keep &= (np.arange(2) == y1)[:, None]
        if mask & 2:
            keep &= (np.arange(2) == y2)[None, :]
        p = np.where(keep, self.p_joint, 0.0)
        weights = np.zeros(len(self.means))
        for h in range(self.hidden):
            np.add.at(weights, self.outcome.ravel() * self.hidden + h, p.ravel() / self.hidden)
        weights /= weights.sum()
        with np.errstate(divide="ignore"):
            return np.log(weights)

    def marginal(self, source: int) -> np.ndarray:
        """p(y_source) as (2,)."""
        return self.p_joint.sum(axis=1 - source)

    def sample_given(self, key: jax.Array, pair: tuple[int, int], n_images: int) -> np.ndarray:
        """x ~ p(x | y1, y2) for one fixed pair (one fixed "prompt"): (I, C, H, W) float32."""
        if self.p_joint[pair[0], pair[1]] <= 0:
            raise ConfigError(f"{self.name}: the pair {tuple(pair)} has probability 0")
        k_x, k_h = jax.random.split(key)
        hidden = np.asarray(jax.random.randint(k_h, (n_images,), 0, self.hidden)) if self.hidden > 1 else 0
        comp = self.outcome[pair[0], pair[1]] * self.hidden + hidden
        noise = np.asarray(jax.random.normal(k_x, (n_images,) + self.means.shape[1:]))
        return (self.means[comp] + self.std * noise).astype(np.float32)

    def prompts(self) -> tuple[tuple[int, int], ...]:
        """Every pair (y1, y2) of positive probability."""
        return tuple((a, b) for a in range(2) for b in range(2) if self.p_joint[a, b] > 0)

    def sample(self, key: jax.Array, n_images: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw (y1, y2) and x | (y1, y2): returns pairs (I, 2) int and x (I, C, H, W) float32."""
        k_y, k_x, k_h = jax.random.split(key, 3)
        pair_index = np.asarray(jax.random.choice(k_y, 4, (n_images,), p=jnp.asarray(self.p_joint.ravel())))
        pairs = np.stack([pair_index // 2, pair_index % 2], axis=1)
        hidden = np.asarray(jax.random.randint(k_h, (n_images,), 0, self.hidden)) if self.hidden > 1 else 0
        comp = self.outcome[pairs[:, 0], pairs[:, 1]] * self.hidden + hidden
        noise = np.asarray(jax.random.normal(k_x, (n_images,) + self.means.shape[1:]))
        return pairs, (self.means[comp] + self.std * noise).astype(np.float32)

    def exact_information(self, x: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Exact pointwise i(x; y_S) = log p(x|y_S) − log p(x) for the 4 subsets. (I, 4)"""
        lw = np.stack([self.subset_log_weights(*pair) for pair in pairs])  # (I, 4, M)
        log_p = np.stack([mixture_log_density(x[i : i + 1], self.means, self.std, lw[i])[0] for i in range(len(x))])
        return log_p - log_p[:, :1]

    def exact_single_source_information(self, x: np.ndarray, source: int, value: int) -> np.ndarray:
        """Exact i(x; y_source = value) for every image. (I,)"""
        lw = np.stack([self._log_weights(0, 0, 0), self.single_source_log_weights(source, value)])
        log_p = mixture_log_density(x, self.means, self.std, lw)
        return log_p[:, 1] - log_p[:, 0]

    @property
    def denoiser(self) -> MixtureDenoiser:
        return MixtureDenoiser(jnp.asarray(self.means, jnp.float32), std=float(self.std))


def canonical_case(name: str, *, shape=(1, 2, 2), separation: float = 2.0, std: float = 0.5,
                   hidden: bool = False) -> PIDCase:
    """The canonical PID cases (docs/method.md#ground-truth) on binary sources.

    RDN: y1 = y2 and the mean follows y1; UNQ: the mean follows y1 only; XOR: the mean follows
    y1 ⊕ y2; AND: the mean follows y1 ∧ y2. Two means ±separation/2 along a fixed unit
    direction, spread over all latent positions. ``hidden``: the hidden-parameter variant, where
    an unobserved fair bit h moves each mean by ±separation/4 along a second, orthogonal
    direction, so x keeps information no source carries.
    """
    size = int(np.prod(shape))
    direction = np.linspace(1.0, -0.5, size).reshape(shape)
    direction /= np.linalg.norm(direction)
    means = np.stack([-0.5 * separation * direction, 0.5 * separation * direction])
    if hidden:
        other = np.cos(np.linspace(0.0, np.pi, size)).reshape(shape)
        other -= (other * direction).sum() * direction  # orthogonal to the first direction
        other /= np.linalg.norm(other)
        means = np.stack([m + sign * 0.25 * separation * other for m in means for sign in (-1.0, 1.0)])
    uniform = np.full((2, 2), 0.25)
    cases = {
        "RDN": (np.array([[0.5, 0.0], [0.0, 0.5]]), np.array([[0, 0], [1, 1]])),
        "UNQ": (uniform, np.array([[0, 0], [1, 1]])),
        "XOR": (uniform, np.array([[0, 1], [1, 0]])),
        "AND": (uniform, np.array([[0, 0], [0, 1]])),
    }
    if name not in cases:
        raise ConfigError(f"unknown canonical case {name!r}; expected one of {sorted(cases)}")
    p_joint, outcome = cases[name]
    return PIDCase(name + ("-hidden" if hidden else ""), p_joint, outcome, means.astype(np.float32), std,
                   hidden=2 if hidden else 1)


CANONICAL_CASES = ("RDN", "UNQ", "XOR", "AND")


def _directions(shape, count: int) -> list[np.ndarray]:
    """``count`` orthonormal directions spread over all latent positions."""
    size = int(np.prod(shape))
    grid = np.linspace(0.0, 1.0, size)
    raw = np.stack([np.cos(np.pi * (j + 0.5) * grid) + (0.3 if j == 0 else 0.0) for j in range(count)], axis=1)
    q, _ = np.linalg.qr(raw)
    return [q[:, j].reshape(shape) for j in range(count)]


def designed_case(name: str, *, shape=(1, 2, 2), separation: float = 2.0, std: float = 0.5) -> PIDCase:
    """Binary-source worlds beyond the canonical four, each pair (y1, y2) with its own mean
    m(y1, y2) = separation · Σ_j c_j(y1, y2) u_j over orthonormal directions u_j:

    - "UNQ+weak": y1 moves the mean by the full separation, y2 by a quarter of it (both unique);
    - "correlated": p(y1 = y2) = 0.8 and both move the mean along their own direction (the
      bias analogue: each word tells about the other);
    - "interaction": additive effects of both plus their product along a third direction.
    """
    u1, u2, u3 = _directions(shape, 3)
    uniform = np.full((2, 2), 0.25)
    designs = {
        "UNQ+weak": (uniform, lambda a, b: (a - 0.5) * u1 + 0.25 * (b - 0.5) * u2),
        "correlated": (np.array([[0.4, 0.1], [0.1, 0.4]]), lambda a, b: (a - 0.5) * u1 + (b - 0.5) * u2),
        "interaction": (uniform, lambda a, b: 0.5 * (a - 0.5) * u1 + 0.5 * (b - 0.5) * u2 + (a * b - 0.25) * u3),
    }
    if name not in designs:
        raise ConfigError(f"unknown designed case {name!r}; expected one of {sorted(designs)}")
    p_joint, mean_of = designs[name]
    means = np.stack([separation * mean_of(a, b) for a in range(2) for b in range(2)])
    return PIDCase(name, p_joint, np.array([[0, 1], [2, 3]]), means.astype(np.float32), std)


DESIGNED_CASES = ("UNQ+weak", "correlated", "interaction")


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class GaussianDenoiser:
    """Exact ε-prediction for x ~ N(m, C) given z_α: ε̂ = b (a²C + b²I)⁻¹ (z − a m).

    Called as ``denoise(z (B, C, H, W), logsnr (B,), (mean (B, d), cov (B, d, d)))``: the
    conditioning is the Gaussian x | y itself."""

    def __call__(self, z: jax.Array, logsnr: jax.Array, cond) -> jax.Array:
        mean, cov = cond
        a = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None]
        b = jnp.sqrt(jax.nn.sigmoid(-logsnr))[:, None]
        d = mean.shape[-1]
        zf = z.reshape(z.shape[0], d)
        cov_z = a[..., None] ** 2 * cov + b[..., None] ** 2 * jnp.eye(d)
        eps = b * jnp.linalg.solve(cov_z, (zf - a * mean)[..., None])[..., 0]
        return eps.reshape(z.shape)


@dataclasses.dataclass(frozen=True)
class GaussianWorld:
    """Jointly Gaussian (X, Y1, Y2): (Y1, Y2) standard normal with correlation ``rho`` and
    x = gain_1 · y1 · u1 + gain_2 · y2 · u2 + std · n, n ~ N(0, I), on orthonormal u1, u2.

    Every x | y_S is Gaussian, so every pointwise information is a closed-form log-density ratio
    and the exact denoiser is linear. A "prompt" is a fixed value (y1, y2)."""

    name: str = "gaussian"
    gains: tuple[float, float] = (1.0, 0.6)
    rho: float = 0.5
    std: float = 0.5
    shape: tuple[int, ...] = (1, 2, 2)
    fixed_prompts: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.5, -0.5), (-0.5, 2.0))

    def _loading(self) -> np.ndarray:  # (d, 2): x = A y + std · n
        u1, u2 = _directions(self.shape, 2)
        return np.stack([self.gains[0] * u1.ravel(), self.gains[1] * u2.ravel()], axis=1)

    def gaussian(self, mask: int, y: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """Mean (d,) and covariance (d, d) of x | y_S for the sources in bitmask ``mask``."""
        cov_y = np.array([[1.0, self.rho], [self.rho, 1.0]])
        seen = [j for j in range(2) if mask >> j & 1]
        hidden = [j for j in range(2) if not mask >> j & 1]
        y = np.asarray(y, np.float64)
        mean_y, cov_left = np.zeros(2), cov_y.copy()
        if seen:
            gain = cov_y[np.ix_(hidden, seen)] @ np.linalg.inv(cov_y[np.ix_(seen, seen)])
            mean_y[seen] = y[seen]
            mean_y[hidden] = gain @ y[seen]
            cov_left = np.zeros((2, 2))
            cov_left[np.ix_(hidden, hidden)] = cov_y[np.ix_(hidden, hidden)] - gain @ cov_y[np.ix_(seen, hidden)]
        load = self._loading()
        return load @ mean_y, load @ cov_left @ load.T + self.std**2 * np.eye(load.shape[0])

    def conditionings(self, y: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The 4 subset conditionings of the prompt y, bitmask order: (means (4, d), covs (4, d, d))."""
        parts = [self.gaussian(mask, y) for mask in range(4)]
        return (np.stack([m for m, _ in parts]).astype(np.float32), np.stack([c for _, c in parts]).astype(np.float32))

    def sample_given(self, key: jax.Array, y: tuple[float, float], n_images: int) -> np.ndarray:
        mean, cov = self.gaussian(3, y)
        noise = np.asarray(jax.random.normal(key, (n_images, mean.size)), np.float64)
        return (mean + noise @ np.linalg.cholesky(cov).T).reshape((n_images,) + self.shape).astype(np.float32)

    def exact_information(self, x: np.ndarray, y: tuple[float, float]) -> np.ndarray:
        """Exact i(x; y_S) = log p(x | y_S) − log p(x) for the 4 subsets: (I, 4)."""
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        log_p = []
        for mask in range(4):
            mean, cov = self.gaussian(mask, y)
            resid = flat - mean
            _, logdet = np.linalg.slogdet(cov)
            maha = np.einsum("id,id->i", resid, np.linalg.solve(cov, resid.T).T)
            log_p.append(-0.5 * (maha + logdet + flat.shape[1] * math.log(2 * math.pi)))
        log_p = np.stack(log_p, axis=1)
        return log_p - log_p[:, :1]

    def prompts(self) -> tuple[tuple[float, float], ...]:
        return self.fixed_prompts

    @property
    def denoiser(self) -> GaussianDenoiser:
        return GaussianDenoiser()

