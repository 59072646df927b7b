"""Canary devices for the empirical audit of a federated run (Andrew et al. 2023).

A canary is a made-up device whose update, every round it is sampled, is a fixed random unit
direction :math:`u_k` of the model's item-side update space scaled to the round's clipping
bound: the largest update an honest device may send, and one no real device resembles. In
high dimension random directions are nearly orthogonal to each other and to the real updates,
so how much of :math:`u_k` the released model carries measures what one device can leave in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privrank.privacy.updates import DenseUpdates

__all__ = ["Canaries"]


@dataclass(frozen=True)
class Canaries:
    """``len(directions)`` canaries; the ``included`` ones take part in the run.

    Attributes:
        directions: ``(m, dim)`` unit vectors (zero outside the item part of the update).
        included: ``(m,)`` bool: which canaries are devices of the run (the others are the
            audit's unseen controls).
        seed: Seed of their sampling into rounds.
    """

    directions: np.ndarray
    included: np.ndarray
    seed: int

    @classmethod
    def draw(cls, m: int, item_dim: int, dim: int, seed: int) -> Canaries:
        """``m`` canaries with uniformly random directions in the first ``item_dim``
        coordinates of a ``dim``-dimensional update, each included with probability 1/2."""
        rng = np.random.default_rng([seed, 7])
        directions = np.zeros((m, dim))
        gaussian = rng.standard_normal((m, item_dim))
        directions[:, :item_dim] = gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True)
        return cls(directions, rng.random(m) < 0.5, seed)

    def sampled(self, round_index: int, rate: float) -> np.ndarray:
        """The included canaries Poisson-sampled into a round at ``rate``."""
        rng = np.random.default_rng([self.seed, round_index, 11])
        return np.flatnonzero(self.included & (rng.random(len(self.included)) < rate))

    def updates(self, chosen: np.ndarray, bound: float) -> DenseUpdates:
        """The chosen canaries' updates: their directions scaled to ``bound``."""
        return DenseUpdates(self.directions[chosen] * bound)
