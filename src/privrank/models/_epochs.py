"""The one epoch loop of the iterative models: time budget, validation, early stopping, progress.

An iterative model (BPR, Mult-VAE, SASRec) supplies only its *epoch*: a function that trains
one pass over the data and returns the mean training loss, or ``None`` when the loss must not
be reported (a private fit computes it on users' data without noise). :func:`run_epochs` owns
everything around it. After each epoch ``e`` (counted from 1) it, in this order:

1. records the loss;
2. decides whether ``e`` is the last epoch: ``e == epochs``, or the time budget
   ``max_seconds`` (counted from the start of the loop) is spent, checked *after* the epoch,
   so the epoch that crosses the budget completes;
3. validates, when the fit has a :class:`Validation` and ``e`` is due (``e`` a multiple of
   ``validate_every``, or the last epoch): records ``(e, ndcg@10, hr@10)`` and hands NDCG@10
   and the current weights to :class:`EarlyStopping`, which keeps a copy of the best weights
   and says when ``patience`` evaluations in a row brought no improvement;
4. reports progress: ``report(e, epochs, loss, **metrics)``, with the validation metrics when
   it validated;
5. hands the loop's state (:class:`LoopState`) to ``save``, when given (a checkpoint of the
   fit; it is written before the report, so whoever hears of epoch ``e`` can rely on it);
6. stops when this was the last epoch or early stopping said so.

A loop started with ``resume=state`` (a :class:`LoopState` that ``save`` was given) continues
after ``state.epoch`` with that state's losses, evaluations, early-stopping state (best value,
best epoch, best weights, evaluations without improvement) and spent time; the model must have
put back its own state of that epoch (weights, optimizer, random streams) first. A loop resumed
from a finished state trains nothing more.

Then the best validated weights, if there was any evaluation, are put back, and the
:class:`EpochHistory` says what happened. The loop draws no random numbers, so a model's
random-number consumption is that of its epochs alone.

**Collective stops (data-parallel fits).** When the loop runs on every worker of a data-parallel
fit (:mod:`privrank.models.parallel`), every step sums the gradients over all workers, so all
workers must train the same epochs: a worker that stopped while another started the next epoch
would leave that one waiting forever in the gradient sum. Each worker's clock and validation
metric are its own (clocks differ; float sums of a validation ranking can differ between CPUs),
so no stop is decided from them alone. Given an :class:`Agreement` (``agree``), the loop takes
every input of a stop decision through it, on every worker, before acting on it:

- at the start, every worker's resume point (the epoch and whether its loop had finished) must
  be the same; otherwise every worker raises;
- step 2 counts against ``max_seconds`` the **largest** elapsed time of any worker
  (:meth:`Agreement.elapsed`, when there is a budget), so "past the budget" is the same
  everywhere;
- step 3 records, and hands to early stopping, **rank 0's** validation metrics
  (:meth:`Agreement.metrics`); each worker keeps its own replica's best weights.

So all workers stop after the same epoch, for the same reason, record the same history and
checkpoint the same loop state (``elapsed_s`` included, so a resumed loop and a later loop
budgeted from it, SASRec's refit, decide alike). Every worker calls the agreement the same
number of times: once at the start, then after each epoch once for the time (with a budget)
and once per evaluation. Without an agreement (one process, or one worker) nothing of this
happens and the loop is as described above.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "Agreement",
    "EarlyStopping",
    "EpochHistory",
    "EpochSchedule",
    "LoopState",
    "ProgressReport",
    "StopReason",
    "Validation",
    "run_epochs",
]

#: The validation metric early stopping watches (higher is better).
MONITORED = "ndcg@10"
#: The validation metrics recorded per evaluation, after the epoch number.
RECORDED = ("ndcg@10", "hr@10")

#: Why the loop ended: all epochs ran, early stopping, or the time budget.
StopReason = Literal["epochs", "early stopping", "time budget"]


@dataclass(frozen=True)
class EpochSchedule:
    """How long to train and how often to validate.

    Attributes:
        epochs: Most epochs.
        patience: Evaluations without a better NDCG@10 before stopping (``0``: never stop
            early, but still keep the best epoch's weights).
        validate_every: Epochs between evaluations (the last epoch is always evaluated).
        max_seconds: Stop after the first epoch that ends past this many seconds; ``None``: no
            limit.
    """

    epochs: int
    patience: int = 0
    validate_every: int = 1
    max_seconds: float | None = None

    @classmethod
    def of(cls, config: Any) -> EpochSchedule:
        """The schedule of a model config with ``epochs``, ``patience``, ``validate_every`` and
        ``max_seconds`` fields."""
        return cls(
            epochs=config.epochs,
            patience=config.patience,
            validate_every=config.validate_every,
            max_seconds=config.max_seconds,
        )


@dataclass(frozen=True)
class Validation:
    """What the loop needs to validate a model mid-fit and keep its best weights.

    Attributes:
        evaluate: The validation metrics of the current weights (at least those of
            :data:`RECORDED`).
        snapshot: The current weights, by name (the loop keeps a deep copy of the best).
        restore: Put back weights that ``snapshot`` returned.
    """

    evaluate: Callable[[], Mapping[str, float]]
    snapshot: Callable[[], Mapping[str, Any]]
    restore: Callable[[dict[str, Any]], object]


class Agreement(Protocol):
    """How the workers of a data-parallel fit make the loop's stop decisions together.

    Each method is called by every worker at the same point of the loop and returns (or checks)
    a value that is the same on every worker (see the module docstring).
    """

    def start(self, epoch: int, finished: StopReason | None) -> None:
        """Check that every worker starts after the same ``epoch`` (0: afresh) with the same
        ``finished`` (a resumed loop that had ended); raise on every worker when not."""
        ...

    def elapsed(self, seconds: float) -> float:
        """The seconds every worker counts against the budget: the most any worker spent."""
        ...

    def metrics(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The validation metrics every worker acts on: rank 0's (same names on every
        worker)."""
        ...


class ProgressReport(Protocol):
    """Receives one report per epoch (:meth:`Recommender._report`'s signature)."""

    def __call__(
        self, epoch: int, epochs: int, loss: float | None = None, **metrics: float
    ) -> None: ...


@dataclass(frozen=True)
class EpochHistory:
    """What a run of the loop did.

    Attributes:
        losses: The loss of every epoch that reported one (float64).
        evaluations: ``(evaluations, 3)`` float64: epoch, NDCG@10, HR@10.
        best_epoch: The epoch whose weights the model keeps: the best evaluated one, or the last
            epoch run when nothing was evaluated.
        epochs_run: Epochs trained.
        stopped_by: ``"epochs"`` (the last epoch ran, whatever else happened then),
            ``"early stopping"`` or ``"time budget"``.
        elapsed_s: Seconds the loop counted against ``max_seconds`` (from its start, a resumed
            loop's earlier seconds included, to the end of its last epoch); 0 without a budget.
    """

    losses: np.ndarray
    evaluations: np.ndarray
    best_epoch: int
    epochs_run: int
    stopped_by: StopReason
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class LoopState:
    """Where the loop stands after ``epoch`` epochs: what it needs to go on as if never stopped.

    Attributes:
        epoch: Epochs trained.
        losses: The losses reported so far.
        evaluations: ``(epoch, ndcg@10, hr@10)`` of each evaluation so far.
        best_value: Early stopping's best NDCG@10 (``-inf`` before any evaluation).
        best_epoch: The epoch of the best evaluation (0 before any).
        best_state: The weights of that epoch (``None`` before any evaluation).
        stale: Evaluations since the best one.
        elapsed_s: Seconds of training spent (for the time budget; 0 without one).
        finished: Why the loop ended, or ``None`` when it goes on.
    """

    epoch: int
    losses: tuple[float, ...]
    evaluations: tuple[tuple[float, ...], ...]
    best_value: float
    best_epoch: int
    best_state: dict[str, Any] | None
    stale: int
    elapsed_s: float
    finished: StopReason | None


class EarlyStopping:
    """Keep the best weights seen so far; say when ``patience`` evaluations brought nothing.

    Args:
        patience: Evaluations without improvement before stopping (``0``: never stop early,
            but still keep the best weights).
        min_delta: An improvement must exceed this.
    """

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best_value = -np.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self._stale = 0

    def update(self, epoch: int, value: float, state: Mapping[str, Any]) -> bool:
        """Record an evaluation; return ``True`` when training should stop."""
        if value > self.best_value + self.min_delta:
            self.best_value = value
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(dict(state))
            self._stale = 0
            return False
        self._stale += 1
        return self.patience > 0 and self._stale >= self.patience


def run_epochs(
    schedule: EpochSchedule,
    train_epoch: Callable[[int], float | None],
    *,
    validation: Validation | None = None,
    report: ProgressReport | None = None,
    clock: Callable[[], float] = time.perf_counter,
    resume: LoopState | None = None,
    save: Callable[[LoopState], None] | None = None,
    agree: Agreement | None = None,
) -> EpochHistory:
    """Train epoch after epoch until the schedule, early stopping or the time budget says stop.

    See the module docstring for what happens after each epoch.

    Args:
        schedule: Epochs, patience, validation cadence and time budget.
        train_epoch: Trains epoch ``e`` (given, counted from 1) and returns its mean loss, or
            ``None`` to report none (then :attr:`EpochHistory.losses` is empty).
        validation: How to validate and keep the best weights; ``None``: never validate (the
            final weights are kept).
        report: Called once per epoch with the epoch, the number of epochs, the loss and the
            validation metrics of that epoch (none when it did not validate).
        clock: Seconds, for the time budget (read at the start and after each epoch, and only
            when there is a budget).
        resume: The state to go on from (the model's own state of that epoch already put
            back); ``None``: start at epoch 1.
        save: Given the loop's state after every epoch, before the report (a checkpoint).
        agree: How the workers of a data-parallel fit agree on the resume point, the elapsed
            time and the validation metrics (module docstring); ``None``: this process decides
            alone.

    Returns:
        What the run did. When it validated, the best weights are back in place.
    """
    budget = schedule.max_seconds
    stopper = EarlyStopping(schedule.patience)
    losses: list[float] = []
    evaluations: list[tuple[float, ...]] = []
    epoch = 0
    stopped_by: StopReason = "epochs"
    finished: StopReason | None = None
    spent = elapsed = 0.0
    if resume is not None:
        epoch, losses, evaluations = resume.epoch, list(resume.losses), list(resume.evaluations)
        stopper.best_value, stopper.best_epoch = resume.best_value, resume.best_epoch
        stopper.best_state, stopper._stale = resume.best_state, resume.stale
        spent, finished = resume.elapsed_s, resume.finished
        elapsed = spent
        stopped_by = finished or "epochs"
    if agree is not None:
        agree.start(epoch, finished)
    started = clock() - spent if budget is not None else 0.0
    first = epoch + 1
    for epoch in range(first, schedule.epochs + 1 if finished is None else first):
        loss = train_epoch(epoch)
        if loss is not None:
            losses.append(loss)
        elapsed = clock() - started if budget is not None else 0.0
        if agree is not None and budget is not None:
            elapsed = agree.elapsed(elapsed)
        out_of_time = epoch < schedule.epochs and budget is not None and elapsed > budget
        last = epoch == schedule.epochs or out_of_time
        metrics: dict[str, float] = {}
        stop = False
        if validation is not None and (epoch % schedule.validate_every == 0 or last):
            metrics = dict(validation.evaluate())
            if agree is not None:
                metrics = agree.metrics(metrics)
            evaluations.append((epoch, *(metrics[name] for name in RECORDED)))
            stop = stopper.update(epoch, metrics[MONITORED], validation.snapshot())
        if stop or last:
            if epoch < schedule.epochs:
                stopped_by = "early stopping" if stop else "time budget"
            finished = stopped_by
        if save is not None:
            save(
                LoopState(
                    epoch=epoch,
                    losses=tuple(losses),
                    evaluations=tuple(evaluations),
                    best_value=stopper.best_value,
                    best_epoch=stopper.best_epoch,
                    best_state=stopper.best_state,
                    stale=stopper._stale,
                    elapsed_s=elapsed,
                    finished=finished,
                )
            )
        if report is not None:
            report(epoch, schedule.epochs, loss, **metrics)
        if finished is not None:
            break
    kept = stopper.best_state
    if validation is not None and kept is not None:
        validation.restore(kept)
    return EpochHistory(
        losses=np.asarray(losses, dtype=np.float64),
        evaluations=np.asarray(evaluations, dtype=np.float64).reshape(-1, 1 + len(RECORDED)),
        best_epoch=stopper.best_epoch if kept is not None else epoch,
        epochs_run=epoch,
        stopped_by=stopped_by,
        elapsed_s=elapsed,
    )
