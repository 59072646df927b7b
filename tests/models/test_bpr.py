"""BPR: conformance, the loss against a float64 oracle, sampling, fold-in against a reference
with every negative, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.nn import functional

from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models._bpr_fold_in import sampled_negatives
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


@pytest.mark.parametrize("check", ["fold_in", "determinism", "save_load"])
def test_conformance_with_sampled_fold_in_negatives(check, tmp_path):
    """DATA's histories have 31 or 32 negatives: K = 4 draws a sample of them at each step."""
    RECOMMENDER_CHECKS[check](lambda: small_bpr(fold_in_negatives=4), DATA, tmp_path)


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


def exact_fold_in(model: BPR, history: np.ndarray) -> np.ndarray:
    """Reference fold-in of one history: the class docstring's objective over every negative,
    written out with autograd, and the same Adam steps."""
    cfg = model.config
    items = torch.from_numpy(model.item_factors_)
    bias = torch.from_numpy(model.item_bias_)
    positive = np.zeros(model.n_items_, dtype=bool)
    positive[history] = True
    positives = torch.from_numpy(np.flatnonzero(positive))
    negatives = torch.from_numpy(np.flatnonzero(~positive))
    vector = torch.zeros(cfg.factors, requires_grad=True)
    optimizer = torch.optim.Adam([vector], lr=cfg.fold_in_learning_rate)
    for _ in range(cfg.fold_in_steps):
        scores = items @ vector + bias
        pairs = functional.softplus(scores[negatives][None, :] - scores[positives][:, None])
        loss = pairs.mean() + cfg.regularization * vector.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return vector.detach().numpy()


def row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)])


def test_fold_in_with_every_negative_matches_the_exact_reference():
    """DATA has 40 items, fewer negatives per history than K = 128: every step draws them all,
    and the fold-in is the exact objective's (tolerance 1e-4 relative to the largest entry)."""
    model = small_bpr().fit(DATA, FitOptions(seed=7, threads=1))
    histories = model._training_histories(np.flatnonzero(DATA.user_counts() > 0))
    folded = model.fold_in(histories)
    reference = np.stack([exact_fold_in(model, histories.history(u)) for u in range(len(folded))])
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(folded, reference, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_fold_in_stays_close_to_the_exact_one(seed):
    """With K = 16 of about 288 negatives, each history's scores keep a Pearson correlation of
    at least 0.95 with the exact fold-in's (0.98 or more measured, seeds 0 to 3), and training
    users' fold-in scores are as close to their training-time scores as the exact fold-in's
    (median correlations within 0.02; within 0.005 measured)."""
    data = synthetic_interactions(n_users=80, n_items=300, per_user=12, seed=seed)
    model = small_bpr(fold_in_negatives=16).fit(data, FitOptions(seed=seed, threads=1))
    users = np.flatnonzero(data.user_counts() > 0)
    histories = model._training_histories(users)
    sampled = model.score(histories)
    vectors = np.stack([exact_fold_in(model, histories.history(u)) for u in range(len(users))])
    exact = vectors @ model.item_factors_.T + model.item_bias_
    to_exact = row_correlations(sampled, exact)
    assert to_exact.min() >= 0.95 and np.median(to_exact) >= 0.99, to_exact
    training = model.score(users)
    sampled_to_training = np.median(row_correlations(sampled, training))
    exact_to_training = np.median(row_correlations(exact, training))
    assert sampled_to_training >= exact_to_training - 0.02


def test_fold_in_of_a_history_without_negatives_is_zero():
    model = small_bpr().fit(DATA, FitOptions(seed=0, threads=1))
    everything = np.arange(DATA.n_items)
    alone = model.fold_in(Query.histories([everything]))
    together = model.fold_in(Query.histories([everything, [0, 1], []]))
    assert (alone == 0).all() and (together[[0, 2]] == 0).all() and (together[1] != 0).any()


def test_sampled_negatives_avoid_the_history_and_depend_on_it_alone():
    n_items = 50
    histories = [[3, 7, 8, 20, 49], [0, 1, 2], [5]]
    rows = Query.histories(histories).to_csr(n_items)
    sample, mask = sampled_negatives(rows, n_items, 16, 2000)
    assert sample.shape == (2000, 3, 16) and mask.all()
    for row, history in enumerate(histories):
        drawn = sample[:, row].ravel()
        assert not np.isin(drawn, history).any() and ((drawn >= 0) & (drawn < n_items)).all()
        # Uniform over the negatives: 32,000 draws, about 700 each (std about 26).
        counts = np.bincount(drawn, minlength=n_items)[np.setdiff1d(np.arange(n_items), history)]
        expected = drawn.size / (n_items - len(history))
        assert np.abs(counts - expected).max() < 0.25 * expected
        alone, _ = sampled_negatives(rows[row], n_items, 16, 2000)
        np.testing.assert_array_equal(alone[:, 0], sample[:, row])
    shuffled = Query.histories([[49, 20, 8, 7, 3, 3]]).to_csr(n_items)
    np.testing.assert_array_equal(
        sampled_negatives(shuffled, n_items, 16, 2000)[0][:, 0], sample[:, 0]
    )


def test_sampled_negatives_are_every_negative_when_there_are_few():
    rows = sp.csr_matrix(np.array([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]))
    sample, mask = sampled_negatives(rows, 5, 5, 3)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [False] * 5, [True] * 5]
    for step in sample:
        assert step[0, :3].tolist() == [1, 3, 4] and step[2].tolist() == [0, 1, 2, 3, 4]


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
