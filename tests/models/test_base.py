"""The contract's own machinery: fit failures, registry, options, recommend, queries, artifacts."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privrank.errors import ArtifactError, ConfigError
from privrank.models import (
    EASE,
    DPSGDPrivateConfig,
    EASEPrivateConfig,
    FitOptions,
    ModelConfig,
    ModelFitError,
    MostPopular,
    Query,
    Recommender,
    create_model,
    model_class,
    model_names,
    register,
)
from privrank.models._artifact import CHECKSUMS_FILE, MODEL_FILE, sha256_of
from privrank.models._private import PrivateGramConfig
from privrank.testing import synthetic_interactions

DATA = synthetic_interactions(n_users=20, n_items=12, per_user=4, seed=1)


class ExplodingEASE(EASE):
    """EASE whose weights come out NaN, as a diverged fit's would."""

    def _fit(self, train, matrix, options):
        super()._fit(train, matrix, options)
        self.weights_[0, 1] = np.nan


def test_a_non_finite_fit_raises_and_leaves_the_model_unfitted():
    model = ExplodingEASE()
    with pytest.raises(ModelFitError, match=r"non-finite value.*'model\.weights'"):
        model.fit(DATA)
    assert not model.is_fitted


def test_a_failed_refit_does_not_leave_the_old_fit_half_replaced(monkeypatch):
    model = ExplodingEASE(regularization=5.0)
    with monkeypatch.context() as patch:
        patch.setattr(ExplodingEASE, "_fit", EASE._fit)  # a good fit first
        model.fit(DATA)
    assert model.is_fitted
    with pytest.raises(ModelFitError):
        model.fit(DATA)
    assert not model.is_fitted


def test_registry():
    assert model_class("ease") is EASE
    assert create_model("ease", {"regularization": 5.0}).config.regularization == 5.0
    with pytest.raises(ConfigError, match=r"Unknown model 'nope'\. Known models: .*ease"):
        create_model("nope")
    with pytest.raises(ValueError, match="already registered"):
        register("ease")(ExplodingEASE)
    with pytest.raises(ConfigError, match="EASE has no parameter 'lambda_'"):
        create_model("ease", {"lambda_": 3})


def test_fit_options_validation():
    with pytest.raises(ConfigError, match=r"FitOptions\.threads: got -2; expected an int"):
        FitOptions(threads=-2)
    with pytest.raises(ConfigError, match="FitOptions has no parameter 'sead'"):
        FitOptions(sead=1)
    with pytest.raises(ConfigError, match="options must be a FitOptions"):
        EASE().fit(DATA, {"seed": 1})
    assert FitOptions(threads=0).resolved_threads() >= 1


class TiedEASE(EASE):
    """EASE with scores rounded to a few values (many ties), some of them -inf."""

    def score(self, query, items=None):
        scores = np.round(super().score(query, items) * 4) / 4
        scores[:, ::5] = np.where(scores[:, ::5] < 0, -np.inf, scores[:, ::5])
        return scores


def _full_sort(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: every column sorted by (score desc, column asc); -inf columns become -1."""
    codes = np.full((len(scores), k), -1, dtype=np.int64)
    values = np.full((len(scores), k), -np.inf, dtype=np.float32)
    for row, row_scores in enumerate(scores):
        order = np.lexsort((np.arange(len(row_scores)), -row_scores))[:k]
        order = order[np.isfinite(row_scores[order])]
        codes[row, : len(order)], values[row, : len(order)] = order, row_scores[order]
    return codes, values


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 12),
    exclude_seen=st.booleans(),
    candidates=st.none() | st.sets(st.integers(0, 11), min_size=1, max_size=12),
    batch_size=st.integers(1, 30),
)
def test_recommend_equals_a_full_sort_with_ties(k, exclude_seen, candidates, batch_size):
    model = TiedEASE(regularization=5.0).fit(DATA)
    users = np.arange(DATA.n_users)
    items = None if candidates is None else np.array(sorted(candidates))
    k = min(k, 12 if items is None else len(items))
    scores = model.score(users, items)
    if exclude_seen:
        seen = DATA.to_csr().astype(bool).toarray()
        scores[seen if items is None else seen[:, items]] = -np.inf
    codes, values = model.recommend(
        users, k, exclude_seen=exclude_seen, items=items, batch_size=batch_size
    )
    expected, expected_values = _full_sort(scores, k)
    if items is not None:
        expected = np.where(expected >= 0, items[expected], -1)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(values, expected_values)


def test_query_forms_agree():
    ragged = Query.histories([[3, 1], [], [2, 2, 5]])
    assert len(ragged) == 3 and ragged.lengths().tolist() == [2, 0, 3]
    assert ragged.take(np.array([2, 0])).history(0).tolist() == [2, 2, 5]
    from_sparse = Query.histories(ragged.to_csr(8))
    np.testing.assert_array_equal(from_sparse.to_csr(8).toarray(), ragged.to_csr(8).toarray())
    with pytest.raises(ConfigError, match="History 0 must be a 1-D sequence of integer"):
        Query.histories([[0.5]])
    with pytest.raises(ConfigError, match="User codes must be a 1-D array of integers"):
        Query.users([[1, 2]])


def test_a_user_query_has_no_histories_of_its_own():
    users = Query.users([0, 2])
    assert len(users) == 2 and len(users.take(np.array([1]))) == 1
    with pytest.raises(ConfigError, match="names known users by code and carries no histories"):
        users.to_csr(8)
    with pytest.raises(ConfigError, match="carries no histories"):
        users.lengths()


@pytest.mark.parametrize("name", model_names())
def test_every_model_declares_the_type_of_its_config(name):
    """``config: XConfig`` next to ``Config = XConfig``: the type checker's view of
    ``model.config`` is the class that ``__init__`` validates it with."""
    cls = model_class(name)
    annotation = vars(cls).get("__annotations__", {}).get("config")
    assert annotation is not None, (
        f"{cls.__name__} does not declare 'config: {cls.Config.__name__}'"
    )
    assert eval(annotation, vars(sys.modules[cls.__module__])) is cls.Config


def test_private_settings_are_read_as_the_class_the_caller_names():
    assert EASE().private_settings(EASEPrivateConfig) == EASEPrivateConfig()
    assert EASE().private_settings(PrivateGramConfig) == EASEPrivateConfig()  # a base class
    with pytest.raises(TypeError, match="EASE's private settings are a EASEPrivateConfig, not a"):
        EASE().private_settings(DPSGDPrivateConfig)
    with pytest.raises(ConfigError, match="MostPopular has no settings of a private fit"):
        MostPopular().private_settings(ModelConfig)


def test_load_refuses_another_format_version(tmp_path):
    path = EASE(regularization=5.0).fit(DATA).save(tmp_path / "model")
    header = json.loads((path / MODEL_FILE).read_text())
    header["format_version"] = 99
    (path / MODEL_FILE).write_text(json.dumps(header))
    # Re-sign the edited file so that only the version check can object.
    checksums = json.loads((path / CHECKSUMS_FILE).read_text())
    checksums["files"][MODEL_FILE] = sha256_of(path / MODEL_FILE)
    (path / CHECKSUMS_FILE).write_text(json.dumps(checksums))
    with pytest.raises(ArtifactError, match="format version 99"):
        Recommender.load(path)


def test_artifact_holds_no_pickle(tmp_path):
    path = EASE(regularization=5.0).fit(DATA).save(tmp_path / "model")
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "arrays.safetensors",
        "checksums.json",
        "item_ids.parquet",
        "model.json",
        "user_ids.parquet",
    ]
    header = json.loads((path / MODEL_FILE).read_text())
    expected = EASE(regularization=5.0).config.model_dump(mode="json")
    assert header["model"] == "ease" and header["config"] == expected
    assert expected["regularization"] == 5.0 and expected["dtype"] == "float32"
    assert header["privrank_version"]
