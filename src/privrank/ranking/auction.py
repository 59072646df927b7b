r"""The ads auction: rank by eCPM, apply a reserve price, price by first- or second-price rules.

Pure functions over arrays, no I/O. Bids are per click (CPC). For candidate :math:`i` with bid
:math:`b_i` and calibrated click probability :math:`p_i`:

- **eCPM** (expected revenue per thousand impressions): :math:`e_i = 1000\, b_i\, p_i`.
- **Reserve price** :math:`r` (an eCPM): a candidate with :math:`e_i < r` is not eligible.
- **Ranking**: eligible candidates by decreasing eCPM; ties broken by the higher pCTR, then by
  the lower candidate index (the order the request listed them in), so the outcome never
  depends on anything but the request.
- **Slots**: the first ``slots`` eligible candidates win, in order.
- **Prices** (per click, never above the winner's bid):

  - ``first``: a winner pays its bid, :math:`c_i = b_i`.
  - ``second`` (generalised second price): the winner at slot :math:`j` pays the least bid that
    keeps its slot, :math:`c_j = \max(e_{(j+1)}, r) / (1000\, p_j)`, where :math:`e_{(j+1)}`
    is the eCPM of the next eligible candidate in the ranking (0 when there is none). A
    winner with :math:`p_j = 0` has :math:`e_j = 0` and can win only with :math:`r = 0`; it
    pays 0.

The expected revenue of a winning slot is :math:`p_j c_j` per impression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from privrank.errors import ConfigError

__all__ = ["AuctionResult", "PriceRule", "run_auction"]

PriceRule = Literal["first", "second"]


@dataclass(frozen=True)
class AuctionResult:
    """The outcome of one auction.

    Attributes:
        ranked: Indices of the eligible candidates, best first (all of them, not only winners).
        winners: Indices of the winning candidates, slot order (the first ``slots`` of ranked).
        ecpm: eCPM of every candidate (input order).
        prices: Price per click of every winner (slot order).
        eligible: How many candidates met the reserve.
    """

    ranked: np.ndarray
    winners: np.ndarray
    ecpm: np.ndarray
    prices: np.ndarray
    eligible: int


def run_auction(
    bids: np.ndarray,
    pctr: np.ndarray,
    *,
    reserve: float = 0.0,
    slots: int = 1,
    rule: PriceRule = "second",
) -> AuctionResult:
    """Run the auction described in the module docstring.

    Args:
        bids: (n,) bids per click, finite and >= 0.
        pctr: (n,) calibrated click probabilities in [0, 1].
        reserve: The reserve price, as an eCPM (>= 0).
        slots: Ad slots to fill (>= 1).
        rule: ``first`` or ``second`` price.

    Raises:
        ConfigError: Bad arguments (shapes, ranges, rule).
    """
    bids = np.asarray(bids, dtype=np.float64)
    pctr = np.asarray(pctr, dtype=np.float64)
    if bids.ndim != 1 or bids.shape != pctr.shape:
        raise ConfigError(
            f"run_auction: bids and pctr must be (n,) alike. Got {bids.shape}, {pctr.shape}"
        )
    if not np.all(np.isfinite(bids)) or np.any(bids < 0):
        raise ConfigError("run_auction: bids must be finite and >= 0")
    if not np.all(np.isfinite(pctr)) or np.any((pctr < 0) | (pctr > 1)):
        raise ConfigError("run_auction: pctr must be in [0, 1]")
    if not (np.isfinite(reserve) and reserve >= 0):
        raise ConfigError(f"run_auction: reserve must be finite and >= 0. Got {reserve!r}")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ConfigError(f"run_auction: slots must be an integer >= 1. Got {slots!r}")
    if rule not in ("first", "second"):
        raise ConfigError(f"run_auction: rule must be 'first' or 'second'. Got {rule!r}")
    ecpm = 1000.0 * bids * pctr
    index = np.arange(bids.size)
    eligible = np.flatnonzero(ecpm >= reserve)
    # lexsort: the last key is the primary one.
    order = np.lexsort((index[eligible], -pctr[eligible], -ecpm[eligible]))
    ranked = eligible[order]
    winners = ranked[:slots]
    if rule == "first":
        prices = bids[winners].copy()
    else:
        # eCPM of the next eligible candidate after each winner (0 after the last one).
        following = np.append(ecpm[ranked[1 : winners.size + 1]], 0.0)[: winners.size]
        floor = np.maximum(following, reserve)
        with np.errstate(divide="ignore", invalid="ignore"):
            prices = np.where(pctr[winners] > 0, floor / (1000.0 * pctr[winners]), 0.0)
        prices = np.minimum(prices, bids[winners])
    return AuctionResult(
        ranked=ranked, winners=winners, ecpm=ecpm, prices=prices, eligible=int(eligible.size)
    )
