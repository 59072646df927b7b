"""Rankers: CTR models, learning-to-rank and two-stage pipelines.

The ranking layer sits above ``models`` (a two-stage pipeline ranks the candidates that
recommenders retrieve) and below ``workflow``. ``ranking.ctr`` holds click-through-rate models over
field-aware feature tables; ``ranking.ltr`` holds learning-to-rank models over query groups.
"""
