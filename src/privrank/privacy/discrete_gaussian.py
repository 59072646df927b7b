"""The discrete Gaussian distribution on the integers: sampler, probabilities, variance.

``N_Z(0, σ²)`` gives the integer ``k`` probability ``exp(−k²/(2σ²)) / Σ_j exp(−j²/(2σ²))``
(Canonne, Kamath & Steinke 2020, "The discrete Gaussian for differential privacy"). Its
variance is slightly below σ² (:func:`discrete_gaussian_variance`), it is σ²-subgaussian
(their Cor. 9), and adding it to an integer statistic of L2 sensitivity Δ is
``Δ²/(2σ²)``-zCDP.

:func:`sample_discrete_gaussian` is their Algorithm 3 (rejection from a discrete Laplace of
scale ``t = ⌊σ⌋ + 1``), vectorised with numpy: draw ``Y = G₁ − G₂`` with ``G`` geometric of
success probability ``1 − e^{−1/t}`` (a two-sided geometric, i.e. discrete Laplace), accept with
probability ``exp(−(|Y| − σ²/t)² / (2σ²))``. The acceptance test is computed in floating point,
so the sampler is exact up to double rounding, not hardened against the floating-point attacks
of Mironov 2012 (the reference implementation's exact rational arithmetic is; it is far slower
and serves as the test's oracle).
"""

from __future__ import annotations

import math

import numpy as np

from privrank.errors import ConfigError

__all__ = ["discrete_gaussian_pmf", "discrete_gaussian_variance", "sample_discrete_gaussian"]


def _sigma(sigma: float) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma >= 0:
        raise ConfigError(f"a discrete Gaussian's sigma must be a number ≥ 0. Got {sigma!r}")
    if not math.isfinite(sigma):
        raise ConfigError(f"a discrete Gaussian's sigma must be finite. Got {sigma!r}")
    return float(sigma)


def sample_discrete_gaussian(
    sigma: float, size: int | tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Independent draws of ``N_Z(0, σ²)`` (int64), of shape ``size``.

    Args:
        sigma: σ ≥ 0 (0: all zeros).
        size: Output shape.
        rng: The noise generator (never shared with other randomness).
    """
    sigma = _sigma(sigma)
    shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
    count = int(np.prod(shape, dtype=np.int64))
    if sigma == 0 or count == 0:
        return np.zeros(shape, dtype=np.int64)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    var = sigma * sigma
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        batch = int(1.5 * (count - filled)) + 64
        y = rng.geometric(p, batch) - rng.geometric(p, batch)
        keep = rng.random(batch) < np.exp(-((np.abs(y) - var / t) ** 2) / (2.0 * var))
        accepted = y[keep][: count - filled]
        out[filled : filled + accepted.size] = accepted
        filled += accepted.size
    return out.reshape(shape)


def _support(sigma: float) -> np.ndarray:
    half = math.ceil(40.0 * sigma) + 10  # the mass beyond 40σ is below e^{-800}
    return np.arange(-half, half + 1, dtype=np.float64)


def discrete_gaussian_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P[X = k])`` over ``|k| ≤ 40σ + 10`` (the rest has mass below 1e-300).

    Raises:
        ConfigError: σ ≤ 0.
    """
    sigma = _sigma(sigma)
    if sigma == 0:
        raise ConfigError("the discrete Gaussian with sigma 0 is the point mass at 0")
    if sigma > 1e5:
        raise ConfigError(f"discrete_gaussian_pmf: sigma {sigma:g} > 1e5 has too wide a support")
    k = _support(sigma)
    weights = np.exp(-(k**2) / (2.0 * sigma * sigma))
    return k.astype(np.int64), weights / weights.sum()


#: Above this σ the discrete Gaussian's variance is σ² to double precision (see below).
_LARGE_SIGMA = 10.0


def discrete_gaussian_variance(sigma: float) -> float:
    """``Var[N_Z(0, σ²)] = Σ k² e^{−k²/2σ²} / Σ e^{−k²/2σ²}`` (below σ²; 0 for σ = 0).

    Summed directly for σ ≤ 10. Above, it is σ²: by Poisson summation the relative gap is of
    order ``σ² e^{−2π²σ²}`` (below 1e-800 at σ = 10), far under double precision, and summing
    80σ terms would not fit in memory for the σ of large grids.
    """
    if _sigma(sigma) == 0:
        return 0.0
    if sigma > _LARGE_SIGMA:
        return float(sigma) ** 2
    k, pmf = discrete_gaussian_pmf(sigma)
    return float(np.sum(k.astype(np.float64) ** 2 * pmf))
