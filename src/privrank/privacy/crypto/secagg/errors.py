"""The errors of secure aggregation, in privrank's one exception tree."""

from __future__ import annotations

from privrank.errors import DataError, PrivrankError

__all__ = ["ProtocolViolation", "SecAggAbort", "UpdateOutOfRange"]


class SecAggAbort(PrivrankError, RuntimeError):
    """The round cannot finish and releases nothing: too few clients survived (fewer than the
    threshold t of some secret's holders, or fewer than the configured minimum)."""


class ProtocolViolation(PrivrankError, PermissionError):
    """A client refuses a request that would break the protocol's privacy, e.g. a server that
    asks for both the self-mask share and the pairwise-mask-key share of the same peer."""


class UpdateOutOfRange(DataError):
    """A client's update has a coordinate outside the ring's clipping range (or is not finite).

    The update is refused, never silently clipped. Attributes name where it failed.

    Attributes:
        client_id: The client (``None`` when unknown).
        count: How many coordinates are out of range.
        index: The first such coordinate.
        value: Its value.
    """

    def __init__(
        self, message: str, *, client_id: int | None, count: int, index: int, value: float
    ) -> None:
        super().__init__(message)
        self.client_id = client_id
        self.count = count
        self.index = index
        self.value = value
