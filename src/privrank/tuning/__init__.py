"""Hyper-parameter tuning on a validation split (Optuna), within a trial and time budget.

:func:`tune` searches one model's :class:`SearchSpace` (declared per model in
:mod:`privrank.tuning.search_spaces`), fitting on ``train`` and scoring by full ranking on
``validation``; :func:`carve_validation` makes that validation split out of a training part, so
test data is never seen while tuning. The result, :class:`TuneResult`, holds the best config and
every trial, and saves one JSON record atomically. :func:`select_model` shares a budget among
several families and keeps the best (``privrank train --tune``/``--model auto``); tuning on
private data is refused (:func:`refuse_private_tuning`, see :mod:`privrank.tuning.auto`).

Layer: above workflow (every trial fits through :func:`privrank.workflow.spend.fit_and_spend`);
may import workflow, models, privacy, metrics, data and the base modules; never serving,
distributed or the CLI (contracts in ``pyproject.toml``).
"""

from privrank.tuning.auto import (
    AUTO_FAMILIES,
    Selection,
    TuneBudget,
    auto_candidates,
    parse_budget,
    refuse_private_tuning,
    select_model,
)
from privrank.tuning.search_spaces import (
    SEARCH_SPACES,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    search_space,
    searchable_models,
)
from privrank.tuning.tuner import (
    TUNING_FORMAT,
    TrialRecord,
    TuneConfig,
    TuneResult,
    carve_validation,
    load_best_config,
    tune,
    validation_score,
)

__all__ = [
    "AUTO_FAMILIES",
    "SEARCH_SPACES",
    "TUNING_FORMAT",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchSpace",
    "Selection",
    "TrialRecord",
    "TuneBudget",
    "TuneConfig",
    "TuneResult",
    "auto_candidates",
    "carve_validation",
    "load_best_config",
    "parse_budget",
    "refuse_private_tuning",
    "search_space",
    "searchable_models",
    "select_model",
    "tune",
    "validation_score",
]
