"""The evaluation runner: configs, runs against hand-computed oracles, files and statistics."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats

from privrank.data.fingerprint import fingerprint
from privrank.errors import ConfigError
from privrank.models import EASE, Query
from privrank.testing import synthetic_interactions
from privrank.workflow.protocols import ProtocolSpec
from privrank.workflow.records import safe_name
from privrank.workflow.runner import ModelSpec, RunConfig, run

HOLDOUT = {"protocol": "holdout", "fraction": 0.25, "seed": 1}
LOO = {"protocol": "leave-last-out", "k": 1, "validation": True}


@pytest.fixture(scope="module")
def data():
    return synthetic_interactions(50, 36, per_user=9, seed=11)


def _spec(name: str, dataset: str, split: dict, **kw) -> ProtocolSpec:
    kw.setdefault("cutoffs", (5, 10, 20))
    return ProtocolSpec(name=name, dataset=dataset, split=split, **kw)


def _pairs(part) -> dict[int, set[int]]:
    out = defaultdict(set)
    for user, item in zip(part.users(), part.items(), strict=True):
        out[int(user)].add(int(item))
    return out


def _ranked(scores: np.ndarray, seen: set[int], depth: int) -> list[int]:
    """Oracle top-k: highest score first, ties by lower item code, seen items left out."""
    order = sorted((i for i in range(len(scores)) if i not in seen), key=lambda i: (-scores[i], i))
    return order[:depth]


def _ndcg(ranked: list[int], relevant: set[int], k: int) -> float:
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ranked[:k]) if i in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return dcg / ideal


# ------------------------------------------------------------------ configuration
def test_run_config_reads_json_and_toml_alike(tmp_path: Path) -> None:
    payload = {
        "protocols": ["ml100k-holdout"],
        "models": [
            "most-popular",
            {"name": "ease", "label": "ease-500", "params": {"regularization": 500}},
        ],
        "seed": 3,
        "n_resamples": 50,
    }
    (tmp_path / "run.json").write_text(json.dumps(payload))
    (tmp_path / "run.toml").write_text(
        'protocols = ["ml100k-holdout"]\nseed = 3\nn_resamples = 50\n'
        '[[models]]\nname = "most-popular"\n'
        '[[models]]\nname = "ease"\nlabel = "ease-500"\nparams = { regularization = 500 }\n'
    )
    from_json = RunConfig.from_file(tmp_path / "run.json")
    from_toml = RunConfig.from_file(tmp_path / "run.toml")
    assert from_json == from_toml
    assert from_json.models[0] == ModelSpec(name="most-popular")
    assert from_json.models[1].display == "ease-500"
    assert from_json.baseline_label == "most-popular"


def test_run_config_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="labels must be unique"):
        RunConfig(protocols=["ml100k-holdout"], models=["ease", "ease"])
    with pytest.raises(ConfigError, match="baseline 'x' is not one of the models"):
        RunConfig(protocols=["ml100k-holdout"], models=["ease"], baseline="x")
    with pytest.raises(ConfigError, match="unknown protocol"):
        RunConfig(protocols=["nope"], models=["ease"])
    with pytest.raises(ConfigError, match="seeds"):
        RunConfig(protocols=["ml100k-holdout"], models=["ease"], seeds=1)
    (tmp_path / "bad.toml").write_text("protocols = [")
    with pytest.raises(ConfigError, match="not valid toml"):
        RunConfig.from_file(tmp_path / "bad.toml")
    (tmp_path / "run.yaml").write_text("{}")
    with pytest.raises(ConfigError, match=r"expected a \.json or \.toml file"):
        RunConfig.from_file(tmp_path / "run.yaml")
    config = RunConfig(
        protocols=["ml100k-holdout"],
        models=[{"name": "nosuch"}, {"name": "ease", "params": {"regularization": -1}}],
    )
    with pytest.raises(ConfigError) as caught:  # both problems reported at once
        config.check_models()
    assert "Unknown model 'nosuch'" in str(caught.value)
    assert "EASE.regularization: got -1; expected a float > 0" in str(caught.value)


def test_safe_name() -> None:
    assert safe_name("ease λ=300/x") == "ease___300_x"
    with pytest.raises(ConfigError):
        safe_name("..")


# ------------------------------------------------------------------ holdout run
def test_holdout_run_matches_a_hand_computed_popularity_oracle(tmp_path: Path, data) -> None:
    dataset_dir = data.save(tmp_path / "toy")
    config = RunConfig(
        protocols=[_spec("toy-holdout", str(dataset_dir), HOLDOUT)],
        models=["most-popular", {"name": "ease", "params": {"dtype": "float64"}}],
        n_resamples=200,
    )
    out = tmp_path / "out"
    summary = run(config, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == [
        "results.md",
        "summary.json",
        "toy-holdout",
        "toy-holdout/ease.json",
        "toy-holdout/ease.per_user.parquet",
        "toy-holdout/most-popular.json",
        "toy-holdout/most-popular.per_user.parquet",
    ]  # nothing temporary left behind
    prepared = summary.runs[0].prepared
    train, test = _pairs(prepared.train), _pairs(prepared.test)
    popularity = np.zeros(data.n_items)
    for items in train.values():
        popularity[list(items)] += 1
    table = pq.read_table(out / "toy-holdout" / "most-popular.per_user.parquet").to_pydict()
    assert table["user_code"] == sorted(test)
    for position, user in enumerate(table["user_code"]):
        ranked = _ranked(popularity, train[user], 20)
        assert table["ndcg@10"][position] == pytest.approx(_ndcg(ranked, test[user], 10))
        hits = len(set(ranked[:20]) & test[user])
        assert table["recall@20"][position] == pytest.approx(hits / len(test[user]))
    ids = data.user_ids.to_pylist()
    assert table["user"] == [ids[u] for u in table["user_code"]]

    record = json.loads((out / "toy-holdout" / "most-popular.json").read_text())
    assert record["format"] == "privrank.result"
    assert record["dataset"]["fingerprint"] == fingerprint(data)
    assert record["split"]["spec"] == {**HOLDOUT, "unseen": "keep"}
    assert record["split"]["seed"] == 1
    assert record["model"] == {
        "name": "most-popular",
        "label": "most-popular",
        "config": {},
        "fit_seed": 0,
        "threads": 0,
        "history_mode": "users",
    }
    assert {"privrank", "numpy", "torch", "implicit", "python"} <= set(record["versions"])
    ndcg = record["metrics"]["ndcg@10"]
    assert ndcg["estimate"] == pytest.approx(np.mean(table["ndcg@10"]))
    assert ndcg["low"] <= ndcg["estimate"] <= ndcg["high"] and ndcg["n_resamples"] == 200
    assert record["evaluation"]["counts"]["users_evaluated"] == len(test)
    assert record["timing"]["fit_s"] >= 0 and record["timing"]["evaluate_s"] > 0
    assert record["baseline"] == "most-popular" and record["comparisons"] == {}

    ease = json.loads((out / "toy-holdout" / "ease.json").read_text())
    # The full config is recorded: every hyper-parameter, defaults included.
    expected_config = EASE(dtype="float64").config.model_dump(mode="json")
    assert ease["model"]["config"] == expected_config
    assert expected_config["regularization"] == 300.0 and expected_config["dtype"] == "float64"
    ease_table = pq.read_table(out / "toy-holdout" / "ease.per_user.parquet").to_pydict()
    a, b = np.array(ease_table["ndcg@10"]), np.array(table["ndcg@10"])
    c = ease["comparisons"]["ndcg@10"]
    assert c["n"] == len(a)
    assert c["mean_difference"] == pytest.approx((a - b).mean())
    assert c["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert c["cohens_d"] == pytest.approx((a - b).mean() / (a - b).std(ddof=1))
    assert set(ease["comparisons"]) == {f"{m}@{k}" for m in ("ndcg", "recall") for k in (5, 10, 20)}

    markdown = (out / "results.md").read_text()
    assert markdown == summary.markdown
    assert (
        f"| most-popular | {ndcg['estimate']:.4f} [{ndcg['low']:.4f}, {ndcg['high']:.4f}]"
        in markdown
    )
    assert "Paired comparison with the baseline `most-popular`" in markdown
    index = json.loads((out / "summary.json").read_text())
    assert index["results"] == ["toy-holdout/most-popular.json", "toy-holdout/ease.json"]


# ------------------------------------------------------------------ leave-one-out
def test_leave_one_out_folds_in_the_validation_item(tmp_path: Path, data) -> None:
    spec = _spec(
        "toy-loo", "in-memory", LOO, metrics=("hit_rate", "ndcg"), headline=("hit_rate@10",)
    )
    config = RunConfig(
        protocols=[spec],
        models=[
            "most-popular",
            "ease",
            {"name": "implicit-bpr", "params": {"factors": 4, "iterations": 2}},
        ],
        n_resamples=50,
        threads=1,
    )
    summary = run(config, tmp_path / "out", data={"toy-loo": data})
    popular, ease, bpr = summary.runs
    assert [r.history_mode for r in summary.runs] == ["fold-in", "fold-in", "refit"]
    # BPR cannot fold in: refitted on train + validation; the others saw train only
    assert bpr.model.history_items_.size == len(popular.prepared.history)
    assert popular.model.history_items_.size == len(popular.prepared.train)

    # oracle: histories are every item but the last, in time order; history items are masked
    ordered = defaultdict(list)
    for u, i, t in zip(data.users(), data.items(), data.timestamps(), strict=True):
        ordered[int(u)].append((int(t), int(i)))
    history = {u: [i for _, i in sorted(v)][:-1] for u, v in ordered.items()}
    last = {u: sorted(v)[-1][1] for u, v in ordered.items()}
    popularity = np.zeros(data.n_items)
    for items in history.values():
        popularity[list(set(items[:-1]))] += 1  # the model saw train only: no validation item
    users = popular.result.users
    assert sorted(users.tolist()) == sorted(last)
    for position, user in enumerate(users):
        ranked = _ranked(popularity, set(history[user]), 10)
        assert popular.result.per_user["hit_rate@10"][position] == float(last[user] in ranked)
        scores = ease.model.score(Query.histories([history[user]]))[0]
        ranked = _ranked(scores, set(history[user]), 10)
        assert ease.result.per_user["hit_rate@10"][position] == float(last[user] in ranked)
        assert ease.result.per_user["ndcg@10"][position] == pytest.approx(
            _ndcg(ranked, {last[user]}, 10)
        )
    record = summary.records[1]
    assert record["test_history"] == "train + validation"
    assert record["model"]["history_mode"] == "fold-in"


def test_refit_mode_fits_every_model_on_train_and_validation(tmp_path: Path, data) -> None:
    spec = _spec("toy-loo", "in-memory", LOO, metrics=("hit_rate",), headline=("hit_rate@10",))
    config = RunConfig(
        protocols=[spec], models=["most-popular"], test_history="refit", n_resamples=20
    )
    summary = run(config, None, data={"toy-loo": data})
    (only,) = summary.runs
    assert only.history_mode == "refit"
    assert only.model.history_items_.size == len(only.prepared.history)
    assert summary.files == []


def test_peers_run_in_the_same_harness_on_the_same_users(tmp_path: Path, data) -> None:
    config = RunConfig(
        protocols=[_spec("toy", "in-memory", HOLDOUT)],
        models=[
            {"name": "implicit-als", "params": {"factors": 4, "iterations": 2}},
            {"name": "ease", "label": "ours"},
        ],
        n_resamples=20,
        threads=1,
        cutoffs=(3,),
    )
    summary = run(config, tmp_path / "out", data={"toy": data})
    peer, ours = summary.runs
    assert np.array_equal(peer.result.users, ours.result.users)
    assert ours.spec.display == "ours" and (tmp_path / "out" / "toy" / "ours.json").is_file()
    assert summary.records[0]["versions"]["implicit"] is not None
    # cutoffs override, the headline cutoffs (10 and 20) are kept
    assert set(ours.result.per_user) >= {"ndcg@3", "ndcg@10", "recall@20"}
    assert "ndcg@5" not in ours.result.per_user
    assert set(summary.records[1]["comparisons"]) == {
        f"{m}@{k}" for m in ("ndcg", "recall") for k in (3, 10, 20)
    }


def test_validation_metrics_rank_the_validation_items_from_train(data) -> None:
    spec = _spec("toy-loo", "in-memory", LOO, metrics=("hit_rate",), headline=("hit_rate@10",))
    models = ["most-popular", {"name": "implicit-bpr", "params": {"factors": 4, "iterations": 1}}]
    config = RunConfig(protocols=[spec], models=models, validation=True, n_resamples=20)
    summary = run(config, None, data={"toy-loo": data})
    popular = summary.records[0]
    # oracle: popularity from train, train items excluded, the validation item relevant
    train, validation = (
        _pairs(summary.runs[0].prepared.train),
        _pairs(summary.runs[0].prepared.validation),
    )
    popularity = np.zeros(data.n_items)
    for items in train.values():
        popularity[list(items)] += 1
    hits = [len(set(_ranked(popularity, train[u], 10)) & validation[u]) > 0 for u in validation]
    assert popular["validation"]["means"]["hit_rate@10"] == pytest.approx(np.mean(hits))
    assert popular["validation"]["counts"]["users_evaluated"] == len(validation)
    assert summary.records[1]["validation"] == {
        "skipped": "the model was refitted on train + validation"
    }


def test_a_self_carving_model_is_told_what_the_protocol_tests(tmp_path: Path, data) -> None:
    from privrank.data.splits import HoldoutSplit, LeaveLastOut, StrongGeneralization, TemporalSplit
    from privrank.models import FitOptions, create_model
    from privrank.workflow.runner import split_test_shape

    assert split_test_shape(HoldoutSplit()) == "random"
    assert split_test_shape(StrongGeneralization()) == "random"
    assert split_test_shape(LeaveLastOut()) == "next"
    assert split_test_shape(TemporalSplit(quantile=0.8)) == "next"
    # SASRec on a holdout protocol early-stops on a random carve: the same fit as carve="random"
    params = {"factors": 8, "max_length": 6, "epochs": 4, "patience": 0, "batch_size": 32}
    spec = _spec("toy-holdout", "in-memory", {"protocol": "holdout", "fraction": 0.2, "seed": 0})
    config = RunConfig(
        protocols=[spec], models=[{"name": "sasrec", "params": params}], n_resamples=20, threads=1
    )
    (evaluated,) = run(config, tmp_path / "out", data={"toy-holdout": data}).runs
    for carve, same in (("random", True), ("last", False)):
        oracle = create_model("sasrec", params | {"carve": carve})
        oracle.fit(evaluated.prepared.train, FitOptions(seed=0, threads=1))
        equal = np.array_equal(oracle.validation_history_, evaluated.model.validation_history_)
        assert equal == same
