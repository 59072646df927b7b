"""Tuning as a step of training: a budget, one model or every family, and the privacy rule.

``privrank train --tune TRIALS|SECONDS`` tunes the chosen model before its final fit, and
``privrank train --model auto --tune ...`` tunes every family of :data:`AUTO_FAMILIES` and keeps
the one with the best validation metric. Both run :func:`~privrank.tuning.tuner.tune` (Optuna)
on a validation part that never holds test data (the protocol's validation part, or one carved
from the training rows by :func:`~privrank.tuning.tuner.carve_validation`).

**Budget** (:func:`parse_budget`): ``TRIALS`` (an integer: ``30``) or ``SECONDS`` (a number
with a unit: ``600s``, ``10m``, ``1.5h``). :func:`select_model` shares it among the candidate
families in order: with a trial budget each family gets ``max(1, TRIALS // families)``
trials; with a time budget each family gets the time still left divided by the families still
to run, so the time a quick family leaves unused goes to the later ones. A family with nothing
to search (``most-popular``) runs one trial. A family whose trials
all fail or run out of time is recorded with its reason and skipped; if none completes, the
selection fails with :class:`~privrank.errors.ConfigError`.

**Privacy: refused** (:func:`refuse_private_tuning`). A search on private data would release
information about that data through the choice of hyper-parameters and model (Papernot &
Steinke, ICLR 2022, show how much), and every trial would be a private fit to account for.
privrank does not run such a search: a tuned or ``auto`` fit with a privacy spec is refused with
a :class:`~privrank.errors.ConfigError` before any data is read, and nothing is spent. Choose the
hyper-parameters on public or already-released data (for example by tuning the non-private model
on a public data set of the same kind) and pass them with ``--param``/``--config`` to a private
fit, which then spends exactly its own (ε, δ) through the ledger.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.tuning.search_spaces import SEARCH_SPACES
from privrank.tuning.tuner import TrialRecord, TuneConfig, TuneResult, tune

__all__ = [
    "AUTO_FAMILIES",
    "DENSE_EASE_MAX_ITEMS",
    "Selection",
    "TuneBudget",
    "auto_candidates",
    "parse_budget",
    "refuse_private_tuning",
    "select_model",
]

#: The families ``auto`` chooses from, cheapest first (implicit's models are peers to compare
#: against, not privrank families, and are left out).
AUTO_FAMILIES: tuple[str, ...] = (
    "most-popular",
    "itemknn",
    "ease",
    "ease-sparse",
    "ials",
    "bpr",
    "mult-vae",
    "sasrec",
)

#: Beyond this many items ``auto`` leaves dense EASE out (its inverse needs ``4 n²`` bytes and
#: minutes; ``ease-sparse`` covers large catalogues).
DENSE_EASE_MAX_ITEMS = 20_000

_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


@dataclass(frozen=True)
class TuneBudget:
    """A tuning budget: most trials or most seconds (exactly one is set).

    Attributes:
        trials: Most trials in all, or ``None``.
        seconds: Wall-clock seconds in all, or ``None``.
    """

    trials: int | None = None
    seconds: float | None = None

    def describe(self) -> dict[str, Any]:
        """JSON form."""
        return {"trials": self.trials, "seconds": self.seconds}


def parse_budget(text: str) -> TuneBudget:
    """``"30"`` → 30 trials; ``"600s"``, ``"10m"``, ``"1.5h"`` → seconds.

    Raises:
        ConfigError: Anything else (zero, negative, another unit).
    """
    match = _BUDGET.match(str(text))
    if match is not None:
        number, unit = match.groups()
        if not unit and number.isdigit() and int(number) >= 1:
            return TuneBudget(trials=int(number))
        seconds = float(number) * _SECONDS.get(unit, 0.0)
        if unit and seconds > 0 and math.isfinite(seconds):
            return TuneBudget(seconds=seconds)
    raise ConfigError(
        f"--tune {text!r}: expected TRIALS (an integer >= 1, e.g. 30) or SECONDS (a number "
        "> 0 with a unit s, m or h, e.g. 600s or 10m)"
    )


def refuse_private_tuning(privacy: object | None, what: str) -> None:
    """Refuse a hyper-parameter search on private data (see the module docstring).

    Args:
        privacy: The fit's privacy spec, or ``None``.
        what: What was asked (``--tune``, ``--model auto``), for the message.

    Raises:
        ConfigError: ``privacy`` is set.
    """
    if privacy is None:
        return
    raise ConfigError(
        f"{what} with a privacy spec (--epsilon) is refused: privrank does not search "
        "hyper-parameters or models on private data (the choice would leak information about "
        "it and the trials would have to be accounted); nothing was read or spent. Tune on "
        "public data, or without --epsilon on data you may use non-privately, then pass the "
        "chosen parameters to the private fit with --param/--config"
    )


def auto_candidates(n_items: int) -> list[tuple[str, str]]:
    """The families ``auto`` considers for a catalogue of ``n_items``, each with the reason it
    is skipped (empty when it runs)."""
    from privrank.models import model_names

    known = set(model_names()) & set(SEARCH_SPACES)
    candidates = []
    for name in AUTO_FAMILIES:
        if name not in known:
            continue
        reason = ""
        if name == "ease" and n_items > DENSE_EASE_MAX_ITEMS:
            reason = (
                f"{n_items:,} items: dense EASE needs {4 * n_items**2 / 2**30:.1f} GiB "
                f"(more than {DENSE_EASE_MAX_ITEMS:,} items; ease-sparse runs instead)"
            )
        candidates.append((name, reason))
    return candidates


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_model`.

    Attributes:
        model: The chosen model's registry name.
        config: Its complete config (the best trial's).
        value: Its validation metric.
        metric: The metric.
        budget: The budget given.
        results: Each family's tuning result (families that completed a trial).
        skipped: Families left out, with the reason.
        elapsed_s: Wall time of the whole search.
    """

    model: str
    config: dict[str, Any]
    value: float
    metric: str
    budget: TuneBudget
    results: tuple[TuneResult, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    elapsed_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``tuning`` section of a training record: the budget, every family's trials and
        best parameters, and the choice."""
        return {
            "metric": self.metric,
            "budget": self.budget.describe(),
            "elapsed_s": self.elapsed_s,
            "chosen": {"model": self.model, "value": self.value, "config": self.config},
            "families": [
                {
                    "model": r.model,
                    "best_value": r.best_value,
                    "best_trial": r.best_trial,
                    "best_params": r.best_params,
                    "stop_reason": r.stop_reason,
                    "elapsed_s": r.elapsed_s,
                    "search_space": r.space,
                    "trials": [
                        {
                            "number": t.number,
                            "state": t.state,
                            "value": t.value,
                            "params": t.params,
                            "seconds": t.seconds,
                            "note": t.note,
                        }
                        for t in r.trials
                    ],
                }
                for r in self.results
            ],
            "skipped": [{"model": name, "reason": reason} for name, reason in self.skipped],
            "privacy": "none: tuning runs on non-private fits only (private tuning is refused)",
            "data": self.data,
        }


def select_model(
    candidates: Sequence[tuple[str, str]] | Sequence[str],
    train: Interactions,
    validation: Interactions,
    budget: TuneBudget,
    config: TuneConfig | None = None,
    *,
    on_trial: Callable[[str, TrialRecord], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> Selection:
    """Tune each candidate family within its share of ``budget`` and keep the best.

    Args:
        candidates: Registry names, or ``(name, skip_reason)`` pairs as
            :func:`auto_candidates` returns (a non-empty reason skips the family).
        train: What every trial fits on.
        validation: What every trial is scored on (never test data).
        budget: The whole search's budget, shared as the module docstring says.
        config: Metric, seed, threads, sampler, fixed parameters (its ``n_trials`` and
            ``time_budget_s`` are replaced by each family's share).
        on_trial: Called with the family and each trial's record.
        on_skip: Called with a family left out and why.

    Returns:
        The chosen family, its config and every family's trials.

    Raises:
        ConfigError: No candidate, a bad budget, or no family completed a trial.
    """
    pairs = [(c, "") if isinstance(c, str) else (c[0], c[1]) for c in candidates]
    runnable = [name for name, reason in pairs if not reason]
    skipped = [(name, reason) for name, reason in pairs if reason]
    if not runnable:
        raise ConfigError("no model to tune")
    if (budget.trials is None) == (budget.seconds is None):
        raise ConfigError("a tuning budget is a number of trials or of seconds, not both")
    base = config or TuneConfig(n_trials=1)
    started = time.perf_counter()
    results: list[TuneResult] = []
    for position, name in enumerate(runnable):
        share: dict[str, Any]
        if budget.trials is not None:
            share = {"n_trials": max(1, budget.trials // len(runnable)), "time_budget_s": None}
        else:
            left = budget.seconds - (time.perf_counter() - started)  # type: ignore[operator]
            if left <= 0:
                skipped.append((name, "the time budget ran out before its turn"))
                if on_skip is not None:
                    on_skip(name, skipped[-1][1])
                continue
            share = {"n_trials": None, "time_budget_s": left / (len(runnable) - position)}
        space = SEARCH_SPACES.get(name)
        if space is not None and not space.with_fixed(base.fixed).params:
            share["n_trials"] = 1  # nothing to search: one fit at the defaults says it all
        family_config = TuneConfig(**(base.model_dump() | share))
        callback = None if on_trial is None else _bind(on_trial, name)
        try:
            results.append(tune(name, train, validation, family_config, on_trial=callback))
        except ConfigError as exc:
            skipped.append((name, str(exc)))
            if on_skip is not None:
                on_skip(name, str(exc))
    if not results:
        raise ConfigError(
            "no model completed a tuning trial within the budget: "
            + "; ".join(f"{name}: {reason}" for name, reason in skipped)
        )
    best = max(results, key=lambda r: r.best_value)  # first family wins a tie
    return Selection(
        model=best.model,
        config=best.best_config,
        value=best.best_value,
        metric=base.metric,
        budget=budget,
        results=tuple(results),
        skipped=tuple(skipped),
        elapsed_s=time.perf_counter() - started,
    )


def _bind(callback: Callable[[str, TrialRecord], None], name: str) -> Callable[[TrialRecord], None]:
    return lambda record: callback(name, record)
