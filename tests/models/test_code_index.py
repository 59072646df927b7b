"""External ids → codes: the dict path for a few ids against ``pyarrow.compute.index_in`` (the
path for large batches, and the oracle), and a model's index following its vocabulary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from privrank.models import ItemKNN
from privrank.models._code_index import _FEW_IDS, CodeIndex
from privrank.testing import synthetic_interactions


def _oracle(vocabulary: pa.Array, ids: list) -> np.ndarray:
    query = pa.array(ids)
    try:
        query = query.cast(vocabulary.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(len(ids), -1)
    return pc.fill_null(pc.index_in(query, value_set=vocabulary), -1).to_numpy(zero_copy_only=False)


@pytest.mark.parametrize(
    ("vocabulary", "queries"),
    [
        (
            pa.array([10, 3, 7, 123456789012], pa.int64()),
            [[3], [7, 10, 3, 99], ["7", "123456789012"], ["7", "seven"], [None, 3], [-1]],
        ),
        (
            pa.array(["b", "a", "ü", ""], pa.string()),
            [["a"], ["ü", "", "zz", "a"], [1, 2], [None]],
        ),
        (pa.array(["b", "a"], pa.large_string()), [["a", "b", "c"]]),
        (pa.array([1, 2], pa.int32()), [[2, 1, 3], [2**40]]),
    ],
)
def test_few_ids_get_index_in_codes(vocabulary: pa.Array, queries: list) -> None:
    index = CodeIndex(vocabulary)
    for ids in queries:
        got = index.codes(ids)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, _oracle(vocabulary, ids))
    assert index._codes is not None  # the dict path answered


def test_large_batches_and_other_inputs_get_the_same_codes() -> None:
    rng = np.random.default_rng(0)
    vocabulary = pa.array(rng.permutation(5_000).astype(np.int64) * 3)
    index = CodeIndex(vocabulary)
    asked = rng.integers(0, 15_000, size=3 * _FEW_IDS)
    expected = _oracle(vocabulary, asked.tolist())
    assert (expected >= 0).any() and (expected < 0).any()
    np.testing.assert_array_equal(index.codes(asked), expected)  # one batch: index_in
    np.testing.assert_array_equal(
        index.codes(pa.chunked_array([asked[:5], asked[5:9]])), expected[:9]
    )
    singles = np.concatenate([index.codes([int(a)]) for a in asked])  # one at a time: the dict
    np.testing.assert_array_equal(singles, expected)
    assert index.codes([]).shape == (0,)


def test_a_model_looks_up_in_its_current_vocabulary() -> None:
    model = ItemKNN(neighbors=5).fit(synthetic_interactions(n_users=30, n_items=20, seed=1))
    first = model.user_ids_.to_pylist()[4]
    assert model.user_codes([first]).tolist() == [4]
    model.fit(synthetic_interactions(n_users=40, n_items=20, seed=2))
    later = model.user_ids_.to_pylist()
    assert len(later) > 30  # a user only the second fit has: not in a stale index
    np.testing.assert_array_equal(model.user_codes([later[-1], later[0]]), [len(later) - 1, 0])
    np.testing.assert_array_equal(
        model.item_codes([model.item_ids_[7].as_py(), "missing"]),
        _oracle(model.item_ids_, [model.item_ids_[7].as_py(), "missing"]),
    )
