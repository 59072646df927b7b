"""Beyond-accuracy metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrank.metrics import beyond


def test_exposure_coverage_and_gini() -> None:
    top = np.array([[0, 1, -1], [0, 2, 3]])
    exposure = beyond.exposure_counts(top, 2, n_items=5)
    assert exposure.tolist() == [2, 1, 1, 0, 0]
    assert beyond.catalog_coverage(exposure) == pytest.approx(3 / 5)
    # Sorted counts 0, 0, 1, 1, 2; weights 2j - n - 1 = -4, -2, 0, 2, 4; sum 4 * 5 = 20.
    assert beyond.gini(exposure) == pytest.approx((0 * -4 + 0 * -2 + 0 + 2 + 8) / 20)


def test_gini_extremes() -> None:
    assert beyond.gini(np.array([3, 3, 3, 3])) == 0.0
    assert beyond.gini(np.array([0, 0, 0, 8])) == pytest.approx(1 - 1 / 4)
    assert beyond.gini(np.zeros(4)) == 0.0


def test_novelty_and_average_popularity() -> None:
    # Three training users; item 0 seen by 3 of them, item 1 by 1, item 2 by none.
    indptr = np.array([0, 2, 3, 4])
    indices = np.array([0, 1, 0, 0])
    popularity = beyond.item_popularity(indptr, indices, 3)
    assert popularity.tolist() == [3, 1, 0]
    top = np.array([[0, 1], [2, -1], [-1, -1]])
    novelty = beyond.novelty(top, 2, popularity, n_users=3)
    assert novelty[0] == pytest.approx((0.0 + math.log2(3)) / 2)
    assert novelty[1] == pytest.approx(math.log2(3))  # an untouched item counts as seen once
    assert math.isnan(novelty[2])
    arp = beyond.average_popularity(top, 2, popularity)
    assert arp[:2].tolist() == [2.0, 0.0] and math.isnan(arp[2])
    assert beyond.average_popularity(top, 1, popularity)[0] == 3.0


def test_list_means_for_several_cutoffs_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    top = rng.integers(-1, 50, size=(40, 12))
    popularity = rng.integers(0, 30, size=50)
    together = beyond.list_means(top, popularity, (1, 5, 12))
    for k in (1, 5, 12):
        expected = [
            np.mean([popularity[i] for i in row[:k] if i >= 0]) if (row[:k] >= 0).any() else np.nan
            for row in top
        ]
        np.testing.assert_allclose(together[k], expected, rtol=1e-12)
        np.testing.assert_array_equal(beyond.average_popularity(top, k, popularity), together[k])
