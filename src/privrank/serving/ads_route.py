"""``POST /v1/ads/rank``: rank candidate ads by eCPM = bid × calibrated pCTR and run the auction.

The body names the context of the impression (coarse user segment, site or app, device, hour)
and up to ``MAX_CANDIDATES`` candidate ads with their bids per click; the answer lists the
winners in slot order with their eCPM, pCTR and price per click, and how many candidates met
the reserve (:func:`privrank.ranking.auction.run_auction`). pCTR comes from the served click
model (``privrank serve --ads-model DIR``, a :class:`~privrank.ranking.click_scorer.ClickScorer`:
the LightGBM model of ``privrank ads train``), scored for every candidate at the top slot
(position 0): the position-normalised click probability the auction compares.

**No user data in the request or the log.** The request carries no user id: only the coarse
segment the client chose to send. Every decision is logged (logger
``privrank.serving.ads.decisions``, one JSON object per request) with a random decision id, the
model's checksum, the rule, the reserve, the number of candidates and of eligible ones, and the
winners' ad ids, slots, eCPMs and prices: nothing about the user or the context (no segment,
site, device or hour).

Authentication and rate limits are those of every ``/v1`` route (``read`` scope).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from privrank.ranking.auction import run_auction
from privrank.ranking.click_scorer import ClickScorer
from privrank.serving.errors import ConflictError

__all__ = ["MAX_CANDIDATES", "AdsRankRequest", "add_ads_routes", "load_click_scorer"]

#: The most candidate ads one request may send.
MAX_CANDIDATES = 1000
decisions = logging.getLogger("privrank.serving.ads.decisions")


class AdContext(BaseModel):
    """Where and to whom (coarsely) the ad would be shown."""

    model_config = ConfigDict(extra="forbid")

    user_segment: int = Field(ge=0, description="The user's coarse segment (not an id).")
    context_id: int = Field(ge=0, description="Site or app.")
    device: int = Field(ge=0, le=255)
    hour: int = Field(ge=0, le=23)


class CandidateAd(BaseModel):
    """One candidate ad and its bid per click."""

    model_config = ConfigDict(extra="forbid")

    ad_id: int = Field(ge=0)
    ad_category: int = Field(ge=0)
    campaign_id: int = Field(ge=0)
    advertiser_id: int = Field(ge=0)
    bid: float = Field(ge=0, allow_inf_nan=False, description="Bid per click.")


class AdsRankRequest(BaseModel):
    """``POST /v1/ads/rank``."""

    model_config = ConfigDict(extra="forbid")

    context: AdContext
    candidates: list[CandidateAd] = Field(min_length=1, max_length=MAX_CANDIDATES)
    slots: int = Field(default=1, ge=1, le=100)
    reserve: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="eCPM floor.")
    rule: Literal["first", "second"] = "second"


def load_click_scorer(directory: Path) -> tuple[ClickScorer, str]:
    """The click model of ``directory`` and its checksum (for the decision log): a CTR ranker
    directory (``privrank train --model deepfm``, ``privrank ads train --mechanism dp-sgd``),
    a label-sums logistic click model (``privrank ads train --mechanism label-sums``) or a
    label-DP LightGBM click model."""
    from privrank.ranking.ctr_click import CTRClickScorer, is_ranker_dir
    from privrank.ranking.gbdt_click import GBDTClickModel
    from privrank.ranking.label_sums_logistic import LabelSumsLogistic, is_label_sums_dir

    if is_ranker_dir(directory):
        digest = hashlib.sha256((directory / "checksums.json").read_bytes()).hexdigest()
        return CTRClickScorer.load(directory), digest[:16]
    if is_label_sums_dir(directory):
        sums = LabelSumsLogistic.load(directory)
        return sums, str(LabelSumsLogistic.metadata(directory)["sha256"])[:16]

    model = GBDTClickModel.load(directory)
    return model, str(GBDTClickModel.metadata(directory)["sha256"])[:16]


def _features(request: AdsRankRequest) -> dict[str, np.ndarray]:
    n = len(request.candidates)
    c = request.context
    columns: dict[str, list[int]] = {
        "ad_id": [],
        "ad_category": [],
        "campaign_id": [],
        "advertiser_id": [],
    }
    for ad in request.candidates:
        columns["ad_id"].append(ad.ad_id)
        columns["ad_category"].append(ad.ad_category)
        columns["campaign_id"].append(ad.campaign_id)
        columns["advertiser_id"].append(ad.advertiser_id)
    out = {name: np.asarray(values) for name, values in columns.items()}
    out["user_segment"] = np.full(n, c.user_segment)
    out["context_id"] = np.full(n, c.context_id)
    out["device"] = np.full(n, c.device)
    out["hour"] = np.full(n, c.hour)
    out["position"] = np.zeros(n, dtype=np.int64)
    return out


def rank_ads(scorer: ClickScorer, checksum: str, request: AdsRankRequest) -> dict[str, Any]:
    """Score, run the auction, log the decision (without user data), answer."""
    started = time.perf_counter()
    pctr = np.asarray(scorer.predict_ctr(_features(request)), dtype=np.float64)
    bids = np.fromiter((ad.bid for ad in request.candidates), np.float64, len(request.candidates))
    result = run_auction(
        bids, pctr, reserve=request.reserve, slots=request.slots, rule=request.rule
    )
    winners = [
        {
            "ad_id": request.candidates[i].ad_id,
            "slot": slot + 1,
            "ecpm": float(result.ecpm[i]),
            "pctr": float(pctr[i]),
            "price": float(result.prices[slot]),
        }
        for slot, i in enumerate(result.winners)
    ]
    decision_id = uuid.uuid4().hex
    if decisions.isEnabledFor(logging.INFO):
        decisions.info(
            json.dumps(
                {
                    "decision_id": decision_id,
                    "model": checksum,
                    "rule": request.rule,
                    "reserve": request.reserve,
                    "candidates": len(request.candidates),
                    "eligible": result.eligible,
                    "winners": [
                        {k: w[k] for k in ("ad_id", "slot", "ecpm", "price")} for w in winners
                    ],
                    "ms": round(1000 * (time.perf_counter() - started), 3),
                }
            )
        )
    return {
        "decision_id": decision_id,
        "winners": winners,
        "eligible": result.eligible,
        "rule": request.rule,
        "model": checksum,
    }


def add_ads_routes(app: FastAPI, reader: Any, ads_model: Path | None) -> None:
    """Register ``POST /v1/ads/rank`` on ``app``; ``reader`` is the app's ``read``-scope
    dependency (authentication, scope and rate limit, as for every ``/v1`` route). Without an
    ads model the route answers 409."""
    loaded = load_click_scorer(ads_model) if ads_model is not None else None

    @app.post("/v1/ads/rank", tags=["ads"], dependencies=[reader])
    async def ads_rank(body: AdsRankRequest) -> JSONResponse:
        """Rank candidate ads by eCPM and run the auction (first or second price, reserve)."""
        if loaded is None:
            raise ConflictError("no ads model is served; start with `privrank serve --ads-model`")
        return JSONResponse(rank_ads(loaded[0], loaded[1], body))
