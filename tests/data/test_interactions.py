"""The Interactions data model: codes, id maps, views and persistence."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from privrank.data import CurationStep, DatasetMetadata, Interactions
from privrank.errors import ArtifactError, DataError


@pytest.fixture
def small() -> Interactions:
    return Interactions.from_columns(
        users=["bob", "alice", "bob", "carol", "alice"],
        items=[30, 10, 10, 20, 20],
        timestamps=[5, 4, 1, 9, 2],
        values=[1.0, 2.0, 3.0, 4.0, 5.0],
        metadata=DatasetMetadata(name="small"),
    )


def test_codes_follow_sorted_external_ids(small: Interactions) -> None:
    assert small.user_ids.to_pylist() == ["alice", "bob", "carol"]
    assert small.item_ids.to_pylist() == [10, 20, 30]
    assert small.users().tolist() == [1, 0, 1, 2, 0]
    assert small.items().tolist() == [2, 0, 0, 1, 1]
    assert small.user_codes_of(["carol", "nobody"]).tolist() == [2, -1]
    assert small.item_codes_of([20, 99]).tolist() == [1, -1]


def test_csr_counts_and_values(small: Interactions) -> None:
    ones = small.to_csr().toarray()
    np.testing.assert_array_equal(ones, [[1, 1, 0], [1, 0, 1], [0, 1, 0]])
    summed = small.to_csr(use_values=True).toarray()
    np.testing.assert_array_equal(summed, [[2, 5, 0], [3, 0, 1], [0, 4, 0]])


def test_duplicates_are_summed_in_csr() -> None:
    data = Interactions.from_codes(np.array([0, 0]), np.array([1, 1]), n_items=2)
    assert data.to_csr().toarray().tolist() == [[0.0, 2.0]]


def test_sequences_are_time_ordered_per_user(small: Interactions) -> None:
    indptr, items = small.sequences()
    per_user = [items[indptr[u] : indptr[u + 1]].tolist() for u in range(small.n_users)]
    # alice: item 20 at t=2, item 10 at t=4; bob: 10 at t=1, 30 at t=5; carol: 20.
    assert per_user == [[1, 0], [0, 2], [1]]


def test_sequences_without_timestamps_keep_file_order() -> None:
    data = Interactions.from_codes(np.array([1, 0, 1, 1]), np.array([3, 2, 0, 1]))
    indptr, items = data.sequences()
    assert items[indptr[1] : indptr[2]].tolist() == [3, 0, 1]


def test_take_keeps_vocabulary_and_compact_redensifies(small: Interactions) -> None:
    no_carol = small.take(small.users() != 2)
    assert no_carol.n_users == 3 and len(no_carol) == 4
    compacted = no_carol.compact()
    assert compacted.user_ids.to_pylist() == ["alice", "bob"]
    assert compacted.item_ids.to_pylist() == [10, 20, 30]
    # Same external (user, item) pairs before and after re-densification.
    before = {
        (small.user_ids[u].as_py(), small.item_ids[i].as_py())
        for u, i in zip(no_carol.users(), no_carol.items(), strict=True)
    }
    after = {
        (compacted.user_ids[u].as_py(), compacted.item_ids[i].as_py())
        for u, i in zip(compacted.users(), compacted.items(), strict=True)
    }
    assert before == after


def test_save_load_round_trip(small: Interactions, tmp_path) -> None:
    step = CurationStep("k_core", {"k": 2}, rows_before=7, rows_after=5, details={"iterations": 2})
    data = small.with_metadata(small.metadata.with_step(step))
    data.save(tmp_path / "ds")
    loaded = Interactions.load(tmp_path / "ds")
    assert loaded.table.equals(data.table)
    assert loaded.user_ids.equals(data.user_ids)
    assert loaded.item_ids.equals(data.item_ids)
    assert loaded.metadata == data.metadata
    sidecar = json.loads((tmp_path / "ds" / "metadata.json").read_text())
    assert sidecar["metadata"]["curation"][0]["removed"] == 2
    assert sidecar["counts"] == {"interactions": 5, "users": 3, "items": 3}


def test_load_refuses_inconsistent_counts(small: Interactions, tmp_path) -> None:
    small.save(tmp_path / "ds")
    meta = tmp_path / "ds" / "metadata.json"
    sidecar = json.loads(meta.read_text())
    sidecar["counts"]["interactions"] = 4
    meta.write_text(json.dumps(sidecar))
    with pytest.raises(ArtifactError, match="says 4 interactions"):
        Interactions.load(tmp_path / "ds")


def test_load_refuses_non_dataset(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="not a privrank dataset"):
        Interactions.load(tmp_path)


def test_failed_save_leaves_nothing(small: Interactions, tmp_path, monkeypatch) -> None:
    import privrank.data.interactions as module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        small.save(tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_codes_out_of_range_are_refused() -> None:
    table = pa.table({"user": pa.array([0, 5], pa.int32()), "item": pa.array([0, 0], pa.int32())})
    with pytest.raises(DataError, match="user codes out of range"):
        Interactions(table, pa.array([0, 1]), pa.array([0]))


def test_null_ids_are_refused() -> None:
    with pytest.raises(DataError, match="missing id"):
        Interactions.from_columns(pa.array([1, None]), pa.array([1, 2]))
