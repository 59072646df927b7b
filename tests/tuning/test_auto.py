"""Tuning as a training step: budgets, the choice among families, and the privacy refusal."""

from __future__ import annotations

import pytest

from privrank.errors import ConfigError
from privrank.models import FitOptions, create_model
from privrank.privacy.spec import PrivacySpec
from privrank.tuning import (
    TuneBudget,
    TuneConfig,
    auto_candidates,
    parse_budget,
    refuse_private_tuning,
    select_model,
    validation_score,
)
from privrank.tuning.auto import DENSE_EASE_MAX_ITEMS


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("30", TuneBudget(trials=30)),
        ("1", TuneBudget(trials=1)),
        ("600s", TuneBudget(seconds=600.0)),
        ("10m", TuneBudget(seconds=600.0)),
        ("1.5h", TuneBudget(seconds=5400.0)),
        (" 2.5 s ", TuneBudget(seconds=2.5)),
    ],
)
def test_budgets_parse(text, budget) -> None:
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["0", "-3", "1.5", "abc", "10d", "0s", "", "3 trials"])
def test_bad_budgets_are_refused(text) -> None:
    with pytest.raises(ConfigError, match="expected TRIALS"):
        parse_budget(text)


def test_private_tuning_is_refused() -> None:
    refuse_private_tuning(None, "--tune")  # a non-private search is allowed
    with pytest.raises(ConfigError, match=r"--tune with a privacy spec .* is refused"):
        refuse_private_tuning(PrivacySpec(epsilon=1.0, max_interactions_per_user=10), "--tune")


def test_auto_leaves_dense_ease_out_of_large_catalogues() -> None:
    small = dict(auto_candidates(1_000))
    large = dict(auto_candidates(DENSE_EASE_MAX_ITEMS + 1))
    assert small["ease"] == "" and small["ease-sparse"] == ""
    assert "dense EASE needs" in large["ease"] and large["ease-sparse"] == ""
    assert not any(name.startswith("implicit") for name in small)


def test_select_keeps_the_family_with_the_best_validation_metric(parts) -> None:
    train, validation = parts
    config = TuneConfig(n_trials=1, seed=0, threads=1)
    selection = select_model(
        ["most-popular", "ease", "itemknn"], train, validation, TuneBudget(trials=6), config
    )
    assert [r.model for r in selection.results] == ["most-popular", "ease", "itemknn"]
    assert [len(r.trials) for r in selection.results] == [1, 2, 2]  # 6 // 3, at least 1
    best = max(selection.results, key=lambda r: r.best_value)
    assert selection.model == best.model and selection.value == best.best_value
    assert selection.model != "most-popular"  # the clusters are there to be found
    # Oracle: refit the chosen config and score it independently of the search.
    model = create_model(selection.model, selection.config).fit(train, FitOptions(threads=1))
    assert validation_score(model, train, validation, config) == pytest.approx(selection.value)
    record = selection.to_dict()
    assert record["chosen"]["model"] == selection.model
    assert sum(len(f["trials"]) for f in record["families"]) == 5
    assert record["budget"] == {"trials": 6, "seconds": None}


def test_a_time_budget_is_shared_and_a_family_that_cannot_finish_is_skipped(parts) -> None:
    train, validation = parts
    skipped: list[str] = []
    with pytest.raises(ConfigError, match="no model completed a tuning trial"):
        select_model(
            ["ease", "itemknn"],
            train,
            validation,
            TuneBudget(seconds=1e-6),
            TuneConfig(n_trials=1, threads=1),
            on_skip=lambda name, reason: skipped.append(name),
        )
    assert skipped == ["ease", "itemknn"]
    selection = select_model(
        [("ease", ""), ("itemknn", "left out on purpose")],
        train,
        validation,
        TuneBudget(seconds=2.0),
        TuneConfig(n_trials=1, threads=1),
    )
    assert selection.model == "ease" and selection.skipped == (("itemknn", "left out on purpose"),)
    (ease,) = selection.results
    assert ease.config.time_budget_s == pytest.approx(2.0, rel=0.1)
    assert len(ease.trials) >= 2  # the whole time went to ease
