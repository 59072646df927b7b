"""A local-DP popularity table as the cold-start ranking of a federated model.

``privrank federated train ... --popularity-prior popularity.json`` replaces the cold-start
scores of the trained :class:`~privrank.models.fedmf.FedMF` (what a user with an empty history
is ranked by, :attr:`~privrank.models.Recommender.item_popularity_`) with the estimates of a
local-DP telemetry collection (:mod:`privrank.workflow.telemetry`). The run's own item counts
still precondition the server step; only the cold-start ranking changes.

**Guarantee.** The table is post-processing of ε-LDP reports, already charged to the ledger
when it was ingested (ε per user-day, once per collection-day), so using it spends nothing
more. The model then holds two releases about the same users: the run's (its
:class:`~privrank.privacy.mechanism.PrivacyGuarantee`, or none for a non-private run) and the
collection's ``D·ε`` per user (δ = 0). They compose by basic composition:
:func:`prior_record` reports ``ε_run + ε_collection`` as the model's total per user, which is
also what the ledger holds when both were charged to the same key. The collection trusts
nobody with individual reports; the run keeps its own trust model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models.fedmf import FedMF
from privrank.privacy.local_dp.table import PopularityTable, read_popularity_table

__all__ = ["PopularityPrior", "apply_popularity_prior", "load_popularity_prior", "prior_record"]


class PopularityPrior:
    """A popularity table aligned to a training part's items.

    Attributes:
        path: Where the table was read from.
        table: The table.
        scores: The estimates in the training part's item order (0 for items it lacks).
        missing: Training items the table has no estimate for (they score 0).
        unused: Table items the training part does not have (not used).
    """

    def __init__(self, path: Path, table: PopularityTable, train: Interactions) -> None:
        self.path = path
        self.table = table
        item_ids = [str(x) for x in train.item_ids.to_pylist()]
        self.scores, self.missing, self.unused = table.aligned(item_ids)
        if self.missing == len(item_ids):
            raise ConfigError(
                f"--popularity-prior {path}: none of the {len(item_ids)} training items is in "
                "the table (is it another catalogue?)"
            )


def load_popularity_prior(path: str | Path, train: Interactions) -> PopularityPrior:
    """Read a table (strictly, :func:`read_popularity_table`) and align it to ``train``."""
    path = Path(path)
    return PopularityPrior(path, read_popularity_table(path), train)


def apply_popularity_prior(model: FedMF, train: Interactions, prior: PopularityPrior) -> FedMF:
    """The same trained model with the prior's estimates as its cold-start scores."""
    return FedMF.assemble(
        model.config,
        train,
        model.item_factors_,
        prior.scores.astype(np.float32),
        model.privacy_guarantee_,
    )


def prior_record(prior: PopularityPrior, run_epsilon: float | None) -> dict[str, Any]:
    """The prior's provenance and guarantee for ``training.json``, with the composed ε."""
    collection = prior.table.guarantee.epsilon_total
    return {
        "path": str(prior.path.resolve()),
        "collection": prior.table.collection,
        "days": prior.table.days,
        "local_guarantee": prior.table.guarantee.to_dict(),
        "spends": prior.table.spends,
        "training_items_missing": prior.missing,
        "table_items_unused": prior.unused,
        "epsilon_per_user_with_run": None if run_epsilon is None else collection + run_epsilon,
        "composition": (
            "basic: the run's ε plus the collection's D·ε (δ of the run only); none for a "
            "non-private run, whose item factors are not private"
        ),
    }
