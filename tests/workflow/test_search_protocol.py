"""The ml100k-search protocol on the real data (slow): queries, leakage guard, the target."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.data.item_text import load_item_text
from privrank.errors import ConfigError
from privrank.workflow.search_protocol import (
    BASELINE,
    evaluate_search,
    prepare_search,
    resolve_search_protocol,
)


def test_unknown_search_protocol_is_refused():
    with pytest.raises(ConfigError, match="unknown search protocol 'nope'"):
        resolve_search_protocol("nope")


@pytest.mark.realdata
def test_queries_are_built_from_test_items_only(real_data_dir):
    prepared = prepare_search("ml100k-search")
    text = load_item_text("ml-100k")
    assert prepared.counts["users_with_heldout"] == 943
    assert len(prepared.queries) == prepared.counts["queries"] > 900
    genres = [frozenset(g) for g in text.genres]
    rows = text.align(prepared.train.item_ids)
    for query, history in zip(prepared.queries[:100], prepared.histories[:100], strict=True):
        assert query.seed_item in query.relevant
        assert not np.isin(query.relevant, history).any()  # held out, not training items
        wanted = frozenset(query.genres)
        matches = sum(1 for r in rows if r >= 0 and wanted <= genres[r])
        assert matches >= 20  # no near-unique query


@pytest.mark.slow
@pytest.mark.realdata
def test_personalised_search_meets_the_target(real_data_dir):
    result = evaluate_search("ml100k-search", resamples=200)
    gain = result.paired["personalised"]
    assert gain.mean_b == pytest.approx(result.cis[BASELINE].estimate)
    assert gain.mean_difference / gain.mean_b >= 0.10
    assert gain.t_pvalue < 1e-3
