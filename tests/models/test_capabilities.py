"""Declared capabilities: each model family says what it is, and what it exposes reproduces its
own scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrank.data.synthetic import SyntheticConfig, generate
from privrank.models import FitOptions, Query, create_model, model_class, model_names
from privrank.models.capabilities import FactorModel, ItemItemModel

FACTOR_MODELS = {"ials", "bpr", "fedmf", "content-knn", "genre-profile"}
ITEM_ITEM_MODELS = {"ease", "ease-sparse", "itemknn"}


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticConfig(n_users=60, n_items=40, n_interactions=600, seed=0))


@pytest.mark.parametrize("name", model_names())
def test_each_model_family_declares_its_capability(name) -> None:
    cls = model_class(name)
    assert issubclass(cls, FactorModel) == (name in FACTOR_MODELS), name
    assert issubclass(cls, ItemItemModel) == (name in ITEM_ITEM_MODELS), name


@pytest.mark.parametrize(
    ("name", "params"),
    [("ials", {"factors": 6, "epochs": 3}), ("bpr", {"factors": 6, "epochs": 2, "patience": 0})],
)
def test_factor_models_score_by_their_vectors(data, name, params) -> None:
    model = create_model(name, params).fit(data, FitOptions(seed=0, threads=1))
    assert isinstance(model, FactorModel)
    items = model.item_vectors()
    bias = model.item_biases()
    assert items.shape[0] == model.n_items_
    assert (bias is not None) == (name == "bpr")
    lengths = np.diff(model.history_indptr_)
    users = np.flatnonzero(lengths > 0)[:10]
    histories = model._training_histories(users)
    for query in (Query.users(users), histories):
        vectors = model.user_vectors(query)
        assert vectors.shape == (len(users), items.shape[1])
        expected = vectors @ items.T + (0.0 if bias is None else bias)
        np.testing.assert_allclose(model.score(query), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ease", {"regularization": 20.0}),
        ("ease-sparse", {"regularization": 20.0, "neighbors": 8}),
        ("itemknn", {"neighbors": 10}),
    ],
)
def test_item_item_models_score_by_their_weights(data, name, params) -> None:
    model = create_model(name, params).fit(data)
    assert isinstance(model, ItemItemModel)
    weights = model.item_item_weights()
    assert weights.shape == (model.n_items_, model.n_items_)
    assert sp.issparse(weights) == (name in {"itemknn", "ease-sparse"})
    query = Query.histories([[0, 3, 5], [7], [1, 2, 11, 30]])
    product = query.to_csr(model.n_items_) @ weights
    product = product.toarray() if sp.issparse(product) else np.asarray(product)
    np.testing.assert_allclose(model.score(query), product, rtol=1e-6, atol=1e-6)
