"""BPR: conformance, the loss against a float64 oracle, sampling, fold-in, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models.base import FitOptions, FitProgress, Query
from privrank.models.bpr import BPR, bpr_loss
from privrank.testing import RECOMMENDER_CHECKS, checkerboard, synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)


def small_bpr(**overrides) -> BPR:
    params = dict(
        factors=8,
        epochs=20,
        batch_size=64,
        learning_rate=0.05,
        regularization=1e-2,
        fold_in_steps=30,
    )
    return BPR(**(params | overrides))


@pytest.mark.parametrize("check", RECOMMENDER_CHECKS.values(), ids=RECOMMENDER_CHECKS.keys())
def test_conformance(check, tmp_path):
    check(small_bpr, DATA, tmp_path)


def reference_loss(w, h_pos, h_neg, b_pos, b_neg, reg) -> float:
    """The BPR objective written out triple by triple in float64."""
    total = 0.0
    for b in range(len(w)):
        x = float(w[b] @ (h_pos[b] - h_neg[b]) + b_pos[b] - b_neg[b])
        penalty = w[b] @ w[b] + h_pos[b] @ h_pos[b] + h_neg[b] @ h_neg[b] + b_pos[b] ** 2
        total += -np.log(1.0 / (1.0 + np.exp(-x))) + reg * (penalty + b_neg[b] ** 2)
    return total / len(w)


def test_loss_matches_reference_and_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(5, 3)) for _ in range(3)] + [rng.normal(size=5) for _ in range(2)]
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    value = bpr_loss(*tensors, 0.1)
    assert value.item() == pytest.approx(reference_loss(*arrays, 0.1), rel=1e-12)
    assert torch.autograd.gradcheck(lambda *t: bpr_loss(*t, 0.1), tuple(tensors))


def test_negatives_are_never_seen_items():
    model = small_bpr().fit(DATA, FitOptions(seed=0, threads=1))
    matrix = DATA.to_csr()
    users = np.repeat(np.arange(DATA.n_users), np.diff(matrix.indptr))
    keys = users.astype(np.int64) * DATA.n_items + matrix.indices
    negatives = model._negatives(users, np.sort(keys), np.random.default_rng(1))
    assert not matrix[users, negatives].any()
    assert ((negatives >= 0) & (negatives < DATA.n_items)).all()


def test_training_lowers_the_loss():
    model = small_bpr().fit(DATA, FitOptions(seed=0, threads=1))
    losses = model.loss_history_
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]


def test_fold_in_recovers_the_checkerboard_answer():
    board = checkerboard(50)
    model = small_bpr().fit(board, FitOptions(seed=3, threads=1))
    histories = model._training_histories(np.arange(50))
    top = model.recommend(histories, 1)[0][:, 0]
    assert (top == np.arange(50)).all()
    folded = model.fold_in(Query.histories([[]]))
    assert (folded == 0).all()


def test_validation_reports_and_keeps_the_best_epoch():
    parts = split(DATA, LeaveLastOut(k=1, validation=True))
    reports: list[FitProgress] = []
    model = small_bpr(epochs=12, patience=3).fit(
        parts.train,
        FitOptions(seed=0, threads=1, progress=reports.append, validation=parts.validation),
    )
    history = model.validation_history_
    assert len(history) == len(reports) and all("ndcg@10" in r.metrics for r in reports)
    best = int(history[np.argmax(history[:, 1]), 0])
    assert model.best_epoch_ == best
    assert len(model.loss_history_) <= best + 3
    from privrank.models._torch_training import ValidationSet

    again = ValidationSet.build(
        parts.validation,
        model.history_indptr_,
        model.history_items_,
        model.n_users_,
        model.n_items_,
    ).evaluate(lambda users, _: model._score_users(users))
    assert again["ndcg@10"] == pytest.approx(history[:, 1].max())


def test_validation_must_share_the_vocabulary():
    other = synthetic_interactions(n_users=20, n_items=10, seed=1)
    with pytest.raises(ConfigError, match="vocabulary"):
        small_bpr().fit(DATA, FitOptions(validation=other))


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match=r"BPR\.factors: got 0; expected an int >= 1"):
        BPR(factors=0)
