"""SASRec: conformance, causality, padding, losses against explicit oracles, a sequential known
answer, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.interactions import Interactions
from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models._sasrec_network import (
    SASRecNetwork,
    gbce_beta,
    left_padded,
    sequence_loss,
    trimmed,
)
from privrank.models._torch_training import ValidationSet
from privrank.models.base import FitOptions, FitProgress, Query
from privrank.models.sasrec import (
    SASRec,
    appended_sequences,
    carve_last_items,
    carve_random_items,
)
from privrank.testing import RECOMMENDER_CHECKS, synthetic_interactions

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)


def small_sasrec(**overrides) -> SASRec:
    params = dict(
        factors=16,
        blocks=1,
        max_length=10,
        epochs=20,
        batch_size=64,
        dropout=0.1,
        negatives=16,
        learning_rate=0.01,
    )
    return SASRec(**(params | overrides))


# The checkerboard's answer (user u's best unseen item is u, an item in the *middle* of u's
# code-ordered history) is a bag-of-items property a next-item model is not asked to learn;
# test_cyclic_next_item below is SASRec's known answer.
CHECKS = {k: v for k, v in RECOMMENDER_CHECKS.items() if k != "checkerboard"}


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_conformance(check, tmp_path):
    check(small_sasrec, DATA, tmp_path)


def network(seed: int = 0, **overrides) -> SASRecNetwork:
    params = dict(n_items=30, d=8, blocks=2, heads=2, max_length=7, dropout=0.0)
    torch.manual_seed(seed)
    return SASRecNetwork(**(params | overrides)).eval()


def test_left_padded_matches_a_loop():
    histories = [[3, 1, 4], [], [1, 5, 9, 2, 6, 5, 3, 5], [7]]
    query = Query.histories(histories)
    out = left_padded(query.indptr, query.items, 5)
    for position, (row, history) in enumerate(zip(out, histories, strict=True)):
        kept = [c + 1 for c in history[-5:]]
        assert row.tolist() == [0] * (5 - len(kept)) + kept
        alone = query.take(np.array([position]))  # one history: its own path
        assert left_padded(alone.indptr, alone.items, 5).tolist() == [row.tolist()]


def test_attention_is_causal():
    net = network()
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.integers(1, 31, size=(4, 7)))
    changed = base.clone()
    changed[:, 4:] = torch.from_numpy(rng.integers(1, 31, size=(4, 3)))
    with torch.no_grad():
        a, b = net(base), net(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_and_trimming_do_not_change_states():
    net = network()
    sequences = torch.tensor([[0, 0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 2, 9]])
    with torch.no_grad():
        full = net(sequences)
        short = net(trimmed(sequences.numpy(), np.array([3, 2])))
        assert short.shape[1] == 3
        alone = net(trimmed(sequences[1:].numpy(), np.array([2])))
    torch.testing.assert_close(full[:, -3:], short, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full[1, -2:], alone[0], rtol=1e-5, atol=1e-6)
    assert (full[:, :4] == 0).all() and (full[1, 4] == 0).all()


def explicit_losses(net, sequences, drawn):
    """Cross-entropies written position by position (float64)."""
    with torch.no_grad():
        hidden = net(sequences[:, :-1]).double()
        items = net.item_vectors().double()
    full, sampled = [], []
    for b in range(len(sequences)):
        for t in range(sequences.shape[1] - 1):
            current, target = int(sequences[b, t]), int(sequences[b, t + 1])
            if current == 0 or target == 0:
                continue
            logits = (items @ hidden[b, t]).numpy()
            full.append(np.logaddexp.reduce(logits) - logits[target - 1])
            negatives = [logits[j] for j in drawn if j != target - 1]
            sampled.append(
                np.logaddexp.reduce([logits[target - 1], *negatives]) - logits[target - 1]
            )
    return np.mean(full), np.mean(sampled)


def test_losses_match_explicit_cross_entropy():
    net = network()
    sequences = torch.tensor(
        [[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 2, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8]]
    )
    generator = torch.Generator().manual_seed(5)
    drawn = torch.randint(30, (12,), generator=torch.Generator().manual_seed(5)).tolist()
    with torch.no_grad():
        full = sequence_loss(net, sequences, "softmax", 12, generator).item()
        sampled = sequence_loss(net, sequences, "sampled-softmax", 12, generator.manual_seed(5))
    expected_full, expected_sampled = explicit_losses(net, sequences, drawn)
    assert full == pytest.approx(expected_full, rel=1e-5)
    assert sampled.item() == pytest.approx(expected_sampled, rel=1e-5)


@pytest.mark.parametrize("loss", ["sampled-softmax", "gbce"])
def test_per_position_negatives_match_an_explicit_loop(loss):
    net = network()
    sequences = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 2, 9, 2]])
    valid = (sequences[:, :-1] > 0) & (sequences[:, 1:] > 0)
    positions = int(valid.sum())
    # the loss draws (positions, 12) items from its generator, one row per position
    drawn = torch.randint(30, (positions, 12), generator=torch.Generator().manual_seed(5))
    targets = sequences[:, 1:][valid] - 1
    assert (drawn == targets.unsqueeze(1)).any()  # some target is drawn as its own negative
    with torch.no_grad():
        hidden = net(sequences[:, :-1]).double()
        items = net.item_vectors().double().numpy()
        draws = torch.Generator().manual_seed(5)
        got = sequence_loss(net, sequences, loss, 12, draws, 0.6, "position").item()
    beta = gbce_beta(12, 30, 0.6)
    expected, p = [], 0
    for b in range(len(sequences)):  # positions in row-major order, as the loss takes them
        for t in range(sequences.shape[1] - 1):
            if not valid[b, t]:
                continue
            logits = items @ hidden[b, t].numpy()
            target = int(sequences[b, t + 1]) - 1
            negatives = [int(j) for j in drawn[p] if int(j) != target]
            p += 1
            if loss == "sampled-softmax":
                chosen = [logits[target], *(logits[j] for j in negatives)]
                expected.append(np.logaddexp.reduce(chosen) - logits[target])
            else:
                term = beta * np.logaddexp(0.0, -logits[target])
                term += sum(np.logaddexp(0.0, logits[j]) for j in negatives)
                expected.append(term)
    assert p == positions
    assert got == pytest.approx(np.mean(expected), rel=1e-5)


def cyclic(n_users: int = 40, n_items: int = 12, length: int = 8) -> Interactions:
    """User u walks the items in a cycle from item u mod n: item i is always followed by i+1."""
    users, items, times = [], [], []
    for user in range(n_users):
        for step in range(length):
            users.append(user)
            items.append((user + step) % n_items)
            times.append(step)
    return Interactions.from_codes(
        np.array(users), np.array(items), timestamps=np.array(times), n_items=n_items
    )


def test_gbce_beta_is_gsasrecs_calibration():
    # beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (|I| - 1) (gSASRec, eq. 12)
    alpha = 256 / 12_100
    assert gbce_beta(256, 12_101, 0.75) == pytest.approx(
        alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    )
    assert gbce_beta(256, 12_101, 0.75) == pytest.approx(0.25 + 0.75 * alpha)
    assert gbce_beta(256, 12_101, 0.0) == pytest.approx(1.0)  # plain BCE
    assert gbce_beta(256, 12_101, 1.0) == pytest.approx(alpha)  # fully calibrated
    assert gbce_beta(500, 100, 0.75) == pytest.approx(1.0)  # more negatives than items


def test_gbce_matches_an_explicit_sum_over_positions_and_negatives():
    net = network()
    drawn = torch.randint(30, (12,), generator=torch.Generator().manual_seed(5)).tolist()
    # the second sequence's last target is a drawn item: it must not count as its own negative
    sequences = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 2, 9, drawn[0] + 1]])
    with torch.no_grad():
        hidden = net(sequences[:, :-1]).double()
        items = net.item_vectors().double().numpy()
        got = sequence_loss(net, sequences, "gbce", 12, torch.Generator().manual_seed(5), 0.6)
    beta = gbce_beta(12, 30, 0.6)

    def log_sigmoid(x: float) -> float:
        return -np.logaddexp(0.0, -x)

    expected = []
    for b in range(len(sequences)):
        for t in range(sequences.shape[1] - 1):
            current, target = int(sequences[b, t]), int(sequences[b, t + 1])
            if current == 0 or target == 0:
                continue
            logits = items @ hidden[b, t].numpy()
            term = -beta * log_sigmoid(logits[target - 1])
            term -= sum(log_sigmoid(-logits[j]) for j in drawn if j != target - 1)
            expected.append(term)
    assert got.item() == pytest.approx(np.mean(expected), rel=1e-5)


@pytest.mark.parametrize(
    ("loss", "sharing"),
    [
        ("softmax", "batch"),
        ("sampled-softmax", "batch"),
        ("sampled-softmax", "position"),
        ("gbce", "batch"),
        ("bce", "batch"),
    ],
)
def test_cyclic_next_item(loss, sharing):
    data = cyclic()
    # gBCE (like BCE) learns this toy more slowly than the cross-entropies: 200 one-step epochs
    epochs = 200 if loss == "gbce" else 40
    model = small_sasrec(
        loss=loss,
        epochs=epochs,
        dropout=0.0,
        negatives=8,
        max_length=6,
        negative_sharing=sharing,
        carve_validation=False,  # the known answer of a fixed number of epochs
    )
    model.fit(data, FitOptions(seed=0, threads=1))
    assert model.loss_history_[-1] < model.loss_history_[0]
    histories = [[(start + s) % 12 for s in range(3)] for start in range(12)]
    top = model.recommend(Query.histories(histories), 1, exclude_seen=False)[0][:, 0]
    np.testing.assert_array_equal(top, [(start + 3) % 12 for start in range(12)])


def test_validation_early_stopping_keeps_the_best_weights():
    parts = split(cyclic(n_users=40), LeaveLastOut(k=1, validation=True))
    reports: list[FitProgress] = []
    model = small_sasrec(epochs=15, patience=2, validate_every=2)
    model.fit(
        parts.train,
        FitOptions(seed=1, threads=1, progress=reports.append, validation=parts.validation),
    )
    history = model.validation_history_
    assert [int(e) for e in history[:, 0]] == [r.epoch for r in reports if r.metrics]
    assert model.best_epoch_ == int(history[np.argmax(history[:, 1]), 0])
    assert len(model.loss_history_) <= model.best_epoch_ + 2 * 2 or len(history) * 2 >= 15
    again = ValidationSet.build(
        parts.validation,
        model.history_indptr_,
        model.history_items_,
        model.n_users_,
        model.n_items_,
    ).evaluate(lambda _, histories: model._score_histories(histories))
    assert again["ndcg@10"] == pytest.approx(history[:, 1].max(), abs=1e-6)
    assert not hasattr(model, "_pending_validation") and not hasattr(model, "_validation")


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match=r"'factors' parameter .*divisible by 'heads'"):
        SASRec(factors=10, heads=3)
    with pytest.raises(ConfigError, match=r"SASRec\.loss: got 'hinge'; expected one of"):
        SASRec(loss="hinge")


def test_carve_last_items_holds_out_each_long_sequences_last_item():
    query = Query.histories([[3, 1, 4], [1, 5], [9, 2, 6, 5], []])
    indptr, items, validation = carve_last_items(query.indptr, query.items)
    assert np.diff(indptr).tolist() == [2, 2, 3, 0]
    assert items.tolist() == [3, 1, 1, 5, 9, 2, 6]
    assert validation is not None
    assert validation.users.tolist() == [0, 2]
    assert [t.tolist() for t in validation.targets] == [[4], [5]]
    histories = validation.histories
    assert [
        histories.items[a:b].tolist()
        for a, b in zip(histories.indptr[:-1], histories.indptr[1:], strict=True)
    ] == [
        [3, 1],
        [9, 2, 6],
    ]
    short = Query.histories([[1, 2], [3]])
    same = carve_last_items(short.indptr, short.items)
    assert same[2] is None and same[1].tolist() == [1, 2, 3]


def test_a_fit_without_validation_stops_early_on_the_carved_last_items():
    data = cyclic(n_users=40)
    model = small_sasrec(epochs=30, patience=2, dropout=0.0, negatives=8, max_length=6)
    model.fit(data, FitOptions(seed=0, threads=1))
    history = model.validation_history_
    assert len(history) >= 1  # validated on the carve
    assert model.best_epoch_ == int(history[np.argmax(history[:, 1]), 0])
    # the oracle: the same fit on an explicit leave-last-out split (every user has 8 items)
    parts = split(data, LeaveLastOut(k=1, validation=False))
    explicit = small_sasrec(
        epochs=30, patience=2, dropout=0.0, negatives=8, max_length=6, carve_validation=False
    )
    explicit.fit(parts.train, FitOptions(seed=0, threads=1, validation=parts.test))
    np.testing.assert_allclose(explicit.validation_history_, history, rtol=1e-6)
    off = small_sasrec(epochs=3, carve_validation=False).fit(data, FitOptions(seed=0, threads=1))
    assert off.validation_history_.size == 0 and len(off.loss_history_) == 3


def _ragged(query: Query) -> list[list[int]]:
    return [
        query.items[a:b].tolist() for a, b in zip(query.indptr[:-1], query.indptr[1:], strict=True)
    ]


def test_carve_random_items_holds_out_one_item_after_the_first_of_each_long_sequence():
    sequences = [[3, 1, 4], [1, 5], [9, 2, 6, 5], [], [7, 8, 0, 4, 2]]
    query = Query.histories(sequences)
    draws = set()
    for seed in range(40):
        indptr, items, validation = carve_random_items(query.indptr, query.items, seed)
        assert validation is not None
        assert validation.users.tolist() == [0, 2, 4]
        rest = _ragged(Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)))
        assert rest[1] == [1, 5] and rest[3] == []
        for user, target, history in zip(
            validation.users, validation.targets, _ragged(validation.histories), strict=True
        ):
            original = sequences[user]
            (held,) = target.tolist()
            position = original.index(held)
            assert position >= 1  # never the first item: the history is never empty
            # the history is the sequence without that one item, in order
            assert history == original[:position] + original[position + 1 :] == rest[user]
            draws.add((int(user), position))
    # every position after the first is drawn for some seed (uniform over them)
    assert {p for u, p in draws if u == 4} == {1, 2, 3, 4}
    assert {p for u, p in draws if u == 0} == {1, 2}
    same = carve_random_items(*Query.histories([[1, 2], [3]]).ragged(), seed=0)
    assert same[2] is None


def test_a_fit_with_the_random_carve_stops_early_on_the_carved_random_items():
    data = cyclic(n_users=40)
    model = small_sasrec(
        epochs=30, patience=2, dropout=0.0, negatives=8, max_length=6, carve="random"
    )
    model.fit(data, FitOptions(seed=0, threads=1))
    history = model.validation_history_
    assert len(history) >= 1
    # the oracle: the same fit given the carve explicitly as a validation part
    indptr, items = model.history_indptr_, model.history_items_
    kept_indptr, kept_items, carved = carve_random_items(indptr, items, seed=0)
    assert carved is not None
    lengths = np.diff(kept_indptr)
    users = np.repeat(np.arange(len(lengths)), lengths)
    order = np.arange(len(kept_items)) - np.repeat(kept_indptr[:-1], lengths)  # time order
    sizes = {"n_users": data.n_users, "n_items": data.n_items}
    train = Interactions.from_codes(users, kept_items, timestamps=order, **sizes)
    targets = np.array([int(t[0]) for t in carved.targets])
    held = Interactions.from_codes(carved.users, targets, **sizes)
    explicit = small_sasrec(
        epochs=30, patience=2, dropout=0.0, negatives=8, max_length=6, carve_validation=False
    )
    explicit.fit(train, FitOptions(seed=0, threads=1, validation=held))
    np.testing.assert_allclose(explicit.validation_history_, history, rtol=1e-6)


def test_the_auto_carve_follows_the_test_shape_the_fit_is_given():
    data = cyclic(n_users=40)
    params = dict(epochs=4, patience=0, dropout=0.0, negatives=8, max_length=6)
    histories = {}
    for carve, shape in (("auto", None), ("last", None), ("auto", "random"), ("random", None)):
        model = small_sasrec(carve=carve, **params)
        model.fit(data, FitOptions(seed=0, threads=1, test_shape=shape))
        histories[(carve, shape)] = model.validation_history_
    np.testing.assert_array_equal(histories[("auto", None)], histories[("last", None)])
    np.testing.assert_array_equal(histories[("auto", "random")], histories[("random", None)])
    assert not np.array_equal(histories[("auto", None)], histories[("auto", "random")])


def test_appended_sequences_match_a_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 6, size=30)
    extra_lengths = rng.integers(0, 3, size=30)
    base = [rng.integers(0, 50, size=n).tolist() for n in lengths]
    extra = [rng.integers(0, 50, size=n).tolist() for n in extra_lengths]
    users = np.repeat(np.arange(30), extra_lengths)
    times = np.concatenate([np.arange(n)[::-1] for n in extra_lengths])  # rows out of order
    rows = np.concatenate([np.array(e[::-1], dtype=np.int64) for e in extra])
    later = Interactions.from_codes(users, rows, timestamps=times, n_users=30, n_items=50)
    indptr, items = appended_sequences(*Query.histories(base).ragged(), later)
    got = _ragged(Query(indptr=indptr, items=items.astype(np.int64)))
    assert got == [b + e for b, e in zip(base, extra, strict=True)]


def _train_and_validation(parts) -> Interactions:
    """The oracle's train + validation: both parts' rows with their timestamps."""
    train, validation = parts.train, parts.validation
    return Interactions.from_codes(
        np.concatenate([train.users(), validation.users()]),
        np.concatenate([train.items(), validation.items()]),
        timestamps=np.concatenate([train.timestamps(), validation.timestamps()]),
        n_users=train.n_users,
        n_items=train.n_items,
    )


def test_refit_retrains_the_best_epoch_count_on_train_and_validation():
    parts = split(cyclic(n_users=40), LeaveLastOut(k=1, validation=True))
    params = dict(epochs=12, patience=2, validate_every=2, dropout=0.1, max_length=6)
    reports: list[FitProgress] = []
    options = FitOptions(seed=3, threads=1, validation=parts.validation)
    plain = small_sasrec(refit=False, **params).fit(parts.train, options)
    refit = small_sasrec(refit=True, **params).fit(
        parts.train, options.model_copy(update={"progress": reports.append})
    )
    # the selection run is the plain fit: same validation history, same chosen epoch
    np.testing.assert_array_equal(refit.validation_history_, plain.validation_history_)
    assert refit.best_epoch_ == plain.best_epoch_
    # the oracle: a fit of exactly best_epoch_ epochs on train + validation, no validation
    oracle = small_sasrec(**(params | {"epochs": plain.best_epoch_}), carve_validation=False)
    oracle.fit(_train_and_validation(parts), FitOptions(seed=3, threads=1))
    histories = Query.histories([[(s + t) % 12 for t in range(4)] for s in range(12)])
    np.testing.assert_allclose(refit.score(histories), oracle.score(histories), rtol=1e-5)
    assert not np.allclose(refit.score(histories), plain.score(histories))
    # its epochs are reported after the selection run's, without validation metrics
    run = len(plain.loss_history_)
    tail = [r for r in reports if r.epoch > run]
    assert [r.epoch for r in tail] == list(range(run + 1, run + plain.best_epoch_ + 1))
    assert all(not r.metrics and r.epochs == run + plain.best_epoch_ for r in tail)


def test_refit_after_a_carve_puts_the_carved_items_back():
    data = cyclic(n_users=40)
    params = dict(epochs=10, patience=2, dropout=0.0, negatives=8, max_length=6)
    for carve in ("last", "random"):
        refit = small_sasrec(refit=True, carve=carve, **params).fit(data, FitOptions(seed=0))
        assert len(refit.validation_history_) >= 1
        oracle = small_sasrec(
            **(params | {"epochs": refit.best_epoch_}), carve_validation=False
        ).fit(data, FitOptions(seed=0))
        histories = Query.histories([[(s + t) % 12 for t in range(3)] for s in range(12)])
        np.testing.assert_allclose(refit.score(histories), oracle.score(histories), rtol=1e-5)


class Ticks:
    """A clock that moves one second each time it is read: the epoch loop reads it once at its
    start and once after every epoch, so epoch ``e`` of a loop ends ``e`` seconds in."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_time_budget_covers_the_refit(monkeypatch):
    import functools

    import privrank.models._torch_training as training
    from privrank.models._epochs import run_epochs

    monkeypatch.setattr(training, "run_epochs", functools.partial(run_epochs, clock=Ticks()))
    parts = split(cyclic(n_users=40), LeaveLastOut(k=1, validation=True))
    params = dict(epochs=6, patience=0, dropout=0.1, max_length=6)
    options = FitOptions(seed=3, threads=1, validation=parts.validation)

    def fit(**overrides) -> tuple[SASRec, list[FitProgress]]:
        reports: list[FitProgress] = []
        model = small_sasrec(**(params | overrides)).fit(
            parts.train, options.model_copy(update={"progress": reports.append})
        )
        return model, reports

    validated, _ = fit(refit=False)
    refitted, _ = fit()
    best = validated.best_epoch_
    assert best >= 2 and refitted.refit_epochs_ == best  # no budget: the refit is kept
    # The selection run's 6 epochs take 6 s; the refit gets what is left of the budget.
    # Left: best - 0.5 s: the refit's last epoch ends past it, but it is the last: kept.
    kept, reports = fit(max_seconds=6 + best - 0.5)
    assert kept.refit_epochs_ == best
    assert [r.epoch for r in reports] == list(range(1, 7 + best))
    np.testing.assert_array_equal(weights_of(kept), weights_of(refitted))
    # Left: best - 1.5 s: the refit stops after best - 1 epochs, short of best: dropped,
    # and the best validated weights stay.
    dropped, reports = fit(max_seconds=6 + best - 1.5)
    assert dropped.refit_epochs_ == 0 and dropped.best_epoch_ == best
    assert [r.epoch for r in reports] == list(range(1, 6 + best))  # 6 + (best - 1) epochs
    assert all(r.epochs == 6 + best and not r.metrics for r in reports[6:])
    np.testing.assert_array_equal(weights_of(dropped), weights_of(validated))
    np.testing.assert_array_equal(dropped.validation_history_, validated.validation_history_)
    # Nothing left after the selection run (its last epoch ended past the budget): no refit.
    skipped, reports = fit(max_seconds=5.5)
    assert skipped.refit_epochs_ == 0 and [r.epoch for r in reports] == list(range(1, 7))
    np.testing.assert_array_equal(weights_of(skipped), weights_of(validated))


def weights_of(model: SASRec) -> np.ndarray:
    """All network weights, flattened in state-dict order."""
    return np.concatenate([v.numpy().ravel() for v in model.network_.state_dict().values()])


def test_the_refit_record_travels_with_the_artifact(tmp_path):
    parts = split(cyclic(n_users=40), LeaveLastOut(k=1, validation=True))
    options = FitOptions(seed=3, threads=1, validation=parts.validation)
    for refit in (True, False):
        model = small_sasrec(epochs=4, refit=refit).fit(parts.train, options)
        assert model.refit_epochs_ == (model.best_epoch_ if refit else 0)
        loaded = SASRec.load(model.save(tmp_path / str(refit)))
        assert (
            loaded.refit_epochs_ == model.refit_epochs_ and loaded.best_epoch_ == model.best_epoch_
        )
        # The training record's summary: the validated epoch with the highest NDCG@10 (the first
        # of equals), read here from the validation history itself.
        history = model.validation_history_
        epoch, ndcg, hr = history[int(np.argmax(history[:, 1]))]
        assert model.fit_summary() == {
            "epochs_run": 4,
            "best_epoch": int(epoch),
            "best_validation": {"ndcg@10": ndcg, "hr@10": hr},
            "refit_epochs": int(epoch) if refit else 0,
        }
        assert loaded.fit_summary() == model.fit_summary()
        np.testing.assert_array_equal(weights_of(loaded), weights_of(model))
