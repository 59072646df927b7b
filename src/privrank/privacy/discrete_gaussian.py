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

:func:`sample_discrete_gaussian_sum` draws the *sum* of ``n`` independent ``N_Z(0, σ²)`` at
once, from the exact distribution of that sum (:func:`discrete_gaussian_sum_pmf`, the n-fold
convolution computed through the characteristic function), for a simulator that needs only
what a secure aggregate reveals: the server sees Σᵢ (x̃ᵢ + Xᵢ) = Σᵢ x̃ᵢ + S with
S = Σᵢ Xᵢ, so drawing S once has the same distribution as n devices each drawing Xᵢ. A device
in a deployment draws its own share with :func:`sample_discrete_gaussian`.
"""

from __future__ import annotations

import math

import numpy as np

from privrank.errors import ConfigError

__all__ = [
    "discrete_gaussian_pmf",
    "discrete_gaussian_sum_pmf",
    "discrete_gaussian_variance",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_sum",
]

#: The sum's support is cut at this many standard deviations (σ√n) beyond the single draw's
#: own support: S is nσ²-subgaussian, so P[|S| > 14σ√n] ≤ 2e^{−98} (below 1e-42).
_SUM_TAIL_SD = 14.0
#: Largest τ (total-variation bound) at which a sum is drawn as one N_Z(0, nσ²).
_SUM_GAP = 1e-12
#: The longest FFT grid :func:`discrete_gaussian_sum_pmf` builds (2^25 points, 256 MiB).
_SUM_MAX_GRID = 1 << 25


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


def discrete_gaussian_sum_pmf(sigma: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(k, P[S = k])`` of ``S = X₁ + … + Xₙ``, ``Xᵢ`` i.i.d. ``N_Z(0, σ²)``.

    The pmf of ``S`` is the n-fold convolution of :func:`discrete_gaussian_pmf`; its discrete
    Fourier transform is ``φ(t)ⁿ`` with ``φ(t) = Σ_k P[X = k] e^{ikt}`` (real and positive: by
    Poisson summation ``φ`` is a sum of Gaussians, a theta function). On a grid of ``L`` points
    with ``L/2`` beyond ``14σ√n + 40σ + 10`` the circular convolution equals the linear one up to
    the mass S puts outside it (below 1e-42, S being nσ²-subgaussian). The transform is
    computed in double precision, so the pmf is exact up to rounding of order ``L·2^-52``
    absolutely (negative round-off is set to 0 and the pmf renormalised); the support returned
    is ``|k| ≤ 14σ√n + 40σ + 10``.

    Args:
        sigma: σ > 0 of each draw.
        n: The number of draws summed (≥ 1).

    Raises:
        ConfigError: σ ≤ 0, n < 1, or a grid longer than 2^25 points (σ√n above about 10^6).
    """
    sigma = _sigma(sigma)
    if sigma == 0:
        raise ConfigError("the discrete Gaussian with sigma 0 is the point mass at 0")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"a sum of discrete Gaussians needs n ≥ 1 draws. Got {n!r}")
    k1, p1 = discrete_gaussian_pmf(sigma)
    half = math.ceil(_SUM_TAIL_SD * sigma * math.sqrt(int(n))) + int(k1[-1])
    length = 1 << (2 * half + 1).bit_length()
    if length > _SUM_MAX_GRID:
        raise ConfigError(
            f"the pmf of a sum of {n} discrete Gaussians of sigma {sigma:g} needs a grid of "
            f"{length} points (most {_SUM_MAX_GRID}); sample the draws one by one instead"
        )
    grid = np.zeros(length)
    grid[k1 % length] = p1
    phi = np.fft.rfft(grid).real
    power = np.zeros_like(phi)
    positive = phi > 0
    power[positive] = np.exp(int(n) * np.log(phi[positive]))
    pmf = np.fft.irfft(power, length)
    k = np.arange(-half, half + 1, dtype=np.int64)
    out = np.maximum(pmf[k % length], 0.0)
    return k, out / out.sum()


def sample_discrete_gaussian_sum(
    sigma: float, n: int, size: int | tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    """Independent draws of ``X₁ + … + Xₙ``, ``Xᵢ`` i.i.d. ``N_Z(0, σ²)`` (int64, shape ``size``).

    Two regimes (``n`` = 0 or σ = 0: zeros):

    - σ not small (τ ≤ 1e-12 below): one draw of ``N_Z(0, nσ²)``. Kairouz, Liu & Steinke
      (ICML 2021, the proposition on sums of discrete Gaussians behind their Prop. 14) bound
      the pmf of the sum pointwise within a factor ``1 + τ`` of ``N_Z(0, nσ²)``'s, with
      ``τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1))`` (σ ≥ 1/2); so the total variation between
      the two is at most τ ≤ 1e-12 (at σ ≥ 3 and any n below 10^30, τ < 1e-30). The tests check
      the bound against the exact convolution.
    - σ small: inverse-CDF sampling from the exact pmf :func:`discrete_gaussian_sum_pmf`.

    Either way equal in distribution (to within 1e-12 in total variation, or the pmf's
    rounding) to summing ``n`` draws of :func:`sample_discrete_gaussian`, at the cost of one. For
    simulating what a secure aggregate reveals (module doc), never for a device's own noise.

    Args:
        sigma: σ ≥ 0 of each summed draw.
        n: The number of draws summed (≥ 0).
        size: Output shape.
        rng: The noise generator.
    """
    sigma = _sigma(sigma)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"a sum of discrete Gaussians needs n ≥ 0 draws. Got {n!r}")
    shape = (size,) if isinstance(size, int | np.integer) else tuple(size)
    if sigma == 0 or n == 0:
        return np.zeros(shape, dtype=np.int64)
    if n == 1 or _sum_gap(sigma, int(n)) <= _SUM_GAP:
        return sample_discrete_gaussian(sigma * math.sqrt(int(n)), shape, rng)
    k, pmf = discrete_gaussian_sum_pmf(sigma, int(n))
    cdf = np.cumsum(pmf)
    u = rng.random(int(np.prod(shape, dtype=np.int64))) * cdf[-1]
    index = np.minimum(np.searchsorted(cdf, u, side="right"), k.size - 1)
    draws: np.ndarray = k[index].reshape(shape)
    return draws


def _sum_gap(sigma: float, n: int) -> float:
    """τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)) (Kairouz, Liu & Steinke 2021), bounded above
    by ``10 (n − 1) exp(−π²σ²)`` (each term's k/(k+1) ≥ 1/2): the bound is what is compared."""
    if sigma < 0.5:
        return math.inf
    return 10.0 * (n - 1) * math.exp(-(math.pi**2) * sigma**2)
