"""The tuner: known optimum found, budgets honoured, record round-trips, seeded, validation only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import privrank.tuning.tuner as tuner_module
from privrank.data import Interactions
from privrank.errors import ArtifactError, ConfigError
from privrank.models import EASEConfig, create_model, model_names
from privrank.tuning import (
    SEARCH_SPACES,
    FloatParam,
    SearchSpace,
    TuneConfig,
    TuneResult,
    carve_validation,
    load_best_config,
    search_space,
    searchable_models,
    tune,
    validation_score,
)
from privrank.tuning.search_spaces import _check_against_config


# ----------------------------------------------------------------------------- search spaces
def test_every_builtin_model_has_a_space_that_fits_its_config() -> None:
    assert set(searchable_models()) == set(model_names()) & set(SEARCH_SPACES)
    for name in ("ease", "itemknn", "ials", "implicit-als", "implicit-bpr", "most-popular"):
        space = search_space(name)
        assert space.model == name
    for name in searchable_models():
        search_space(name)  # raises if a range or name does not fit the config


def test_both_als_models_search_the_same_sizes_and_epochs() -> None:
    ours, peer = SEARCH_SPACES["ials"], SEARCH_SPACES["implicit-als"]
    by_name = {p.name: p for p in ours.params}, {p.name: p for p in peer.params}
    assert by_name[0]["factors"] == by_name[1]["factors"]
    epochs, iterations = by_name[0]["epochs"], by_name[1]["iterations"]
    assert (epochs.low, epochs.high, epochs.step) == (
        iterations.low,
        iterations.high,
        iterations.step,
    )
    assert by_name[0]["regularization"].log and by_name[1]["regularization"].log


def test_a_space_that_does_not_fit_the_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="'lambda' is not a parameter of EASEConfig"):
        _check_against_config(SearchSpace("ease", (FloatParam("lambda", 1, 2),)), EASEConfig)
    with pytest.raises(ConfigError, match="not a valid EASEConfig"):
        _check_against_config(
            SearchSpace("ease", (FloatParam("regularization", -1, 2),)), EASEConfig
        )
    with pytest.raises(ConfigError, match="Unknown model"):
        search_space("no-such-model")


def test_fixed_parameters_leave_the_search() -> None:
    space = search_space("ials", {"factors": 16, "epochs": 2})
    assert "factors" not in space.names and "epochs" not in space.names
    assert space.fixed == {"factors": 16, "epochs": 2}


# ----------------------------------------------------------------------------- config
def test_tune_config_needs_a_budget_and_a_ranking_metric() -> None:
    with pytest.raises(ConfigError, match="needs a budget"):
        TuneConfig()
    with pytest.raises(ConfigError, match="metric must be"):
        TuneConfig(n_trials=1, metric="ndcg")
    with pytest.raises(ConfigError, match="metric must be"):
        TuneConfig(n_trials=1, metric="auc@10")
    with pytest.raises(ConfigError, match="n_trials"):
        TuneConfig(n_trials=0)
    assert TuneConfig(time_budget_s=1).metric_parts() == ("ndcg", 10)


def test_data_must_share_a_vocabulary(parts, clustered) -> None:
    train, _ = parts
    other = clustered(seed=1, items=50)
    with pytest.raises(ConfigError, match="one vocabulary"):
        tune("ease", train, other, TuneConfig(n_trials=1))


# ----------------------------------------------------------------------------- behaviour
def test_finds_the_known_good_region_of_ease_regularization(parts) -> None:
    """The grid over EASE's λ is the ground truth; the tuner must land in its best region."""
    train, validation = parts
    config = TuneConfig(n_trials=12, seed=0, threads=1, startup_trials=5)
    grid = np.logspace(0, 4, 17)
    values = []
    for lam in grid:
        model = create_model("ease", {"regularization": float(lam)}).fit(train)
        values.append(validation_score(model, train, validation, config))
    values = np.asarray(values)
    assert values.max() - values.min() > 0.05  # λ matters on this problem
    result = tune("ease", train, validation, config)
    lam = result.best_config["regularization"]
    good = grid[values >= values.max() - 0.02]
    assert good.min() / 1.5 <= lam <= good.max() * 1.5, (lam, good)
    assert result.best_value >= values.max() - 0.02
    assert len(result.trials) == 12 and result.stop_reason == "trials"


def test_seeded_search_is_deterministic(parts) -> None:
    train, validation = parts
    config = TuneConfig(n_trials=6, seed=3, threads=1, startup_trials=3)
    first = tune("itemknn", train, validation, config)
    second = tune("itemknn", train, validation, config)
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert [t.value for t in first.trials] == [t.value for t in second.trials]
    other = tune("itemknn", train, validation, config.model_copy(update={"seed": 4}))
    assert [t.params for t in other.trials] != [t.params for t in first.trials]


def test_objective_is_computed_on_validation_only(parts, monkeypatch) -> None:
    train, validation = parts
    calls = []
    real = tuner_module.evaluate

    def spy(score, seen, relevant, config=None, **kwargs):
        calls.append((seen, relevant))
        return real(score, seen, relevant, config, **kwargs)

    monkeypatch.setattr(tuner_module, "evaluate", spy)
    result = tune("ease", train, validation, TuneConfig(n_trials=3, threads=1))
    assert len(calls) == 3
    assert all(seen is train and relevant is validation for seen, relevant in calls)
    assert result.data["validation"]["rows"] == len(validation)


def test_carve_validation_reads_only_the_training_part(clustered) -> None:
    data = clustered()
    train, validation = carve_validation(data, fraction=0.2, seed=0)
    assert train.user_ids.equals(data.user_ids) and validation.item_ids.equals(data.item_ids)

    def pairs(d: Interactions) -> list[tuple[int, int]]:
        return sorted(zip(d.users().tolist(), d.items().tolist(), strict=True))

    assert sorted(pairs(train) + pairs(validation)) == pairs(data)
    assert len(validation) > 0 and not set(pairs(train)) & set(pairs(validation))


def test_time_budget_is_honoured(parts) -> None:
    train, validation = parts
    budget = 1.5
    started = time.perf_counter()
    result = tune("ease", train, validation, TuneConfig(n_trials=100_000, time_budget_s=budget))
    elapsed = time.perf_counter() - started
    assert result.stop_reason == "time budget"
    assert 1 <= len(result.trials) < 100_000
    assert elapsed < budget + 1.5  # at most one fit and one evaluation past the deadline


def test_a_fit_running_past_the_budget_is_abandoned(parts) -> None:
    train, validation = parts
    config = TuneConfig(
        n_trials=5, time_budget_s=0.5, threads=1, fixed={"epochs": 1_000_000, "factors": 8}
    )
    create_model("ials", {"factors": 8, "epochs": 1}).fit(train)  # warm up: first-use costs
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"no trial of ials completed within 0\.5 s"):
        tune("ials", train, validation, config)
    assert time.perf_counter() - started < 0.5 + 1.5  # abandoned at the first epoch's end


def test_best_config_is_saved_atomically_and_reloads_as_the_best_trial(parts, tmp_path) -> None:
    train, validation = parts
    result = tune("itemknn", train, validation, TuneConfig(n_trials=4, threads=1))
    best = max((t for t in result.trials if t.value is not None), key=lambda t: t.value)
    assert result.best_trial == best.number and result.best_value == best.value
    assert result.best_params == best.params
    path = result.save(tmp_path / "tuning.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tuning.json"]  # no temporary left behind
    name, config = load_best_config(path)
    assert name == "itemknn"
    assert config == create_model("itemknn", best.params).config == result.model_config()
    again = TuneResult.load(path)
    assert again.trials == result.trials and again.best_config == result.best_config
    record = json.loads(path.read_text())
    assert record["tune_config"]["n_trials"] == 4 and record["versions"]["optuna"]
    table = result.trials_table()
    assert table.num_rows == 4
    assert {"number", "state", "value", "neighbors"} <= set(table.schema.names)
    # A trained model with the reloaded config scores exactly as the best trial did.
    model = create_model(name, config).fit(train)
    assert validation_score(model, train, validation, result.config) == pytest.approx(best.value)


def test_a_best_config_the_model_no_longer_accepts_is_a_config_error(parts, tmp_path) -> None:
    train, validation = parts
    path = tune("ease", train, validation, TuneConfig(n_trials=1, threads=1)).save(
        tmp_path / "tuning.json"
    )
    record = json.loads(path.read_text())
    record["model"]["config"]["regularization"] = -1
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError) as caught:
        load_best_config(path)
    assert str(caught.value) == (
        f"{path}: the best config is not a valid EASE config: "
        "EASE.regularization: got -1; expected a float > 0"
    )
    assert [p.path for p in caught.value.problems] == [("regularization",)]


def test_unreadable_records_are_artifact_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ArtifactError, match="not a privrank tuning record"):
        load_best_config(bad)
    with pytest.raises(ArtifactError, match="cannot read"):
        TuneResult.load(tmp_path / "missing.json")


def test_a_diverging_fit_fails_its_trial_and_the_search_goes_on(parts, monkeypatch) -> None:
    from privrank.models import ModelFitError

    train, validation = parts
    real = tuner_module.validation_score

    def diverging_when_large(model, seen, relevant, config):
        if model.config.neighbors > 50:
            raise ModelFitError("training produced 3 non-finite value(s)")
        return real(model, seen, relevant, config)

    monkeypatch.setattr(tuner_module, "validation_score", diverging_when_large)
    result = tune("itemknn", train, validation, TuneConfig(n_trials=8, threads=1))
    failed = [t for t in result.trials if t.state == "FAIL"]
    assert failed and len(result.trials) == 8
    assert all(t.value is None and t.note.startswith("fit failed:") for t in failed)
    assert result.best_params["neighbors"] <= 50


def test_the_first_trial_is_the_models_default_config(parts) -> None:
    from privrank.models import model_class

    train, validation = parts
    config = TuneConfig(n_trials=2, threads=1, seed=1)
    first = tune("itemknn", train, validation, config).trials[0]
    defaults = model_class("itemknn").Config()  # 400 neighbours, shrinkage 10
    assert first.params == {"neighbors": defaults.neighbors, "shrinkage": defaults.shrinkage}
    searched = tune(
        "itemknn", train, validation, config.model_copy(update={"start_from_defaults": False})
    )
    assert searched.trials[0].params != first.params
    # Both ALS models start from defaults that lie inside their spaces.
    for name in ("ials", "implicit-als"):
        assert search_space(name).defaults(model_class(name).Config) is not None
