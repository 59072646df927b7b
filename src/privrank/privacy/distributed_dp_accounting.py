"""Accounting of the distributed discrete Gaussian (Kairouz, Liu & Steinke, ICML 2021).

Setting (all in integer units of the fixed-point grid, one unit = ``1/scale``):

- each client clips its update to L2 norm ``c`` (refused otherwise), scales it by ``scale``,
  and rounds it to an integer vector ``x̃`` by *conditional randomised rounding*: unbiased
  stochastic rounding, repeated until ``‖x̃‖₂ ≤ Δ₂`` with

      Δ₂ = min( c·s + √d,  √( (c·s)² + d/4 + √(2 ln(1/β)) · (c·s + √d/2) ) )

  (their Thm. 2 / Lemma: one attempt fails with probability at most β), so one client moves the
  sum by at most Δ₂ in L2 and ``Δ₁ = Δ₂ · min(√d, Δ₂)`` in L1 (an integer vector's L1 norm is
  at most its squared L2 norm);
- each client adds ``N_Z(0, σ²)^d`` noise;
- the server learns (by secure aggregation) only the modular sum over the surviving clients.

**Theorem** (their Prop. 14 with Thm. 1). The sum of ``n`` clients' noisy vectors, as a
function of one client's vector, satisfies ``ρ``-zCDP with

    ρ = ½ · min( l₂² + 2 l₁ τ + τ² d,  (l₂ + √d τ)² ),
    l₂ = Δ₂ / (√n σ),   l₁ = Δ₁ / (√n σ),   τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)),

for σ ≥ 1/2. (Their third form, ``α l₂²/2 + τ d``, is not a zCDP curve and is not used: the
bound kept is a pure zCDP bound that ``dp_accounting``'s ``ZCDpEvent`` represents exactly.)

**What is accounted, exactly:**

- *Neighbouring*: one client's (user's) update replaced by the zero vector, the client still
  taking part and adding its noise (the relation of Kairouz et al.; the unit of privacy is one
  user's whole contribution to a round). This is not the add/remove relation of privrank's
  central mechanisms: removing a user would also remove its share of the noise.
- *Dropouts*: n is ``min_clients``, the fewest clients whose inputs the secure aggregation
  will unmask (SecAgg+'s ``min_survivors``: clients refuse to unmask fewer). A round with
  ``n' ≥ n`` survivors adds ``n' − n`` further independent noise vectors to a sum that is
  already ρ-zCDP: post-processing, so the guarantee holds for every number of survivors the
  protocol allows.
- *Modular wrap-around*: the server sees the sum mod 2^b, a function of the integer sum, so the
  reduction is post-processing and costs no privacy. It costs accuracy only if the integer sum
  leaves ``[−2^{b−1}, 2^{b−1})``: the data part cannot (``n_max · Δ₂ < 2^{b−1}`` is required),
  and the noise sum is ``n_max σ²``-subgaussian, so :func:`wrap_probability` bounds the chance
  of any coordinate wrapping by ``2d · exp(−(2^{b−1} − n_max Δ₂)² / (2 n_max σ²))``.
- *Secret Poisson sampling* (optional, :func:`ddg_sampled_epsilon`): when each user's update
  enters a round's sum with probability q, independently, and *no party that sees the sums
  learns whether it did*, a round is the Poisson subsampling of the ρ-zCDP mechanism above.
  Write μ₀ for the law of the released sum when the user contributes zero and μ₁ when it
  contributes x (both with the user's noise share; the others' coins are common to both and
  mixed over afterwards, which :math:`e^{(α−1)D_α}`'s joint convexity allows). The neighbours
  are then ``μ = (1−q)μ₀ + qμ₁`` against ``μ₀``, and both orders are bounded
  (:func:`sampled_ddg_rdp`), at integer α ≥ 2, with L = dμ₁/dμ₀ (E_{μ₀}[L] = 1,
  E_{μ₀}[L^l] = e^{(l−1)D_l(μ₁‖μ₀)} ≤ e^{(l−1)lρ} by the zCDP bound):

  * **forward**, ``D_α(μ‖μ₀)``: expanding ``E_{μ₀}[(1−q+qL)^α]`` by the binomial theorem
    (exact for integer α) and bounding each moment,

        D_α(μ‖μ₀) ≤ 1/(α−1) · log Σ_{l=0}^{α} C(α,l) (1−q)^{α−l} q^l e^{(l−1)lρ},

    the expansion Mironov, Talwar & Zhang (2019, "Rényi Differential Privacy of the Sampled
    Gaussian Mechanism", §3.3) use for the Gaussian: with ρ = 1/(2z²) it *is* the sampled
    Gaussian's RDP at integer orders (dp_accounting's ``_compute_log_a_int``), so the discrete
    mechanism gets the continuous Gaussian's forward curve with its own ρ;
  * **reverse**, ``D_α(μ₀‖μ) = 1/(α−1) log E_{μ₀}[(1−q+qL)^{−(α−1)}]``, which for the Gaussian
    Mironov et al. show never exceeds the forward order but which is not known to for this
    mechanism, so it is bounded by the smallest of three proofs: (i) μ ≥ (1−q)μ₀ pointwise, so
    ``D_α ≤ −log(1−q)``; (ii) ``P^α Q^{1−α}`` is jointly convex for α > 1 (the perspective of
    t^α), so ``e^{(α−1)D_α(μ₀‖μ)} ≤ 1−q + q e^{(α−1)D_α(μ₀‖μ₁)} ≤ 1−q + q e^{(α−1)αρ}``;
    (iii) a second-order Taylor bound of ``h(y) = y^{−(α−1)}`` on ``y ≥ 1−q`` around y = 1
    (``h'' ≤ α(α−1)(1−q)^{−(α+1)}`` there; E[Y−1] = 0; ``E[(Y−1)²] = q²(E[L²]−1) ≤
    q²(e^{2ρ}−1)``): ``e^{(α−1)D_α} ≤ 1 + ½α(α−1)(1−q)^{−(α+1)} q²(e^{2ρ}−1)``;
  * the round's RDP is the larger of the two orders, and never more than Zhu & Wang's general
    upper bound for Poisson subsampling (ICML 2019, Thm. 6, which bounds both orders at once,
    :func:`sampled_zcdp_rdp`, kept as a third proof: the smaller of the two bounds is kept) nor
    than the un-sampled αρ.

  Where the forward order dominates (it does at every setting of the distributed-DP benchmarks)
  the bound is exactly the sampled Gaussian's RDP at noise multiplier 1/√(2ρ); what is still lost
  against central DP-FedAvg is the RDP→(ε, δ) conversion (central uses the PLD accountant) and
  the zCDP ρ of the discrete sum (Δ₂ of the rounding, τ). Who may be trusted for the secrecy of
  the sample is stated in :mod:`privrank.privacy.distributed_dp_plan`.
- *Rounds*: T rounds compose to ``Tρ``-zCDP; (ε, δ) comes from ``dp_accounting``'s RDP
  accountant (through :class:`~privrank.privacy.accounting.Accountant`), whose conversion is
  that of Canonne, Kamath & Steinke 2020.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln, logsumexp

from privrank.errors import ConfigError

#: The integer Rényi orders of the sampled accounting (Zhu & Wang's bound is for integer α).
SAMPLED_ORDERS = tuple(range(2, 257))

__all__ = [
    "SAMPLED_ORDERS",
    "ddg_epsilon",
    "ddg_round_rho",
    "ddg_sampled_epsilon",
    "ddg_tau",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "sampled_ddg_rdp",
    "sampled_zcdp_rdp",
    "wrap_probability",
]


def rounded_l2_bound(scaled_norm: float, dimension: int, beta: float) -> float:
    """Δ₂: the L2 norm conditional randomised rounding guarantees for a vector of norm
    ``scaled_norm`` (= c·s) in ``dimension`` coordinates (β = 0: the worst case c·s + √d)."""
    bound = scaled_norm + math.sqrt(dimension)
    if beta == 0:
        return bound
    squared = scaled_norm**2 + dimension / 4.0
    squared += math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled_norm + math.sqrt(dimension) / 2.0)
    return min(bound, math.sqrt(squared))


def rounded_l1_bound(l2_bound: float, dimension: int) -> float:
    """Δ₁ ≤ Δ₂ · min(√d, Δ₂) for an integer vector of L2 norm at most Δ₂."""
    return l2_bound * min(math.sqrt(dimension), l2_bound)


def ddg_tau(sigma: float, n_clients: int) -> float:
    """τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)) (0 for one client)."""
    if n_clients < 2:
        return 0.0
    k = np.arange(1, n_clients, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def ddg_round_rho(sigma: float, n_clients: int, l2_bound: float, dimension: int) -> float:
    """ρ of one round (see the module docstring); ``inf`` for σ < 1/2 (no bound proven).

    Args:
        sigma: Each client's discrete Gaussian σ, in grid units.
        n_clients: n, the fewest clients whose noise is in the sum.
        l2_bound: Δ₂, in grid units.
        dimension: d.
    """
    if not sigma >= 0.5:
        return math.inf
    tau = ddg_tau(sigma, n_clients)
    root_n_sigma = math.sqrt(n_clients) * sigma
    l2 = l2_bound / root_n_sigma
    l1 = rounded_l1_bound(l2_bound, dimension) / root_n_sigma
    return 0.5 * min(
        l2**2 + 2.0 * l1 * tau + tau**2 * dimension, (l2 + math.sqrt(dimension) * tau) ** 2
    )


def ddg_epsilon(rho_per_round: float, rounds: int, delta: float) -> float:
    """ε at δ of ``rounds`` rounds of ``rho_per_round``-zCDP, by the RDP accountant."""
    if rounds < 1:
        raise ConfigError(f"ddg_epsilon needs rounds ≥ 1. Got {rounds!r}")
    if not math.isfinite(rho_per_round):
        return math.inf
    # Imported here: a device builds the mechanism (its bound and wrap-around check) and
    # never needs the accountant or dp_accounting.
    import dp_accounting as dpa

    from privrank.privacy.accounting import Accountant

    event = dpa.ZCDpEvent(rho_per_round * rounds)
    return Accountant("rdp").compose(event).epsilon(delta)


def wrap_probability(
    sigma: float, n_max: int, l2_bound: float, dimension: int, modulus_bits: int
) -> float:
    """An upper bound on the probability that any coordinate of the sum of ``n_max`` clients'
    noisy vectors leaves the ring's signed range (1.0 when the data alone could)."""
    half = 2.0 ** (modulus_bits - 1)
    room = half - n_max * l2_bound
    if room <= 0:
        return 1.0
    if sigma == 0:
        return 0.0
    return min(1.0, 2.0 * dimension * math.exp(-(room**2) / (2.0 * n_max * sigma**2)))


def sampled_zcdp_rdp(rho: float, q: float, orders: tuple[int, ...] = SAMPLED_ORDERS) -> np.ndarray:
    """Zhu & Wang's general bound (ICML 2019, Thm. 6) on the RDP at each integer order of one
    round of a ρ-zCDP mechanism under secret Poisson sampling at rate q: it holds for any
    mechanism with the RDP curve ε(l) = lρ (the mixture against the base, both orders):

        ε'(α) ≤ 1/(α−1) · log[ (1−q)^{α−1}(αq − q + 1) + C(α,2) q² (1−q)^{α−2} e^{ε(2)}
                                + 3 Σ_{l=3}^{α} C(α,l) q^l (1−q)^{α−l} e^{(l−1)ε(l)} ]

    (the smaller of it and αρ). :func:`sampled_ddg_rdp`, which the accounting uses, is never
    above it."""
    if not 0 < q <= 1:
        raise ConfigError(f"sampled_zcdp_rdp: the sampling rate must be in (0, 1]. Got {q!r}")
    alphas = np.asarray(orders, dtype=np.float64)
    plain = alphas * rho
    if q == 1 or not math.isfinite(rho):
        return plain
    log_q, log_1q = math.log(q), math.log1p(-q)
    # Every (α, l) term at once: rows are orders, columns l = 2 … max order (−inf for l > α).
    a = alphas[:, None]
    ls = np.arange(2, int(alphas.max()) + 1, dtype=np.float64)[None, :]
    inside = ls <= a
    log_binom = gammaln(a + 1) - gammaln(ls + 1) - gammaln(np.where(inside, a - ls, 0.0) + 1)
    terms = log_binom + ls * log_q + (a - ls) * log_1q + (ls - 1) * ls * rho
    terms = terms + np.where(ls >= 3, math.log(3.0), 0.0)
    terms = np.where(inside, terms, -np.inf)
    first = (alphas - 1) * log_1q + np.log(alphas * q - q + 1)
    out = logsumexp(np.column_stack([terms, first]), axis=1) / (alphas - 1)
    return np.asarray(np.minimum(out, plain), dtype=np.float64)


def _log_binomials(alphas: np.ndarray, ls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log C(α, l), l ≤ α)`` for every order (rows) and every l (columns)."""
    a = alphas[:, None]
    inside = ls[None, :] <= a
    rest = np.where(inside, a - ls[None, :], 0.0)
    return gammaln(a + 1) - gammaln(ls[None, :] + 1) - gammaln(rest + 1), inside


def sampled_ddg_rdp(rho: float, q: float, orders: tuple[int, ...] = SAMPLED_ORDERS) -> np.ndarray:
    """RDP at each integer order of one round of a ρ-zCDP mechanism under secret Poisson
    sampling at rate q: the larger of the forward and reverse orders' bounds, never above
    :func:`sampled_zcdp_rdp` (the module docstring states and proves each bound)."""
    general = sampled_zcdp_rdp(rho, q, orders)
    if q == 1 or not math.isfinite(rho):
        return general
    alphas = np.asarray(orders, dtype=np.float64)
    log_q, log_1q = math.log(q), math.log1p(-q)
    # forward: log Σ_{l=0}^{α} C(α,l)(1−q)^{α−l} q^l e^{(l−1)lρ}, every order at once, as
    # log1p of Σ_{l≥2} C(α,l)(1−q)^{α−l} q^l (e^{(l−1)lρ} − 1) (the binomial weights sum to 1;
    # the l = 0, 1 terms have e^0 = 1), which keeps the small-q values exact
    ls = np.arange(2, int(alphas.max()) + 1, dtype=np.float64)
    log_binom, inside = _log_binomials(alphas, ls)
    exponent = (ls - 1) * ls * rho
    log_excess = exponent + np.log1p(-np.exp(-exponent))  # log(e^x − 1), no overflow
    terms = log_binom + ls * log_q + (alphas[:, None] - ls) * log_1q + log_excess
    excess = logsumexp(np.where(inside, terms, -np.inf), axis=1)
    forward = np.where(excess < 0, np.log1p(np.exp(np.minimum(excess, 0.0))),
                       np.logaddexp(0.0, excess)) / (alphas - 1)  # fmt: skip
    # reverse: the smallest of (i) −log(1−q), (ii) joint convexity, (iii) the Taylor bound
    convexity = np.logaddexp(log_1q, log_q + (alphas - 1) * alphas * rho) / (alphas - 1)
    log_taylor = (
        np.log(alphas * (alphas - 1) / 2.0) - (alphas + 1) * log_1q + 2 * log_q
        + math.log(math.expm1(2.0 * rho))
    )  # fmt: skip
    taylor = np.logaddexp(0.0, log_taylor) / (alphas - 1)
    reverse = np.minimum(np.minimum(convexity, taylor), -log_1q)
    bound = np.minimum(np.maximum(forward, reverse), general)
    return np.asarray(np.maximum(bound, 0.0), dtype=np.float64)  # a divergence is ≥ 0


def ddg_sampled_epsilon(
    rho_per_round: float, rounds: int, q: float, delta: float, rho_fixed: float = 0.0
) -> float:
    """ε at δ of ``rounds`` secretly Poisson-sampled rounds of ``rho_per_round``-zCDP, composed
    with an un-sampled ``rho_fixed``-zCDP release (RDP adds order by order; the conversion is
    dp_accounting's RDP conversion, the one its RDP accountant uses)."""
    if rounds < 0:
        raise ConfigError(f"ddg_sampled_epsilon needs rounds ≥ 0. Got {rounds!r}")
    if not (math.isfinite(rho_per_round) and math.isfinite(rho_fixed)):
        return math.inf
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    alphas = np.asarray(SAMPLED_ORDERS, dtype=np.float64)
    rdp = rho_fixed * alphas
    if rounds:
        rdp = rdp + rounds * sampled_ddg_rdp(rho_per_round, q)
    epsilon, _ = compute_epsilon(SAMPLED_ORDERS, rdp.tolist(), delta)
    return float(epsilon)
