"""The interface of one worker of a data-parallel fit (:mod:`privrank.models.parallel`), apart
from the torch code so that a fit's options (:class:`~privrank.models._config.FitOptions`) can
name it without importing torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["DataParallel"]


@runtime_checkable
class DataParallel(Protocol):
    """One worker of a data-parallel fit.

    Attributes:
        rank: This worker's rank, ``0 ≤ rank < world_size``.
        world_size: Workers in the fit.
    """

    rank: int
    world_size: int

    def all_reduce(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor, in place, by its sum over all workers (every worker calls it
        with tensors of the same shapes, in the same order)."""
        ...

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Replace ``tensor``, in place, by rank 0's."""
        ...
