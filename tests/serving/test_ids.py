"""Id lookups of the serving layer: JSON ints and strings against int and string vocabularies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from privrank.serving.ids import IdLookup


def test_integer_vocabulary() -> None:
    lookup = IdLookup(pa.array([30, 10, 20, -5], type=pa.int64()))
    assert lookup.codes([10, "20", -5, "x", True, 2**70, 99, 30]).tolist() == [
        1,
        2,
        3,
        -1,
        -1,
        -1,
        -1,
        0,
    ]
    assert lookup.code("30") == 0
    assert lookup.decode([3, 0]) == [-5, 30]
    assert lookup.codes([]).tolist() == []


def test_int32_vocabulary_and_empty() -> None:
    assert IdLookup(pa.array([7, 3], type=pa.int32())).codes([3, 2**40]).tolist() == [1, -1]
    assert IdLookup(pa.array([], type=pa.int64())).codes([1]).tolist() == [-1]


def test_string_vocabulary() -> None:
    lookup = IdLookup(pa.array(["a", "42", "b"]))
    assert lookup.codes(["b", 42, "42", "zz"]).tolist() == [2, 1, 1, -1]
    assert lookup.decode(np.array([0, 2])) == ["a", "b"]


def test_agrees_with_the_model_lookup(train) -> None:
    from privrank.models import create_model

    model = create_model("most-popular", {}).fit(train)
    users = IdLookup(model.user_ids_)
    ids = ["u3", "u19", "nobody", "u0"]
    assert users.codes(ids).tolist() == model.user_codes(ids).tolist()
    items = IdLookup(model.item_ids_)
    assert items.codes([100, 129, 5]).tolist() == model.item_codes([100, 129, 5]).tolist()


def test_one_id_and_decode_agree_with_the_batch_lookup_and_pyarrow() -> None:
    # The per-request paths (code, decode) against the batch lookup and pyarrow's own take.
    rng = np.random.default_rng(0)
    vocabularies = [
        pa.array(rng.choice(10**12, size=500, replace=False), type=pa.int64()),
        pa.array(rng.choice(1000, size=300, replace=False).astype(np.int32), type=pa.int32()),
        pa.array([2**64 - 1, 5, 2**63], type=pa.uint64()),
        pa.array([f"s{i}" for i in rng.choice(10**6, size=400, replace=False)]),
        pa.array([], type=pa.int64()),
    ]
    for ids in vocabularies:
        lookup = IdLookup(ids)
        values = ids.to_pylist()
        probes = [*values[:50], *map(str, values[:20]), "nope", -1, 7, True, 2**70, 3.0, None]
        assert [lookup.code(p) for p in probes] == lookup.codes(probes).tolist()
        codes = rng.integers(0, len(values), size=min(len(values), 30))
        assert lookup.decode(codes) == ids.take(pa.array(codes, type=pa.int64())).to_pylist()
