"""The settings of a SecAgg+ round and its communication graph.

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova, CCS 2020) replaces SecAgg's complete graph
by a sparse random one: each client agrees masks with, and Shamir-shares its secrets among, only
its ``k = O(log n)`` neighbours, so client cost is O(log n) key agreements and server cost
O(n log n) instead of O(n²). privrank draws the graph as Bell et al. do: a Harary graph
``H(k, n)`` (every node joined to the ``k/2`` nodes before and after it on a ring) on a uniformly
random permutation of the clients, which is k-regular and (k-)connected.

Degree and threshold:

- ``k = degree`` when set, else the smallest even number ≥ ``degree_factor · ln n`` (capped at
  ``n − 1``, the complete graph, which is plain SecAgg).
- A client's secrets are shared among its *holders*: itself and its k neighbours (k + 1 shares).
  Any ``t = ⌊threshold_fraction · (k + 1)⌋ + 1`` of them recover a secret; fewer learn nothing.

The threshold trades collusion tolerance against dropout tolerance: the server learns a
client's secrets only with t of its holders, so up to t − 1 colluding holders per neighbourhood
are tolerated; a round survives as long as t holders of every needed secret answer. The
defaults (k ≈ 6 ln n, t ≈ (k + 1)/3) keep a round alive at 30 % dropout with high probability
(k + 1 = 29 holders at n = 100: a neighbourhood keeps fewer than t = 10 of them with
probability ≈ 1e-5). A server that told different holders *inconsistent* survivor sets (outside
this honest-but-curious model) could collect both kinds of share of one client from two
disjoint sets of holders unless t > (k + 1)/2: set ``threshold_fraction=0.5`` against such a
server, with a degree large enough for the expected dropout.
"""

from __future__ import annotations

import math
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error

__all__ = ["SecAggConfig", "harary_graph"]


class SecAggConfig(BaseModel):
    """Settings of one SecAgg+ round.

    Attributes:
        modulus_bits: b: updates and masks live in Z_{2^b}.
        degree: k, neighbours per client (even); ``None``: from ``degree_factor``.
        degree_factor: k ≈ ``degree_factor · ln n`` when ``degree`` is not set.
        threshold_fraction: t = ⌊fraction · (k + 1)⌋ + 1 of a client's k + 1 holders recover
            its secrets.
        min_survivors: The fewest clients whose inputs may be unmasked: a client refuses to
            help unmask a round whose server reports fewer survivors (the floor on which
            distributed DP's accounting rests).
        round_id: Bound into every derived key and every share's associated data, so that
            nothing from one round can be replayed in another.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modulus_bits: int = Field(32, ge=8, le=62)
    degree: int | None = Field(None, ge=2)
    degree_factor: float = Field(6.0, gt=0, allow_inf_nan=False)
    threshold_fraction: float = Field(1 / 3, gt=0, lt=1, allow_inf_nan=False)
    min_survivors: int = Field(1, ge=1)
    round_id: int = Field(0, ge=0, lt=2**63)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, "SecAggConfig", model=type(self)) from None

    def degree_for(self, n_clients: int) -> int:
        """k for a round of ``n_clients`` (even, at most ``n − 1``)."""
        if n_clients < 2:
            return 0
        if self.degree is not None:
            k = self.degree
        else:
            k = math.ceil(self.degree_factor * math.log(n_clients))
        k += k % 2
        return min(k, n_clients - 1)

    def threshold_for(self, degree: int) -> int:
        """t for holders of size ``degree + 1``."""
        return min(degree + 1, math.floor(self.threshold_fraction * (degree + 1)) + 1)

    def info(self, purpose: bytes) -> bytes:
        """The HKDF context of this round for ``purpose``."""
        return b"privrank-secagg+/" + purpose + b"/" + str(self.round_id).encode()


def harary_graph(
    client_ids: list[int], degree: int, rng: random.Random
) -> dict[int, frozenset[int]]:
    """The neighbours of every client in a Harary graph H(k, n) on a random permutation.

    With k even, client at position p is joined to positions ``p ± 1, …, p ± k/2`` (mod n); an
    odd k (only when k = n − 1, the complete graph) joins everyone.
    """
    n = len(client_ids)
    if degree >= n - 1:
        everyone = frozenset(client_ids)
        return {c: everyone - {c} for c in client_ids}
    order = list(client_ids)
    rng.shuffle(order)
    half = degree // 2
    return {
        order[p]: frozenset(order[(p + j) % n] for j in range(-half, half + 1) if j != 0)
        for p in range(n)
    }
