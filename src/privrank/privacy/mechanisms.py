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
   (:func:`~privrank.privacy.accounting.calibrate_gaussian_noise`, Balle & Wang 2018). δ is the
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
- :func:`private_gram_release` (what DP-EASE and DP-ItemKNN use): *bounded-norm* statistics
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

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrank.errors import ConfigError
from privrank.privacy.spec import PrivacySpec

__all__ = [
    "GaussianMechanism",
    "GramRelease",
    "PrivacyGuarantee",
    "count_row_weights",
    "gram_row_weights",
    "gram_sensitivity",
    "item_count_sensitivity",
    "private_gram",
    "private_gram_release",
    "private_item_counts",
    "signal_items",
    "spectral_denoise",
    "symmetric_gaussian_noise",
]

#: Test-only scale of every mechanism's noise (1 = calibrated). Reachable only through
#: :func:`_noise_scale_for_testing`, never from a :class:`PrivacySpec`.
_NOISE_SCALE: contextvars.ContextVar[float] = contextvars.ContextVar(
    "privrank_noise_scale", default=1.0
)


@contextlib.contextmanager
def _noise_scale_for_testing(scale: float) -> Iterator[None]:
    """Scale the noise of every mechanism run inside the block (tests and audits only).

    ``scale=0`` disables the noise (to check that a private fit without noise equals the
    non-private one); ``0 < scale < 1`` is a deliberately broken mechanism (for the empirical
    audit). The guarantee then records ``noise_scale_for_testing`` and describes itself as not
    private. This is not part of the public API.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
        raise ConfigError(f"noise scale must be a finite number ≥ 0. Got {scale!r}")
    token = _NOISE_SCALE.set(float(scale))
    try:
        yield
    finally:
        _NOISE_SCALE.reset(token)


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


# -------------------------------------------------------------------- the guarantee
@dataclass(frozen=True)
class PrivacyGuarantee:
    """What a private fit guarantees, recorded in the model and its saved artifact.

    Attributes:
        mechanism: Which mechanism released the statistic (e.g. ``"gaussian-gram"``).
        statistic: The released sufficient statistic, in words.
        epsilon: ε of the whole fit (all releases composed).
        delta: δ of the whole fit.
        unit: The unit of privacy: always ``"user"`` (add/remove one user's entire history).
        contribution_bound: ``c``, the cap on rows (hence distinct items) per user.
        selection: How a capped user's rows were chosen (``most_recent`` or ``uniform``).
        sensitivity: L2 sensitivity Δ of the released statistic to one user.
        noise_multiplier: ``m = σ / Δ``.
        noise_std: ``σ`` of the Gaussian noise on every released coordinate.
        releases: Number of Gaussian releases composed (1 for every mechanism here).
        accounting: How ε was computed from ``m`` and δ.
        accountant: The spec's accountant (``pld`` or ``rdp``).
        accountant_epsilon: ε of the same release as that accountant bounds it (cross-check;
            never below the exact ε up to its discretisation).
        n_users: Users in the training vocabulary (δ's default is ``1 / (10 · n_users)``).
        noise_scale_for_testing: 1 for a real release; anything else means the noise was
            deliberately scaled by a test or an audit and the claim does not hold.

    DP-SGD fits (:mod:`privrank.privacy.dpsgd`) fill the optional fields below as well; for them
    ``sensitivity`` is the clipping norm C (one user moves a step's summed gradient by at most
    C), ``noise_multiplier`` is σ/C of every step and ``noise_std`` is σ on the summed
    gradient; ``contribution_bound`` may be ``None`` when no cap on rows was applied.

    Attributes:
        sampling_rate: q, the Poisson probability that a user is in a step's batch.
        steps: T, the number of noisy gradient steps composed.
        epochs: Passes over the users (``T = epochs · steps_per_epoch``).
        expected_batch_size: ``q · n_users``, the divisor of the noisy gradient sum.
        clipping_norm: C, the bound on each user's gradient norm in a step.
        released: What the fit releases (e.g. "the item factors and biases").
        extra_release: A further Gaussian release composed into the same guarantee (e.g. the
            noisy item counts used for cold start), in words.
        extra_noise_multiplier: σ/Δ of that release.
        pld_epsilon: ε of the whole composition by the PLD accountant.
        rdp_epsilon: ε of the same composition by the RDP accountant (≥ ``pld_epsilon`` up to
            discretisation; a cross-check).
    """

    mechanism: str
    statistic: str
    epsilon: float
    delta: float
    contribution_bound: int | None
    selection: str
    sensitivity: float
    noise_multiplier: float
    noise_std: float
    releases: int
    accounting: str
    accountant: str
    accountant_epsilon: float
    n_users: int
    unit: str = "user"
    noise_scale_for_testing: float = 1.0
    sampling_rate: float | None = None
    steps: int | None = None
    epochs: int | None = None
    expected_batch_size: float | None = None
    clipping_norm: float | None = None
    released: str | None = None
    extra_release: str | None = None
    extra_noise_multiplier: float | None = None
    pld_epsilon: float | None = None
    rdp_epsilon: float | None = None

    @property
    def is_dpsgd(self) -> bool:
        """Whether the guarantee is of a DP-SGD fit (many subsampled noisy steps)."""
        return self.steps is not None

    @property
    def is_private(self) -> bool:
        """Whether the noise was the calibrated one (not scaled by a test or an audit)."""
        return self.noise_scale_for_testing == 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what the artifact's header stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyGuarantee:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ValueError: Missing or unknown fields.
        """
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"malformed privacy guarantee {data!r}: {exc}") from exc

    def describe(self) -> str:
        """The guarantee in plain words."""
        head = (
            f"user-level (ε={self.epsilon:g}, δ={self.delta:.3g})-differential privacy: adding "
            f"or removing one user's entire history changes the probability of any output by at "
            f"most a factor e^{self.epsilon:g} plus {self.delta:.3g}."
        )
        bound = (
            "no cap on interactions per user"
            if self.contribution_bound is None
            else f"at most {self.contribution_bound} interactions per user ({self.selection})"
        )
        if self.is_dpsgd:
            text = (
                f"{head} Mechanism: DP-SGD with one user as one example: {self.steps} steps "
                f"({self.epochs} epochs), each user sampled into a step with probability "
                f"{self.sampling_rate:.4g} (Poisson; expected batch {self.expected_batch_size:g} "
                f"users), each user's gradient clipped to L2 norm {self.clipping_norm:g}, "
                f"Gaussian noise with multiplier {self.noise_multiplier:.4g} (sigma = "
                f"{self.noise_std:.4g} on the summed gradient) on {self.statistic}; {bound}. "
                f"Released: {self.released}."
            )
            if self.extra_release is not None:
                text += (
                    f" Also released: {self.extra_release} (Gaussian, noise multiplier "
                    f"{self.extra_noise_multiplier:.4g})."
                )
            text += f" {self.accounting}"
        else:
            text = (
                f"{head} Mechanism: Gaussian noise (sigma = {self.noise_std:.4g}, noise "
                f"multiplier {self.noise_multiplier:.4g}) on {self.statistic}, L2 sensitivity "
                f"{self.sensitivity:.4g} with {bound}; {self.accounting}"
            )
        if not self.is_private:
            text = (
                f"NOT PRIVATE: the noise was scaled by {self.noise_scale_for_testing:g} for "
                f"testing, so this claim does not hold: {text}"
            )
        return text


# -------------------------------------------------------------------- the Gaussian mechanism
class GaussianMechanism:
    """The Gaussian mechanism for one statistic, calibrated to a user-level spec.

    Releases ``f(X) + N(0, σ² I)`` with ``σ = m · Δ``: Δ is the statistic's L2 sensitivity to
    adding or removing one user's entire history (after contribution bounding) and ``m`` the
    smallest noise multiplier for which one release is (ε, δ)-DP, by the exact analytic
    condition of Balle & Wang (2018, Thm. 8)
    (:func:`~privrank.privacy.accounting.calibrate_gaussian_noise`). Noise is drawn from the
    spec's own generator (:meth:`PrivacySpec.noise_generator`).

    Args:
        spec: A resolved spec (δ set).
        sensitivity: Δ (> 0).
        mechanism: Short name recorded in the guarantee.
        statistic: The statistic, in words.
        n_users: Users in the training vocabulary (recorded).
    """

    def __init__(
        self,
        spec: PrivacySpec,
        sensitivity: float,
        *,
        mechanism: str,
        statistic: str,
        n_users: int,
    ) -> None:
        if not isinstance(spec, PrivacySpec):
            raise ConfigError(f"{mechanism} needs a PrivacySpec. Got {type(spec).__name__}")
        if not (math.isfinite(sensitivity) and sensitivity > 0):
            raise ConfigError(f"{mechanism}: sensitivity must be finite and > 0: {sensitivity!r}")
        delta = spec.require_delta()
        self.spec = spec
        self.sensitivity = float(sensitivity)
        self.noise_multiplier = _calibrated_multiplier(float(spec.epsilon), float(delta))
        self.noise_scale = _NOISE_SCALE.get()
        self.noise_std = self.noise_multiplier * self.sensitivity
        accountant_epsilon = _accountant_epsilon(spec.accountant, self.noise_multiplier, delta)
        self.guarantee = PrivacyGuarantee(
            mechanism=mechanism,
            statistic=statistic,
            epsilon=float(spec.epsilon),
            delta=float(delta),
            contribution_bound=int(spec.require_contribution_bound(mechanism)),
            selection=spec.selection,
            sensitivity=self.sensitivity,
            noise_multiplier=float(self.noise_multiplier),
            noise_std=float(self.noise_std),
            releases=1,
            accounting=(
                "one Gaussian release, ε exact by the analytic Gaussian mechanism "
                "(Balle & Wang 2018)"
            ),
            accountant=spec.accountant,
            accountant_epsilon=float(accountant_epsilon),
            n_users=int(n_users),
            noise_scale_for_testing=self.noise_scale,
        )

    @property
    def applied_std(self) -> float:
        """The standard deviation actually drawn (``noise_std`` unless a test scaled it)."""
        return self.noise_std * self.noise_scale

    def vector_noise(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` i.i.d. ``N(0, σ²)`` draws (float64)."""
        return rng.standard_normal(size) * self.applied_std

    def symmetric_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """An ``n × n`` symmetric matrix whose upper triangle (diagonal included) is i.i.d.
        ``N(0, σ²)``, mirrored below (float64)."""
        return symmetric_gaussian_noise(n, self.applied_std, rng)


@functools.lru_cache(maxsize=256)
def _calibrated_multiplier(epsilon: float, delta: float) -> float:
    from privrank.privacy.accounting import calibrate_gaussian_noise

    return calibrate_gaussian_noise(epsilon, delta)


@functools.lru_cache(maxsize=256)
def _accountant_epsilon(kind: str, noise_multiplier: float, delta: float) -> float:
    from privrank.privacy.accounting import Accountant, gaussian_event

    return Accountant(kind).compose(gaussian_event(noise_multiplier)).epsilon(delta)


@functools.lru_cache(maxsize=256)
def _composed_accountant_epsilon(kind: str, multipliers: tuple[float, ...], delta: float) -> float:
    from privrank.privacy.accounting import Accountant, gaussian_event

    accountant = Accountant(kind)
    for multiplier in multipliers:
        accountant.compose(gaussian_event(multiplier))
    return accountant.epsilon(delta)


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
def _binary(matrix: sp.spmatrix, owner: str) -> sp.csr_matrix:
    csr = sp.csr_matrix(matrix, dtype=np.float64)
    csr.sum_duplicates()
    if csr.nnz and not np.all(csr.data == 1.0):
        raise ConfigError(f"{owner} needs a binary user-item matrix (repeats counted once)")
    return csr


def _check_bound(csr: sp.csr_matrix, bound: int, owner: str) -> None:
    largest = int(np.diff(csr.indptr).max(initial=0))
    if largest > bound:
        raise ConfigError(
            f"{owner}: a user has {largest} items but the contribution bound is {bound}; apply "
            "PrivacySpec.bound_contributions before computing the statistic"
        )


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
    owner = "DP item counts"
    bound = spec.require_contribution_bound(owner)
    csr = _binary(matrix, owner)
    _check_bound(csr, bound, owner)
    mechanism = GaussianMechanism(
        spec,
        item_count_sensitivity(bound),
        mechanism="gaussian-item-counts",
        statistic="the item counts (users per item)",
        n_users=csr.shape[0],
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
    owner = "DP Gram matrix"
    bound = spec.require_contribution_bound(owner)
    csr = _binary(matrix, owner)
    _check_bound(csr, bound, owner)
    mechanism = GaussianMechanism(
        spec,
        gram_sensitivity(bound),
        mechanism="gaussian-gram",
        statistic="the item co-occurrence matrix XᵀX (upper triangle with the diagonal)",
        n_users=csr.shape[0],
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
    return (out + out.T) / 2.0


# -------------------------------------------------------------------- bounded-norm statistics
def count_row_weights(lengths: np.ndarray, norm: float) -> np.ndarray:
    r"""Per-user weights ``v_u = min(1, C / √k_u)`` of the weighted item counts.

    A user with ``k_u`` (binary) items adds ``v_u x_u`` to ``n = Σ_u v_u x_u``, a vector of L2
    norm ``v_u √k_u ≤ C``: the counts have user-level L2 sensitivity ``C`` whatever a user's
    number of items, and no row is dropped (a heavy user's items are down-weighted instead).
    Users with at most ``C²`` items keep weight 1.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    return np.minimum(1.0, float(norm) / np.sqrt(np.maximum(lengths, 1.0)))


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


def private_gram_release(
    matrix: sp.spmatrix,
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
    2018). The guarantee records the Gram release in ``sensitivity``/``noise_multiplier``/
    ``noise_std``, the count release in ``extra_release``/``extra_noise_multiplier``, and the
    spec's accountant composing both as a cross-check (``accountant_epsilon``). With
    ``count_share = 0`` there is one release, the whole Gram matrix, and the counts are its
    diagonal (:func:`private_gram` with a bounded-norm statistic). Everything computed from the
    release alone is post-processing: the result is user-level (ε, δ)-DP.

    Args:
        matrix: Binary, contribution-bounded ``n_users × n_items`` matrix.
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
    csr = _binary(matrix, owner)
    _check_bound(csr, bound, owner)
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
    n_users, n_items = csr.shape
    delta = float(spec.require_delta())
    base = _calibrated_multiplier(float(spec.epsilon), delta)
    scale = _NOISE_SCALE.get()
    rng = spec.noise_generator()
    lengths = np.diff(csr.indptr)

    if count_share > 0:
        count_multiplier = base / math.sqrt(count_share)
        gram_multiplier = base / math.sqrt(1.0 - count_share)
        count_std = count_multiplier * count_norm
        weights = count_row_weights(lengths, count_norm)
        counts = np.asarray(csr.T @ weights, dtype=np.float64).ravel()
        counts += rng.standard_normal(n_items) * (count_std * scale)
        if signal_ratio is not None:
            items = signal_items(counts, gram_multiplier * gram_norm * scale, signal_ratio)
        else:
            items = np.lexsort((np.arange(n_items), -counts))
        if max_items is not None:
            items = items[: int(max_items)]
        items = np.sort(items) if items.size == n_items else items
    else:
        count_multiplier = None
        gram_multiplier = base
        count_std = None
        counts = None
        items = np.arange(n_items)

    gram_std = gram_multiplier * gram_norm
    block = csr[:, items] if items.size < n_items else csr
    weights = gram_row_weights(np.diff(block.indptr), gram_norm)
    if np.all(weights == 1.0):
        gram = (block.T @ block).toarray()
    else:
        gram = (block.T @ sp.diags(weights) @ block).toarray()
    gram += symmetric_gaussian_noise(items.size, gram_std * scale, rng)
    if counts is None:
        counts = np.diagonal(gram).copy()
        count_std = gram_std

    multipliers = (
        (gram_multiplier,) if count_multiplier is None else (count_multiplier, gram_multiplier)
    )
    accountant_epsilon = _composed_accountant_epsilon(spec.accountant, multipliers, delta)
    statistic = (
        f"the upper triangle (with the diagonal) of the item co-occurrence matrix "
        f"Xᵀ diag(w) X of {items.size} of {n_items} items, each user's block weighted so its "
        f"L2 norm is ≤ {gram_norm:.4g}"
    )
    if count_multiplier is None:
        accounting = (
            "one Gaussian release, ε exact by the analytic Gaussian mechanism (Balle & Wang 2018)"
        )
        extra = None
    else:
        extra = (
            f"the item counts Σ_u v_u x_u, each user's count vector of L2 norm ≤ "
            f"{count_norm:.4g} (sigma = {count_std:.4g}), which chose the Gram block's items"
        )
        accounting = (
            f"two adaptive Gaussian releases, {count_share:g} of the squared Gaussian-DP "
            f"budget on the counts (noise multiplier {count_multiplier:.4g}) and the rest on "
            f"the Gram block (noise multiplier {gram_multiplier:.4g}), composed exactly in "
            "Gaussian DP (Dong, Roth & Su 2022) and converted to ε by the analytic Gaussian "
            "mechanism (Balle & Wang 2018)"
        )
    guarantee = PrivacyGuarantee(
        mechanism="gaussian-gram" if count_multiplier is None else "gaussian-counts-gram",
        statistic=statistic,
        epsilon=float(spec.epsilon),
        delta=delta,
        contribution_bound=int(bound),
        selection=spec.selection,
        sensitivity=float(gram_norm),
        noise_multiplier=float(gram_multiplier),
        noise_std=float(gram_std),
        releases=1 if count_multiplier is None else 2,
        accounting=accounting,
        accountant=spec.accountant,
        accountant_epsilon=float(accountant_epsilon),
        n_users=int(n_users),
        noise_scale_for_testing=scale,
        extra_release=extra,
        extra_noise_multiplier=None if count_multiplier is None else float(count_multiplier),
    )
    return GramRelease(
        counts=counts,
        count_std=float(count_std * scale),
        items=items,
        gram=gram,
        gram_std=float(gram_std * scale),
        guarantee=guarantee,
    )
