"""Private-fit settings shared by several models, and the private fit of the Gram-based models.

:class:`DPSGDPrivateConfig` is the ``private`` block of the DP-SGD models; the rest is the
private fit shared by the Gram-based models (DP-EASE, DP-ItemKNN).

One user-level (ε, δ)-DP release (:func:`~privrank.privacy.gram_release.private_gram_release`:
noisy item counts, then a noisy bounded-norm Gram block on the items that carry signal), and the
post-processing both models share: the private cold-start popularity, the scale of the
reweighted Gram block, and a popularity prior blended into the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from privrank.models._config import FitOptions, ModelConfig
from privrank.models.capabilities import PlannedPrivateFit
from privrank.privacy.calibration import Release
from privrank.privacy.gram_release import (
    GramRelease,
    GramStatistics,
    planned_gram_releases,
    private_gram_release,
)
from privrank.privacy.spec import PrivacySpec

if TYPE_CHECKING:
    from privrank.models.base import Recommender

__all__ = [
    "DPSGDPrivateConfig",
    "PlannedDPSGDFit",
    "PlannedGramFit",
    "PrivateGramConfig",
    "PrivateGramFit",
    "gram_source",
    "private_gram_fit",
]

#: Default ``C_n``: √50, the count-vector norm of a user with 50 items (heavier users are
#: down-weighted). Selected on ML-100K validation at every ε in {0.5, 1, 2, 4, 8}.
DEFAULT_COUNT_NORM = 50**0.5
#: Default ``C``: the Gram-block norm bound (one user's weighted outer product). Selected on
#: ML-100K validation (2 at ε ≤ 0.5, 5 at ε in {1, 2, 8}, 10 at ε = 4; 5 is within 0.01 NDCG@10
#: of the best at every ε ≥ 1).
DEFAULT_GRAM_NORM = 5.0


class PrivateGramConfig(ModelConfig):
    """Settings of a private fit of a Gram-based model (the ``private`` block of its config).

    Every default was selected by the benchmark (``bench/bench_privacy_utility.py``) on a
    validation split carved from ML-100K's training data (never on test). Heavy users are
    *down-weighted* to the norm bounds rather than truncated: the defaults
    ``count_norm = √50`` and ``gram_norm = 5`` bound every user's influence whatever the spec's
    row cap, so a generous cap (``max_interactions_per_user`` ≥ the longest history) loses no
    rows; on ML-100K they lift DP-EASE at ε = 8 from 0.26 to 0.35 NDCG@10 with a cap of 50,
    and to 0.37 with no effective cap (BENCHMARKS.md, "Privacy-utility", lists the settings
    selected per ε). Set both norms to ``None`` for plain capping (sensitivity from the cap
    ``c`` alone: nobody reweighted); a fit without noise, with a cap no user reaches and
    without norm bounds is the non-private model.

    Attributes:
        count_share: ρ, the share of the (squared) Gaussian-DP budget spent on the item
            counts that choose the Gram block's items and serve as popularity; 0 releases the
            whole Gram matrix only (its diagonal is then the counts).
        count_norm: ``C_n``, the L2 bound on one user's weighted count vector (heavier users
            are down-weighted, not truncated); ``None``: ``√c`` (nobody reweighted).
        gram_norm: ``C``, the L2 bound on one user's weighted Gram block; ``None``:
            ``√(c(c + 1)/2)`` (nobody reweighted).
        signal_ratio: Keep the most popular items whose noisy count is at least this many
            ``σ_G√N`` (:func:`~privrank.privacy.gram_release.signal_items`); ``None``: no such
            rule. Needs ``count_share > 0``.
        max_items: Keep at most this many items in the Gram block; ``None``: no cap. Needs
            ``count_share > 0``.
        popularity_weight: β: the scores get ``β · m · p`` added, with ``m`` the Gram
            release's noise multiplier and ``p`` the noisy popularity scaled to a maximum of 1
            (a post-processing prior that grows with the noise; 0 without noise).
    """

    count_share: float = Field(0.3, ge=0, lt=1)
    count_norm: float | None = Field(DEFAULT_COUNT_NORM, gt=0)
    gram_norm: float | None = Field(DEFAULT_GRAM_NORM, gt=0)
    signal_ratio: float | None = Field(0.8, ge=0)
    max_items: int | None = Field(None, ge=1)
    popularity_weight: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _selection_needs_counts(self) -> PrivateGramConfig:
        if self.count_share == 0 and (self.signal_ratio is not None or self.max_items is not None):
            raise ValueError(
                "private.signal_ratio and private.max_items choose items from the noisy counts; "
                "they need private.count_share > 0 (set them to None for a whole-Gram release)"
            )
        return self


class DPSGDPrivateConfig(ModelConfig):
    """Settings of a DP-SGD fit (the ``private`` block of Mult-VAE's and SASRec's configs).

    Attributes:
        batch_size: Expected users per DP-SGD step (Poisson sampling at rate ``q = b/n``);
            ``None``: the model's ``batch_size``.
    """

    batch_size: int | None = Field(None, ge=1)


@dataclass
class PrivateGramFit:
    """A private release plus the post-processed quantities both models use.

    Attributes:
        release: The :class:`~privrank.privacy.gram_release.GramRelease`.
        popularity: ``max(noisy counts, 0)`` of every item (the cold-start scores).
        prior: ``β · m · popularity / max(popularity)`` or ``None`` when it is 0.
        scale: The reweighted block's scale relative to plain counts: the (clipped) ratio of the
            block's noisy trace to its noisy count sum, in (0, 1]; exactly 1 without noise when
            nobody is reweighted. Regularisers given on the scale of plain counts are multiplied
            by it.
    """

    release: GramRelease
    popularity: np.ndarray
    prior: np.ndarray | None
    scale: float


def gram_source(matrix: sp.csr_matrix, options: FitOptions) -> sp.csr_matrix | GramStatistics:
    """Where a Gram-based fit reads its sums from: the fit's engine (summed over user
    partitions there) or, without one, ``matrix`` in this process."""
    if options.engine is None:
        return matrix
    return options.engine.gram_statistics(matrix)


def private_gram_fit(
    matrix: sp.csr_matrix | GramStatistics, spec: PrivacySpec, config: PrivateGramConfig
) -> PrivateGramFit:
    """Release the statistics of a private Gram-based fit and post-process the shared parts.

    The guarantee is the release's (user-level (ε, δ), see
    :func:`~privrank.privacy.gram_release.private_gram_release`); everything else here reads only
    the release and public parameters. ``matrix`` may be the
    :class:`~privrank.privacy.gram_release.GramStatistics` of an engine (:func:`gram_source`):
    the sums are then computed there and noised here, once.
    """
    release = private_gram_release(
        matrix,
        spec,
        count_share=config.count_share,
        count_norm=config.count_norm,
        gram_norm=config.gram_norm,
        signal_ratio=config.signal_ratio,
        max_items=config.max_items,
    )
    popularity = np.maximum(release.counts, 0.0)
    multiplier = release.guarantee.noise_multiplier * release.guarantee.noise_scale_for_testing
    weight = config.popularity_weight * multiplier
    prior = None
    if weight > 0 and popularity.max(initial=0.0) > 0:
        prior = (weight * popularity / popularity.max()).astype(np.float32)
    trace = float(np.trace(release.gram))
    mass = float(popularity[release.items].sum())
    scale = 1.0 if mass <= 0 or trace <= 0 else min(1.0, trace / mass)
    return PrivateGramFit(release=release, popularity=popularity, prior=prior, scale=scale)


class PlannedGramFit(PlannedPrivateFit):
    """The plan of a Gram-based private fit (:func:`private_gram_fit`; DP-EASE, DP-ItemKNN): the
    count release (``private.count_share > 0``) and the Gram block's, at the spec's (ε, δ)
    (:func:`~privrank.privacy.gram_release.planned_gram_releases`). Mixed into a
    :class:`~privrank.models.Recommender` whose private settings are a
    :class:`PrivateGramConfig`."""

    def planned_releases(
        self, spec: PrivacySpec, n_users: int, n_items: int
    ) -> tuple[Release, ...]:
        settings = cast("Recommender", self).private_settings(PrivateGramConfig)
        return planned_gram_releases(spec, settings.count_share)


class PlannedDPSGDFit(PlannedPrivateFit):
    """The plan of a DP-SGD fit that runs :func:`~privrank.privacy.dpsgd.start_private_run`
    over its ``n_users`` training rows (DP-SASRec, DP-Mult-VAE, DP-BPR): the cold-start counts
    and the steps of :func:`~privrank.privacy.dpsgd.plan_dpsgd` at :meth:`private_batch_size`
    and the config's ``epochs``. Mixed into a :class:`~privrank.models.Recommender`; the fit
    must read its batch size from :meth:`private_batch_size` too."""

    def planned_releases(
        self, spec: PrivacySpec, n_users: int, n_items: int
    ) -> tuple[Release, ...]:
        from privrank.privacy.dpsgd import plan_dpsgd

        epochs = int(cast(Any, self).config.epochs)
        return plan_dpsgd(spec, n_users, self.private_batch_size(), epochs).releases()

    def private_batch_size(self) -> int:
        """``b`` of a private fit: the ``private`` block's batch size, else the config's."""
        host = cast("Recommender", self)
        size = host.private_settings(DPSGDPrivateConfig).batch_size
        return int(size or cast(Any, host).config.batch_size)
