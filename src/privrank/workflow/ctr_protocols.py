"""CTR protocols: a CTR data set, a seeded row split and the metrics to report, fixed by name.

A CTR protocol (``kind="ctr"``) is the click-through-rate counterpart of a recommender
protocol (:mod:`privrank.workflow.protocols`): rankers are fitted on ``train``, early-stop and
calibrate on ``validation`` and are scored on ``test`` by AUC, log loss, normalised entropy and
ECE with bootstrap CIs over test rows (:mod:`privrank.metrics.ctr`).

``frappe``
    frappe (NFM libFM files). Only the validation (57,722 rows) and test (28,860 rows) parts of
    the published frappe_x1 split ship here (its 202,027-row train part does not), so the
    protocol pools these 86,582 rows and re-splits them with seed 0: 70 % train (60,607
    rows), 10 % validation (8,658), 20 % test (17,317). The rows keep their labels (one
    positive and two sampled negatives per logged use, as published). Scores are **not**
    comparable with frappe_x1 results (a third of the rows, another split).

``ipinyou``
    The iPinYou sample (advertiser 2997): the weekday-2 file is split with seed 0 into 80 %
    train and 20 % validation; the weekday-5 file is the test set, a later day as in the
    original protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from privrank.data._config import FrozenConfig
from privrank.data.ctr_datasets import (
    CTR_DATASETS,
    CTRSplit,
    CTRSplitParts,
    load_ctr_parts,
    split_ctr,
)
from privrank.data.features import CTRFrame

__all__ = ["CTR_PROTOCOLS", "CTRProtocolSpec", "PreparedCTR", "prepare_ctr"]


class CTRProtocolSpec(FrozenConfig):
    """A CTR data set, its split and what to report.

    Attributes:
        kind: Always ``ctr`` (tells CTR protocols from recommender protocols).
        name: Name in result files and tables.
        dataset: A name of :data:`~privrank.data.ctr_datasets.CTR_DATASETS`.
        split: The seeded row split.
        headline: Metrics a table shows.
        ece_bins: Equal-width bins of the ECE and the reliability diagram.
        description: One line.
    """

    kind: Literal["ctr"] = "ctr"
    name: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    split: CTRSplit
    headline: tuple[str, ...] = ("auc", "log_loss", "ece")
    ece_bins: int = Field(default=15, ge=1)
    description: str = ""


CTR_PROTOCOLS: dict[str, CTRProtocolSpec] = {
    "frappe": CTRProtocolSpec(
        name="frappe",
        dataset="frappe",
        split=CTRSplit(pool=("validation", "test"), train=0.7, validation=0.1, seed=0),
        description="frappe re-split: the shipped validation + test parts of frappe_x1 pooled "
        "(86,582 rows) and split 70/10/20 by seed 0",
    ),
    "ipinyou": CTRProtocolSpec(
        name="ipinyou",
        dataset="ipinyou",
        split=CTRSplit(pool=("train",), train=0.8, validation=0.2, test_part="test", seed=0),
        description="iPinYou advertiser 2997: weekday 2 split 80/20 (seed 0) into train and "
        "validation, weekday 5 as test",
    ),
}
"""The named CTR protocols."""


@dataclass(frozen=True)
class PreparedCTR:
    """A CTR protocol applied to its data: train, validation and test rows."""

    spec: CTRProtocolSpec
    parts: CTRSplitParts

    @property
    def train(self) -> CTRFrame:
        """Rows rankers are fitted on."""
        return self.parts.train

    @property
    def validation(self) -> CTRFrame:
        """Rows for early stopping and calibration."""
        return self.parts.validation

    @property
    def test(self) -> CTRFrame:
        """Rows the metrics are computed on."""
        return self.parts.test

    def describe(self) -> dict[str, Any]:
        """JSON facts: protocol, data set, split spec and counts."""
        dataset = CTR_DATASETS[self.spec.dataset]
        return {
            "protocol": self.spec.model_dump(mode="json"),
            "dataset": {
                "name": self.spec.dataset,
                "folder": dataset.folder,
                "files": dict(dataset.parts),
                "fields": list(self.train.categorical),
                "numeric": list(self.train.numeric),
            },
            "split": {
                "spec": self.spec.split.model_dump(mode="json"),
                "seed": self.spec.split.seed,
                "counts": self.parts.counts(),
            },
        }


def prepare_ctr(spec: CTRProtocolSpec, parts: dict[str, CTRFrame] | None = None) -> PreparedCTR:
    """Read (or take) a CTR protocol's data set and split it."""
    parts = load_ctr_parts(spec.dataset) if parts is None else parts
    return PreparedCTR(spec, split_ctr(parts, spec.split))
