"""fingerprint_stream: the fingerprint of a dataset read in chunks equals fingerprint()."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.fingerprint import fingerprint, fingerprint_stream
from privrank.data.interactions import Interactions


@pytest.mark.parametrize("columns", [("user", "item"), ("user", "item", "timestamp", "value")])
def test_chunked_columns_give_the_same_fingerprint(columns):
    rng = np.random.default_rng(0)
    n = 1_000
    data = Interactions.from_columns(
        [f"u{u}" for u in rng.integers(0, 50, n)],
        rng.integers(0, 80, n) * 3,
        timestamps=rng.integers(0, 10**9, n) if "timestamp" in columns else None,
        values=rng.random(n) if "value" in columns else None,
    )
    whole = {name: getattr(data, name + "s")() for name in ("user", "item")}
    if "timestamp" in columns:
        whole["timestamp"] = data.timestamps()
        whole["value"] = data.values()

    def read(name):
        return np.array_split(whole[name], 7)  # uneven chunks

    streamed = fingerprint_stream(columns, n, read, data.user_ids, data.item_ids)
    assert streamed == fingerprint(data)
    with pytest.raises(ValueError, match="holds"):
        fingerprint_stream(columns, n + 1, read, data.user_ids, data.item_ids)
