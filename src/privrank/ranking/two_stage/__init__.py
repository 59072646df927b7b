"""Two-stage recommendation: several retrievers propose candidates, a learned ranker orders them.

Importing this package registers the model ``two-stage`` in the models registry.
"""

from privrank.ranking.two_stage._config import (
    RetrieverSpec,
    TwoStageConfig,
    TwoStagePrivateConfig,
)
from privrank.ranking.two_stage._features import feature_names, item_features
from privrank.ranking.two_stage.model import TwoStage

__all__ = [
    "RetrieverSpec",
    "TwoStage",
    "TwoStageConfig",
    "TwoStagePrivateConfig",
    "feature_names",
    "item_features",
]
