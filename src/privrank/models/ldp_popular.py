"""Item popularity collected with local differential privacy: a popularity prior and cold start."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from privrank.data.interactions import Interactions
from privrank.errors import NotTrainedError
from privrank.models.base import FitOptions, ModelConfig, register
from privrank.models.capabilities import LocalDPCollection
from privrank.models.popular import PopularityScores
from privrank.privacy.local_dp import (
    LocalGuarantee,
    LocalSketch,
    LocalSketchMechanism,
    SketchConfig,
    collection_epsilon,
)

__all__ = ["LDPPopular", "LDPPopularConfig", "device_reports"]


class LDPPopularConfig(ModelConfig):
    """The collection's public parameters.

    Attributes:
        sketch: ``ocms`` (the default: Apple's Count Mean Sketch with the optimised unary
            encoding randomiser, never noisier than ``cms`` at the same ε; the proof is in
            :class:`~privrank.privacy.local_dp.sketch.SketchConfig`), ``cms`` (Apple's CMS
            with its own randomiser) or ``hcms`` (Hadamard Count Mean Sketch).
        epsilon: ε of one report.
        m: Sketch width (a power of two for ``hcms``).
        k: Sketch depth (number of hash functions).
        reports_per_user: R, reports each device sends per day.
        days: D, days of collection.
        hash_seed: Key of the public hash family.
    """

    sketch: Literal["cms", "hcms", "ocms"] = "ocms"
    epsilon: float = Field(default=4.0, gt=0, le=50, allow_inf_nan=False)
    m: int = Field(default=1024, ge=2, le=1 << 16)
    k: int = Field(default=1024, ge=1, le=1 << 16)
    reports_per_user: int = Field(default=1, ge=1, le=1000)
    days: int = Field(default=1, ge=1, le=3650)
    hash_seed: int = Field(default=0, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _sketch_ok(self) -> LDPPopularConfig:
        self.sketch_config()
        return self

    def sketch_config(self) -> SketchConfig:
        """The :class:`SketchConfig` of these parameters (validated)."""
        return SketchConfig(
            kind=self.sketch, epsilon=self.epsilon, m=self.m, k=self.k, hash_seed=self.hash_seed
        )


def device_reports(
    indptr: np.ndarray, items: np.ndarray, reports: int, rng: np.random.Generator
) -> np.ndarray:
    """What each device reports: ``reports`` items, each drawn uniformly from its own history.

    Args:
        indptr: Row pointers of the users' histories (n_users + 1).
        items: The histories' item codes.
        reports: Reports per user (R · D).
        rng: The devices' randomness.

    Returns:
        Item codes, ``reports`` per user with at least one item, user by user.
    """
    lengths = np.diff(indptr)
    users = np.flatnonzero(lengths > 0)
    picks = rng.random((len(users), reports))
    offsets = np.minimum((picks * lengths[users, None]).astype(np.int64), lengths[users, None] - 1)
    return np.asarray(items)[(indptr[users, None] + offsets).ravel()]


@register("ldp-popular")
class LDPPopular(PopularityScores, LocalDPCollection):
    r"""Item popularity decoded from a local-DP sketch collection (CMS or HCMS).

    Every training user acts as a device: each day it sends ``reports_per_user`` reports, each
    of one item drawn uniformly from its own history, randomised on the device by the sketch's
    ε-LDP randomiser (:mod:`privrank.privacy.local_dp.sketch`). The server decodes the sketch
    into unbiased frequency estimates ``f̃(i)`` of the reported items, and scores

    .. math:: s(u, i) = \tilde f(i)

    for every user (non-personalised, like :class:`~privrank.models.MostPopular`); these are
    also the model's cold-start scores. ``f̃`` is unbiased for
    ``E[f(i)] = R · D · Σ_u 1[i ∈ H_u]/|H_u|``: popularity with each user's weight spread over
    their items.

    **Guarantee** (:class:`~privrank.privacy.local_dp.LocalGuarantee`, in
    :attr:`local_guarantee_`): ε-LDP per report, ``R·ε`` per user per day, ``D·R·ε`` per user
    over the collection, δ = 0; trusted: nobody (reports leave the device randomised). The fit
    itself *simulates* the devices from centrally held training rows: a real deployment runs
    :meth:`LocalSketch.randomise` on each device. The model declares
    :class:`~privrank.models.capabilities.LocalDPCollection`, so every fit through
    :func:`privrank.workflow.spend.fit_and_spend` (``privrank train``, ``privrank evaluate``)
    reserves the collection's ``D·R·ε`` (δ = 0) in the dataset's ledger before the devices are
    simulated, and commits it once the model is used.

    Attributes:
        local_guarantee_: The collection's guarantee.
    """

    Config = LDPPopularConfig
    config: LDPPopularConfig
    local_guarantee_: LocalGuarantee | None = None

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self.config
        rng = np.random.default_rng([options.seed, 0x1DF])
        sketch = LocalSketch(cfg.sketch_config(), self.item_ids_.to_pylist())
        mechanism = LocalSketchMechanism(sketch, cfg.reports_per_user, cfg.days)
        reported = device_reports(
            self.history_indptr_, self.history_items_, cfg.reports_per_user * cfg.days, rng
        )
        sketch.collect(reported, rng)
        self.item_popularity_ = sketch.estimate().astype(np.float32)
        self.local_guarantee_ = mechanism.guarantee()
        self._report(1, 1)

    def collection_epsilon(self) -> float:
        """``D · R · ε`` per user (δ = 0), by the PLD accountant (pure-DP composition)."""
        cfg = self.config
        return collection_epsilon(cfg.sketch_config(), cfg.reports_per_user, cfg.days)

    def local_guarantee_record(self) -> dict[str, Any]:
        """The fitted collection's :class:`LocalGuarantee` as JSON."""
        if self.local_guarantee_ is None:
            raise NotTrainedError(f"{self.name} is not fitted")
        return self.local_guarantee_.to_dict()

    def describe_collection(self) -> str:
        """The fitted collection's :class:`LocalGuarantee` in plain words."""
        if self.local_guarantee_ is None:
            raise NotTrainedError(f"{self.name} is not fitted")
        return self.local_guarantee_.describe()

    def _restore(self, artifact: Any) -> None:
        super()._restore(artifact)
        record = (artifact.header.get("info") or {}).get("local_dp")
        if record is None:
            raise ValueError("the artifact has no local-DP guarantee (info.local_dp)")
        self.local_guarantee_ = LocalGuarantee(**record)

    def _artifact_info(self) -> dict[str, Any]:
        guarantee = self.local_guarantee_
        return {} if guarantee is None else {"local_dp": guarantee.to_dict()}
