r"""DP-ALS: user-level private item-side statistics of implicit ALS (Chien et al. 2021).

This is the mechanism of Chien, Jain, Krichene, Rendle, Song, Thakurta and Zhang, "Private
Alternating Least Squares: Practical Private Matrix Completion with Tighter Rates" (ICML 2021),
for the implicit-feedback ALS of :class:`~privrank.models.ials.IALS`, in the **billboard model of
joint differential privacy**:

- the *item factors* are public: every ALS iteration computes them from noisy item-side
  sufficient statistics (a Gaussian release, below) and nothing else;
- each *user factor* is solved by that user alone, from their own items and the released item
  factors, and is never released (a user's recommendations depend on the other users only
  through the releases).

**Neighbouring relation.** Add or remove one user's entire history (the unit of privacy is the
user). Before anything is computed, each user keeps at most ``c`` items
(:meth:`~privrank.privacy.spec.PrivacySpec.bound_contributions`), and the data is the binary
``n_users × n_items`` matrix ``X`` of the bounded histories.

**One release** (one ALS iteration). With the current user factors ``w_u ∈ R^d``, first clipped
to ``‖w_u‖₂ ≤ C`` (``clip_rows``; ``C`` is the spec's ``clipping_norm``), the released vector is
the concatenation of

- ``G = Σ_u w_u w_uᵀ`` over *all* users (upper triangle with the diagonal): the Gramian of the
  implicit-ALS "every unobserved pair is a 0 with weight α₀" term. It is released (not dropped),
  so the zero-noise fit is iALS exactly;
- for every item ``j``, with ``U_j`` its users: ``A_j = Σ_{u ∈ U_j} w_u w_uᵀ`` (upper triangle
  with the diagonal; only with ``item_grams=True``), ``b_j = Σ_{u ∈ U_j} w_u`` and the weighted
  count ``γ · n_j = Σ_{u ∈ U_j} γ`` (``γ`` = ``count_weight``; the noisy counts give the
  frequency-scaled regularisation of the item solve, the cold-start popularity and the choice of
  items to keep — the count is a coordinate of every release, so popularity costs no separate
  release).

**Per-user weights** (optional, ``weighted_bound`` = ``c'``). A user with ``k_u > c'`` items
enters the per-item statistics with weight ``s_u = √(c'/k_u)`` (others with 1):
``A_j = Σ s_u w_u w_uᵀ``, ``b_j = Σ s_u w_u``, ``n_j = Σ s_u`` (:func:`user_weights`); the
weight depends on the user's own data only, and ``k_u s_u² ≤ min(c, c')``. Heavy users then
keep all their items, down-weighted, instead of being truncated further (the weighted
implicit-ALS objective gives user ``u`` confidence ``s_u``).

**Sensitivity.** One user ``u`` with ``k ≤ c`` items and weight ``s`` adds ``w_u w_uᵀ`` to
``G`` and ``s (w_u w_uᵀ, w_u, γ)`` to the entries of each of their ``k`` items, and nothing
else. For a symmetric rank-one ``w wᵀ`` the squared norm of its upper triangle (diagonal
included) is ``Σ_{i ≤ l} w_i² w_l² = (‖w‖⁴ + Σ_i w_i⁴) / 2 ≤ ‖w‖⁴ ≤ C⁴`` (equality for
``w = C e_1``), so the squared L2 norm of the user's whole addition to the released vector is
at most ``C⁴ + k s² (C⁴ [item_grams] + C² + γ²)``, and with ``k s² ≤ c_e = min(c, c')``

.. math:: \Delta^2 = C^4 + c_e\,\big(C^4\,[\text{item\_grams}] + C^2 + \gamma^2\big),

attained by a user with exactly ``c_e`` items (weight 1) whose clipped factor is ``C e_1``, or
by a heavier user with that factor when ``c' < c`` (:func:`als_release_sensitivity`; checked by
brute force in ``tests/privacy/test_dp_ials.py``).

**Noise and composition.** Every released coordinate gets i.i.d. ``N(0, σ²)`` with
``σ = m · Δ``. The ``T`` iterations are ``T`` adaptively chosen Gaussian releases of
multiplier ``m`` (each one's input, the user factors, depends on the earlier releases and on the
users' own data only). ``m`` is the smallest multiplier whose ``T``-fold composition is
(ε, δ)-DP by the spec's accountant (:func:`als_noise_multiplier`: dp_accounting's PLD by
default, RDP when the spec asks for it); the guarantee records the other accountant's bound on
the same composition as a cross-check (with PLD calibration: the RDP ε, never below the target).
Everything else — the PSD projection of
the noisy Gramians, the item solves, the choice of items, the user solves — is
post-processing of the releases, or a user's computation on their own data.

**Choices, against Chien et al.** The implicit-feedback Gramian ``G`` is released and
accounted for (it costs ``C⁴`` of ``Δ²``, about 2% at ``c = 30``), not dropped. Their per-item
limits become the per-user weights above (the bound ``c`` per user, then ``√(c'/k)``
down-weighting), and their restriction to frequent items is post-processing here: items whose
noisy count is too small get zero factors (:class:`~privrank.models.ials.IALS`). Releasing the
per-item Gramians ``A_j`` is optional: on ML-100K, estimating them from the counts and ``G``
(post-processing) and spending the budget on ``b_j`` alone gives better rankings.

**Guarantee.** The released item statistics of all ``T`` iterations, hence the item factors and
the noisy popularity, are user-level (ε, δ)-DP; each user's own factor and recommendations are
(ε, δ)-jointly DP with respect to every other user (billboard lemma, Hsu et al. 2014).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.privacy.calibration import (
    Release,
    calibrate_multiplier,
    gaussian_multiplier,
    other_accountant,
)
from privrank.privacy.mechanism import (
    Mechanism,
    PrivacyGuarantee,
    compose_guarantee,
    current_noise_scale,
    register_mechanism,
)
from privrank.privacy.mechanisms import binary_matrix, check_contribution_bound
from privrank.privacy.spec import AccountantKind, PrivacySpec

__all__ = [
    "ALSItemStatistics",
    "PrivateALSMechanism",
    "als_noise_multiplier",
    "als_release_sensitivity",
    "clip_rows",
    "exact_item_statistics",
    "pld_discretization",
    "upper_triangle",
    "user_weights",
]

_OWNER = "DP-iALS"


# -------------------------------------------------------------------- sensitivity, calibration
def als_release_sensitivity(
    bound: int, clipping_norm: float, *, item_grams: bool, count_weight: float
) -> float:
    """L2 sensitivity Δ of one DP-ALS release to adding or removing one user.

    ``Δ² = C⁴ + c (C⁴ [item_grams] + C² + γ²)``: the user's share of the global Gramian, and of
    the per-item Gramian (optional), sum and weighted count of each of their ``≤ c`` items (see
    the module docstring for the derivation; attained by a user with ``c`` items and clipped
    factor ``C e_1``).

    Args:
        bound: ``c``, the cap on items per user (≥ 1).
        clipping_norm: ``C``, the L2 bound on a user factor (> 0).
        item_grams: Whether the per-item Gramians ``A_j`` are released.
        count_weight: ``γ ≥ 0``, the weight of the count coordinate.
    """
    if isinstance(bound, bool) or not isinstance(bound, int | np.integer) or bound < 1:
        raise ConfigError(f"{_OWNER}: the contribution bound must be an integer ≥ 1. Got {bound!r}")
    if not (math.isfinite(clipping_norm) and clipping_norm > 0):
        raise ConfigError(f"{_OWNER}: the clipping norm must be finite and > 0: {clipping_norm!r}")
    if not (math.isfinite(count_weight) and count_weight >= 0):
        raise ConfigError(f"{_OWNER}: the count weight must be finite and ≥ 0: {count_weight!r}")
    c, norm = int(bound), float(clipping_norm)
    per_item = (norm**4 if item_grams else 0.0) + norm**2 + float(count_weight) ** 2
    return math.sqrt(norm**4 + c * per_item)


def als_noise_multiplier(
    epsilon: float, delta: float, releases: int, accountant: AccountantKind = "pld"
) -> float:
    """The smallest multiplier ``m = σ/Δ`` whose ``releases``-fold Gaussian composition is
    (ε, δ)-DP as ``accountant`` computes it (within a relative 1e-3, rounded up).

    The search starts from the exact answer (``releases`` Gaussian releases of multiplier ``m``
    compose exactly to one of multiplier ``m/√T``,
    :func:`~privrank.privacy.accounting.calibrate_gaussian_noise`) and moves up until the
    accountant (PLD: pessimistic discretisation, an upper bound at any interval; RDP: a looser
    bound) certifies the target. The PLD discretisation interval is
    :func:`pld_discretization` (``1e-4 · max(1, ε)``): the privacy loss spans about ε, so a
    finer grid only costs time (a coarser one stays an upper bound).
    """
    exact = gaussian_multiplier(float(epsilon), float(delta), int(releases))
    return calibrate_multiplier(
        float(epsilon),
        float(delta),
        (_release(exact, int(releases)),),
        accountant_name=accountant,
        pld_discretization=pld_discretization(epsilon),
        initial=exact,
        step=1.001,
    )


def pld_discretization(epsilon: float) -> float:
    """The PLD value-discretisation interval used for a target ε: ``1e-4 · max(1, ε)``."""
    return 1e-4 * max(1.0, float(epsilon))


def _release(
    multiplier: float, releases: int, statistic: str = "item statistics", sensitivity: float = 1.0
) -> Release:
    return Release("dp-als", statistic, sensitivity, float(multiplier), count=releases)


# -------------------------------------------------------------------- statistics
def clip_rows(factors: np.ndarray, norm: float) -> np.ndarray:
    """Each row scaled down to L2 norm ≤ ``norm`` (rows within it are unchanged), float64."""
    rows = np.asarray(factors, dtype=np.float64)
    lengths = np.linalg.norm(rows, axis=1)
    scale = np.ones_like(lengths)
    over = lengths > norm
    scale[over] = norm / lengths[over]
    clipped: np.ndarray = rows * scale[:, None]
    return clipped


def upper_triangle(matrices: np.ndarray) -> np.ndarray:
    """The upper triangles (diagonal included) of ``(..., d, d)`` matrices, ``(..., d(d+1)/2)``."""
    d = matrices.shape[-1]
    rows, cols = np.triu_indices(d)
    return matrices[..., rows, cols]


def _symmetric_from_upper(values: np.ndarray, d: int) -> np.ndarray:
    rows, cols = np.triu_indices(d)
    out = np.zeros((*values.shape[:-1], d, d), dtype=np.float64)
    out[..., rows, cols] = values
    out[..., cols, rows] = values
    return out


@dataclass(frozen=True)
class ALSItemStatistics:
    """Item-side sufficient statistics of one ALS item update (exact, or a noisy release).

    Attributes:
        gram: ``(d, d)`` symmetric ``G = Σ_u w_u w_uᵀ`` over all users.
        item_grams: ``(n_items, d, d)`` symmetric ``A_j = Σ_{u∈U_j} w_u w_uᵀ``, or ``None``
            when not released.
        item_sums: ``(n_items, d)`` ``b_j = Σ_{u∈U_j} w_u``.
        item_counts: ``(n_items,)`` (weighted) counts ``n_j = Σ_{u∈U_j} s_u`` (``|U_j|``
            without weights); a noisy release divides the released ``γ n_j + noise`` by ``γ``.
        noise_std: σ on each released coordinate (0 for exact statistics); the counts' noise
            is ``σ / γ``.
    """

    gram: np.ndarray
    item_grams: np.ndarray | None
    item_sums: np.ndarray
    item_counts: np.ndarray
    noise_std: float = 0.0


def user_weights(matrix: sp.spmatrix, weighted_bound: int | None) -> np.ndarray:
    """Per-user weights ``s_u = min(1, √(c'/k_u))`` (``k_u``: the user's items, ``c'`` =
    ``weighted_bound``; all ones when it is ``None``), so that ``k_u s_u² ≤ c'``."""
    counts: np.ndarray = np.diff(sp.csr_matrix(matrix).indptr).astype(np.float64)
    weights = np.ones_like(counts)
    if weighted_bound is not None:
        heavy = counts > weighted_bound
        weights[heavy] = np.sqrt(weighted_bound / counts[heavy])
    return weights


def exact_item_statistics(
    matrix: sp.spmatrix,
    user_factors: np.ndarray,
    *,
    item_grams: bool,
    weights: np.ndarray | None = None,
) -> ALSItemStatistics:
    """The exact statistics of :class:`ALSItemStatistics` (float64) for already-clipped factors.

    Args:
        matrix: Binary ``n_users × n_items`` matrix (row ``u``: the items of user ``u``).
        user_factors: ``(n_users, d)`` user factors.
        item_grams: Compute the per-item Gramians ``A_j``.
        weights: Per-user weights ``s_u`` of the per-item statistics (``A_j = Σ s_u w_u w_uᵀ``,
            ``b_j = Σ s_u w_u``, ``n_j = Σ s_u``; ``G`` is never weighted); ``None``: all 1.
    """
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    factors = np.asarray(user_factors, dtype=np.float64)
    d = factors.shape[1]
    if weights is None:
        weights = np.ones(csr.shape[0])
    by_item = sp.csr_matrix(csr.T)
    sums = np.asarray(by_item @ (factors * weights[:, None]))
    grams = None
    if item_grams:
        grams = np.zeros((by_item.shape[0], d, d), dtype=np.float64)
        for item in range(by_item.shape[0]):
            users = by_item.indices[by_item.indptr[item] : by_item.indptr[item + 1]]
            if users.size:
                block = factors[users]
                grams[item] = (block * weights[users, None]).T @ block
    item_counts = np.asarray(by_item @ weights, dtype=np.float64)
    return ALSItemStatistics(
        gram=factors.T @ factors, item_grams=grams, item_sums=sums, item_counts=item_counts
    )


# -------------------------------------------------------------------- the mechanism
@register_mechanism("dp-als")
class PrivateALSMechanism(Mechanism[ALSItemStatistics, np.random.Generator]):
    """``T`` adaptive Gaussian releases of the item-side statistics of implicit ALS.

    See the module docstring for the release, its sensitivity and the guarantee. Each call of
    :meth:`release` clips the given user factors to ``C``, computes the statistics of the
    contribution-bounded matrix and adds ``N(0, σ²)`` to every released coordinate (upper
    triangles of the Gramians, item sums, weighted counts); at most ``releases`` calls are
    allowed, since the noise is calibrated for exactly that many.

    Args:
        spec: A resolved spec with a contribution bound (its ``clipping_norm`` is ``C``).
        releases: ``T``, the number of releases (ALS iterations) the budget is split over.
        item_grams: Release the per-item Gramians ``A_j`` (else only ``G``, ``b_j``, ``n_j``).
        count_weight: ``γ`` of the count coordinate (> 0).
        n_users: Users in the training vocabulary (recorded).
        weighted_bound: ``c'``: users with more items are down-weighted by ``√(c'/k_u)``
            (:func:`user_weights`), and Δ is that of ``min(c, c')`` items; ``None``: no weights.

    Raises:
        ConfigError: No contribution bound, unresolved δ, or invalid arguments.
    """

    def __init__(
        self,
        spec: PrivacySpec,
        *,
        releases: int,
        item_grams: bool,
        count_weight: float,
        n_users: int,
        weighted_bound: int | None = None,
    ) -> None:
        if not isinstance(spec, PrivacySpec):
            raise ConfigError(f"{_OWNER} needs a PrivacySpec. Got {type(spec).__name__}")
        bound = spec.require_contribution_bound(_OWNER)
        delta = spec.require_delta()
        if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
            raise ConfigError(f"{_OWNER}: releases must be an integer ≥ 1. Got {releases!r}")
        if not (math.isfinite(count_weight) and count_weight > 0):
            raise ConfigError(f"{_OWNER}: the count weight must be > 0. Got {count_weight!r}")
        self.spec = spec
        self.bound = int(bound)
        self.count = releases
        self.item_grams = bool(item_grams)
        self.count_weight = float(count_weight)
        self.clipping_norm = float(spec.clipping_norm)
        if weighted_bound is not None and (
            isinstance(weighted_bound, bool)
            or not isinstance(weighted_bound, int | np.integer)
            or weighted_bound < 1
        ):
            raise ConfigError(
                f"{_OWNER}: the weighted bound must be an integer ≥ 1. Got {weighted_bound!r}"
            )
        self.weighted_bound = None if weighted_bound is None else int(weighted_bound)
        effective = self.bound if weighted_bound is None else min(self.bound, int(weighted_bound))
        self.sensitivity = als_release_sensitivity(
            effective, self.clipping_norm, item_grams=self.item_grams, count_weight=count_weight
        )
        self.n_users = int(n_users)
        self.noise_scale = current_noise_scale()
        self.noise_multiplier = self.calibrate(float(spec.epsilon), float(delta), spec.accountant)
        self.released = 0
        grams = "A_j = Σ w_u w_uᵀ (upper triangle), " if self.item_grams else ""
        self.statistic = (
            f"the item-side statistics of {releases} implicit-ALS iterations: per item "
            f"{grams}b_j = Σ w_u and the weighted count gamma·n_j "
            f"(gamma = {self.count_weight:g}) "
            "over its users, and the users' Gramian Σ w_u w_uᵀ (upper triangle), with "
            f"user factors clipped to L2 norm {self.clipping_norm:g}"
            + (
                ""
                if self.weighted_bound is None
                else f" and users with k > {self.weighted_bound} items weighted by "
                f"√({self.weighted_bound}/k) in the per-item sums"
            )
        )
        self.guarantee: PrivacyGuarantee = self._guarantee()

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The smallest multiplier whose ``releases``-fold composition meets (ε, δ) by
        ``accountant`` (:func:`als_noise_multiplier`)."""
        return als_noise_multiplier(epsilon, delta, self.count, accountant)

    def _guarantee(self) -> PrivacyGuarantee:
        spec = self.spec
        delta = float(spec.require_delta())
        # The cross-check: RDP's bound on the same composition (PLD's when RDP calibrated it).
        other = other_accountant(spec.accountant)
        interval = pld_discretization(float(spec.epsilon))
        accounting = (
            f"{spec.accountant.upper()} composition (dp_accounting; PLD discretisation "
            f"{interval:.2g}) of {self.count} adaptive "
            f"Gaussian releases, each with noise multiplier {self.noise_multiplier:.4g}, "
            f"calibrated so the composed ε is ≤ {float(spec.epsilon):g} at δ = "
            f"{delta:.3g}; the {other.upper()} bound of the same composition is the "
            "cross-check. Item factors are computed from the releases only; "
            "each user's factor from their own data and the item factors (billboard model "
            "of joint DP, Chien et al. 2021)"
        )
        return compose_guarantee(
            self.releases(),
            spec,
            mechanism="gaussian-als-item-statistics",
            calibration=spec.accountant,
            accounting=accounting,
            n_users=self.n_users,
            pld_discretization=interval,
            noise_scale=self.noise_scale,
        )

    def releases(self) -> tuple[Release, ...]:
        """The ``T`` Gaussian releases of the item statistics (one :class:`Release`)."""
        return (_release(self.noise_multiplier, self.count, self.statistic, self.sensitivity),)

    def describe(self) -> str:
        """The mechanism in plain words."""
        return (
            f"DP-ALS: {self.count} Gaussian releases of {self.statistic}; L2 sensitivity "
            f"{self.sensitivity:.4g} to one user (at most {self.bound} items), noise "
            f"multiplier {self.noise_multiplier:.4g} (sigma = {self.noise_std:.4g})"
        )

    def release(
        self, matrix: sp.spmatrix, user_factors: np.ndarray, rng: np.random.Generator
    ) -> ALSItemStatistics:
        """One noisy release of the item statistics for the current user factors.

        Args:
            matrix: The binary, contribution-bounded ``n_users × n_items`` matrix.
            user_factors: ``(n_users, d)`` current user factors (clipped here to ``C``).
            rng: The DP noise generator (:meth:`PrivacySpec.noise_generator`).

        Returns:
            The noisy statistics, symmetric Gramians mirrored from their noisy upper triangles.

        Raises:
            ConfigError: More than ``releases`` calls, a user over the bound, or a non-binary
                matrix.
        """
        if self.released >= self.count:
            raise ConfigError(
                f"{_OWNER}: the noise was calibrated for {self.count} releases; refusing "
                "another (it would exceed the privacy budget)"
            )
        csr = binary_matrix(matrix, _OWNER)
        check_contribution_bound(csr, self.bound, _OWNER)
        clipped = clip_rows(user_factors, self.clipping_norm)
        weights = user_weights(csr, self.weighted_bound)
        exact = exact_item_statistics(csr, clipped, item_grams=self.item_grams, weights=weights)
        noisy = self.add_noise(exact, rng)
        self.released += 1
        return noisy

    def add_noise(
        self, statistic: ALSItemStatistics, rng: np.random.Generator
    ) -> ALSItemStatistics:
        """The exact statistics plus ``N(0, σ²)`` on every released coordinate.

        The count coordinate released is ``γ n_j + noise``; it is returned divided by ``γ``.
        Draw order is fixed (G, then b, then counts, then A_j), so a seeded generator
        reproduces the release exactly.
        """
        exact = statistic
        std = self.applied_std
        d = exact.gram.shape[0]
        tri = d * (d + 1) // 2
        n_items = exact.item_sums.shape[0]
        gram = _symmetric_from_upper(upper_triangle(exact.gram) + std * rng.standard_normal(tri), d)
        sums = exact.item_sums + std * rng.standard_normal((n_items, d))
        counts = exact.item_counts * self.count_weight + std * rng.standard_normal(n_items)
        grams = None
        if exact.item_grams is not None:
            noisy = upper_triangle(exact.item_grams)
            noisy += std * rng.standard_normal(noisy.shape)
            grams = _symmetric_from_upper(noisy, d)
        return ALSItemStatistics(
            gram=gram,
            item_grams=grams,
            item_sums=sums,
            item_counts=counts / self.count_weight,
            noise_std=std,
        )
