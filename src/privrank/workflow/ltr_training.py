"""Fit a learning-to-rank model, spending from the ledger when the fit is private.

A ranker fitted with a privacy spec (the neural ``listwise`` ranker with DP-SGD; LambdaMART
refuses one, see :mod:`privrank.ranking.ltr.lambdamart`) releases its weights under
:math:`(\\varepsilon, \\delta)`-DP where the **unit of privacy is one query group**: adding or
removing one group (every row of it) changes the distribution of the released weights by at
most :math:`(\\varepsilon, \\delta)`. That is user-level DP exactly when each user owns at most one
group (a two-stage pipeline builds one group per user; for a query log, group a user's queries
into one list first). The server that runs the fit sees the data and is trusted with it; only
the weights are released.

The spend goes through :func:`~privrank.workflow.spend.spend_release` (reserve before the fit,
commit after it, release when the fit raises): the spec is resolved against the number of
training groups (δ defaults to ``1 / (10 · groups)``) and that (ε, δ) is charged once per fit.
The DP-SGD plan is calibrated so that the accountant's ε (dp-accounting PLD through
:func:`privrank.privacy.dpsgd.plan_dpsgd`) is at most the spec's ε; the fitted ranker's
``privacy_guarantee_`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass

from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError
from privrank.ranking.ltr import LTRFitOptions, LTRRanker
from privrank.workflow.spend import Spend, spend_release

__all__ = ["RankerFit", "fit_ranker"]


@dataclass(frozen=True)
class RankerFit:
    """A fitted ranker and what its fit spent (``None``: a non-private fit)."""

    ranker: LTRRanker
    spend: Spend | None


def fit_ranker(
    ranker: LTRRanker,
    train: QueryGroups,
    validation: QueryGroups | None,
    options: LTRFitOptions,
    *,
    budget_key: str | None,
    description: str,
    ledger_url: str | None = None,
) -> RankerFit:
    """Fit ``ranker``; a private fit reserves its (ε, δ) first and commits it after the fit.

    Args:
        ranker: An unfitted ranker.
        train: The training groups (one group = one unit of privacy).
        validation: Validation groups for early stopping (refused with a privacy spec: a
            private fit selects nothing on data it did not account for).
        options: Seed, threads and the privacy spec (``options.privacy``).
        budget_key: The ledger key a private fit spends from.
        description: What the spend is for, recorded in the ledger.
        ledger_url: Ledger database URL (default: the configured one).

    Raises:
        PrivacyBudgetExceeded: Before the fit, when the budget does not cover it.
        ConfigError: A private fit with validation groups or without a ledger key, or a ranker
            that cannot train privately (refused before anything is reserved).
    """
    if options.privacy is None:
        return RankerFit(ranker.fit(train, validation, options), None)
    if validation is not None:
        raise ConfigError(
            f"{description}: a private ranker fit takes no validation groups (its epochs are "
            "fixed in advance; early stopping on the data would be an unaccounted release)"
        )
    if not ranker.supports_privacy:
        raise ConfigError(ranker._privacy_refusal())
    if not budget_key:
        raise ConfigError(f"{description}: a private fit needs a ledger key to spend from")
    resolved = options.privacy.resolve(train.n_queries)
    options = options.model_copy(update={"privacy": resolved})
    with spend_release(
        budget_key,
        resolved.epsilon,
        resolved.require_delta(),
        description,
        ledger_url=ledger_url,
    ) as spend:
        ranker.fit(train, None, options)
    return RankerFit(ranker, spend)
