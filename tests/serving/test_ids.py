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
