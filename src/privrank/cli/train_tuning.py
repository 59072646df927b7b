"""``privrank train --tune TRIALS|SECONDS`` and ``--model auto``: tuning before the final fit.

The search (:func:`privrank.tuning.auto.select_model`, Optuna through
:func:`privrank.tuning.tune`) fits on a tuning part and scores on a validation part that never
holds test data:

- a protocol or split with a validation part (``beauty-loo``): its ``train`` and ``validation``;
- one without (``ml100k-holdout``): a per-user 20 % holdout carved from its ``train`` part;
- a plain dataset: a holdout carved from the whole dataset.

The final model is then fitted once, with the chosen config, on the rows ``privrank train``
fits on anyway, and the training record gets a ``tuning`` section: the budget, every family's
trials and best parameters, the choice and the validation data. Private data is never searched:
a tuned or ``auto`` fit with ``--epsilon`` is refused before anything is read
(:func:`privrank.tuning.auto.refuse_private_tuning`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console

from privrank.errors import ConfigError

if TYPE_CHECKING:
    from privrank.data.interactions import Interactions
    from privrank.tuning.auto import Selection, TuneBudget
    from privrank.workflow.protocols import PreparedProtocol

__all__ = [
    "AUTO",
    "carved",
    "check_tuning_request",
    "prepared_tuning_parts",
    "tune_for_training",
]

#: The ``--model`` value that picks a family by validation metric.
AUTO = "auto"


def carved(fraction: float, seed: int, source: str) -> dict[str, Any]:
    """How a validation part was carved, for the records."""
    return {"source": f"carved from {source}", "holdout_fraction": fraction, "seed": seed}


def prepared_tuning_parts(
    prepared: PreparedProtocol, validation_fraction: float = 0.2, validation_seed: int = 0
) -> tuple[Interactions, Interactions, dict[str, Any]]:
    """The tuning parts of a protocol's or split's parts: its validation part when it has one,
    else a validation part carved from its ``train`` part (never its test part).

    Returns:
        ``(train, validation, record)``, the record saying where validation came from.
    """
    from privrank.tuning import carve_validation

    if prepared.validation is not None and len(prepared.validation):
        record = {"validation_split": {"source": "the split's validation part"}}
        return prepared.train, prepared.validation, record
    train, validation = carve_validation(prepared.train, validation_fraction, validation_seed)
    source = carved(validation_fraction, validation_seed, "the split's train part")
    return train, validation, {"validation_split": source}


def check_tuning_request(
    model: str, tune: str | None, params: dict[str, Any], privacy: object | None
) -> TuneBudget | None:
    """Validate ``--model``/``--tune``/``--param`` before any data is read.

    Returns:
        The parsed budget, or ``None`` without ``--tune``.

    Raises:
        ConfigError: ``auto`` without ``--tune``, ``--param`` with ``auto``, a bad budget, a
            model without a search space, or tuning with a privacy spec (refused).
    """
    from privrank.tuning import search_space
    from privrank.tuning.auto import parse_budget, refuse_private_tuning

    if model == AUTO and tune is None:
        raise ConfigError(
            "--model auto chooses a model by tuning: give it a budget with --tune TRIALS|SECONDS "
            "(e.g. --tune 40 or --tune 10m)"
        )
    if tune is None:
        return None
    budget = parse_budget(tune)
    refuse_private_tuning(privacy, "--model auto" if model == AUTO else "--tune")
    if model == AUTO:
        if params:
            raise ConfigError(
                f"--param/--config with --model auto: parameters belong to one model "
                f"({sorted(params)}); name the model to hold them fixed while tuning it"
            )
    else:
        search_space(model, params)  # no space, or a fixed value outside the config, fails now
    return budget


def tune_for_training(
    model: str,
    params: dict[str, Any],
    budget: TuneBudget,
    *,
    prepared: PreparedProtocol | None,
    dataset: Interactions | None,
    seed: int,
    threads: int,
    console: Console,
) -> Selection:
    """Tune ``model`` (or every ``auto`` family) on the tuning parts of ``--data``: a
    protocol's or split's parts (``prepared``), or a whole ``dataset``.

    Returns:
        The choice and every trial, with ``data`` saying where validation came from.
    """
    from privrank.data.fingerprint import fingerprint
    from privrank.tuning import TuneConfig, carve_validation
    from privrank.tuning.auto import auto_candidates, select_model

    if prepared is not None:
        train, validation, record = prepared_tuning_parts(prepared)
    else:
        if dataset is None:  # resolve_training_data sets one of them
            raise ConfigError("--data: neither a protocol nor a dataset")
        train, validation = carve_validation(dataset, 0.2, 0)
        record = {"validation_split": carved(0.2, 0, "the whole dataset")}
    record |= {
        "train": {"rows": len(train), "fingerprint": fingerprint(train)},
        "validation": {"rows": len(validation), "fingerprint": fingerprint(validation)},
    }
    candidates = auto_candidates(train.n_items) if model == "auto" else [(model, "")]
    config = TuneConfig(n_trials=1, seed=seed, threads=threads, fixed=params)
    what = f"{budget.trials} trials" if budget.trials else f"{budget.seconds:g} s"
    console.print(
        f"tuning {', '.join(name for name, reason in candidates if not reason)} within {what}: "
        f"fitting on {len(train):,} rows, scoring {config.metric} on {len(validation):,} "
        f"validation rows ({record['validation_split']['source']})",
        highlight=False,
        soft_wrap=True,
    )

    def show(name: str, trial: Any) -> None:
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        note = f" ({trial.note})" if trial.note else ""
        console.print(
            f"{name} trial {trial.number}: {trial.state} {value} in {trial.seconds:.1f} s "
            f"{trial.params}{note}",
            highlight=False,
            soft_wrap=True,
        )

    def skip(name: str, reason: str) -> None:
        console.print(f"{name}: skipped ({reason})", highlight=False, soft_wrap=True)

    for name, reason in candidates:
        if reason:
            skip(name, reason)
    selection = select_model(
        candidates, train, validation, budget, config, on_trial=show, on_skip=skip
    )
    console.print(
        f"chose {selection.model}: {selection.metric} {selection.value:.4f} on validation "
        f"(search took {selection.elapsed_s:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    from dataclasses import replace

    return replace(selection, data=record)
