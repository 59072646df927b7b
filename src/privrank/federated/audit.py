"""Empirical privacy audit of one federated run with canary devices.

After Andrew, Kairouz, Oh, Oprea, McMahan and Suriyakumar, "One-shot Empirical Privacy
Estimation for Federated Learning" (ICLR 2024, arXiv 2302.03098): ``m`` canary devices
(:class:`~privrank.federated.canaries.Canaries`), each a fixed random unit direction
:math:`u_k` sent at the round's clipping bound whenever it is sampled, are added to *one*
ordinary training run. Each canary is included with probability 1/2 (a seeded coin); the others
are never sent and serve as controls. After the run, each canary's statistic is the cosine
between :math:`u_k` and the sum :math:`A` of the round aggregates the server released (noise
included): everything the model is computed from.

Two numbers come out:

- **the estimate** of Andrew et al.: with :math:`\\mu_1, \\mu_0` the mean cosines of included
  and control canaries and :math:`\\sigma_0` the controls' standard deviation, the run behaves
  like a Gaussian mechanism with :math:`\\mu = (\\mu_1 - \\mu_0)/\\sigma_0` (μ-GDP); the
  estimate is that mechanism's ε at the run's δ. It is an estimate, not a bound;
- **a lower bound** with confidence :math:`1 - \\beta`, from the same cosines and coins by the
  one-run test of Steinke, Nasr and Jagielski (2023) that :mod:`privrank.workflow.audit`
  implements (:func:`~privrank.workflow.audit.guess_and_bound`).

The verdict is ``violated`` when the lower bound exceeds the claimed ε, else ``passed``. A run
with ``m`` canaries can certify at most about :math:`\\ln(m/\\ln(4/\\beta))`; a pass is not a
proof of privacy.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import dp_accounting as dpa
import numpy as np

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.federated.canaries import Canaries
from privrank.federated.settings import FederatedSettings
from privrank.federated.simulator import simulate
from privrank.models.fedmf import FedMFConfig
from privrank.privacy.spec import PrivacySpec
from privrank.workflow.audit import guess_and_bound
from privrank.workflow.spend import RoundLedger

__all__ = ["FederatedAuditResult", "audit_federated", "gdp_epsilon"]


@dataclass(frozen=True)
class FederatedAuditResult:
    """The outcome of a federated audit.

    Attributes:
        claimed_epsilon: ε the run claims (the released rounds composed).
        delta: δ of the claim.
        canaries: ``m``.
        included: Canaries the coins made devices of the run.
        mu: :math:`\\mu = (\\mu_1 - \\mu_0)/\\sigma_0` of the cosines.
        estimated_epsilon: Andrew et al.'s ε estimate (ε of μ-GDP at δ).
        empirical_epsilon: The lower bound at ``confidence``.
        max_certifiable_epsilon: The most this audit could have certified.
        guesses: Guesses of the lower bound's test.
        correct: Correct guesses among them.
        confidence: ``1 − β``.
        verdict: ``passed`` or ``violated``.
        noise_scale_for_testing: 1 for the real mechanism.
        seconds: Wall time.
    """

    claimed_epsilon: float
    delta: float
    canaries: int
    included: int
    mu: float
    estimated_epsilon: float
    empirical_epsilon: float
    max_certifiable_epsilon: float
    guesses: int
    correct: int
    confidence: float
    verdict: Literal["passed", "violated"]
    noise_scale_for_testing: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at δ of a μ-GDP mechanism (a Gaussian mechanism with multiplier 1/μ); 0 for μ ≤ 0."""
    if not mu > 0:
        return 0.0
    return float(dpa.get_epsilon_gaussian(1.0 / mu, delta))


def audit_federated(
    config: FedMFConfig,
    train: Interactions,
    settings: FederatedSettings,
    spec: PrivacySpec,
    ledger: RoundLedger,
    *,
    run_dir: Path,
    canaries: int = 200,
    seed: int = 0,
    beta: float = 0.05,
) -> FederatedAuditResult:
    """Run one private federated training with canaries and audit its claim.

    The run is an ordinary DP-FedAvg run (charged to ``ledger``) with ``canaries`` canary
    devices added; the model it trains is not returned (canaries are in it).

    Raises:
        ConfigError: Fewer than 2 canaries, or a run that released no round.
    """
    if canaries < 2:
        raise ConfigError(f"audit: need at least 2 canaries. Got {canaries}")
    started = time.perf_counter()
    d = config.factors
    item_dim = train.n_items * d
    drawn = Canaries.draw(canaries, item_dim, item_dim + d * d, seed)
    result = simulate(
        config, train, settings, run_dir=run_dir, spec=spec, ledger=ledger, canaries=drawn
    )
    guarantee = result.guarantee
    if guarantee is None or result.state.released_rounds == 0:
        raise ConfigError("audit: the run released no round; nothing to audit")
    released = result.state.arrays["released_sum"]
    norm = float(np.linalg.norm(released))
    cosines = drawn.directions @ released / (norm if norm > 0 else 1.0)
    inside, control = cosines[drawn.included], cosines[~drawn.included]
    spread = float(control.std(ddof=1)) if control.size > 1 else 0.0
    mu = float((inside.mean() - control.mean()) / spread) if spread > 0 else float("inf")
    guesses, correct, bound, ceiling = guess_and_bound(
        cosines, drawn.included, guarantee.delta, beta=beta, seed=seed
    )
    return FederatedAuditResult(
        claimed_epsilon=guarantee.epsilon,
        delta=guarantee.delta,
        canaries=canaries,
        included=int(drawn.included.sum()),
        mu=mu,
        estimated_epsilon=gdp_epsilon(mu, guarantee.delta) if np.isfinite(mu) else float("inf"),
        empirical_epsilon=bound,
        max_certifiable_epsilon=ceiling,
        guesses=guesses,
        correct=correct,
        confidence=1.0 - beta,
        verdict="violated" if bound > guarantee.epsilon else "passed",
        noise_scale_for_testing=guarantee.noise_scale_for_testing,
        seconds=time.perf_counter() - started,
    )
