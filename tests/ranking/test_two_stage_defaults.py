"""The two-stage's data-dependent defaults: retrievers and carve follow what the fit is tested on
(``FitOptions.test_shape``, set by the evaluation runner and by ``privrank train``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.train  # registers the commands
import privrank.ranking  # noqa: F401  (registers two-stage)
from privrank.cli.app import app
from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.models import FitOptions, Recommender, create_model
from privrank.models._registry import _REGISTRY
from privrank.models.popular import MostPopular
from privrank.ranking.two_stage import TwoStage, TwoStageConfig
from privrank.testing._data import synthetic_interactions
from privrank.workflow.protocols import ProtocolSpec
from privrank.workflow.runner import RunConfig, run

pytest.importorskip("lightgbm")

SMALL = {
    "candidates": 20,
    "ranker_params": {"num_iterations": 15, "min_data_in_leaf": 5},
}
CHEAP = [{"name": "itemknn"}, {"name": "most-popular"}]


def _names(config: TwoStageConfig) -> list[tuple[str, int | None]]:
    assert config.retrievers is not None
    return [(r.name, r.recent) for r in config.retrievers]


def test_a_config_without_retrievers_resolves_them_and_the_carve_by_the_test_shape() -> None:
    requested = TwoStageConfig()
    assert requested.retrievers is None and requested.carve == "auto"
    following = requested.resolved("next")
    assert _names(following) == [
        ("sasrec", None),
        ("ease-sparse", None),
        ("itemknn", None),
        ("itemknn", 1),
        ("most-popular", None),
    ]
    assert following.carve == "last"
    for shape in ("random", None):
        holdout = requested.resolved(shape)
        assert _names(holdout) == [
            ("ease", None),
            ("itemknn", None),
            ("ials", None),
            ("most-popular", None),
        ]
        assert holdout.carve == "random"
    # What a user names is kept, whatever the shape.
    explicit = TwoStageConfig(retrievers=CHEAP, carve="random")
    assert explicit.resolved("next") == explicit
    assert TwoStageConfig(carve="last").resolved("random").carve == "last"


def _toy_run(split_spec: dict[str, Any], params: dict[str, Any]) -> Any:
    spec = ProtocolSpec(
        name="toy",
        dataset="in-memory",
        split=split_spec,
        cutoffs=(5, 10),
        headline=("ndcg@10",),
    )
    config = RunConfig(
        protocols=[spec],
        models=[{"name": "two-stage", "params": SMALL | params}],
        n_resamples=20,
        threads=1,
    )
    data = synthetic_interactions(60, 30, per_user=10, seed=5)
    (model_run,) = run(config, None, data={"toy": data}).runs
    return model_run


@pytest.mark.parametrize(
    ("split_spec", "carve"),
    [
        ({"protocol": "leave-last-out", "k": 1, "validation": True}, "last"),
        ({"protocol": "holdout", "fraction": 0.25, "seed": 1}, "random"),
    ],
)
def test_an_evaluation_carves_the_ranker_labels_the_way_its_protocol_tests(
    split_spec: dict[str, Any], carve: str
) -> None:
    """``carve = auto`` under the runner is the explicit carve of the protocol's shape: the
    same NDCG and the same ranker, to the bit."""
    auto = _toy_run(split_spec, {"retrievers": CHEAP})
    explicit = _toy_run(split_spec, {"retrievers": CHEAP, "carve": carve})
    assert auto.model.config.carve == carve
    assert auto.model.requested_config.carve == "auto"
    assert auto.result.means == explicit.result.means
    assert auto.model.training_info_["ranker"] == explicit.model.training_info_["ranker"]


class _ShapeSpy(MostPopular):
    """Most-popular that records the test shape each fit is told."""

    shapes: ClassVar[list[str | None]] = []

    def _fit(self, train: Any, matrix: Any, options: FitOptions) -> None:
        type(self).shapes.append(options.test_shape)
        super()._fit(train, matrix, options)


@pytest.fixture
def shape_spy(monkeypatch: pytest.MonkeyPatch) -> type[_ShapeSpy]:
    monkeypatch.setitem(_REGISTRY, "test-shape-spy", _ShapeSpy)
    monkeypatch.setattr(_ShapeSpy, "name", "test-shape-spy")
    monkeypatch.setattr(_ShapeSpy, "shapes", [])
    return _ShapeSpy


@pytest.mark.parametrize("shape", ["next", "random", None])
def test_every_retriever_fit_is_told_the_test_shape(shape_spy: type[_ShapeSpy], shape) -> None:
    """A retriever that carves its own early-stopping part (SASRec's ``carve = auto``) carves
    it the way the pipeline is tested: the fit part and the refit both pass the shape on."""
    data = synthetic_interactions(40, 20, per_user=8, seed=3)
    params = SMALL | {"retrievers": [{"name": "test-shape-spy"}, {"name": "itemknn"}]}
    model = create_model("two-stage", params)
    model.fit(data, FitOptions(threads=1, test_shape=shape))
    assert shape_spy.shapes == [shape, shape]  # the fit part's fit and the refit


def test_refitting_resolves_again_from_the_requested_config() -> None:
    data = synthetic_interactions(40, 20, per_user=8, seed=3)
    model = create_model("two-stage", SMALL | {"retrievers": CHEAP})
    assert isinstance(model, TwoStage)
    model.fit(data, FitOptions(threads=1, test_shape="next"))
    assert model.config.carve == "last"
    model.fit(data, FitOptions(threads=1, test_shape="random"))
    assert model.config.carve == "random" and model.requested_config.carve == "auto"


def test_a_saved_model_keeps_the_resolved_config(tmp_path: Path) -> None:
    data = synthetic_interactions(40, 20, per_user=8, seed=3)
    model = create_model("two-stage", SMALL | {"retrievers": CHEAP})
    model.fit(data, FitOptions(threads=1, test_shape="next"))
    model.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert isinstance(loaded, TwoStage)
    assert loaded.config.carve == "last"
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.score(users), model.score(users))


@pytest.mark.parametrize(("split_rule", "carve"), [("loo", "last"), ("holdout", "random")])
def test_privrank_train_tells_the_fit_its_protocol_shape(
    tmp_path: Path, privrank_home: Path, split_rule: str, carve: str
) -> None:
    data = synthetic_interactions(60, 30, per_user=10, seed=5)
    rule = LeaveLastOut(k=1) if split_rule == "loo" else HoldoutSplit(fraction=0.25, seed=2)
    saved = split(data, rule).save(tmp_path / split_rule)
    config = tmp_path / "two-stage.json"
    config.write_text(json.dumps(SMALL | {"retrievers": CHEAP}))
    out = tmp_path / "out"
    args = [
        "train", "--data", str(saved), "--model", "two-stage", "--config", str(config),
        "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=True)
    assert result.exit_code == 0, result.output
    loaded = Recommender.load(out / "model")
    assert isinstance(loaded, TwoStage)
    assert loaded.config.carve == carve
    record = json.loads((out / "training.json").read_text())
    assert record["model"]["config"]["carve"] == carve


def test_a_private_fit_without_retrievers_checks_every_default_one() -> None:
    """Before the fit knows its test shape, the privacy check covers both default sets (each
    retriever in them has a private fit), so no data is read before a refusal."""
    from privrank.models.base import model_class
    from privrank.privacy.spec import PrivacySpec
    from privrank.ranking.two_stage._config import ANY_DEFAULT_RETRIEVERS, default_retrievers

    spec = PrivacySpec(epsilon=1.0, max_interactions_per_user=10)
    names = {r.name for shape in ("next", "random") for r in default_retrievers(shape)}
    assert {r.name for r in ANY_DEFAULT_RETRIEVERS} == names
    assert all(model_class(name).supports_privacy for name in names)
    create_model("two-stage", {"ranker": "listwise"}).check_privacy(spec)


def test_the_random_default_takes_the_sparse_ease_when_dense_ease_cannot_fit() -> None:
    """A feasibility fallback: the dense solve's lower bound (4 n² float32) against the memory
    available decides, as EASE's own check would refuse the fit."""
    from privrank.models.ease import check_dense_memory
    from privrank.ranking.two_stage._config import default_retrievers

    huge = 2_000_000  # 64 TB for the dense solve: more than any machine here
    with pytest.raises(ConfigError, match="ease-sparse"):
        check_dense_memory(huge, "float32")
    assert default_retrievers("random", huge)[0].name == "ease-sparse"
    assert default_retrievers(None, huge)[0].name == "ease-sparse"
    assert default_retrievers("random", 1682)[0].name == "ease"
    assert default_retrievers("random")[0].name == "ease"  # catalogue unknown
    # the next-item set has no dense EASE to replace
    assert default_retrievers("next", huge) == default_retrievers("next", 1682)


def test_a_default_fit_on_a_catalogue_too_large_for_dense_ease_fits_the_sparse_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from privrank.models import ease as ease_module

    def no_memory(n_items: int, dtype: str, available: int | None = None) -> None:
        ease_module.check_dense_memory(n_items, dtype, available=0)

    monkeypatch.setattr("privrank.ranking.two_stage._config.check_dense_memory", no_memory)
    data = synthetic_interactions(40, 20, per_user=8, seed=3)
    model = create_model("two-stage", SMALL)
    model.fit(data, FitOptions(threads=1, test_shape="random"))
    assert _names(model.config)[0] == ("ease-sparse", None)
    assert model.retrievers_[0].name == "ease-sparse"
    assert model.requested_config.retrievers is None  # the request stays "the defaults"
