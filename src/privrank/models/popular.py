"""Most-popular items: the non-personalised baseline and every model's cold-start fallback."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrank.data.interactions import Interactions
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.capabilities import PlannedPrivateFit, SharedRanking
from privrank.privacy.spec import PrivacySpec

__all__ = ["MostPopular", "MostPopularConfig", "PopularityScores"]


class PopularityScores(Recommender, SharedRanking):
    """A non-personalised model: every user gets the fitted ``item_popularity_`` as scores.

    Subclasses only fit ``item_popularity_`` (a count, a noisy count, a decoded sketch); it is
    saved with the base model's state, so they keep no arrays of their own. Declared a
    :class:`~privrank.models.capabilities.SharedRanking`: evaluators rank the catalogue once.
    """

    personalised = False

    def shared_scores(self) -> np.ndarray:
        """The fitted ``item_popularity_``: every query's scores."""
        self._require_fitted()
        return self.item_popularity_

    def _score_histories(self, histories: Query) -> np.ndarray:
        return np.broadcast_to(self.item_popularity_, (len(histories), self.n_items_))

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_popularity_, (len(user_codes), self.n_items_))

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"unexpected arrays {sorted(state)}")


class MostPopularConfig(ModelConfig):
    """MostPopular has no hyper-parameters."""


@register("most-popular")
class MostPopular(PopularityScores, PlannedPrivateFit):
    r"""Rank items by how many training users interacted with them.

    .. math:: s(u, i) = |\{v : x_{vi} = 1\}|

    the same for every user (ties broken by the lower item code in :meth:`recommend`). With
    ``exclude_seen`` each user still gets the most popular items they have not seen. These are
    also the scores every model gives a query with an empty history.

    **Differential privacy** (``FitOptions(privacy=spec)``, DP-MostPopular): the scores are the
    item counts of the contribution-bounded data (at most :math:`c` items per user) released by
    :func:`~privrank.privacy.mechanisms.private_item_counts` with Gaussian noise calibrated to
    the user-level L2 sensitivity :math:`\sqrt{c}`, hence user-level (ε, δ)-DP; ranking them is
    post-processing. Without noise (a test-only switch) and with a bound no user exceeds, they
    are the exact counts.

    Attributes:
        privacy_guarantee_: The guarantee of a private fit (``None`` otherwise).
    """

    Config = MostPopularConfig
    config: MostPopularConfig
    supports_privacy = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        self._report(1, 1)

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: PrivacySpec
    ) -> None:
        from privrank.privacy.mechanisms import private_item_counts

        counts, self.privacy_guarantee_ = private_item_counts(matrix, spec)
        self.item_popularity_ = counts.astype(np.float32)
        self._report(1, 1)

    def planned_releases(self, spec: PrivacySpec, n_users: int, n_items: int) -> tuple:
        """One Gaussian release of the item counts at ``spec``'s (ε, δ)."""
        from privrank.privacy.mechanisms import planned_item_count_releases

        return planned_item_count_releases(spec)
