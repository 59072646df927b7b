"""``POST /v1/recommend/reranked``: the two-stage recommend (retrieval → features → ranker).

The served model must be a ``two-stage`` model
(:class:`~privrank.ranking.two_stage.TwoStage`). One request runs its three stages on the
user's history (a known user's training history, or the ad-hoc ``history`` sent; an unknown user
without one gets the retrievers' cold-start answer):

1. *retrieval*: every retriever scores the catalogue; their top unseen items merge into ``N``
   candidates;
2. *features*: the features of each (user, candidate);
3. *ranker*: the learning-to-rank model orders the candidates.

Each stage's wall time goes to ``/metrics`` (histogram ``privrank_two_stage_stage_seconds``,
label ``stage``). **Latency budget**: the three stages run as **one job** on the compute thread
(below). Retrieval and features are handed to the event loop as soon as they are done; the
ranker starts right after them in the same job, and the loop waits for it at most
``ranker_budget_ms`` from the end of the features. When retrieval and features (with the time
the request queued for the thread) already used the request's ``total_budget_ms``, the ranker
does not run at all (so a request that queued too long costs no ranker time). Past its budget
the answer is the candidates in *retrieval order* (``"fallback": true`` in the answer) and the
counter ``privrank_two_stage_ranker_fallbacks`` (label ``reason``: ``timeout`` or
``no_time_left``) goes up; the late ranker's result is dropped. One job instead of two (the
ranker once had a job of its own) saves a hand-over to the thread per request, and a started
request's ranker no longer queues behind other requests' retrieval.

**Where a request's time goes** (the profile is in BENCHMARKS.md, "Two-stage serving, round 3"):

- The stages run on **one compute thread** per server process, first in first out: requests
  queue in front of it instead of sharing the interpreter lock among the thread pool's
  workers (a py-spy profile under load showed a dozen AnyIO threads, each in some request's
  stages).
- That thread runs its native libraries **single-threaded**: OpenBLAS (process-wide, set when
  the thread starts) and OpenMP (this thread; LightGBM's predict is given ``num_threads=1``).
  Concurrency comes from the server's worker processes; a parallel region per request only
  made its threads wait for each other (LightGBM's predict of 300 rows, measured once on the
  loaded shared machine: median 13.5 ms with its default threads, 0.26 ms with one; at a
  quieter moment 0.35 vs 0.27 ms).
- Well-formed requests with a cached API key are answered by the hot path
  (:mod:`privrank.serving.hot_path`) with the same checks, and the answer is encoded by orjson:
  FastAPI's routing, dependency resolution and response encoding cost about as much as the
  three stages.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import threadpoolctl
from fastapi import FastAPI, Request
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from privrank.models import Query
from privrank.ranking.two_stage import TwoStage
from privrank.serving.auth import Principal
from privrank.serving.errors import ConflictError, PermissionDeniedError

__all__ = ["RerankedAnswer", "RerankedRequest", "add_reranked_routes"]

_STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)


class RerankedRequest(BaseModel):
    """Top-k of a known user (``user_id``) or of an ad-hoc ``history``, re-ranked.

    Attributes:
        user_id: A user of the model (its training history is used).
        history: An ad-hoc history of item ids (used in memory only), instead of ``user_id``.
        k: Items to return.
        ranker_budget_ms: The ranker's budget for this request (default: the server's).
        total_budget_ms: The whole request's budget: the ranker is skipped when retrieval and
            features leave none of it (default: the server's).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | int | None = None
    history: list[str | int] | None = Field(default=None, max_length=10_000)
    k: int = Field(default=10, ge=1, le=1000)
    ranker_budget_ms: float | None = Field(default=None, gt=0, le=10_000)
    total_budget_ms: float | None = Field(default=None, gt=0, le=10_000)


class _Budget(BaseModel):
    model_config = ConfigDict(frozen=True)

    ranker_ms: float = 20.0
    total_ms: float = 25.0


class _Metrics:
    def __init__(self, registry: Any) -> None:
        self.stage = Histogram(
            "privrank_two_stage_stage_seconds",
            "Wall time of each stage of a two-stage recommend (retrieval, features, ranker).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=registry,
        )
        self.fallbacks = Counter(
            "privrank_two_stage_ranker_fallbacks",
            "Two-stage answers given in retrieval order because the ranker was over budget.",
            ["reason"],
            registry=registry,
        )


def _query(model: TwoStage, body: RerankedRequest) -> Query:
    if body.history is not None:
        return model.history_query([body.history], ignore_unknown_items=True)
    if body.user_id is None:
        raise ConflictError("send a user_id or a history")
    codes = model.user_codes([body.user_id])
    if codes[0] < 0 or np.diff(model.history_indptr_)[codes[0]] == 0:
        return Query.histories([[]])  # unknown user: the retrievers' cold-start answer
    return Query.users(codes)


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None = None) -> None:
    """Resolve ``future`` on its loop (scheduled from the compute thread); a future already
    given up (its request cancelled) is left alone."""
    if future.done():
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


def _single_native_thread() -> None:
    """Initializer of the compute thread: one BLAS thread (process-wide) and one OpenMP thread
    (this thread)."""
    threadpoolctl.threadpool_limits(limits=1)


class RerankedAnswer:
    """The answer of ``POST /v1/recommend/reranked`` (the FastAPI route and the hot path call
    it with the same principal and body; see the module docstring).

    Args:
        budget: ``ranker_ms`` and ``total_ms`` (defaults 20 and 25).
    """

    def __init__(self, budget: dict[str, float] | None = None) -> None:
        self.limits = _Budget(**(budget or {}))
        self.executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="privrank-two-stage",
            initializer=_single_native_thread,
        )
        self._metrics: dict[int, _Metrics] = {}

    def close(self) -> None:
        """Stop the compute thread (the server's shutdown): queued stages are cancelled, a
        running one finishes on its own and its result is dropped."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _metrics_of(self, state: Any) -> _Metrics:
        registry = state.metrics.registry
        if id(registry) not in self._metrics:
            self._metrics[id(registry)] = _Metrics(registry)
        return self._metrics[id(registry)]

    async def __call__(self, state: Any, who: Principal, body: RerankedRequest) -> Response:
        served = state.store.current
        model = served.model
        if not isinstance(model, TwoStage):
            raise ConflictError(
                f"re-ranked recommend needs a two-stage model; the served model is a "
                f"{model.name!r} model"
            )
        if body.user_id is not None and body.history is None and not who.may_ask_for(body.user_id):
            raise PermissionDeniedError(
                "this credential may not ask about this user: asking about any user id needs "
                "scope 'service'; a user token may ask only about the user it was minted for"
            )
        observed = self._metrics_of(state)
        started = time.perf_counter()
        ranker_budget = (body.ranker_budget_ms or self.limits.ranker_ms) / 1000
        total_budget = (body.total_budget_ms or self.limits.total_ms) / 1000
        loop = asyncio.get_running_loop()
        first: asyncio.Future[tuple[Any, float, float, float, float]] = loop.create_future()

        def stages() -> tuple[np.ndarray, float] | None:
            """The request's one job on the compute thread: retrieval and features, handed to
            the loop as soon as they are done, then the ranker if time is left."""
            try:
                query = _query(model, body)
                t0 = time.perf_counter()
                scores = model.retrieve(query)
                t1 = time.perf_counter()
                candidates = model.featurize(query, scores)
                t2 = time.perf_counter()
            except BaseException as exc:  # raised to the request by its awaited ``first``
                loop.call_soon_threadsafe(_settle, first, None, exc)
                return None
            wait = min(ranker_budget, total_budget - (t2 - started))
            loop.call_soon_threadsafe(_settle, first, (candidates, t1 - t0, t2 - t1, t2, wait))
            if wait <= 0:
                return None  # no time left: the ranker does not run
            ranked = model.rank(candidates, threads=1)[0]
            return ranked, time.perf_counter() - t2

        job = asyncio.wrap_future(self.executor.submit(stages))
        candidates, retrieval_s, features_s, features_done, wait = await first
        observed.stage.labels("retrieval").observe(retrieval_s)
        observed.stage.labels("features").observe(features_s)
        items, valid = candidates.items[0], candidates.items[0] >= 0
        ranked: np.ndarray | None = None
        reason = None
        if wait <= 0:
            reason = "no_time_left"
        else:
            left = features_done + wait - time.perf_counter()
            try:
                done = await asyncio.wait_for(job, timeout=max(left, 0.0))
            except TimeoutError:
                reason = "timeout"  # the ranker's late result is dropped
            else:
                assert done is not None
                ranked, ranker_s = done
                observed.stage.labels("ranker").observe(ranker_s)
                if ranker_s > wait:  # done, but after its budget (the loop saw it first)
                    ranked, reason = None, "timeout"
        if ranked is None:
            observed.fallbacks.labels(reason).inc()
            order = np.flatnonzero(valid)[: body.k]  # retrieval order
        else:
            order = np.argsort(-np.where(valid, ranked, -np.inf), kind="stable")[: body.k]
            order = order[valid[order]]
        ids = model.item_ids_.take(items[order]).to_pylist()
        values = (
            [float(-rank) for rank in range(1, len(order) + 1)]
            if ranked is None
            else [float(v) for v in ranked[order]]
        )
        payload = {
            "model_version": served.version,
            "items": [{"item_id": i, "score": v} for i, v in zip(ids, values, strict=True)],
            "fallback": ranked is None,
            "stages_ms": {
                "retrieval": 1000 * retrieval_s,
                "features": 1000 * features_s,
                "total": 1000 * (time.perf_counter() - started),
            },
        }
        return Response(orjson.dumps(payload), media_type="application/json")


def add_reranked_routes(
    app: FastAPI, reader: Any, budget: dict[str, float] | None = None
) -> RerankedAnswer:
    """Register ``POST /v1/recommend/reranked`` on ``app`` (``reader``: the read-scope
    dependency; ``budget``: ``ranker_ms`` and ``total_ms``, defaults 20 and 25).

    Returns:
        The route's answer, for the hot path (:mod:`privrank.serving.hot_path`).
    """
    answer = RerankedAnswer(budget)

    @app.post("/v1/recommend/reranked", tags=["recommend"])
    async def recommend_reranked(
        request: Request, body: RerankedRequest, who: Principal = reader
    ) -> Response:
        """Two-stage recommend: retrieval → features → ranker, with a ranker latency budget."""
        return await answer(request.app.state.serving, who, body)

    return answer
