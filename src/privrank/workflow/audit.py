"""Empirical privacy audit with one training run (Steinke, Nasr & Jagielski, NeurIPS 2023).

A private fit claims user-level (ε, δ)-DP: adding or removing one user's entire history changes
the probability of any output by at most a factor ``e^ε`` plus δ. The audit *tests* that claim
on the real training pipeline, with a single fit:

1. **Canaries.** ``m`` fresh users (canaries) are made up, each with ``k ≤ c`` items, where
   ``c`` is the contribution bound, so a canary is an ordinary, in-bound user. Their items are
   ``m · k`` *dedicated* fresh items that no real user and no other canary has: canary ``j``
   owns items ``pool[j·k : (j+1)·k]``. Nothing else in the data touches a canary's items, so the
   statistics of those items move by the canary's own contribution alone (e.g. 1 on each item
   count and, for co-occurrence models, on each pair of its items) and the only thing hiding it
   is the mechanism's noise: no real user's or other canary's data blurs the signal. Larger
   ``k`` uses more of the sensitivity (for DP-MostPopular a ``c``-item canary *is* the worst
   case ``√c``) at the cost of ``m · k`` extra items in the fit.
2. **Coin flips.** Each canary is included independently with probability 1/2 (seeded,
   :class:`numpy.random.Generator`); the model is trained privately on the real data plus the
   included canaries. Every canary id and canary item is in the vocabulary whatever the coins
   say, and δ is fixed before the coins are flipped (default ``1/(10·(n_users + m))``), so
   nothing but the private fit depends on them.
3. **Scores from the released model only**, through public methods, so the same score audits
   any :class:`~privrank.models.Recommender` with ``supports_privacy`` (no training history, no
   model internals). Two channels:

   - *cold start*: each canary item's score for an empty history (every model's cold-start
     scores are its private item popularity);
   - *completion*: for models that fold histories in and canaries with ``k ≥ 2``, the score of
     each of the canary's first ``min(k, 4)`` items when the canary's other items are folded in
     (the model "completes" a history it has seen).

   Each score is turned into a percentile rank among the other canaries' items (mid-ranks for
   ties); the canary's score is the mean of its percentiles over both channels. Ranks make one
   score work for models whose raw scores live on different scales.
4. **Guesses.** For a guess count ``r`` the ``r/2`` highest-scoring canaries are guessed "in",
   the ``r/2`` lowest "out", the rest abstain (ties are broken by a seeded random key, which is
   independent of the coins).
5. **Bound.** If the fit is (ε, δ)-DP with respect to each canary, the number ``W`` of correct
   guesses among ``r`` satisfies (SNJ23, Thm. 5.2 and Cor. 5.4 with App. D)::

       P[W ≥ v] ≤ P[Bin(r, q) ≥ v] + 2 m δ · max_{i=1..v} (1/i) · P[v − i ≤ Bin(r, q) < v],
       q = e^ε / (1 + e^ε)

   (:func:`p_value_one_run`; with δ = 0 it is the binomial tail of randomized response). The
   empirical lower bound at confidence ``1 − β`` is the largest ε whose p-value is at most β
   (:func:`epsilon_lower_bound`): with probability at least ``1 − β`` over the coins and the
   noise, a mechanism that meets its claim yields a bound no larger than its true ε. Several
   guess counts are tried, each at level ``β / (number of counts)`` (Bonferroni), so the best
   of them is still a ``1 − β`` bound.

The δ term matters: ``2mδ`` multiplies a probability of order β, so a claim with
``2mδ ≳ β`` (many canaries, a δ near ``1/n``) lowers the bound the audit can reach; the default
δ of the audited fit is ``1/(10·(n_users + m))``, so ``2mδ < 0.2``.

The verdict is ``violated`` when the lower bound exceeds the claimed ε (the claim is then false
with confidence ``1 − β``), ``passed`` otherwise. A pass is *not* a proof of privacy: one run
with ``m`` canaries can certify at most about ``ln(m / ln(4/β))`` (four guess counts) even for a
mechanism with no noise at all, about 5 for ``m = 1000`` (the result's
``max_certifiable_epsilon`` reports that ceiling), and a model whose post-processing discards a
canary's signal (e.g. DP-EASE keeping only items whose noisy count stands out of the noise)
hides part of a broken mechanism from this test.

The fitted model is never saved or returned: the audit's outputs are counts and a bound, and they
are post-processing of that (ε, δ)-DP fit. The fit still trains on the real data, so it spends
its (ε, δ) from the budget ledger like any private fit
(:func:`~privrank.workflow.spend.fit_and_spend`, keyed by the dataset's name; refused before
training when the budget does not cover it). Only
``no_ledger=True`` (``privrank audit --no-ledger``) runs it without spending, and the result
then says so (:attr:`AuditResult.ledger` is ``None`` and :meth:`AuditResult.describe` states it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import scipy.special
import scipy.stats

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import FitOptions, Query, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.spend import fit_and_spend

__all__ = [
    "AuditResult",
    "CanaryDesign",
    "audit_model",
    "canary_scores",
    "design_canaries",
    "epsilon_lower_bound",
    "guess_and_bound",
    "p_value_one_run",
    "with_canaries",
]

#: Fractions of the canaries guessed (half "in", half "out"); each is tested at β / 4.
DEFAULT_GUESS_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
_BISECTION_STEPS = 60


# -------------------------------------------------------------------- the bound
def _check_counts(m: int, r: int, v: int) -> None:
    for name, value in (("m", m), ("r", r), ("v", v)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"one-run audit: {name} must be an integer. Got {value!r}")
    if not 0 <= v <= r <= m:
        raise ConfigError(f"one-run audit: need 0 ≤ v ≤ r ≤ m. Got m={m}, r={r}, v={v}")


def _check_probability(name: str, value: float, *, low_open: bool, high_open: bool) -> None:
    ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not (isinstance(value, int | float) and math.isfinite(value) and ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(f"one-run audit: {name} must be in {interval}. Got {value!r}")


def p_value_one_run(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The p-value of ``v`` correct guesses out of ``r`` under an (ε, δ)-DP null hypothesis.

    SNJ23 Theorem 5.2 (Corollary 5.4; their Appendix D computes it the same way): with ``m``
    canaries each included with probability 1/2, any guesser that makes ``r`` guesses (abstaining
    on the rest) from the output of an (ε, δ)-DP mechanism gets ``W`` right with::

        P[W ≥ v] ≤ β(v) + 2 m δ · α(v),
        β(v) = P[Bin(r, q) ≥ v],
        α(v) = max_{i = 1..v} P[v − i ≤ Bin(r, q) < v] / i,
        q    = e^ε / (1 + e^ε)   (the accuracy of ε-randomized response).

    Args:
        m: Canaries (each included with probability 1/2).
        r: Guesses made (abstentions excluded), ``r ≤ m``.
        v: Correct guesses, ``v ≤ r``.
        epsilon: ε of the null hypothesis (≥ 0).
        delta: δ of the null hypothesis, in [0, 1].

    Returns:
        The bound on ``P[W ≥ v]``, capped at 1.
    """
    _check_counts(m, r, v)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"one-run audit: ε must be finite and ≥ 0. Got {epsilon!r}")
    _check_probability("δ", delta, low_open=False, high_open=False)
    q = float(scipy.special.expit(epsilon))
    tail = float(scipy.stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = scipy.stats.binom.pmf(v - np.arange(1, v + 1), r, q)  # P[Bin = v − i], i = 1..v
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float = 0.05) -> float:
    """The largest ε that ``v`` correct guesses out of ``r`` reject at level β.

    Every ε whose :func:`p_value_one_run` is at most β is rejected: with confidence ``1 − β``
    the mechanism is not (ε, δ)-DP for it. The p-value grows with ε, so the rejected set is an
    interval ``[0, ε*)``; ε* is found by bracketing then bisection, keeping the low end (a
    conservative bound). Returns 0 when even ε = 0 is not rejected.

    Args:
        m: Canaries.
        r: Guesses.
        v: Correct guesses.
        delta: δ of the claim being tested.
        beta: 1 − confidence, in (0, 1).
    """
    _check_counts(m, r, v)
    _check_probability("δ", delta, low_open=False, high_open=False)
    _check_probability("β", beta, low_open=True, high_open=True)
    if p_value_one_run(m, r, v, 0.0, delta) > beta:
        return 0.0
    low, high = 0.0, 1.0
    while p_value_one_run(m, r, v, high, delta) <= beta:
        low, high = high, 2.0 * high
        if high > 1e4:  # only reachable with no guesses wrong and β ~ 1
            return low
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if p_value_one_run(m, r, v, middle, delta) <= beta:
            low = middle
        else:
            high = middle
    return low


# -------------------------------------------------------------------- canaries
@dataclass(frozen=True)
class CanaryDesign:
    """Which canaries exist, what they hold, and which ones the coins put in.

    Attributes:
        n_users: Real users (canary ``j`` has user code ``n_users + j``).
        n_items: Real items (canary items have codes from ``n_items`` on).
        items: ``(m, k)`` item codes of each canary (disjoint rows of fresh items).
        included: ``(m,)`` bool, each canary's coin (probability 1/2).
    """

    n_users: int
    n_items: int
    items: np.ndarray
    included: np.ndarray

    @property
    def canaries(self) -> int:
        """``m``."""
        return int(self.items.shape[0])

    @property
    def canary_items(self) -> int:
        """``k``, items per canary."""
        return int(self.items.shape[1])

    @property
    def pool(self) -> np.ndarray:
        """Every canary item code, canary by canary (``m · k``)."""
        return self.items.ravel()


def design_canaries(
    data: Interactions, canaries: int, canary_items: int, seed: int
) -> CanaryDesign:
    """``canaries`` fresh users, each owning ``canary_items`` fresh items, each included with
    probability 1/2 by a generator seeded with ``seed``."""
    for name, value, low in (("canaries", canaries, 2), ("canary_items", canary_items, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ConfigError(f"audit: {name} must be an integer ≥ {low}. Got {value!r}")
    rng = np.random.default_rng(seed)
    items = data.n_items + np.arange(canaries * canary_items, dtype=np.int64)
    included = rng.random(canaries) < 0.5
    return CanaryDesign(
        n_users=data.n_users,
        n_items=data.n_items,
        items=items.reshape(canaries, canary_items),
        included=included,
    )


def with_canaries(data: Interactions, design: CanaryDesign) -> Interactions:
    """The real rows plus the included canaries' rows, in dense codes.

    The vocabulary holds every real user and item and *every* canary and canary item (included
    or not), so its size says nothing about the coins. Canary rows get the latest real timestamp
    (they are within the bound, so a ``most_recent`` cap keeps them all).
    """
    chosen = np.flatnonzero(design.included)
    k = design.canary_items
    users = np.concatenate([data.users(), np.repeat(design.n_users + chosen, k)])
    items = np.concatenate([data.items(), design.items[chosen].ravel()])
    timestamps = data.timestamps()
    if timestamps is not None:
        latest = int(timestamps.max(initial=0))
        timestamps = np.concatenate([timestamps, np.full(chosen.size * k, latest, dtype=np.int64)])
    return Interactions.from_codes(
        users,
        items,
        n_users=design.n_users + design.canaries,
        n_items=design.n_items + design.canaries * k,
        timestamps=timestamps,
    )


# -------------------------------------------------------------------- scores
def _percentiles(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Percentile (mid-rank) of each ``values[t]`` among the values of other owners.

    ``values`` is ``(P,)``; ``owner[t]`` says which canary item ``t`` belongs to (owners are
    contiguous blocks of equal size).
    """
    ordered = np.sort(values)
    less = np.searchsorted(ordered, values, side="left")
    equal = np.searchsorted(ordered, values, side="right") - less
    k = values.size // (int(owner.max()) + 1)
    block = values.reshape(-1, k)
    own_less = (block[:, None, :] < block[:, :, None]).sum(axis=2).ravel()
    own_equal = (block[:, None, :] == block[:, :, None]).sum(axis=2).ravel()
    others = values.size - k
    ranks: np.ndarray = ((less - own_less) + 0.5 * (equal - own_equal)) / others
    return ranks


def canary_scores(model: Any, design: CanaryDesign, *, holdouts: int = 4) -> np.ndarray:
    """One membership score per canary, from the released model's public methods only.

    Mean of the canary's items' percentiles among the other canaries' items over two
    channels: each item's cold-start score (empty history), and, for models that fold
    histories in and canaries with ``k ≥ 2``, the score of each of its first ``holdouts`` items
    with the canary's other items folded in (see the module docstring); ``k + min(k,
    holdouts)`` percentiles in all. Higher means "more likely
    trained on".

    Args:
        model: A fitted :class:`~privrank.models.Recommender` trained on
            :func:`with_canaries` data of ``design``.
        design: The canaries.
        holdouts: Items held out per canary in the completion channel (``min(k, holdouts)``;
            each costs one fold-in query per canary).

    Returns:
        ``(m,)`` float64 scores in [0, 1].
    """
    m, k = design.items.shape
    pool = design.pool
    owner = np.repeat(np.arange(m), k)
    cold = model.score(Query.histories([[]]), items=pool)[0].astype(np.float64)
    channels = [_percentiles(cold, owner).reshape(m, k)]
    if k >= 2 and getattr(model, "supports_fold_in", True):
        h = max(1, min(k, holdouts))
        canary = np.repeat(np.arange(m), h)
        held = np.tile(np.arange(h), m)
        completion = np.empty(m * h, dtype=np.float64)
        batch = max(1, min(1024, (4 << 20) // pool.size))  # bounds a batch to ~32 MiB
        for start in range(0, m * h, batch):
            rows = np.arange(start, min(start + batch, m * h))
            c, t = canary[rows], held[rows]
            rest = design.items[c][np.arange(k)[None, :] != t[:, None]].reshape(-1, k - 1)
            scores = model.score(Query.histories(list(rest)), items=pool).astype(np.float64)
            target = scores[np.arange(rows.size), c * k + t][:, None]
            own = scores.reshape(rows.size, m, k)[np.arange(rows.size), c]
            less = (scores < target).sum(axis=1) - (own < target).sum(axis=1)
            equal = (scores == target).sum(axis=1) - (own == target).sum(axis=1)
            completion[rows] = (less + 0.5 * equal) / (m * k - k)
        channels.append(completion.reshape(m, h))
    mean: np.ndarray = np.concatenate(channels, axis=1).mean(axis=1)
    return mean


# -------------------------------------------------------------------- guesses and the bound
@dataclass(frozen=True)
class _Guesses:
    guesses: int
    correct: int
    epsilon: float
    ceiling: float


def guess_and_bound(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    *,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
    seed: int = 0,
) -> tuple[int, int, float, float]:
    """Guess "in" for the top and "out" for the bottom scores; the best Bonferroni bound.

    For each fraction ``f`` the ``⌊f·m/2⌋`` highest scores are guessed in and as many lowest out;
    each guess count is tested at level ``β / len(fractions)`` and the largest lower bound is
    kept (a union bound makes it a ``1 − β`` bound).

    Returns:
        ``(guesses, correct, epsilon_lower_bound, ceiling)``: the guess count with the largest
        bound (the larger count on ties), its correct guesses and bound, and ``ceiling``, the
        largest bound any of the counts would give with every guess right.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = scores.size
    if included.shape != (m,) or m < 2:
        raise ConfigError("audit: need one score and one coin per canary, and ≥ 2 canaries")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ConfigError(f"audit: guess fractions must be in (0, 1]. Got {list(fractions)!r}")
    tie_break = np.random.default_rng(seed).random(m)
    order = np.lexsort((tie_break, scores))[::-1]  # best first
    level = beta / len(fractions)
    best: _Guesses | None = None
    ceiling = 0.0
    for fraction in sorted(set(fractions)):
        half = max(1, int(fraction * m / 2))
        top, bottom = order[:half], order[m - half :]
        r = 2 * half
        v = int(included[top].sum() + (~included[bottom]).sum())
        found = _Guesses(
            guesses=r,
            correct=v,
            epsilon=epsilon_lower_bound(m, r, v, delta, level),
            ceiling=epsilon_lower_bound(m, r, r, delta, level),
        )
        if best is None or found.epsilon >= best.epsilon:
            best = found
        ceiling = max(ceiling, found.ceiling)
    assert best is not None
    return best.guesses, best.correct, best.epsilon, ceiling


# -------------------------------------------------------------------- the audit
@dataclass(frozen=True)
class AuditResult:
    """The outcome of one audit.

    Attributes:
        model: Registry name of the audited model.
        claimed_epsilon: ε the private fit claims (user-level).
        delta: δ of the claim (the fit's).
        contribution_bound: ``c``, rows kept per user.
        canaries: ``m``.
        canary_items: ``k``, items per canary.
        included: Canaries the coins put in the training data.
        guesses: ``r``, guesses made at the chosen guess count.
        correct: ``v``, correct guesses among them.
        confidence: ``1 − β``.
        empirical_epsilon: The lower bound on ε at that confidence.
        max_certifiable_epsilon: The largest bound any tried guess count gives with every
            guess right (the most this audit could have shown).
        verdict: ``passed`` (bound ≤ claimed ε) or ``violated`` (bound > claimed ε).
        noise_scale_for_testing: 1 for the real mechanism; anything else means the noise was
            deliberately scaled (a broken mechanism, for testing the audit).
        score: How canaries were scored.
        users: Real users in the data.
        items: Real items in the data.
        seconds: Wall time of the audit (fit and scoring).
        ledger: The budget-ledger spend of the fit (``ledger_key``, ``spend_id``, ``epsilon``,
            ``delta``), or ``None`` when it ran without spending (``no_ledger``).
    """

    model: str
    claimed_epsilon: float
    delta: float
    contribution_bound: int
    canaries: int
    canary_items: int
    included: int
    guesses: int
    correct: int
    confidence: float
    empirical_epsilon: float
    max_certifiable_epsilon: float
    verdict: Literal["passed", "violated"]
    noise_scale_for_testing: float
    score: str
    users: int
    items: int
    seconds: float
    ledger: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        """Whether the claim survived the audit."""
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def describe(self) -> str:
        """The result in plain words."""
        text = (
            f"{self.model}: claimed user-level (ε={self.claimed_epsilon:g}, δ={self.delta:.3g}); "
            f"empirical lower bound ε ≥ {self.empirical_epsilon:.3f} at {self.confidence:.0%} "
            f"confidence ({self.correct}/{self.guesses} guesses right, {self.canaries} canaries "
            f"of {self.canary_items} items, {self.included} included; this audit can certify at "
            f"most ε ≈ {self.max_certifiable_epsilon:.2f}): {self.verdict.upper()}"
        )
        if self.ledger is None:
            text += (
                "; NO PRIVACY BUDGET SPENT (--no-ledger): this private fit on the data is "
                "counted in no budget ledger"
            )
        else:
            text += (
                f"; spent (ε={self.ledger['epsilon']:g}, δ={self.ledger['delta']:.3g}) from "
                f"ledger key {self.ledger['ledger_key']!r} (spend {self.ledger['spend_id']})"
            )
        if self.noise_scale_for_testing != 1.0:
            text = (
                f"NOT PRIVATE: noise scaled by {self.noise_scale_for_testing:g} for testing. "
                + text
            )
        return text


def audit_model(
    model: str,
    data: Interactions,
    epsilon: float,
    max_per_user: int,
    *,
    params: Mapping[str, Any] | None = None,
    delta: float | None = None,
    canaries: int = 200,
    canary_items: int | None = None,
    seed: int = 0,
    noise_seed: int | None = None,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
    threads: int = 1,
    budget_key: str | None = None,
    ledger_url: str | None = None,
    no_ledger: bool = False,
) -> AuditResult:
    """Audit a model's private fit on ``data`` with ``canaries`` canary users (one fit).

    Run it inside :func:`~privrank.privacy.mechanisms._noise_scale_for_testing` to audit a
    deliberately broken mechanism (the result records the scale). The fit spends its (ε, δ)
    through :func:`~privrank.workflow.spend.fit_and_spend` unless ``no_ledger``.

    Args:
        model: Registry name of a model whose class has ``supports_privacy``.
        data: The real training data.
        epsilon: Claimed user-level ε of the fit.
        max_per_user: The contribution bound ``c``.
        params: Model hyper-parameters.
        delta: δ of the fit (default ``1 / (10 · (n_users + canaries))``).
        canaries: ``m`` (≥ 2).
        canary_items: ``k ≤ c`` items per canary (default ``min(c, 8)``).
        seed: Seed of the coins and the tie-breaking.
        noise_seed: Seed of the DP noise (default: fresh from the OS, as a real fit).
        beta: 1 − confidence.
        fractions: Guess fractions tried (Bonferroni-corrected).
        threads: Threads of the fit.
        budget_key: Ledger key the fit spends from (default: the dataset's name).
        ledger_url: Ledger database URL (default:
            :func:`~privrank.privacy.ledger.default_ledger_url`).
        no_ledger: Run without spending from the ledger (the result says so).

    Raises:
        ConfigError: An unknown or non-private model, or invalid audit parameters.
        PrivacyBudgetExceeded: The dataset's budget does not cover the fit (before it runs).
    """

    started = time.perf_counter()
    recommender = create_model(model, dict(params or {}))
    if not getattr(recommender, "supports_privacy", False):
        raise ConfigError(
            f"audit: {model} has no differentially private fit to audit (supports_privacy is false)"
        )
    if isinstance(max_per_user, bool) or not isinstance(max_per_user, int) or max_per_user < 1:
        raise ConfigError(f"audit: max_per_user must be an integer ≥ 1. Got {max_per_user!r}")
    k = min(max_per_user, 8) if canary_items is None else canary_items
    if isinstance(k, int) and k > max_per_user:
        raise ConfigError(
            f"audit: canary_items={k} exceeds the contribution bound {max_per_user}; a canary "
            "must be an in-bound user"
        )
    _check_probability("β", beta, low_open=True, high_open=True)
    design = design_canaries(data, canaries, k, seed)
    if delta is None:
        delta = 1.0 / (10.0 * (data.n_users + canaries))
    spec = PrivacySpec(
        epsilon=epsilon, delta=delta, max_interactions_per_user=max_per_user, noise_seed=noise_seed
    )
    train = with_canaries(data, design)
    with fit_and_spend(
        recommender,
        train,
        FitOptions(seed=seed, threads=threads, privacy=spec),
        budget_key=data.metadata.name if budget_key is None else budget_key,
        description=f"audit {model} with {canaries} canaries",
        ledger_url=ledger_url,
        no_ledger=no_ledger,
    ) as fitted:
        guarantee = recommender.privacy_guarantee_
        if guarantee is None:
            raise ConfigError(f"audit: {recommender.name} recorded no privacy guarantee")
        scores = canary_scores(recommender, design)
        guesses, correct, bound, ceiling = guess_and_bound(
            scores, design.included, guarantee.delta, beta=beta, fractions=fractions, seed=seed
        )
    channels = "cold-start percentile"
    if k >= 2 and recommender.supports_fold_in:
        channels += " + leave-one-out completion percentile"
    return AuditResult(
        model=model,
        claimed_epsilon=float(guarantee.epsilon),
        delta=float(guarantee.delta),
        contribution_bound=int(
            max_per_user if guarantee.contribution_bound is None else guarantee.contribution_bound
        ),
        canaries=design.canaries,
        canary_items=k,
        included=int(design.included.sum()),
        guesses=guesses,
        correct=correct,
        confidence=1.0 - beta,
        empirical_epsilon=float(bound),
        max_certifiable_epsilon=float(ceiling),
        verdict="passed" if bound <= guarantee.epsilon else "violated",
        noise_scale_for_testing=float(guarantee.noise_scale_for_testing),
        score=channels,
        users=data.n_users,
        items=data.n_items,
        seconds=time.perf_counter() - started,
        ledger=fitted.spend_record(),
    )
