"""Request and response bodies of the HTTP API (strict pydantic models).

Every request model is frozen, forbids unknown fields and is strict (``"5"`` is not an int, ``1``
is not a bool), so a malformed request is answered with 422 naming the offending field. Sizes are
bounded (see :class:`Limits`) so no request can ask for unbounded work.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from privrank.serving.events import EARLIEST_EVENT_TIME, MAX_EVENT_CLOCK_SKEW, event_time_problem

__all__ = [
    "MAX_CANDIDATES",
    "MAX_EVENTS",
    "MAX_FILTER_IDS",
    "MAX_HISTORY",
    "MAX_K",
    "EventIn",
    "EventsRequest",
    "EventsResponse",
    "HistoryRecommendRequest",
    "ItemId",
    "ModelInfo",
    "ModelsResponse",
    "RankRequest",
    "RankResponse",
    "RecommendRequest",
    "RecommendResponse",
    "ScoredItem",
    "TokenRequest",
    "TokenResponse",
]

MAX_K = 1000
MAX_HISTORY = 10_000
MAX_FILTER_IDS = 100_000
MAX_CANDIDATES = 10_000
MAX_EVENTS = 1000

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)

Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Int = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
ItemId = Int | Text
"""An external id: an integer or a non-empty string (what the model was trained on)."""
UserId = Int | Text
K = Annotated[int, Field(ge=1, le=MAX_K, description="How many items to return.")]


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _plausible_time(value: datetime) -> datetime:
    """An aware event time inside the plausible window of :mod:`privrank.serving.events`."""
    problem = event_time_problem(value, _utc_now())
    if problem is not None:
        raise ValueError(problem)
    return value


class _Filters(BaseModel):
    model_config = _STRICT

    k: K = 10
    exclude_seen: bool = Field(
        default=True,
        description="Leave out items the user (or the history) already interacted with.",
    )
    exclude: list[ItemId] = Field(
        default_factory=list, max_length=MAX_FILTER_IDS, description="Item ids never to return."
    )
    allow: list[ItemId] | None = Field(
        default=None,
        max_length=MAX_FILTER_IDS,
        description="When given, only these item ids may be returned (an allow-list).",
    )


class RecommendRequest(_Filters):
    """Top-k items for a user the model knows (unknown users get popular items)."""

    user_id: UserId


class HistoryRecommendRequest(_Filters):
    """Top-k items for an ad-hoc history, used in memory only: never stored or logged."""

    history: list[ItemId] = Field(max_length=MAX_HISTORY)
    ignore_unknown_items: bool = Field(
        default=True, description="Skip history items the model does not know (else 422)."
    )


class RankRequest(BaseModel):
    """Order the caller's candidates for a known user or an ad-hoc history (exactly one)."""

    model_config = _STRICT

    candidates: list[ItemId] = Field(min_length=1, max_length=MAX_CANDIDATES)
    user_id: UserId | None = None
    history: list[ItemId] | None = Field(default=None, max_length=MAX_HISTORY)


class ScoredItem(BaseModel):
    """An item and its score (higher is better)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: int | str
    score: float


class RecommendResponse(BaseModel):
    """Recommended items, best first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    items: list[ScoredItem]


class RankResponse(BaseModel):
    """The known candidates ordered best first; candidates the model does not know apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_version: str
    items: list[ScoredItem]
    unknown: list[int | str]


class TokenRequest(BaseModel):
    """Mint a user token: a credential that may ask only about ``user_id``."""

    model_config = _STRICT

    user_id: UserId
    ttl_s: int = Field(
        default=3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds the token is valid (at most 7 days).",
    )


class TokenResponse(BaseModel):
    """A user token; send it as ``Authorization: Bearer <token>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: str
    expires_at: int = Field(description="When the token expires (seconds since the epoch).")


class EventIn(BaseModel):
    """One interaction event."""

    model_config = _STRICT

    event_id: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    ]
    user_id: UserId
    item_id: ItemId
    event_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "interaction"
    value: Annotated[float | None, AfterValidator(_finite)] = None
    timestamp: Annotated[
        datetime,
        Field(
            strict=False,
            description="ISO 8601 with a timezone, e.g. 2026-01-31T12:00:00Z; not before "
            f"{EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ} and at most {MAX_EVENT_CLOCK_SKEW.days} day "
            "after the server's clock.",
        ),
        AfterValidator(_plausible_time),
    ]


class EventsRequest(BaseModel):
    """A batch of events, stored in one transaction."""

    model_config = _STRICT

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    """How many events were stored now and how many were already stored (same event id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted: int
    duplicates: int


class ModelInfo(BaseModel):
    """A model version in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    model: str | None
    active: bool


class ModelsResponse(BaseModel):
    """The versions in the store and facts about the active one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: dict | None
    versions: list[ModelInfo]
