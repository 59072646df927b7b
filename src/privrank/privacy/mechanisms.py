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
    "PrivacyGuarantee",
    "gram_sensitivity",
    "item_count_sensitivity",
    "private_gram",
    "private_item_counts",
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
