"""The epoch loop (models/_epochs.py) against hand-computed runs, and the models that use it.

The fake model's weight after epoch ``e`` is ``[e]`` (changed in place, so a kept copy must be
a copy), its loss ``1 / e``, and its validation NDCG@10 the ``e``-th entry of a given list
(HR@10 is ``NDCG / 2``). Every expected value below is worked out by hand from the rules of the
module docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from privrank.data.splits import LeaveLastOut, split
from privrank.models._epochs import EarlyStopping, EpochSchedule, Validation, run_epochs
from privrank.models.base import FitOptions, FitProgress
from privrank.models.bpr import BPR
from privrank.models.sasrec import SASRec
from privrank.models.vae import MultVAE
from privrank.testing import synthetic_interactions


class FakeModel:
    """Records what the loop asks of it; see the module docstring."""

    def __init__(self, ndcg: list[float], seconds_per_epoch: float = 1.0):
        self.ndcg = ndcg
        self.weight = np.zeros(1)
        self.epoch = 0
        self.now = 0.0
        self.seconds_per_epoch = seconds_per_epoch
        self.evaluated: list[int] = []
        self.restored: list[float] = []
        self.reports: list[tuple[int, int, float | None, dict[str, float]]] = []

    def train_epoch(self, epoch: int) -> float:
        assert epoch == self.epoch + 1
        self.epoch = epoch
        self.weight[0] = epoch
        self.now += self.seconds_per_epoch
        return 1.0 / epoch

    def clock(self) -> float:
        return self.now

    def evaluate(self) -> dict[str, float]:
        self.evaluated.append(self.epoch)
        value = self.ndcg[self.epoch - 1]
        return {"ndcg@10": value, "hr@10": value / 2}

    def snapshot(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def restore(self, state: dict[str, Any]) -> None:
        self.restored.append(float(state["weight"][0]))
        self.weight = state["weight"]

    def report(self, epoch: int, epochs: int, loss: float | None = None, **metrics: float) -> None:
        self.reports.append((epoch, epochs, loss, metrics))

    def validation(self) -> Validation:
        return Validation(evaluate=self.evaluate, snapshot=self.snapshot, restore=self.restore)


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    model = FakeModel([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    history = run_epochs(
        EpochSchedule(epochs=6, patience=2),
        model.train_epoch,
        validation=model.validation(),
        report=model.report,
        clock=model.clock,
    )
    # Epoch 2 is best (0.3); 0.2 and 0.25 are two evaluations without improvement: stop at 4.
    assert history.epochs_run == 4 and history.stopped_by == "early stopping"
    assert history.best_epoch == 2
    assert model.restored == [2.0] and model.weight[0] == 2.0
    np.testing.assert_array_equal(history.losses, [1.0, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_array_equal(
        history.evaluations,
        [[1, 0.1, 0.05], [2, 0.3, 0.15], [3, 0.2, 0.1], [4, 0.25, 0.125]],
    )


def test_patience_zero_trains_every_epoch_and_still_keeps_the_best():
    model = FakeModel([0.5, 0.4, 0.3, 0.2])
    history = run_epochs(
        EpochSchedule(epochs=4, patience=0), model.train_epoch, validation=model.validation()
    )
    assert (history.epochs_run, history.stopped_by, history.best_epoch) == (4, "epochs", 1)
    assert model.weight[0] == 1.0 and len(history.evaluations) == 4


def test_an_equal_value_is_no_improvement():
    model = FakeModel([0.5, 0.5, 0.5])
    history = run_epochs(
        EpochSchedule(epochs=3, patience=2), model.train_epoch, validation=model.validation()
    )
    assert (history.epochs_run, history.stopped_by, history.best_epoch) == (3, "epochs", 1)


def test_validation_cadence_and_one_report_per_epoch():
    model = FakeModel([0.1, 0.2, 0.3, 0.1, 0.1, 0.4, 0.2])
    history = run_epochs(
        EpochSchedule(epochs=7, patience=5, validate_every=3),
        model.train_epoch,
        validation=model.validation(),
        report=model.report,
    )
    # Due at 3 and 6 (multiples of 3), and at 7 (the last epoch).
    assert model.evaluated == [3, 6, 7]
    assert [r[0] for r in model.reports] == list(range(1, 8))
    assert all(r[1] == 7 for r in model.reports)
    assert [r[2] for r in model.reports] == [1.0 / e for e in range(1, 8)]
    assert [r[3] for r in model.reports] == [
        {},
        {},
        {"ndcg@10": 0.3, "hr@10": 0.15},
        {},
        {},
        {"ndcg@10": 0.4, "hr@10": 0.2},
        {"ndcg@10": 0.2, "hr@10": 0.1},
    ]
    assert history.best_epoch == 6 and model.weight[0] == 6.0


@pytest.mark.parametrize(
    ("budget", "epochs_run"),
    [
        (2.5, 3),  # after epoch 3 the clock reads 3 > 2.5
        (3.0, 4),  # 3 is not past 3.0; 4 is
        (0.5, 1),  # the first epoch always completes
        (100.0, 5),  # the budget never runs out: all epochs
    ],
)
def test_time_budget_stops_after_the_epoch_that_crosses_it(budget, epochs_run):
    model = FakeModel([0.1] * 5)
    model.now = 10.0  # the budget counts from the start of the loop, not from zero
    history = run_epochs(
        EpochSchedule(epochs=5, validate_every=10, max_seconds=budget),
        model.train_epoch,
        validation=model.validation(),
        report=model.report,
        clock=model.clock,
    )
    assert history.epochs_run == epochs_run == len(model.reports) == len(history.losses)
    assert history.stopped_by == ("epochs" if epochs_run == 5 else "time budget")
    # validate_every=10 is never due: only the last epoch (budget or not) is evaluated.
    assert model.evaluated == [epochs_run] and history.best_epoch == epochs_run


def test_without_validation_the_last_weights_stay_and_no_clock_is_read():
    def clock() -> float:
        raise AssertionError("no time budget: the clock must not be read")

    model = FakeModel([])
    history = run_epochs(EpochSchedule(epochs=3), model.train_epoch, clock=clock)
    assert (history.epochs_run, history.best_epoch, history.stopped_by) == (3, 3, "epochs")
    assert history.evaluations.shape == (0, 3) and model.restored == []
    assert model.weight[0] == 3.0


def test_an_epoch_without_a_loss_reports_none_and_records_no_loss():
    reports: list[tuple[int, float | None]] = []
    history = run_epochs(
        EpochSchedule(epochs=2),
        lambda epoch: None,
        report=lambda epoch, epochs, loss=None, **metrics: reports.append((epoch, loss)),
    )
    assert reports == [(1, None), (2, None)]
    assert history.losses.shape == (0,) and history.best_epoch == 2


def test_early_stopping_keeps_a_copy_and_counts_patience():
    stopper = EarlyStopping(patience=2)
    assert not stopper.update(1, 0.1, {"w": np.array([1.0])})
    state = {"w": np.array([2.0])}
    assert not stopper.update(2, 0.3, state)
    state["w"][0] = 99.0  # later changes do not touch the kept copy
    assert not stopper.update(3, 0.2, state)
    assert stopper.update(4, 0.3, state)
    assert stopper.best_epoch == 2 and stopper.best_state is not None
    assert stopper.best_state["w"][0] == 2.0


def test_early_stopping_min_delta():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    assert not stopper.update(1, 0.5, {})
    assert stopper.update(2, 0.55, {})  # better, but not by more than 0.1
    assert stopper.best_epoch == 1


# ------------------------------------------------------------------ the models that use it
DATA = synthetic_interactions(n_users=40, n_items=30, seed=0)
SMALL = {
    "bpr": lambda **kw: BPR(factors=4, batch_size=64, **kw),
    "mult-vae": lambda **kw: MultVAE(hidden=8, latent=4, batch_size=16, **kw),
    "sasrec": lambda **kw: SASRec(factors=8, blocks=1, max_length=8, negatives=8, **kw),
}


@pytest.mark.parametrize("name", SMALL)
def test_models_stop_on_the_time_budget(name):
    reports: list[FitProgress] = []
    model = SMALL[name](epochs=5, max_seconds=1e-9)
    model.fit(DATA, FitOptions(seed=0, threads=1, progress=reports.append))
    assert [r.epoch for r in reports] == [1] and [r.epochs for r in reports] == [5]
    assert len(model.loss_history_) == 1 and model.best_epoch_ == 1
    if name == "sasrec":  # the budget covers the refit: none is left, so it never starts
        assert model.config.refit and len(model.validation_history_) == 1
        assert model.refit_epochs_ == 0


@pytest.mark.parametrize("name", SMALL)
def test_models_report_every_epoch_and_validate_on_cadence(name):
    parts = split(DATA, LeaveLastOut(k=1, validation=True))
    reports: list[FitProgress] = []
    model = SMALL[name](epochs=5, patience=0, validate_every=2)
    model.fit(
        parts.train,
        FitOptions(seed=0, threads=1, progress=reports.append, validation=parts.validation),
    )
    selection = reports[:5]
    if name == "sasrec":  # the refit's epochs follow, numbered on, without metrics
        best = model.best_epoch_
        assert model.refit_epochs_ == best >= 1
        assert [r.epoch for r in reports[5:]] == list(range(6, 6 + best))
        assert all(not r.metrics and r.epochs == 5 + best for r in reports[5:])
    else:
        assert len(reports) == 5
    assert [r.epoch for r in selection] == [1, 2, 3, 4, 5]
    assert [sorted(r.metrics) for r in selection] == [
        [],
        ["hr@10", "ndcg@10"],
        [],
        ["hr@10", "ndcg@10"],
        ["hr@10", "ndcg@10"],
    ]
    history = model.validation_history_
    np.testing.assert_array_equal(history[:, 0], [2, 4, 5])
    assert [r.metrics["ndcg@10"] for r in reports if r.metrics] == list(history[:, 1])
    assert model.best_epoch_ == int(history[np.argmax(history[:, 1]), 0])
    assert len(model.loss_history_) == 5
