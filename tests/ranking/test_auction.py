"""The auction against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from privrank.errors import ConfigError
from privrank.ranking.auction import run_auction


def test_second_price_by_hand():
    bids = [2.0, 1.0, 4.0, 0.5]
    pctr = [0.01, 0.05, 0.01, 0.02]
    # eCPM = 1000·b·p: 20, 50, 40, 10.
    result = run_auction(bids, pctr, reserve=15.0, slots=2, rule="second")
    assert np.allclose(result.ecpm, [20, 50, 40, 10])
    assert result.eligible == 3  # 10 < reserve 15
    assert list(result.ranked) == [1, 2, 0]
    assert list(result.winners) == [1, 2]
    # Slot 1 pays next eCPM 40 / (1000·0.05) = 0.8; slot 2 pays 20 / (1000·0.01) = 2.0.
    assert np.allclose(result.prices, [0.8, 2.0])


def test_reserve_sets_the_price_of_the_last_winner():
    result = run_auction([2.0, 1.0], [0.01, 0.05], reserve=15.0, slots=2, rule="second")
    # ranked: 1 (50), 0 (20); slot 2 has no follower: pays reserve 15/(1000·0.01) = 1.5.
    assert np.allclose(result.prices, [20 / 50, 1.5])
    single = run_auction([2.0], [0.01], reserve=0.0, slots=1, rule="second")
    assert np.allclose(single.prices, [0.0])


def test_first_price_pays_the_bid():
    result = run_auction([2.0, 1.0, 4.0], [0.01, 0.05, 0.01], slots=3, rule="first")
    assert list(result.winners) == [1, 2, 0]
    assert np.allclose(result.prices, [1.0, 4.0, 2.0])


def test_ties_break_by_pctr_then_by_order():
    # eCPM all 10: pctr 0.01, 0.02, 0.02 -> 1 and 2 first (higher pctr), 1 before 2 (order).
    result = run_auction([1.0, 0.5, 0.5], [0.01, 0.02, 0.02], slots=3)
    assert list(result.ranked) == [1, 2, 0]
    # A second-price winner tied with the next pays its own bid (never more).
    assert np.allclose(result.prices[:2], [0.5, 0.5])


def test_nothing_eligible_and_bad_arguments():
    result = run_auction([1.0], [0.001], reserve=5.0)
    assert result.winners.size == 0 and result.prices.size == 0
    with pytest.raises(ConfigError):
        run_auction([1.0], [1.5])
    with pytest.raises(ConfigError):
        run_auction([1.0, 2.0], [0.1])
    with pytest.raises(ConfigError):
        run_auction([1.0], [0.1], rule="third")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        run_auction([-1.0], [0.1])
