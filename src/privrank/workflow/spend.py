"""Fit and spend: the one place a fit reserves and commits privacy budget.

Every private fit in privrank (``privrank train``, private models in ``privrank evaluate``
runs, tuning trials, ``privrank audit``) runs through :func:`fit_and_spend`:

1. **Reserve.** The fit's (ε, δ) is reserved in the budget ledger
   (:class:`~privrank.privacy.ledger.Ledger`) under a dataset key. A reservation the budget does
   not cover raises :class:`~privrank.errors.PrivacyBudgetExceeded` *before anything trains*.
2. **Fit.** The model is fitted (:func:`fit_model`).
3. **Use.** The block of the ``with`` statement runs: the caller saves the artifact, evaluates
   the model or scores the audit's canaries, and writes :meth:`SpentFit.spend_record` (the
   ledger key, spend id, ε and δ) into its record; the guarantee itself is
   ``model.privacy_guarantee_``, which :meth:`~privrank.models.Recommender.save` writes into the
   artifact's header and :meth:`SpentFit.privacy_record` adds to result records.
4. **Commit** when the block ends, or **release** when the fit or the block raises (nothing was
   published). A process killed in between leaves the spend reserved: it keeps counting.

**Which δ is spent.** The spec is resolved against the rows the model is fitted on:
``spec.resolve(train.n_users)`` (δ defaults to ``1 / (10 · n_users)`` of those rows; a δ above
``1 / n_users`` is refused), and the reservation takes ``resolved.require_delta()``. This is the
resolution :meth:`Recommender.fit <privrank.models.Recommender.fit>` itself applies, so the
ledger records exactly the δ the fit targets. (``privrank train`` used to read ``spec.delta``
and the evaluation runner ``spec.require_delta()``; both now take this one path.)

**Local-DP collections.** A model that declares
:class:`~privrank.models.capabilities.LocalDPCollection` (``ldp-popular``) is decoded from reports
randomised on the devices. It has no central privacy spec, but its fit (which simulates the
devices) spends the collection's ε per user (``days · reports a day · ε per report``, δ = 0)
from the same per-dataset ledger: local DP at ε implies central user-level ε-DP for everything
computed from the reports, so the ledger's basic composition bounds the dataset's total loss
across local and central releases alike. :meth:`SpentFit.privacy_record` then carries the
collection's local guarantee.

A fit without a privacy spec (and not a local-DP collection) spends nothing and touches no
ledger. ``no_ledger=True`` fits a
private model without spending (``privrank audit --no-ledger``); :meth:`SpentFit.spend_record`
is then ``None`` and :attr:`SpentFit.unspent` says so, so the caller's report can say it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import FitOptions, Recommender
from privrank.models.capabilities import LocalDPCollection
from privrank.privacy.ledger import Ledger

__all__ = [
    "RoundLedger",
    "Spend",
    "SpentFit",
    "fit_and_spend",
    "fit_model",
    "spend_once",
    "spend_release",
]


def fit_model(
    model: Recommender,
    train: Interactions,
    options: FitOptions,
    validation: Interactions | None = None,
) -> Recommender:
    """Fit ``model``; models that early-stop on a validation part receive ``validation``.

    The validation part must not overlap ``train`` (in ``refit`` mode it is part of the
    training rows, so callers pass ``None`` then). Spends nothing: private fits go through
    :func:`fit_and_spend`.
    """
    if validation is not None and len(validation):
        options = options.model_copy(update={"validation": validation})
    return model.fit(train, options)


@dataclass(frozen=True)
class Spend:
    """A reservation in the budget ledger.

    Attributes:
        ledger_key: The dataset key spent from.
        spend_id: The ledger's id of the spend.
        epsilon: ε reserved.
        delta: δ reserved.
    """

    ledger_key: str
    spend_id: str
    epsilon: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        """``{"ledger_key", "spend_id", "epsilon", "delta"}`` (the records' ``privacy``)."""
        return {
            "ledger_key": self.ledger_key,
            "spend_id": self.spend_id,
            "epsilon": self.epsilon,
            "delta": self.delta,
        }


@dataclass(frozen=True)
class SpentFit:
    """A fitted model and what its fit spent.

    Attributes:
        model: The fitted model.
        seconds: Wall time of the fit.
        spend: The ledger reservation (committed when the ``with`` block ends), or ``None``
            for a non-private fit or one run with ``no_ledger``.
        unspent: ``True`` when a private fit ran with ``no_ledger``: its (ε, δ) is counted in
            no ledger.
    """

    model: Recommender
    seconds: float
    spend: Spend | None = None
    unspent: bool = False

    def spend_record(self) -> dict[str, Any] | None:
        """The spend as JSON (``None`` when nothing was spent)."""
        return None if self.spend is None else self.spend.to_dict()

    def privacy_record(self) -> dict[str, Any] | None:
        """The spend and the fit's guarantee as JSON (``None`` when nothing was spent)."""
        record = self.spend_record()
        if record is None:
            return None
        if isinstance(self.model, LocalDPCollection) and self.model.privacy_guarantee_ is None:
            return {**record, "local_guarantee": self.model.local_guarantee_record()}
        guarantee = self.model.privacy_guarantee_
        if guarantee is None:  # a private fit sets it; only a later refit could clear it
            raise RuntimeError(
                f"{type(self.model).__name__} has no privacy guarantee though its fit spent "
                f"(spend {record['spend_id']}); was it refitted without privacy?"
            )
        return {**record, "guarantee": guarantee.to_dict()}


@contextmanager
def fit_and_spend(
    model: Recommender,
    train: Interactions,
    options: FitOptions,
    *,
    budget_key: str | None,
    description: str,
    validation: Interactions | None = None,
    ledger_url: str | None = None,
    no_ledger: bool = False,
    before_fit: Callable[[], object] | None = None,
) -> Iterator[SpentFit]:
    """Reserve a private fit's (ε, δ), fit, run the block, then commit (release on failure).

    See the module docstring for the steps and for which δ is spent.

    Args:
        model: An unfitted model (its parameters already validated).
        train: The rows to fit on.
        options: Seed, threads, progress and the privacy spec (``options.privacy``).
        budget_key: The ledger key to spend from (required for a private fit that spends).
        description: What the spend is for, recorded in the ledger.
        validation: A validation part for early-stopping models (see :func:`fit_model`).
        ledger_url: Ledger database URL (default:
            :func:`~privrank.privacy.ledger.default_ledger_url`).
        no_ledger: Fit a private model without spending (the caller must say so).
        before_fit: Called once the spend is reserved, right before the fit (e.g. to show a
            progress display only for a fit that will run).

    Yields:
        The fitted model and its spend.

    Raises:
        PrivacyBudgetExceeded: Before the fit, when the budget does not cover it.
        ConfigError: A private fit that spends without a ``budget_key``, or an invalid δ.
    """
    privacy = options.privacy
    local = privacy is None and isinstance(model, LocalDPCollection)
    if (privacy is None and not local) or no_ledger:
        seconds = _fit(model, train, options, validation, before_fit)
        yield SpentFit(model, seconds, unspent=privacy is not None or local)
        return
    if not budget_key:
        raise ConfigError(f"{description}: a private fit needs a ledger key to spend from")
    if privacy is None:  # a local-DP collection (pure DP: δ = 0)
        epsilon, delta = float(model.collection_epsilon()), 0.0  # type: ignore[attr-defined]
    else:
        resolved = privacy.resolve(train.n_users)
        epsilon, delta = resolved.epsilon, resolved.require_delta()
    with (
        Ledger(ledger_url) as book,
        book.spend(budget_key, epsilon, delta, description) as reservation,
    ):
        seconds = _fit(model, train, options, validation, before_fit)
        yield SpentFit(model, seconds, Spend(budget_key, reservation.id, epsilon, delta))


def _fit(
    model: Recommender,
    train: Interactions,
    options: FitOptions,
    validation: Interactions | None,
    before_fit: Callable[[], object] | None,
) -> float:
    if before_fit is not None:
        before_fit()
    started = time.perf_counter()
    fit_model(model, train, options, validation)
    return time.perf_counter() - started


class RoundLedger:
    """Charges a federated run to the ledger round by round: only released rounds are charged.

    A federated run releases a model after every round, so each released round is a spend of
    its own: the increase of the run's ε (by its accountant) that the round causes, reserved
    before the round and committed once it is released, or given back when the round ends
    without a release (too few devices, an error). The first spend (the run's first release)
    also carries the run's δ; the increments of ε sum to the run's ε at every point.

    Args:
        budget_key: The dataset key to spend from.
        description: What the run is, recorded with every spend.
        ledger_url: Ledger database URL (default: the configured one).
    """

    def __init__(self, budget_key: str, description: str, ledger_url: str | None = None) -> None:
        if not budget_key:
            raise ConfigError(f"{description}: a private run needs a ledger key to spend from")
        self.budget_key = budget_key
        self.description = description
        self.ledger_url = ledger_url
        self.spends: list[Spend] = []
        self._book: Ledger | None = None

    def __enter__(self) -> RoundLedger:
        self._book = Ledger(self.ledger_url)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._book is not None:
            self._book.close()
            self._book = None

    def _ledger(self) -> Ledger:
        if self._book is None:
            raise ConfigError("RoundLedger is used outside its `with` block")
        return self._book

    def check_plan(self, epsilon: float, delta: float) -> None:
        """Refuse, before anything runs, a run whose whole (ε, δ) the budget does not cover.

        Raises:
            PrivacyBudgetExceeded: No budget for the key, or too little of it left.
        """
        from privrank.errors import PrivacyBudgetExceeded

        budget = self._ledger().budget(self.budget_key)
        if budget is None:
            raise PrivacyBudgetExceeded(
                f"dataset {self.budget_key!r} has no privacy budget; set one with "
                f"`privrank privacy budget {self.budget_key} --epsilon E --delta D`"
            )
        if epsilon > budget.epsilon_remaining or delta > budget.delta_remaining:
            raise PrivacyBudgetExceeded(
                f"dataset {self.budget_key!r}: the run needs (ε={epsilon:.4g}, δ={delta:.3g}) "
                f"but only (ε={budget.epsilon_remaining:.4g}, δ={budget.delta_remaining:.3g}) "
                "of its budget is left"
            )

    @contextmanager
    def round(self, epsilon: float, delta: float, label: str) -> Iterator[list[bool]]:
        """Reserve one round's (ε, δ); commit it if the block marks the round released.

        The block receives a one-element list; set its element to ``True`` once the round's
        model is released. Otherwise (or when the block raises) the reservation is given back.

        Raises:
            PrivacyBudgetExceeded: The budget does not cover the round.
        """
        book = self._ledger()
        # A round that adds nothing to ε (rounding) still records a spend: the smallest ε > 0.
        amount = epsilon if epsilon > 0 else 5e-324
        reservation = book.reserve(
            self.budget_key, amount, delta, f"{self.description} {label}"[:500]
        )
        released = [False]
        try:
            yield released
        except BaseException:
            book.release(reservation)
            raise
        if released[0]:
            book.commit(reservation)
            self.spends.append(Spend(self.budget_key, reservation.id, reservation.epsilon, delta))
        else:
            book.release(reservation)


@contextmanager
def spend_release(
    budget_key: str,
    epsilon: float,
    delta: float,
    description: str,
    *,
    ledger_url: str | None = None,
) -> Iterator[Spend]:
    """Reserve a private release that is not a model fit, run the block, then commit.

    The same reserve → use → commit (release on failure) as :func:`fit_and_spend`, for releases
    made outside the recommender contract: label-DP training of a click model
    (:mod:`privrank.privacy.label_dp`) and private conversion reports
    (:mod:`privrank.privacy.conversion_reports`). The caller passes the **user-level** (ε, δ)
    of the release (e.g. C·ε for ε per row with at most C rows a user).

    Raises:
        PrivacyBudgetExceeded: Before the block runs, when the budget does not cover it.
        ConfigError: No ledger key.
    """
    if not budget_key:
        raise ConfigError(f"{description}: a private release needs a ledger key to spend from")
    with (
        Ledger(ledger_url) as book,
        book.spend(budget_key, epsilon, delta, description) as reservation,
    ):
        yield Spend(budget_key, reservation.id, float(epsilon), float(delta))


@contextmanager
def spend_once(
    budget_key: str,
    epsilon: float,
    delta: float,
    description: str,
    *,
    once_key: str,
    ledger_url: str | None = None,
    wait_s: float = 120.0,
) -> Iterator[Spend | None]:
    """:func:`spend_release` for a release charged at most once: ``None`` if already charged.

    The check for an earlier charge under ``once_key`` and the reservation are one atomic step
    of the ledger (:meth:`~privrank.privacy.ledger.Ledger.reserve_once`), so two runs that make
    the same release at the same moment charge it exactly once; the second waits for the first
    to commit (then yields ``None``: nothing is charged) or to release (then charges it itself).
    A new reservation commits when the block ends and is released when it raises.

    Raises:
        PrivacyBudgetExceeded: Not charged yet, and the budget does not cover it.
        LedgerError: Another run's reservation of ``once_key`` stayed open for ``wait_s`` s.
        ConfigError: No ledger key.
    """
    if not budget_key:
        raise ConfigError(f"{description}: a private release needs a ledger key to spend from")
    with Ledger(ledger_url) as book:
        reservation = book.reserve_once(
            budget_key, epsilon, delta, description, once_key=once_key, wait_s=wait_s
        )
        if reservation is None:
            yield None
            return
        try:
            yield Spend(budget_key, reservation.id, float(epsilon), float(delta))
        except BaseException:
            book.release(reservation)
            raise
        book.commit(reservation)
