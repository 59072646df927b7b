"""Most-popular on ML-100K through the runner: the evaluator's shared-scores path (the model
declares SharedRanking, no score matrix) gives the generic path's metrics exactly."""

from __future__ import annotations

import numpy as np
import pytest
from tests.models.test_realdata_ml100k import ml100k

from privrank.metrics import evaluate
from privrank.metrics.evaluate import SharedScores
from privrank.models import FitOptions, MostPopular, Query
from privrank.workflow.protocols import prepare
from privrank.workflow.runner import ModelSpec, RunConfig, evaluate_model, model_scorer


@pytest.mark.realdata
@pytest.mark.parametrize("beyond_accuracy", [True, False])
@pytest.mark.parametrize("mode", ["users", "fold-in"])
def test_most_popular_on_ml100k_matches_the_generic_path(mode: str, beyond_accuracy: bool) -> None:
    """With beyond-accuracy metrics the shared path builds top lists for them; without, the
    ranking metrics come from each test item's rank alone (no lists)."""
    prepared = prepare("ml100k-holdout", ml100k())
    model = MostPopular().fit(prepared.train, FitOptions(seed=0))
    assert isinstance(model_scorer(model), SharedScores)
    config = RunConfig(
        protocols=("ml100k-holdout",), models=("most-popular",), beyond_accuracy=beyond_accuracy
    )
    fast = evaluate_model(
        model, prepared, config, ModelSpec(name="most-popular"), history_mode=mode
    ).result
    # The protocol built its pair sets once, for this and any later evaluation.
    pairs = prepared.evaluation_pairs()
    assert prepared.evaluation_pairs() is pairs and pairs.train is prepared.history
    history = prepared.history
    indptr, items = history.sequences()
    query = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64))
    if mode == "users":

        def score(users: np.ndarray) -> np.ndarray:
            return model.score(users)
    else:

        def score(users: np.ndarray) -> np.ndarray:
            return model.score(query.take(users))

    generic = evaluate(score, history, prepared.test, fast.config)  # the oracle
    np.testing.assert_array_equal(fast.users, generic.users)
    assert fast.per_user.keys() == generic.per_user.keys()
    for name, values in generic.per_user.items():
        np.testing.assert_array_equal(fast.per_user[name], values, err_msg=name)
    assert fast.aggregate == generic.aggregate
    assert fast.means["ndcg@10"] == pytest.approx(0.2170, abs=5e-5)  # BENCHMARKS' figure
