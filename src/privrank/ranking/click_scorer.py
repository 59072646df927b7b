"""The smallest contract the ads auction needs from a click model: calibrated pCTR.

A :class:`ClickScorer` maps a batch of impressions, given as named feature columns, to their
calibrated click probabilities. The auction (:mod:`privrank.ranking.auction`) and the serving
endpoint rely on this and nothing else, so any CTR model that declares these two members can be
served (the LightGBM model of :mod:`privrank.ranking.gbdt_click` does; the PyTorch CTR models
of the ranking contract are meant to).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["ClickScorer"]


@runtime_checkable
class ClickScorer(Protocol):
    """A served click model.

    Attributes:
        feature_names: The columns :meth:`predict_ctr` reads, in order.
    """

    feature_names: tuple[str, ...]

    def predict_ctr(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(click) of each row: ``features[name]`` is one (n,) column per name of
        :attr:`feature_names`; returns (n,) float64 in [0, 1]."""
        ...
