"""Rankers: CTR models, learning-to-rank and two-stage pipelines.

The ranking layer sits above ``models`` (a two-stage pipeline ranks the candidates that
recommenders retrieve) and below ``workflow``. ``ranking.ctr`` holds click-through-rate models over
field-aware feature tables; ``ranking.ltr`` holds learning-to-rank models over query groups.
"""

# Registers the model "two-stage" in the models registry (the ranking layer may import models;
# models never import ranking, so whoever builds models by name imports this package).
import privrank.ranking.two_stage  # noqa: F401
