"""The server's aggregation step: check each device's update, then sum the accepted ones.

A round's updates arrive in batches (:class:`~privrank.privacy.updates.ClientUpdates`: the
simulator's vectorised batches, or one device at a time over Flower). :class:`SumAggregator`
checks every update and adds the accepted ones to a running sum; :meth:`SumAggregator.finish`
returns the round's :class:`RoundSum`. DP noise is added afterwards by the round's mechanism
(:class:`~privrank.privacy.dp_fedavg.DPFedAvgMechanism`), on the sum only.

**Refused updates.** An update is refused, counted by reason and never enters the sum when it

- arrived with the wrong shape (``shape``),
- holds NaN or inf (``non_finite``),
- has an L2 norm above the clipping bound the server declared for the round (``over_bound``;
  devices clip themselves, so only a faulty or malicious device sends one).

Refusals are logged as counts per reason, never with an update's values or a device's identity.

A secure aggregator (:mod:`privrank.privacy.crypto`) replaces :class:`SumAggregator` with the same
``add``/``finish`` interface: it reads each batch through ``ClientUpdates.dense`` and
quantises and masks the vectors; the rest of the round does not change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from privrank.privacy.updates import ClientUpdates

__all__ = ["REFUSALS", "RoundSum", "SumAggregator"]

log = logging.getLogger(__name__)

#: Why an update can be refused.
REFUSALS = ("shape", "non_finite", "over_bound")
#: Relative slack of the norm check (float rounding of a device's own clipping).
_NORM_SLACK = 1e-5


@dataclass
class RoundSum:
    """The accepted updates of one round, summed.

    Attributes:
        total: :math:`\\sum` of the accepted updates (``dim`` float64).
        accepted: How many updates were accepted.
        unclipped: How many accepted devices reported that their update was not clipped.
        refused: Refused updates per reason (:data:`REFUSALS`).
        noisy_unclipped: Adaptive clipping under distributed DP: the unmasked, noisy sum of
            the surviving devices' clipping bits (the only count of them the server learns;
            ``unclipped`` is then the simulator's own bookkeeping). ``None`` otherwise.
    """

    total: np.ndarray
    accepted: int = 0
    unclipped: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    noisy_unclipped: float | None = None

    @property
    def refused_total(self) -> int:
        """All refused updates."""
        return sum(self.refused.values())


class SumAggregator:
    """Checks and sums a round's updates (the plain, non-secure aggregation).

    Args:
        dim: The dimension every update must have.
        bound: The L2 bound the round declared (``None``: no bound, a non-private round).
        round_index: The round, named in the log.
    """

    def __init__(self, dim: int, bound: float | None, round_index: int = 0) -> None:
        self.dim = int(dim)
        self.bound = None if bound is None else float(bound)
        self.round_index = round_index
        self._sum = RoundSum(np.zeros(self.dim, dtype=np.float64))

    def accepted_mask(self, updates: ClientUpdates) -> tuple[np.ndarray, dict[str, int]]:
        """Which updates of a batch pass the checks, and the refusals per reason."""
        n = len(updates)
        if updates.dim != self.dim:
            return np.zeros(n, dtype=bool), {"shape": n, "non_finite": 0, "over_bound": 0}
        shaped = np.asarray(updates.well_formed(), dtype=bool)
        finite = shaped & np.asarray(updates.finite(), dtype=bool)
        norms = updates.norms()
        finite &= np.isfinite(norms)
        ok = finite.copy()
        over = np.zeros(n, dtype=bool)
        if self.bound is not None:
            over = finite & (norms > self.bound * (1.0 + _NORM_SLACK))
            ok &= ~over
        counts = {
            "shape": int((~shaped).sum()),
            "non_finite": int((shaped & ~finite).sum()),
            "over_bound": int(over.sum()),
        }
        return ok, counts

    def add(self, updates: ClientUpdates, unclipped: np.ndarray | None = None) -> np.ndarray:
        """Check a batch and add its accepted updates to the round's sum.

        Args:
            updates: The batch.
            unclipped: ``(len,)`` bool bits the devices reported (adaptive clipping), or
                ``None``.

        Returns:
            ``(len,)`` bool, the accepted updates.
        """
        ok, counts = self.accepted_mask(updates)
        if ok.any():
            self._sum.total += updates.weighted_sum(ok.astype(np.float64))
        self._sum.accepted += int(ok.sum())
        if unclipped is not None:
            self._sum.unclipped += int(np.asarray(unclipped, dtype=bool)[ok].sum())
        refused = sum(counts.values())
        if refused:
            for reason, count in counts.items():
                self._sum.refused[reason] += count
            log.warning(
                "round %d: refused %d update(s): %s",
                self.round_index,
                refused,
                ", ".join(f"{k} {v}" for k, v in counts.items() if v),
            )
        return ok

    def finish(self) -> RoundSum:
        """The round's sum (the aggregator is then spent)."""
        return self._sum
