"""The bounded-norm counts-then-Gram release of DP-EASE and DP-ItemKNN.

Two adaptive Gaussian releases on the contribution-bounded binary matrix ``X``, user-level
(neighbours differ by one user's entire history), their budget split in Gaussian DP so that
together they are exactly (ε, δ)-DP: noisy bounded-norm item counts (heavy users down-weighted,
not truncated), then a noisy bounded-norm Gram block on the items whose noisy count stands out
of the noise (:func:`private_gram_release`). Both releases are
:class:`~privrank.privacy.mechanisms.GaussianMechanism` releases; the guarantee lists both
(:class:`~privrank.privacy.mechanism.PrivacyGuarantee`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.privacy.calibration import ANALYTIC, Release, gaussian_multiplier
from privrank.privacy.mechanism import PrivacyGuarantee, compose_guarantee
from privrank.privacy.mechanisms import (
    ONE_RELEASE,
    GaussianMechanism,
    binary_matrix,
    gram_sensitivity,
    item_count_sensitivity,
)
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "GramRelease",
    "GramStatistics",
    "MatrixGramStatistics",
    "count_row_weights",
    "gram_release_multipliers",
    "gram_row_weights",
    "partial_counts",
    "partial_gram",
    "planned_gram_releases",
    "private_gram_release",
    "signal_items",
]


def count_row_weights(lengths: np.ndarray, norm: float) -> np.ndarray:
    r"""Per-user weights ``v_u = min(1, C / √k_u)`` of the weighted item counts.

    A user with ``k_u`` (binary) items adds ``v_u x_u`` to ``n = Σ_u v_u x_u``, a vector of L2
    norm ``v_u √k_u ≤ C``: the counts have user-level L2 sensitivity ``C`` whatever a user's
    number of items, and no row is dropped (a heavy user's items are down-weighted instead).
    Users with at most ``C²`` items keep weight 1.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    weights: np.ndarray = np.minimum(1.0, float(norm) / np.sqrt(np.maximum(lengths, 1.0)))
    return weights


def gram_row_weights(lengths: np.ndarray, norm: float) -> np.ndarray:
    r"""Per-user weights ``w_u = min(1, C / √(k_u(k_u + 1)/2))`` of the weighted Gram matrix.

    A user with ``k_u`` items adds ``w_u x_u x_uᵀ`` to ``G_w = Xᵀ diag(w) X``: on the released
    upper triangle (diagonal included) that changes ``k_u(k_u + 1)/2`` entries by ``w_u`` each,
    an L2 norm of ``w_u √(k_u(k_u + 1)/2) ≤ C``. So ``G_w`` has user-level sensitivity ``C``
    (brute-forced in ``tests/privacy/test_dp_utility.py``); a user with ``k`` items such that
    ``√(k(k + 1)/2) ≤ C`` keeps weight 1 (``C = gram_sensitivity(c)`` reweights nobody under a
    cap of ``c`` items).
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    size = np.sqrt(np.maximum(lengths * (lengths + 1.0) / 2.0, 1.0))
    return np.minimum(1.0, float(norm) / size)


def signal_items(counts: np.ndarray, gram_std: float, ratio: float) -> np.ndarray:
    r"""The items whose Gram block stands out of the noise, chosen from released counts only.

    Sorts items by (noisy) count, most popular first, and keeps the largest ``N`` such that the
    ``N``-th count is at least ``ratio · σ_G · √N``: ``σ_G√N`` is half the spectral norm of the
    symmetric noise on an ``N × N`` block (Wigner), and a count is the diagonal of the block's
    signal, so every kept item's signal is comparable to the noise's. The condition is monotone
    in ``N`` (counts decrease, ``√N`` grows). With ``σ_G = 0`` every item with a non-negative
    count is kept. Reads only released quantities and public parameters: post-processing.

    Returns:
        Kept item codes, most popular first (ties: lower code first).
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = np.lexsort((np.arange(counts.size), -counts))
    ranked = counts[order]
    needed = float(ratio) * float(gram_std) * np.sqrt(np.arange(1, counts.size + 1))
    ok = ranked >= needed
    n_kept = int(np.argmin(ok)) if not ok.all() else counts.size
    return order[:n_kept]


def partial_counts(rows: sp.csr_matrix, norm: float) -> np.ndarray:
    r"""``Σ_u v_u x_u`` over the users (rows) of ``rows``: their share of the weighted counts.

    The weights ``v_u`` (:func:`count_row_weights`) depend on each user's own row only, so the
    weighted counts of a dataset are the sum of this over any partition of its users.

    Returns:
        ``(n_items,)`` float64.
    """
    weights = count_row_weights(np.diff(rows.indptr), norm)
    counts: np.ndarray = np.asarray(rows.T @ weights, dtype=np.float64).ravel()
    return counts


def partial_gram(rows: sp.csr_matrix, items: np.ndarray | None, norm: float) -> np.ndarray:
    r"""``Σ_u w_u x_u x_uᵀ`` over the users of ``rows``, each restricted to the block ``items``.

    Each user is restricted to the block, then weighted by ``w_u`` (:func:`gram_row_weights`)
    from their own row alone: the weighted Gram block of a dataset is the sum of this over any
    partition of its users.

    Args:
        rows: Binary float64 CSR rows (users) over the whole catalogue.
        items: Item codes of the block (``None``: every item, in code order).
        norm: ``C`` of :func:`gram_row_weights` (``math.inf``: nobody reweighted).

    Returns:
        ``(N, N)`` float64, dense.
    """
    block = rows if items is None else rows[:, items]
    weights = gram_row_weights(np.diff(block.indptr), norm)
    if np.all(weights == 1.0):
        gram: np.ndarray = (block.T @ block).toarray()
    else:
        gram = (block.T @ sp.diags(weights) @ block).toarray()
    return gram


@runtime_checkable
class GramStatistics(Protocol):
    r"""Where the sums over users of a Gram release are computed.

    :func:`private_gram_release` reads the data only through these sums, each a sum over users
    of a function of one user's own row (:func:`partial_counts`, :func:`partial_gram`). So
    they may be computed on one machine (:class:`MatrixGramStatistics`) or summed over user
    partitions on a cluster (``privrank.distributed``): the sums are the same (up to the order
    of float additions), the noise is drawn once, by the release, on the summed statistic, and
    the guarantee is unchanged. Implementations are trusted with the raw rows (as the process
    that computes them on one machine is).

    Attributes:
        shape: ``(n_users, n_items)``.
    """

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""

    def max_row_length(self) -> int:
        """The most items any user has."""

    def weighted_counts(self, norm: float) -> np.ndarray:
        """:func:`partial_counts` summed over every user."""

    def weighted_gram(self, items: np.ndarray | None, norm: float) -> np.ndarray:
        """:func:`partial_gram` summed over every user."""


class MatrixGramStatistics:
    """:class:`GramStatistics` of a matrix held by this process.

    Args:
        matrix: Binary ``n_users × n_items`` matrix (repeats counted once).
        owner: Named in the error of a non-binary matrix.
    """

    def __init__(self, matrix: sp.spmatrix, owner: str = "DP Gram release") -> None:
        self.matrix = binary_matrix(matrix, owner)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        rows, cols = self.matrix.shape
        return int(rows), int(cols)

    def max_row_length(self) -> int:
        """The most items any user has."""
        return int(np.diff(self.matrix.indptr).max(initial=0))

    def weighted_counts(self, norm: float) -> np.ndarray:
        """:func:`partial_counts` of every user."""
        return partial_counts(self.matrix, norm)

    def weighted_gram(self, items: np.ndarray | None, norm: float) -> np.ndarray:
        """:func:`partial_gram` of every user."""
        return partial_gram(self.matrix, items, norm)


@dataclass(frozen=True)
class GramRelease:
    """The output of :func:`private_gram_release` (everything in it is private).

    Attributes:
        counts: Noisy item counts of every item (float64; may be negative).
        count_std: σ actually applied to ``counts``.
        items: Item codes of the released Gram block (most popular first, or all items).
        gram: The noisy (weighted) Gram block on ``items``, symmetric ``N × N`` float64.
        gram_std: σ actually applied to each upper-triangle entry of ``gram``.
        guarantee: The user-level guarantee of the whole release.
    """

    counts: np.ndarray
    count_std: float
    items: np.ndarray
    gram: np.ndarray
    gram_std: float
    guarantee: PrivacyGuarantee


def gram_release_multipliers(spec: PrivacySpec, count_share: float) -> tuple[float | None, float]:
    r"""The noise multipliers of :func:`private_gram_release` at ``spec``'s (ε, δ).

    With :math:`m` = ``gaussian_multiplier(ε, δ)`` (one Gaussian release meeting (ε, δ)
    exactly): the counts get :math:`m/\sqrt\rho` and the Gram block :math:`m/\sqrt{1-\rho}`
    (``None`` and :math:`m` when ``count_share`` ρ is 0). They depend on (ε, δ, ρ) only, never
    on the data.
    """
    base = gaussian_multiplier(float(spec.epsilon), float(spec.require_delta()))
    if count_share > 0:
        return base / math.sqrt(count_share), base / math.sqrt(1.0 - count_share)
    return None, base


def planned_gram_releases(spec: PrivacySpec, count_share: float) -> tuple[Release, ...]:
    """What :func:`private_gram_release` at ``spec`` composes (the count release when
    ``count_share > 0``, then the Gram block's), computed from (ε, δ, ρ) alone: for budgeting a
    fit before any data is read. The accountants see the same multipliers as the release's
    guarantee records; the sensitivities are 1 (ε depends on the multipliers only)."""
    counts, gram = gram_release_multipliers(spec, count_share)
    block = Release("gaussian", "the item co-occurrence block", 1.0, gram)
    if counts is None:
        return (block,)
    return (Release("gaussian", "the item counts", 1.0, counts), block)


def private_gram_release(
    matrix: sp.spmatrix | GramStatistics,
    spec: PrivacySpec,
    *,
    count_share: float = 0.0,
    count_norm: float | None = None,
    gram_norm: float | None = None,
    signal_ratio: float | None = None,
    max_items: int | None = None,
) -> GramRelease:
    r"""Noisy item counts, then a noisy bounded-norm Gram block on the items that carry signal.

    A two-stage Gaussian mechanism on the contribution-bounded binary matrix ``X`` (at most
    ``c`` items per user). Neighbouring datasets differ by one user's entire history.

    1. *Counts* (when ``count_share > 0``): ``n = Σ_u v_u x_u`` with
       ``v_u = min(1, C_n/√k_u)`` (:func:`count_row_weights`), L2 sensitivity ``C_n``
       (``count_norm``, never above ``√c``, which a user with ``k ≤ c`` items cannot exceed;
       ``None``: ``√c``, nobody reweighted), released with
       ``σ_n = C_n · m/√ρ``.
    2. *Items* (post-processing of the noisy counts): the ``N`` most popular by noisy count with
       :func:`signal_items` (``signal_ratio``) and at most ``max_items`` of them (all items when
       both are ``None``).
    3. *Gram block*: on those items only, each user's ``k_u`` kept items (``x_u`` restricted to
       the block) weigh ``w_u = min(1, C/√(k_u(k_u + 1)/2))`` (:func:`gram_row_weights`):
       ``G = Σ_u w_u x_u x_uᵀ``, upper-triangle L2 sensitivity ``C`` (``gram_norm``, never
       above ``√(c(c + 1)/2)`` = :func:`gram_sensitivity`; ``None``: that bound, nobody
       reweighted), released with
       ``σ_G = C · m/√(1 − ρ)``. Restricting each user to the block *before* weighting is a
       per-user operation on their own data, so a user's items outside the block cost no
       budget.

    **Accounting.** ``m = calibrate_gaussian_noise(ε, δ)`` is the noise multiplier of a single
    Gaussian release meeting (ε, δ) exactly, i.e. ``1/m``-Gaussian DP. The two releases are
    ``√ρ/m``- and ``√(1 − ρ)/m``-GDP; their adaptive composition (the second depends on the
    first through the item choice) is exactly ``√(ρ + 1 − ρ)/m = 1/m``-GDP (Dong, Roth & Su
    2022, Cor. 3.3), hence (ε, δ)-DP by the same analytic Gaussian condition (Balle & Wang
    2018). The guarantee's composition lists the count release, then the Gram release (its
    main one), and both accountants' ε of the composition as a cross-check. With
    ``count_share = 0`` there is one release, the whole Gram matrix, and the counts are its
    diagonal (:func:`private_gram` with a bounded-norm statistic). Everything computed from the
    release alone is post-processing: the result is user-level (ε, δ)-DP.

    **Where the sums are computed.** The release reads the data only through the weighted
    counts and the weighted Gram block, both sums over users of a function of each user's own
    row (:class:`GramStatistics`). Given a :class:`GramStatistics` (e.g. one that sums user
    partitions on a Ray cluster) instead of a matrix, those sums are computed there; the noise
    is still drawn here, once, on the summed statistics, so the guarantee and the ledger's
    charge are those of one release whatever the number of partitions.

    Args:
        matrix: Binary, contribution-bounded ``n_users × n_items`` matrix, or the
            :class:`GramStatistics` of one.
        spec: A resolved spec with a contribution bound.
        count_share: ρ ∈ [0, 1), the share of the (squared) Gaussian-DP budget spent on the
            counts.
        count_norm: ``C_n`` (> 0; ``min(C_n, √c)`` is used), or ``None`` for ``√c``.
        gram_norm: ``C`` (> 0; ``min(C, √(c(c + 1)/2))`` is used), or ``None`` for
            ``√(c(c + 1)/2)``.
        signal_ratio: Keep items by :func:`signal_items` with this ratio (needs
            ``count_share > 0``); ``None``: no such rule.
        max_items: Keep at most this many items (the most popular by noisy count; needs
            ``count_share > 0``); ``None``: no cap.

    Returns:
        A :class:`GramRelease`.

    Raises:
        ConfigError: Bad arguments, or as :func:`private_item_counts`.
    """
    owner = "DP Gram release"
    bound = spec.require_contribution_bound(owner)
    statistics = (
        matrix if isinstance(matrix, GramStatistics) else MatrixGramStatistics(matrix, owner)
    )
    largest = statistics.max_row_length()
    if largest > bound:
        raise ConfigError(
            f"{owner}: a user has {largest} items but the contribution bound is {bound}; apply "
            "PrivacySpec.bound_contributions before computing the statistic"
        )
    if not (isinstance(count_share, int | float) and 0.0 <= count_share < 1.0):
        raise ConfigError(f"{owner}: count_share must be in [0, 1). Got {count_share!r}")
    for name, value in (("count_norm", count_norm), ("gram_norm", gram_norm)):
        if value is not None and not (
            isinstance(value, int | float) and math.isfinite(value) and value > 0
        ):
            raise ConfigError(f"{owner}: {name} must be finite and > 0. Got {value!r}")
    # A user with k ≤ c items has count norm √k ≤ √c and Gram-block norm √(k(k+1)/2): a norm
    # bound above what the cap allows binds nobody, and the cap's own bound is the tighter one.
    count_norm = min(item_count_sensitivity(bound), math.inf if count_norm is None else count_norm)
    gram_norm = min(gram_sensitivity(bound), math.inf if gram_norm is None else gram_norm)
    selects = signal_ratio is not None or max_items is not None
    if selects and count_share == 0:
        raise ConfigError(f"{owner}: choosing items needs a count release (count_share > 0)")
    n_users, n_items = statistics.shape
    count_multiplier, gram_multiplier = gram_release_multipliers(spec, count_share)
    rng = spec.noise_generator()

    count_release: GaussianMechanism | None = None
    if count_share > 0:
        count_release = GaussianMechanism(
            spec,
            count_norm,
            mechanism="gaussian-item-counts",
            statistic=(
                f"the item counts Σ_u v_u x_u, each user's count vector of L2 norm ≤ "
                f"{count_norm:.4g}, which chose the Gram block's items"
            ),
            n_users=n_users,
            noise_multiplier=count_multiplier,
        )
        counts = statistics.weighted_counts(count_norm)
        counts += count_release.vector_noise(n_items, rng)
        if signal_ratio is not None:
            gram_applied = gram_multiplier * gram_norm * count_release.noise_scale
            items = signal_items(counts, gram_applied, signal_ratio)
        else:
            items = np.lexsort((np.arange(n_items), -counts))
        if max_items is not None:
            items = items[: int(max_items)]
        items = np.sort(items) if items.size == n_items else items
    else:
        counts = None
        items = np.arange(n_items)

    gram_release = GaussianMechanism(
        spec,
        gram_norm,
        mechanism="gaussian-gram",
        statistic=(
            f"the upper triangle (with the diagonal) of the item co-occurrence matrix "
            f"Xᵀ diag(w) X of {items.size} of {n_items} items, each user's block weighted so "
            f"its L2 norm is ≤ {gram_norm:.4g}"
        ),
        n_users=n_users,
        noise_multiplier=gram_multiplier,
    )
    gram = statistics.weighted_gram(items if items.size < n_items else None, gram_norm)
    gram += gram_release.symmetric_noise(items.size, rng)
    count_std = gram_release.applied_std
    if counts is None:
        counts = np.diagonal(gram).copy()
    else:
        assert count_release is not None
        count_std = count_release.applied_std

    if count_release is None:
        accounting = ONE_RELEASE
        composition = gram_release.releases()
    else:
        accounting = (
            f"two adaptive Gaussian releases, {count_share:g} of the squared Gaussian-DP "
            f"budget on the counts (noise multiplier {count_release.noise_multiplier:.4g}) and "
            f"the rest on the Gram block (noise multiplier {gram_multiplier:.4g}), composed "
            "exactly in Gaussian DP (Dong, Roth & Su 2022) and converted to ε by the analytic "
            "Gaussian mechanism (Balle & Wang 2018)"
        )
        composition = (*count_release.releases(), *gram_release.releases())
    guarantee = compose_guarantee(
        composition,
        spec,
        mechanism="gaussian-gram" if count_release is None else "gaussian-counts-gram",
        calibration=ANALYTIC,
        accounting=accounting,
        n_users=n_users,
        noise_scale=gram_release.noise_scale,
    )
    return GramRelease(
        counts=counts,
        count_std=float(count_std),
        items=items,
        gram=gram,
        gram_std=float(gram_release.applied_std),
        guarantee=guarantee,
    )
