"""implicit's own evaluation agrees with ours where the definitions coincide.

implicit 0.7.3 (``implicit/evaluation.pyx``, ``ranking_metrics_at_k``) skips users with no test
items, asks the model for its top ``K`` with training items filtered, and returns:

* ``ndcg``: the mean over users of binary NDCG@K with IDCG over ``min(K, |R|)`` ones — our
  ``ndcg@K`` (binary relevance);
* ``precision``: a *micro* average, ``sum_u hits_u / sum_u min(K, |R_u|)`` — from our per-user
  values, ``sum(recall_min_k * min(K, |R|)) / sum(min(K, |R|))`` with the ``min_k_relevant``
  recall;
* ``map``: the mean of AP@K over ``min(K, |R|)`` — our default ``map@K``.

The model is an ``implicit`` ALS object whose factors we set, so both sides rank the same
scores (random float factors: no ties, which the two libraries would order differently).
"""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.interactions import Interactions
from privrank.metrics import EvaluationConfig, evaluate

implicit_als = pytest.importorskip("implicit.cpu.als")
implicit_evaluation = pytest.importorskip("implicit.evaluation")
pytestmark = pytest.mark.filterwarnings("ignore:OpenBLAS is configured")


def test_implicit_ndcg_precision_map_agree_with_ours() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, n_rows = 300, 200, 9000
    data = Interactions.from_codes(
        rng.integers(0, n_users, n_rows),
        rng.integers(0, n_items, n_rows),
        n_users=n_users,
        n_items=n_items,
    )
    in_train = rng.random(n_rows) < 0.8
    train, test = data.take(in_train), data.take(~in_train)
    model = implicit_als.AlternatingLeastSquares(factors=8, random_state=0)
    model.user_factors = rng.standard_normal((n_users, 8)).astype(np.float32)
    model.item_factors = rng.standard_normal((n_items, 8)).astype(np.float32)
    train_csr = train.to_csr()
    test_csr = test.to_csr()
    test_csr.data[:] = 1.0

    def score(users: np.ndarray) -> np.ndarray:
        return model.user_factors[users] @ model.item_factors.T

    for k in (5, 10, 40):
        theirs = implicit_evaluation.ranking_metrics_at_k(
            model, train_csr, test_csr, K=k, show_progress=False
        )
        ours = evaluate(
            score,
            train,
            test,
            EvaluationConfig(cutoffs=(k,), recall_denominator="min_k_relevant"),
        )
        assert ours.means[f"ndcg@{k}"] == pytest.approx(theirs["ndcg"], rel=1e-6)
        assert ours.means[f"map@{k}"] == pytest.approx(theirs["map"], rel=1e-6)
        denominators = np.minimum(np.diff(test_csr.indptr)[ours.users], k)
        micro = (ours.per_user[f"recall@{k}"] * denominators).sum() / denominators.sum()
        assert micro == pytest.approx(theirs["precision"], rel=1e-6)
        assert implicit_evaluation.ndcg_at_k(
            model, train_csr, test_csr, K=k, show_progress=False
        ) == pytest.approx(ours.means[f"ndcg@{k}"], rel=1e-6)
        assert implicit_evaluation.precision_at_k(
            model, train_csr, test_csr, K=k, show_progress=False
        ) == pytest.approx(micro, rel=1e-6)
