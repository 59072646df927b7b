"""The private two-stage fit: refusals, the budget split and its composition, zero noise and no
clipping equal to the non-private computation, the per-user carve, one ledger charge."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest
import torch

import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.errors import ConfigError
from privrank.models import FitOptions, Query, Recommender, create_model
from privrank.models.base import ModelFitError
from privrank.privacy.accounting import Accountant, dpsgd_event, gaussian_event
from privrank.privacy.calibration import Release
from privrank.privacy.mechanisms import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ltr.listwise import _network, _padded, group_losses
from privrank.ranking.two_stage import TwoStage
from privrank.ranking.two_stage._private import check_planned, private_item_table
from privrank.testing._data import synthetic_interactions

PRIVATE = {
    "candidates": 15,
    "ranker": "listwise",
    "retrievers": [{"name": "ease"}, {"name": "most-popular"}],
    "ranker_params": {"epochs": 2, "hidden": [8], "private": {"batch_size": 16}},
}


def _spec(**update) -> PrivacySpec:
    return PrivacySpec(epsilon=2.0, max_interactions_per_user=12, noise_seed=1).model_copy(
        update=update
    )


def test_lambdamart_is_refused_with_the_reason() -> None:
    data = synthetic_interactions(40, 20, per_user=5)
    model = create_model("two-stage", {**PRIVATE, "ranker": "lambdamart", "ranker_params": None})
    with pytest.raises(ConfigError, match="LambdaMART has no user-level differential privacy"):
        model.fit(data, FitOptions(privacy=_spec()))


def test_a_retriever_without_a_private_fit_is_refused_before_any_fit() -> None:
    model = create_model("two-stage", {**PRIVATE, "retrievers": [{"name": "implicit-als"}]})
    with pytest.raises(ConfigError, match=r"retriever r0 \(implicit-als\) has no private fit"):
        model.check_privacy(_spec())


def test_no_contribution_bound_and_a_stray_private_block_are_refused() -> None:
    data = synthetic_interactions(40, 20, per_user=5)
    with pytest.raises(ConfigError, match="contribution bound"):
        create_model("two-stage", PRIVATE).fit(data, FitOptions(privacy=PrivacySpec(epsilon=1.0)))
    with pytest.raises(ConfigError, match="'private' block"):
        create_model("two-stage", {**PRIVATE, "private": {"ranker_share": 0.3}}).fit(data)


def test_the_basic_split_composes_every_release_and_splits_the_budget() -> None:
    data = synthetic_interactions(150, 40, per_user=8, seed=2)
    spec = _spec(epsilon=3.0)
    config = {**PRIVATE, "private": {"ranker_share": 0.4, "split": "basic"}}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=spec))
    guarantee = model.privacy_guarantee_
    delta = 1 / (10 * 150)
    assert guarantee.epsilon == 3.0 and guarantee.delta == pytest.approx(delta)
    # Two distinct retrievers fitted twice (fit part and refit) and the ranker: 5 parts, each
    # calibrated to its share; the shares sum to the whole (ε, δ) (basic composition).
    info = model.training_info_["private"]
    assert info["retriever_fits"] == 4
    assert info["ranker_epsilon"] == pytest.approx(0.4 * 3.0)
    assert info["retriever_epsilon"] == pytest.approx(0.6 * 3.0 / 4)
    assert 4 * info["retriever_epsilon"] + info["ranker_epsilon"] == pytest.approx(3.0)
    ranker = model.ranker_.privacy_guarantee_
    assert ranker.epsilon == pytest.approx(1.2) and ranker.delta == pytest.approx(0.4 * delta)
    # The composition holds every release of every part, in order: ranker steps included.
    mechanisms = [r.mechanism for r in guarantee.composition]
    assert mechanisms.count("dp-sgd") == 1
    assert guarantee.composition[mechanisms.index("dp-sgd")] == ranker.composition[0]
    # Independent oracle: dp_accounting's PLD over the same events, composed here.
    book = Accountant("pld")
    for r in guarantee.composition:
        if r.sampling_rate is None:
            book.compose(gaussian_event(r.noise_multiplier, r.count))
        else:
            book.compose(dpsgd_event(r.sampling_rate, r.noise_multiplier, r.count))
    pld = book.epsilon(delta)
    assert guarantee.epsilons["pld"] == pytest.approx(pld, rel=1e-6)
    assert pld <= 3.0  # the accountant's ε never exceeds the basic-composition bound
    assert guarantee.unit == "user" and guarantee.contribution_bound == 12
    # Exact statistics of the data are not recorded by a private fit.
    assert "candidate_recall" not in model.training_info_
    assert info["split"] == "basic" and guarantee.calibration == "budget-split"


def test_retrievers_that_differ_only_in_seed_are_charged_as_distinct_releases() -> None:
    """A seed ensemble (one model listed with two seeds) is two private fits, each charged its
    share; a spec repeating a (name, params, seed) shares that fit and is not charged again."""
    data = synthetic_interactions(150, 40, per_user=8, seed=2)
    config = {
        **PRIVATE,
        "retrievers": [
            {"name": "most-popular"},
            {"name": "most-popular", "seed": 1},
            {"name": "most-popular", "seed": 1, "recent": 2, "propose": False},
        ],
        "private": {"ranker_share": 0.4, "split": "basic"},
    }
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=_spec()))
    info = model.training_info_["private"]
    # two distinct fits, each fitted on the fit part and again at the refit
    assert info["retriever_fits"] == 4
    assert info["retriever_epsilon"] == pytest.approx(0.6 * 2.0 / 4)
    first, second, shared = model.retrievers_
    assert shared is second and first is not second


def _pld_oracle(releases, delta: float) -> float:
    """dp_accounting's PLD accountant called directly, on a finer grid than privrank's."""
    book = dpa.pld.PLDAccountant(value_discretization_interval=1e-3)
    for r in releases:
        event = dpa.GaussianDpEvent(r.noise_multiplier)
        if r.sampling_rate is not None:
            event = dpa.PoissonSampledDpEvent(r.sampling_rate, event)
        book.compose(event, r.count)
    return float(book.get_epsilon(delta))


def test_the_calibrated_split_spends_the_request_by_the_pld_accountant() -> None:
    data = synthetic_interactions(150, 40, per_user=8, seed=2)
    spec = _spec(epsilon=3.0)
    config = {**PRIVATE, "private": {"ranker_share": 0.4}}  # split: calibrated (the default)
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=spec))
    guarantee, info = model.privacy_guarantee_, model.training_info_["private"]
    delta = 1 / (10 * 150)
    assert info["split"] == "calibrated" and guarantee.calibration == "pld-calibrated-split"
    assert guarantee.epsilon == 3.0 and guarantee.delta == pytest.approx(delta)
    # Every part gets s ≥ 1 times its basic share (δ unchanged), s > 1 here.
    scale = info["split_scale"]
    assert scale > 1.0
    assert info["ranker_epsilon"] == pytest.approx(scale * 0.4 * 3.0)
    assert info["retriever_epsilon"] == pytest.approx(scale * 0.6 * 3.0 / 4)
    assert model.ranker_.privacy_guarantee_.delta == pytest.approx(0.4 * delta)
    # Independent oracle: the composed ε of what the fit released is the request, from below.
    oracle = _pld_oracle(guarantee.composition, delta)
    assert oracle <= 3.0 + 1e-6
    assert oracle >= 3.0 * (1 - 0.005) - 0.02
    assert guarantee.epsilons["pld"] <= 3.0
    # The basic split of the same fit would have composed to well below the request.
    basic = create_model(
        "two-stage", {**config, "private": {"ranker_share": 0.4, "split": "basic"}}
    )
    basic.fit(data, FitOptions(threads=1, privacy=spec))
    assert basic.privacy_guarantee_.epsilons["pld"] < 0.95 * oracle


def test_a_retriever_without_a_plan_keeps_the_basic_split() -> None:
    data = synthetic_interactions(60, 30, per_user=8, seed=3)
    config = {**PRIVATE, "retrievers": [{"name": "ials", "params": {"factors": 4}}]}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=_spec()))
    assert model.training_info_["private"]["split"] == "basic"
    assert model.training_info_["private"]["split_scale"] == 1.0
    assert model.privacy_guarantee_.calibration == "budget-split"


def test_ease_sparse_states_its_releases_so_the_split_is_calibrated() -> None:
    """EASE-sparse (in the next-item default set) makes DP-EASE's releases and plans them."""
    data = synthetic_interactions(60, 30, per_user=8, seed=3)
    config = {**PRIVATE, "retrievers": [{"name": "ease-sparse", "params": {"neighbors": 5}}]}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=_spec()))
    assert model.training_info_["private"]["split"] == "calibrated"
    assert model.privacy_guarantee_.calibration == "pld-calibrated-split"
    assert model.privacy_guarantee_.epsilons["pld"] <= 2.0


def test_a_fit_whose_releases_are_not_the_plan_is_refused() -> None:
    planned = (Release("gaussian", "a", 1.0, 2.0), Release("dp-sgd", "b", 1.0, 1.0, 10, 0.1))
    check_planned(planned, (Release("gaussian", "other words", 3.0, 2.0), planned[1]))
    with pytest.raises(ModelFitError, match="not the ones its budget was calibrated on"):
        check_planned(planned, (planned[0], Release("dp-sgd", "b", 1.0, 0.9, 10, 0.1)))
    with pytest.raises(ModelFitError):
        check_planned(planned, planned[:1])


def test_the_saved_model_keeps_its_guarantee(tmp_path: Path) -> None:
    data = synthetic_interactions(80, 30, per_user=8, seed=4)
    model = create_model("two-stage", PRIVATE).fit(data, FitOptions(threads=1, privacy=_spec()))
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.privacy_guarantee_ == model.privacy_guarantee_
    np.testing.assert_allclose(loaded.score(np.arange(5)), model.score(np.arange(5)), atol=1e-6)


def test_the_private_carve_of_a_user_does_not_depend_on_other_users() -> None:
    data = synthetic_interactions(60, 30, per_user=10, seed=5)
    model = create_model("two-stage", PRIVATE)
    _, labels = model._carve(data, per_user=True)
    keep = np.flatnonzero(data.users() < 59)  # drop the last user (codes of the rest unchanged)
    fewer = data.take(keep)
    _, fewer_labels = model._carve(fewer, per_user=True)
    assert fewer.n_users == data.n_users  # same vocabulary: same codes
    np.testing.assert_array_equal(fewer_labels[:59].toarray(), labels[:59].toarray())


def test_zero_noise_and_no_clipping_equal_the_non_private_computation() -> None:
    """With zero noise, a cap no user reaches and an unreachable clipping norm, the private
    pipeline's ranker equals full-batch Adam on groups built by the non-private path (exact
    popularity retriever, exact item counts, the same carve)."""
    data = synthetic_interactions(40, 25, per_user=7, seed=6)
    config = {
        "candidates": 10,
        "ranker": "listwise",
        "retrievers": [{"name": "most-popular"}],
        "ranker_params": {
            "epochs": 3,
            "hidden": [8],
            "learning_rate": 0.01,
            "private": {"batch_size": 40},
        },
        "refit": False,
    }
    spec = PrivacySpec(
        epsilon=1.0, delta=1e-3, max_interactions_per_user=100, clipping_norm=1e9, noise_seed=2
    )
    with _noise_scale_for_testing(0.0):
        private = create_model("two-stage", config).fit(data, FitOptions(seed=3, privacy=spec))
    assert not private.privacy_guarantee_.is_private  # scaled noise is flagged

    # The non-private path: the same carve, an exact most-popular retriever, exact counts.
    plain = create_model("two-stage", config)
    plain.adopt_training_data(data)
    fit_part, labels = plain._carve(data, per_user=True)
    retriever = create_model("most-popular").fit(fit_part)
    plain.item_table_ = private_item_table(retriever.item_popularity_)
    users = np.flatnonzero(np.diff(labels.indptr) > 0)
    indptr, items = fit_part.sequences()
    history = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)).take(users)
    plain._stage_times = private._stage_times.copy()
    groups, _ = plain._candidate_groups([retriever], history, labels[users])
    assert groups.n_queries <= 40  # one step per epoch: q = 1

    ranker_config = private.ranker_.config
    torch.manual_seed(3)
    network = _network(groups.n_features, ranker_config)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    zeros, ones = np.zeros(groups.n_features, np.float32), np.ones(groups.n_features, np.float32)
    x, gains, mask = _padded(groups, np.arange(groups.n_queries), zeros, ones)
    expected_batch = private.ranker_.privacy_guarantee_.expected_batch_size
    for _ in range(3):
        optimizer.zero_grad()
        loss = group_losses(network(x).squeeze(-1), gains, mask, ranker_config).sum()
        (loss / expected_batch).backward()
        optimizer.step()
    with torch.no_grad():
        expected = network(torch.from_numpy(groups.features)).squeeze(-1).numpy()
    got = private.ranker_.score(groups.features)
    # The listwise loss ignores a constant added to every score (see test_listwise_private).
    np.testing.assert_allclose(got - got.mean(), expected - expected.mean(), rtol=1e-4, atol=1e-5)
    # Without refit the served item table is the fit part's released popularity (exact here).
    np.testing.assert_allclose(private.item_table_[:, 0], np.log1p(retriever.item_popularity_))


def test_train_cli_spends_the_ledger_once(tmp_path: Path, privrank_home: Path) -> None:
    from typer.testing import CliRunner

    import privrank.cli.train  # noqa: F401  (registers the command)
    from privrank.cli.app import app
    from privrank.data.interactions import DatasetMetadata
    from privrank.privacy.ledger import Ledger

    data = synthetic_interactions(n_users=60, n_items=30, per_user=8, seed=0)
    path = data.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")
    config = tmp_path / "two-stage.json"
    config.write_text(json.dumps(PRIVATE))
    Ledger().set_budget("tiny", 3.0, 1e-2)
    out = tmp_path / "model"
    args = ["train", "--data", str(path), "--model", "two-stage", "--config", str(config)]
    args += ["--out", str(out), "--epsilon", "2", "--max-per-user", "10", "--noise-seed", "1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    (spend,) = Ledger().spends("tiny")  # one charge for the whole pipeline
    assert spend.status == "committed" and spend.epsilon == 2.0
    model = Recommender.load(out / "model")
    assert isinstance(model, TwoStage) and model.privacy_guarantee_.epsilon == 2.0


def test_a_release_artifact_drops_users_and_per_user_state(tmp_path: Path) -> None:
    data = synthetic_interactions(80, 30, per_user=8, seed=7)
    config = {**PRIVATE, "retrievers": [{"name": "ials", "params": {"factors": 4}}]}
    model = create_model("two-stage", config).fit(data, FitOptions(threads=1, privacy=_spec()))
    assert model.user_state_keys  # iALS's user factors
    with pytest.raises(ConfigError, match="noise seed"):  # a fixed seed is for tests only
        model.save(tmp_path / "r", release=True)
    object.__setattr__(
        model, "privacy_guarantee_", dataclasses.replace(model.privacy_guarantee_, noise_seed=None)
    )
    released = Recommender.load(model.save(tmp_path / "r", release=True))
    assert released.n_users_ == 0 and released.is_release_
    histories = model._training_histories(np.arange(4))
    np.testing.assert_allclose(released.score(histories), model.score(histories), atol=1e-5)
