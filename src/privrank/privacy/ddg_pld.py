"""A PLD accountant for the secretly Poisson-subsampled sum of discrete Gaussians, **1-D only**.

Setting: ``n`` devices each add ``X_i ~ N_Z(0, σ²)`` (integer grid units) to an integer
statistic; secure aggregation reveals only the sum; one user's integer contribution ``x``
satisfies ``|x| ≤ Δ`` (``Δ`` an integer); with secret Poisson sampling at rate ``q`` the user's
value enters a round with probability ``q``, unseen by every party that sees the sums (the trust
model of :mod:`privrank.privacy.distributed_dp_plan`). Neighbouring: the user's value replaced
by 0, the user still adding its noise share (the relation of
:mod:`privrank.privacy.distributed_dp_accounting`); ``n`` is the fewest devices whose noise is
in the sum (more survivors add independent noise: post-processing).

**What is computed.** ``ε(δ)`` after ``T`` rounds, by four steps, each a proof:

1. *The sum is close to one discrete Gaussian.* ``S = X_1 + … + X_n`` has, for every integer
   ``k``, ``P[S = k] ∈ [1 − τ, 1 + τ] · P[N_Z(0, nσ²) = k]`` with
   ``τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1))`` for ``σ ≥ 1/2`` (Kairouz, Liu & Steinke,
   ICML 2021, the proposition on sums of discrete Gaussians behind their Prop. 14; the same
   fact :func:`~privrank.privacy.discrete_gaussian.sample_discrete_gaussian_sum` relies on and
   its tests check against the exact convolution). So with ``a = −log(1 − τ)`` the laws of a
   round's release under either neighbour, with ``S`` or with ``N_Z(0, nσ²)`` (mixtures over
   the sampling coin included), are within a factor ``e^{±a}`` pointwise, and ``T`` rounds'
   transcripts within ``e^{±Ta}``. Hence for every ε, ``δ_S(ε) ≤ e^{Ta} δ_G(ε − 2Ta)`` (write
   ``δ(ε) = Σ_y (P(y) − e^ε Q(y))_+`` and bound ``P ≤ e^{Ta} P_G``, ``Q ≥ e^{−Ta} Q_G``).
2. *Worst-case shift.* ``N_Z(0, s²)`` is log-concave, so its location family has a monotone
   likelihood ratio and threshold tests are most powerful: the tradeoff curve of a shift by
   ``m`` lies above that of a shift by ``Δ ≥ m`` (same type-I error, type-II error
   ``P[Z + m < t] ≥ P[Z + Δ < t]``), and the noise is symmetric, so ``x = ±Δ`` is the worst
   case; the pair (``N_Z(Δ, s²)``, ``N_Z(0, s²)``) dominates every neighbouring pair.
3. *Sampling and rounds.* Poisson subsampling of a dominating pair is dominated by the mixture
   pairs ``((1−q)B + qA, B)`` and ``(B, (1−q)B + qA)`` (Zhu, Dong & Wang, AISTATS 2022, Thm. 11
   for Poisson subsampling), which are exactly the REMOVE and ADD pairs of ``dp_accounting``'s
   :func:`from_discrete_gaussian_mechanism` with ``sampling_prob = q``; ``T`` rounds are the
   ``T``-fold composition of that PLD (pessimistic discretisation: an upper bound).
4. *dp_accounting's truncation.* It builds the PLD of the discrete Gaussian conditioned on
   ``|k| ≤ K``; the full one is within total variation ``t = P[|N_Z(0, s²)| > K]`` per round,
   ``Tt`` over the transcript, so ``δ_G(ε) ≤ δ_K(ε) + (1 + e^ε) T t``. ``K`` is chosen so that
   ``t ≤ 2 e^{−K²/(2s²)} ≤ 1e-80`` (the discrete Gaussian is ``s²``-subgaussian, Canonne,
   Kamath & Steinke 2020), and the function checks that this term is under ``1e-6 δ``.

Together: ``ε(δ) = ε_K(δ'') + 2Ta`` with ``δ'' = (1 − 10^{-6}) δ e^{−Ta}``.

**The vector case is not covered.** For a ``d``-dimensional update with an L2 bound ``Δ₂`` the
neighbouring pair is a product of such 1-D pairs with shifts ``x_j``, ``Σ x_j² ≤ Δ₂²``; the worst
``x`` over that set is not known for the discrete Gaussian (it is any direction for the
continuous one, by rotation invariance), so no exact PLD is claimed there and the vector
accounting stays :func:`~privrank.privacy.distributed_dp_accounting.sampled_ddg_rdp`. This
accountant serves scalar (or L1/per-coordinate-bounded 1-D) releases such as a count or the
clipped-count bit of adaptive clipping, and :func:`ddg_scalar_epsilon` returns the smaller of it
and the RDP bound (both valid, so their minimum is).
"""

from __future__ import annotations

import math

import dp_accounting as dpa

from privrank.errors import ConfigError
from privrank.privacy.distributed_dp_accounting import (
    ddg_round_rho,
    ddg_sampled_epsilon,
    ddg_tau,
)

__all__ = ["ddg_scalar_epsilon", "ddg_scalar_pld_epsilon"]

#: Tail mass of the discrete Gaussian cut off by dp_accounting's truncation (step 4).
_TAIL = 1e-80
#: Discretisation of the privacy loss (pessimistic rounding: an upper bound).
_DISCRETISATION = 1e-4


def _check(sigma: float, n_clients: int, sensitivity: int, rounds: int, q: float) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"ddg PLD: sigma must be finite and > 0. Got {sigma!r}")
    if isinstance(n_clients, bool) or not isinstance(n_clients, int) or n_clients < 1:
        raise ConfigError(f"ddg PLD: n_clients must be an int ≥ 1. Got {n_clients!r}")
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 1:
        raise ConfigError(f"ddg PLD: the sensitivity must be an int ≥ 1. Got {sensitivity!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"ddg PLD: rounds must be an int ≥ 1. Got {rounds!r}")
    if not 0 < q <= 1:
        raise ConfigError(f"ddg PLD: the sampling rate must be in (0, 1]. Got {q!r}")


def ddg_scalar_pld_epsilon(
    sigma: float, n_clients: int, sensitivity: int, rounds: int, q: float, delta: float
) -> float:
    """ε at δ of ``rounds`` secretly Poisson-sampled (rate ``q``) releases of a 1-D integer sum
    of L1 = L2 sensitivity ``sensitivity`` with ``n_clients`` discrete Gaussian shares of σ each,
    by the PLD (module docstring, steps 1–4); ``inf`` when σ < 1/2 or τ ≥ 1/2.

    Raises:
        ConfigError: a parameter out of range.
    """
    _check(sigma, n_clients, sensitivity, rounds, q)
    if not 0 < delta < 1:
        raise ConfigError(f"ddg PLD: delta must be in (0, 1). Got {delta!r}")
    if sigma < 0.5:
        return math.inf
    tau = ddg_tau(sigma, n_clients)
    if tau >= 0.5:
        return math.inf
    slack = rounds * -math.log1p(-tau)  # T·a
    s = sigma * math.sqrt(n_clients)
    bound = math.ceil(s * math.sqrt(2.0 * math.log(2.0 / _TAIL))) + sensitivity
    pld = dpa.pld.privacy_loss_distribution.from_discrete_gaussian_mechanism(
        s,
        sensitivity=sensitivity,
        truncation_bound=bound,
        value_discretization_interval=_DISCRETISATION,
        sampling_prob=q,
    )
    if rounds > 1:
        pld = pld.self_compose(rounds)
    target = (1.0 - 1e-6) * delta * math.exp(-slack)
    epsilon = float(pld.get_epsilon_for_delta(target))
    if not math.isfinite(epsilon):
        return math.inf
    if (1.0 + math.exp(min(epsilon, 700.0))) * rounds * _TAIL * math.exp(slack) > 1e-6 * delta:
        return math.inf  # the truncation term of step 4 would not fit in the margin
    return epsilon + 2.0 * slack


def ddg_scalar_epsilon(
    sigma: float, n_clients: int, sensitivity: int, rounds: int, q: float, delta: float
) -> float:
    """The smaller of :func:`ddg_scalar_pld_epsilon` and the RDP bound of
    :mod:`~privrank.privacy.distributed_dp_accounting` (zCDP ρ of the 1-D sum with ``d = 1``,
    ``Δ₂ = sensitivity``; sampled by :func:`sampled_ddg_rdp` when ``q < 1``): two valid upper
    bounds, so their minimum is one."""
    pld = ddg_scalar_pld_epsilon(sigma, n_clients, sensitivity, rounds, q, delta)
    rho = ddg_round_rho(sigma, n_clients, float(sensitivity), 1)
    rdp = ddg_sampled_epsilon(rho, rounds, q, delta)
    return min(pld, rdp)
