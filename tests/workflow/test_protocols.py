"""Named protocols: the design's settings, and the parts they hand to a run."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from privrank.data.splits import HoldoutSplit, LeaveLastOut, split
from privrank.errors import ConfigError
from privrank.testing import synthetic_interactions
from privrank.workflow.protocols import (
    PROTOCOLS,
    ProtocolSpec,
    concatenate,
    from_split,
    prepare,
    protocol_names,
    resolve_protocol,
)


def _by_user_in_time(data) -> dict[int, list[int]]:
    """Oracle: each user's items ordered by timestamp (all distinct in the synthetic data)."""
    rows = defaultdict(list)
    for user, item, ts in zip(data.users(), data.items(), data.timestamps(), strict=True):
        rows[int(user)].append((int(ts), int(item)))
    return {user: [item for _, item in sorted(pairs)] for user, pairs in rows.items()}


def _sequences(data) -> dict[int, list[int]]:
    indptr, items = data.sequences()
    return {u: items[indptr[u] : indptr[u + 1]].tolist() for u in range(data.n_users)}


def test_named_protocols_follow_the_design() -> None:
    # the recommender protocols and the CTR protocols (workflow.ctr_protocols), one namespace
    assert protocol_names() == ["beauty-loo", "frappe", "ipinyou", "ml100k-holdout", "video-loo"]
    ml = PROTOCOLS["ml100k-holdout"]
    assert ml.dataset == "ml-100k"
    assert ml.split == HoldoutSplit(fraction=0.2, seed=0)
    assert ml.headline == ("ndcg@10", "recall@20")
    assert ml.evaluation_config().exclude_train
    beauty = PROTOCOLS["beauty-loo"]
    assert beauty.dataset == "beauty"
    assert beauty.split == LeaveLastOut(k=1, validation=True)
    assert beauty.headline == ("hit_rate@10", "ndcg@10")
    assert beauty.validation_in_history
    video = PROTOCOLS["video-loo"]
    assert video.dataset == "video"
    assert (video.split, video.headline, video.metrics, video.cutoffs) == (
        beauty.split,
        beauty.headline,
        beauty.metrics,
        beauty.cutoffs,
    )
    assert video.validation_in_history


def test_holdout_parts_share_the_vocabulary_and_history_is_train() -> None:
    data = synthetic_interactions(40, 30, per_user=10, seed=1)
    spec = ProtocolSpec(name="toy", dataset="unused", split=HoldoutSplit(fraction=0.2, seed=3))
    prepared = prepare(spec, data)
    assert prepared.validation is None
    assert prepared.history is prepared.train
    assert not prepared.history_extends_train
    for part in (prepared.train, prepared.history, prepared.test):
        assert part.user_ids.equals(data.user_ids) and part.item_ids.equals(data.item_ids)
    assert len(prepared.train) + len(prepared.test) == len(data)
    # round(0.2 * 10) = 2 test rows for every active user (oracle: the spec's formula)
    counts = np.bincount(prepared.test.users(), minlength=data.n_users)
    active = data.user_counts() > 0
    assert (counts[active] == 2).all() and (counts[~active] == 0).all()


def test_leave_one_out_history_is_train_then_validation_item() -> None:
    data = synthetic_interactions(30, 40, per_user=6, seed=2)
    spec = ProtocolSpec(
        name="loo",
        dataset="unused",
        split=LeaveLastOut(k=1, validation=True),
        metrics=("hit_rate", "ndcg"),
        headline=("hit_rate@10",),
    )
    prepared = prepare(spec, data)
    assert prepared.history_extends_train
    expected = _by_user_in_time(data)
    test, validation = _sequences(prepared.test), _sequences(prepared.validation)
    train, history = _sequences(prepared.train), _sequences(prepared.history)
    for user in range(data.n_users):
        items = expected.get(user, [])
        if not items:
            assert test[user] == validation[user] == history[user] == []
            continue
        assert test[user] == items[-1:]
        assert validation[user] == items[-2:-1]
        assert train[user] == items[:-2]
        assert history[user] == items[:-1]  # the validation item is the latest of the history
    assert prepared.history.item_ids.equals(data.item_ids)


def test_validation_can_stay_out_of_the_test_history() -> None:
    data = synthetic_interactions(20, 30, per_user=6, seed=4)
    spec = ProtocolSpec(
        name="loo-train-only",
        dataset="unused",
        split=LeaveLastOut(k=1),
        validation_in_history=False,
    )
    prepared = prepare(spec, data)
    assert prepared.history is prepared.train
    assert prepared.validation is not None and len(prepared.validation) == 19


def test_describe_names_dataset_split_and_fingerprints() -> None:
    data = synthetic_interactions(20, 30, per_user=6, seed=4)
    prepared = prepare(
        {"name": "toy", "dataset": "x", "split": {"protocol": "holdout", "seed": 7}}, data
    )
    facts = prepared.describe()
    assert facts["split"]["seed"] == 7
    assert facts["split"]["spec"]["fraction"] == 0.2
    assert facts["dataset"]["rows"] == len(data)
    assert facts["dataset"]["fingerprint"] == prepared.split.source.fingerprint
    assert facts["split"]["train_fingerprint"] == prepared.train_fingerprint()
    assert facts["test_history"] == "train"


def test_invalid_protocols_are_refused_with_the_reason() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown protocol 'nope'.*beauty-loo, frappe, ipinyou, ml100k-holdout, video-loo",
    ):
        resolve_protocol("nope")
    with pytest.raises(ConfigError, match=r"headline metrics \['ndcg@100'\] are not computed"):
        ProtocolSpec(name="x", dataset="y", split=HoldoutSplit(), headline=("ndcg@100",))
    with pytest.raises(ConfigError, match="ProtocolSpec"):
        resolve_protocol({"name": "x", "dataset": "y", "split": {"protocol": "bogus"}})
    data = synthetic_interactions(20, 30, per_user=6, seed=4)
    with pytest.raises(ConfigError, match="the split was made"):
        from_split(PROTOCOLS["ml100k-holdout"], split(data, HoldoutSplit(seed=1)))


def test_concatenate_refuses_other_vocabularies() -> None:
    a = synthetic_interactions(20, 30, seed=1)
    b = synthetic_interactions(21, 30, seed=1)
    with pytest.raises(ConfigError, match="different vocabularies"):
        concatenate(a, b)
    assert len(concatenate(a, a)) == 2 * len(a)


@pytest.mark.realdata
def test_ml100k_holdout_on_the_real_data(real_data_dir) -> None:
    prepared = prepare("ml100k-holdout")
    raw = np.loadtxt(real_data_dir / "ml-100k" / "u.data", dtype=np.int64)
    assert len(raw) == 100_000 and prepared.split.source.rows == 100_000
    per_user = np.bincount(raw[:, 0])[1:]
    expected_test = np.minimum(np.floor(0.2 * per_user + 0.5), per_user - 1).sum()
    assert len(prepared.test) == expected_test
    assert len(prepared.train) == 100_000 - expected_test
    assert prepared.test.n_active_users() == 943


@pytest.mark.realdata
def test_beauty_loo_on_the_real_data(real_data_dir) -> None:
    prepared = prepare("beauty-loo")
    lines = (real_data_dir / "amazon-seqrec-s3rec" / "Beauty.txt").read_text().split("\n")
    sequences = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    assert len(sequences) == 22_363
    assert len(prepared.test) == len(prepared.validation) == 22_363
    assert len(prepared.history) == 198_502 - 22_363
    # user "1"'s last item is test and the one before it ends the history
    user = int(prepared.test.user_codes_of(["1"])[0])
    first = sequences["1"]
    item_ids = prepared.test.item_ids.to_pylist()
    test_items = prepared.test.items()[prepared.test.users() == user]
    assert [str(item_ids[i]) for i in test_items] == [first[-1]]
    indptr, items = prepared.history.sequences()
    history = [str(item_ids[i]) for i in items[indptr[user] : indptr[user + 1]]]
    assert history == first[:-1]


@pytest.mark.realdata
def test_video_loo_on_the_real_data(real_data_dir) -> None:
    prepared = prepare("video-loo")
    sequences: dict[str, list[str]] = {}
    for line in (real_data_dir / "sasrec-amazon-video" / "Video.txt").read_text().splitlines():
        user, item = line.split()
        sequences.setdefault(user, []).append(item)
    assert len(sequences) == 31_013
    # 112 users of the file have fewer than 3 items (not every user is 5-core after SASRec's
    # preprocessing): they stay in train only.
    evaluated = sum(len(items) >= 3 for items in sequences.values())
    assert len(prepared.test) == len(prepared.validation) == evaluated == 30_901
    assert prepared.split.details["users_train_only"] == 31_013 - evaluated
    assert len(prepared.history) == 287_107 - evaluated
    user = int(prepared.test.user_codes_of(["1"])[0])
    item_ids = prepared.test.item_ids.to_pylist()
    test_items = prepared.test.items()[prepared.test.users() == user]
    assert [str(item_ids[i]) for i in test_items] == [sequences["1"][-1]]
    indptr, items = prepared.history.sequences()
    history = [str(item_ids[i]) for i in items[indptr[user] : indptr[user + 1]]]
    assert history == sequences["1"][:-1]
