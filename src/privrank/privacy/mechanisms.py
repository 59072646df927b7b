"""Gaussian mechanisms on bounded sufficient statistics, for the closed-form recommenders.

Every mechanism here is user-level: **neighbouring datasets differ by adding or removing one
user's entire history**. Each one follows the same recipe:

1. *Bound contributions.* :meth:`PrivacySpec.bound_contributions` keeps at most ``c`` rows per
   user (``max_interactions_per_user``); models then see the **binary** user × item matrix
   ``X``, so each user's row ``x_u`` has at most ``c`` ones and no other non-zeros.
2. *Compute a sufficient statistic* ``f(X)`` whose L2 sensitivity
   ``Δ = max ‖f(X) − f(X')‖₂`` over neighbours follows from ``c`` alone (derivations below,
   checked by brute force in ``tests/privacy/test_mechanisms.py``).
3. *Release* ``f(X) + N(0, σ² I)`` with ``σ = m · Δ``, where the noise multiplier ``m`` is the
   smallest that makes one Gaussian release (ε, δ)-DP exactly
   (:func:`~privrank.privacy.calibration.gaussian_multiplier`, Balle & Wang 2018). δ is the
   spec's, resolved to ``1 / (10 · n_users)`` by default.
4. *Post-process.* Everything a model computes from the noisy statistic alone (clipping, a
   projection onto the PSD cone, regularisation, a matrix inverse, a top-k) is post-processing
   and costs no privacy: the model is (ε, δ)-DP with respect to one user.

Statistics:

- :func:`private_item_counts`: item counts ``n = Xᵀ1``. One user changes at most ``c``
  counts, each by exactly 1, so ``Δ = √c`` (:func:`item_count_sensitivity`).
- :func:`private_gram`: the item co-occurrence (Gram) matrix ``G = XᵀX = Σ_u x_u x_uᵀ``. One
  user adds the block ``x_u x_uᵀ``: a ``k × k`` block of ones on the user's ``k ≤ c`` items,
  whose Frobenius norm is ``k ≤ c``. ``G`` is symmetric, so only its upper triangle (diagonal
  included) is released and mirrored; one user changes ``k`` diagonal entries and
  ``k(k − 1)/2`` upper entries by 1, so the released vector has
  ``Δ = √(c(c + 1)/2)`` (:func:`gram_sensitivity`), about ``c/√2`` instead of ``c``. The
  diagonal of ``G`` is the item counts, so noisy counts come with it for free (one release).
- :func:`~privrank.privacy.gram_release.private_gram_release` (what DP-EASE and DP-ItemKNN
  use, in :mod:`privrank.privacy.gram_release`): *bounded-norm* statistics
  instead of dropped rows. A user with ``k`` items is down-weighted, not truncated:
  counts ``Σ_u v_u x_u`` with ``v_u = min(1, C_n/√k_u)`` (sensitivity ``C_n``), and a Gram
  block ``Σ_u w_u x_u x_uᵀ`` with ``w_u = min(1, C/√(k_u(k_u + 1)/2))`` (sensitivity ``C``)
  on the items whose noisy count stands out of the Gram noise. Two adaptive Gaussian releases
  (counts, then the block), their budget split in Gaussian DP so that together they are
  exactly (ε, δ)-DP.

The model keeps each training user's own history to score that user; those histories are the
user's data, not a release. What is (ε, δ)-DP is everything the fit learned from *other*
users: a user's scores depend on the others only through the released noisy statistic (the
"billboard" model of joint DP used by Chien et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.privacy.calibration import ANALYTIC, Release, gaussian_multiplier
from privrank.privacy.mechanism import (
    Mechanism,
    PrivacyGuarantee,
    compose_guarantee,
    current_noise_scale,
    register_mechanism,
)
from privrank.privacy.spec import AccountantKind, PrivacySpec

__all__ = [
    "GaussianMechanism",
    "PrivacyGuarantee",
    "binary_matrix",
    "check_contribution_bound",
    "gram_sensitivity",
    "item_count_sensitivity",
    "planned_item_count_releases",
    "private_gram",
    "private_item_counts",
    "spectral_denoise",
    "symmetric_gaussian_noise",
]

# The test-only noise switch, where the CLI's audit command and the tests look for it.
from privrank.privacy.mechanism import _noise_scale_for_testing as _noise_scale_for_testing

#: How the ε of one Gaussian release calibrated by :class:`GaussianMechanism` is computed.
ONE_RELEASE = "one Gaussian release, ε exact by the analytic Gaussian mechanism (Balle & Wang 2018)"


# -------------------------------------------------------------------- sensitivities
def item_count_sensitivity(bound: int) -> float:
    """L2 sensitivity of the item counts ``Xᵀ1`` to one user with at most ``bound`` items: √c."""
    return math.sqrt(_bound_value(bound))


def gram_sensitivity(bound: int) -> float:
    """L2 sensitivity of the upper triangle (diagonal included) of ``XᵀX`` to one user with at
    most ``bound`` items: ``√(c(c + 1)/2)`` (``c`` diagonal and ``c(c − 1)/2`` upper entries
    change by 1)."""
    c = _bound_value(bound)
    return math.sqrt(c * (c + 1) / 2.0)


def _bound_value(bound: int) -> int:
    if isinstance(bound, bool) or not isinstance(bound, int | np.integer) or bound < 1:
        raise ConfigError(f"a contribution bound must be an integer ≥ 1. Got {bound!r}")
    return int(bound)


# -------------------------------------------------------------------- the Gaussian mechanism
@register_mechanism("gaussian")
class GaussianMechanism(Mechanism[np.ndarray, np.random.Generator]):
    """The Gaussian mechanism for one statistic, calibrated to a user-level spec.

    Releases ``f(X) + N(0, σ² I)`` with ``σ = m · Δ``: Δ is the statistic's L2 sensitivity to
    adding or removing one user's entire history (after contribution bounding) and ``m`` the
    smallest noise multiplier for which one release is (ε, δ)-DP, by the exact analytic
    condition of Balle & Wang (2018, Thm. 8)
    (:func:`~privrank.privacy.calibration.gaussian_multiplier`); the spec's accountant
    cross-checks it in the guarantee. Noise is drawn from the generator the caller passes (the
    spec's own, :meth:`PrivacySpec.noise_generator`).

    Args:
        spec: A resolved spec (δ set).
        sensitivity: Δ (> 0).
        mechanism: Short name recorded in the guarantee (e.g. ``gaussian-item-counts``).
        statistic: The statistic, in words.
        n_users: Users in the training vocabulary (recorded).
        noise_multiplier: A multiplier set by the caller (e.g. one share of a split budget);
            ``None``: calibrated to the spec's (ε, δ) for this release alone.
    """

    def __init__(
        self,
        spec: PrivacySpec,
        sensitivity: float,
        *,
        mechanism: str,
        statistic: str,
        n_users: int,
        noise_multiplier: float | None = None,
    ) -> None:
        if not isinstance(spec, PrivacySpec):
            raise ConfigError(f"{mechanism} needs a PrivacySpec. Got {type(spec).__name__}")
        if not (math.isfinite(sensitivity) and sensitivity > 0):
            raise ConfigError(f"{mechanism}: sensitivity must be finite and > 0: {sensitivity!r}")
        delta = spec.require_delta()
        self.spec = spec
        self.label = mechanism
        self.statistic = statistic
        self.n_users = int(n_users)
        self.sensitivity = float(sensitivity)
        self.noise_scale = current_noise_scale()
        self.noise_multiplier = (
            self.calibrate(float(spec.epsilon), float(delta), spec.accountant)
            if noise_multiplier is None
            else float(noise_multiplier)
        )

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The exact multiplier of one release (analytic; ``accountant`` only cross-checks)."""
        return gaussian_multiplier(float(epsilon), float(delta))

    def add_noise(self, statistic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``statistic + N(0, σ²)`` entry by entry (float64)."""
        noisy: np.ndarray = np.asarray(statistic, dtype=np.float64) + self.vector_noise(
            statistic.shape, rng
        )
        return noisy

    def releases(self) -> tuple[Release, ...]:
        """One Gaussian release of the statistic."""
        return (Release("gaussian", self.statistic, self.sensitivity, self.noise_multiplier),)

    def describe(self) -> str:
        """The mechanism in plain words."""
        return (
            f"the Gaussian mechanism on {self.statistic}: L2 sensitivity "
            f"{self.sensitivity:.4g} to one user, Gaussian noise with sigma = noise multiplier "
            f"{self.noise_multiplier:.4g} times the sensitivity = {self.noise_std:.4g}"
        )

    @property
    def guarantee(self) -> PrivacyGuarantee:
        """The guarantee of this one release (ε exact, the spec's accountant as cross-check)."""
        return compose_guarantee(
            self.releases(),
            self.spec,
            mechanism=self.label,
            calibration=ANALYTIC,
            accounting=ONE_RELEASE,
            n_users=self.n_users,
            noise_scale=self.noise_scale,
        )

    def vector_noise(self, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """``size`` i.i.d. ``N(0, σ²)`` draws (float64)."""
        return rng.standard_normal(size) * self.applied_std

    def symmetric_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """An ``n × n`` symmetric matrix whose upper triangle (diagonal included) is i.i.d.
        ``N(0, σ²)``, mirrored below (float64)."""
        return symmetric_gaussian_noise(n, self.applied_std, rng)


def symmetric_gaussian_noise(n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """A symmetric ``n × n`` matrix with i.i.d. ``N(0, std²)`` upper triangle (and diagonal).

    Drawn row block by row block from ``rng`` (deterministic for a seeded generator), then
    mirrored, so no draw is wasted below the diagonal and memory stays at one matrix.
    """
    noise = np.zeros((n, n), dtype=np.float64)
    for row in range(n):
        noise[row, row:] = rng.standard_normal(n - row)
    if std != 1.0:
        noise *= std
    lower = np.tril_indices(n, -1)
    noise[lower] = noise.T[lower]
    return noise


# -------------------------------------------------------------------- statistics
def binary_matrix(matrix: Any, owner: str) -> sp.csr_matrix:
    """``matrix`` as a float64 CSR matrix of 0/1 entries (duplicates summed).

    Raises:
        ConfigError: An entry other than 1 (``owner`` is named in the message).
    """
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    csr.sum_duplicates()
    if csr.nnz and not np.all(csr.data == 1.0):
        raise ConfigError(f"{owner} needs a binary user-item matrix (repeats counted once)")
    return csr


def check_contribution_bound(csr: sp.csr_matrix, bound: int, owner: str) -> None:
    """Refuse a matrix with a user (row) over the contribution bound.

    Raises:
        ConfigError: A row has more than ``bound`` entries.
    """
    largest = int(np.diff(csr.indptr).max(initial=0))
    if largest > bound:
        raise ConfigError(
            f"{owner}: a user has {largest} items but the contribution bound is {bound}; apply "
            "PrivacySpec.bound_contributions before computing the statistic"
        )


def _bounded_gaussian(
    matrix: Any,
    spec: PrivacySpec,
    *,
    owner: str,
    sensitivity: Callable[[int], float],
    mechanism: str,
    statistic: str,
) -> tuple[sp.csr_matrix, GaussianMechanism]:
    """The checked binary matrix and the Gaussian mechanism of a statistic of it.

    The spec's contribution bound ``c`` is required, the matrix must be binary with no user
    over ``c`` items, and the mechanism is calibrated to ``Δ = sensitivity(c)``.

    Raises:
        ConfigError: No contribution bound, a non-binary matrix or a user over the bound.
    """
    bound = spec.require_contribution_bound(owner)
    csr = binary_matrix(matrix, owner)
    check_contribution_bound(csr, bound, owner)
    gaussian = GaussianMechanism(
        spec,
        sensitivity(bound),
        mechanism=mechanism,
        statistic=statistic,
        n_users=csr.shape[0],
    )
    return csr, gaussian


def planned_item_count_releases(spec: PrivacySpec) -> tuple[Release, ...]:
    """What :func:`private_item_counts` at ``spec`` releases, from (ε, δ) alone: one Gaussian
    release at ``gaussian_multiplier(ε, δ)`` (sensitivity 1: ε depends on the multiplier
    only). For budgeting a fit before any data is read."""
    multiplier = gaussian_multiplier(float(spec.epsilon), float(spec.require_delta()))
    return (Release("gaussian", "the item counts (users per item)", 1.0, multiplier),)


def private_item_counts(
    matrix: sp.spmatrix, spec: PrivacySpec
) -> tuple[np.ndarray, PrivacyGuarantee]:
    """Noisy item counts: the Gaussian mechanism on ``n = Xᵀ1``.

    - Neighbouring relation: add or remove one user's entire history.
    - Statistic: ``n_i = |{u : x_ui = 1}|``, users per item.
    - Contribution bound: after ``bound_contributions`` each user has at most ``c`` items
      (binary rows).
    - Sensitivity: one user adds 1 to at most ``c`` counts, so
      ``‖n(X) − n(X')‖₂ ≤ √c`` (attained by a user with exactly ``c`` items).
    - Noise: ``σ = m · √c`` with ``m = calibrate_gaussian_noise(ε, δ)``.
    - Guarantee: the counts are user-level (ε, δ)-DP; so is any ranking derived from them.

    Args:
        matrix: The binary, contribution-bounded ``n_users × n_items`` matrix.
        spec: A resolved spec with a contribution bound.

    Returns:
        ``(counts, guarantee)``: float64 noisy counts (may be negative) and the guarantee.

    Raises:
        ConfigError: No contribution bound, unresolved δ, a user over the bound, or a
            non-binary matrix.
    """
    csr, mechanism = _bounded_gaussian(
        matrix,
        spec,
        owner="DP item counts",
        sensitivity=item_count_sensitivity,
        mechanism="gaussian-item-counts",
        statistic="the item counts (users per item)",
    )
    counts = np.asarray(csr.sum(axis=0), dtype=np.float64).ravel()
    counts += mechanism.vector_noise(counts.size, spec.noise_generator())
    return counts, mechanism.guarantee


def private_gram(matrix: sp.spmatrix, spec: PrivacySpec) -> tuple[np.ndarray, PrivacyGuarantee]:
    """Noisy item co-occurrence (Gram) matrix: the Gaussian mechanism on ``G = XᵀX``.

    - Neighbouring relation: add or remove one user's entire history.
    - Statistic: ``G_ij = |{u : x_ui = x_uj = 1}|`` (diagonal: the item counts). ``G`` is
      symmetric, so the released statistic is its upper triangle, diagonal included; the
      lower triangle is the mirror image (post-processing).
    - Contribution bound: after ``bound_contributions`` each user has ``k ≤ c`` items.
    - Sensitivity: one user adds ``x_u x_uᵀ``, a ``k × k`` block of ones (Frobenius norm
      ``k ≤ c`` on the full matrix). On the released upper triangle it changes ``k`` diagonal
      and ``k(k − 1)/2`` off-diagonal entries by 1: ``Δ = √(c(c + 1)/2)``.
    - Noise: i.i.d. ``N(0, σ²)`` on each upper-triangle entry, ``σ = m · Δ``,
      ``m = calibrate_gaussian_noise(ε, δ)``; one release (the diagonal, i.e. noisy item counts,
      is part of it and costs nothing more).
    - Guarantee: the noisy Gram matrix, and everything computed from it alone, is user-level
      (ε, δ)-DP.

    Args:
        matrix: The binary, contribution-bounded ``n_users × n_items`` matrix.
        spec: A resolved spec with a contribution bound.

    Returns:
        ``(gram, guarantee)``: the dense symmetric float64 noisy Gram matrix and the guarantee.

    Raises:
        ConfigError: As :func:`private_item_counts`.
    """
    csr, mechanism = _bounded_gaussian(
        matrix,
        spec,
        owner="DP Gram matrix",
        sensitivity=gram_sensitivity,
        mechanism="gaussian-gram",
        statistic="the item co-occurrence matrix XᵀX (upper triangle with the diagonal)",
    )
    gram = (csr.T @ csr).toarray()
    gram += mechanism.symmetric_noise(gram.shape[0], spec.noise_generator())
    return gram, mechanism.guarantee


# -------------------------------------------------------------------- post-processing
def spectral_denoise(gram: np.ndarray, noise_std: float, threshold: float) -> np.ndarray:
    """Project a noisy symmetric matrix onto the PSD cone, shrinking its eigenvalues.

    The symmetric Gaussian noise of :func:`private_gram` on an ``n × n`` block has spectral
    norm about ``2σ√n`` (Wigner's semicircle); eigenvalues of the noisy matrix below that edge
    are mostly noise. This soft-thresholds every eigenvalue ``w`` to ``max(w − τ, 0)`` with
    ``τ = threshold · 2σ√n``: a PSD matrix (eigenvalue floor 0) that keeps the directions that
    stand out of the noise. With ``threshold = 0`` it is the plain projection onto the PSD cone.

    It reads nothing but the released matrix and the public σ, so it is post-processing and
    costs no privacy.

    Args:
        gram: Symmetric ``n × n`` matrix (float64).
        noise_std: σ of the noise on each entry (0: no noise, projection only).
        threshold: τ in units of ``2σ√n`` (≥ 0).

    Returns:
        The denoised symmetric PSD matrix (float64).
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"spectral_denoise: threshold must be ≥ 0. Got {threshold!r}")
    n = gram.shape[0]
    if n == 0:
        return np.zeros((0, 0))
    values, vectors = np.linalg.eigh(np.asarray(gram, dtype=np.float64))
    tau = threshold * 2.0 * float(noise_std) * math.sqrt(n)
    shrunk = np.maximum(values - tau, 0.0)
    out = (vectors * shrunk) @ vectors.T
    symmetric: np.ndarray = (out + out.T) / 2.0
    return symmetric
