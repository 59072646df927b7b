r"""The two-stage recommender: retrievers propose candidates, a learning-to-rank model orders them.

**Scoring** a query (a known user or an ad-hoc history :math:`H`): every retriever scores all
items; their top unseen items are merged into ``N`` candidates
(:func:`~privrank.ranking.two_stage._top_lists.merge_top_lists`); each candidate gets the features
of :mod:`~privrank.ranking.two_stage._features`; the ranker scores them. The returned score row
holds the ranker's scores on the candidates and, below every one of them, a constant floor on
the other items (they are never recommended ahead of a candidate), so the model sits in the
full-ranking protocols like any other.

**Training** never sees a test part. From the training data alone:

1. *carve* each user's labels: a random ``label_fraction`` of their training items (``carve =
   random``) or their last ones in time order (``carve = last``); the rest is the *fit part*.
   ``carve = auto`` (the default) takes the shape of the test the fit is told of
   (``FitOptions.test_shape``): ``last`` for next-item protocols, else ``random``; a config
   without ``retrievers`` gets the default set of that shape (SASRec, EASE-sparse and a
   session ItemKNN for next-item data, EASE and iALS for a random holdout;
   ``default_retrievers``);
2. fit every retriever on the fit part, and build one query group per user with labels: the
   ``N`` merged candidates of the fit-part history, label 1 when the candidate is one of the
   user's carved items (the *candidate recall@N* of the merged set is measured here);
3. train the ranker on these groups, early-stopping on the groups of a held-out share of the
   users (``ranker_validation_users``); groups without a relevant candidate are left out of
   both (they carry no LambdaRank gradient and a constant NDCG, and are most groups of a
   leave-one-out carve: on Beauty they made the ranker's fit the longest stage). A
   LambdaMART ranker starts from the order of the retriever whose ranks are best on the
   training groups (``ranker_base``): its trees learn corrections to that order, their number
   (zero included) is chosen on the validation groups, so the pipeline falls back to its best
   retriever rather than fall below it. With ``ranker_base_blend`` the start is a linear blend
   of every retriever's relative score instead (the best one's at weight 1, the others' by
   coordinate ascent on NDCG@10 of the training groups): on ML-100K, EASE and iALS rank
   differently enough that their blend beats either, which no tree on rank features found;
4. refit the retrievers on the whole training data (``refit``), so serving uses everything.

Per-stage wall times (retriever fits, candidate generation and features, ranker fit; and while
scoring: retrieval, features, ranking) are kept in :meth:`TwoStage.stage_seconds` and reported
by the evaluation runner.

**Recent items.** A retriever spec with ``recent: n`` scores only the last ``n`` items of
each history (a session signal for next-item protocols); it shares the fitted model of an
earlier spec with the same name, params and seed.

**Seed ensembles.** A retriever spec's ``seed`` is added to the fit's seed: a model that draws
random numbers (Mult-VAE, iALS, BPR, SASRec) listed with seeds 0, 1, 2 is three fits, each with
its own feature columns, which a blended base can weigh together (on eight validation carves
of ML-100K's training ratings a Mult-VAE of three seeds ranks 1-13 % below EASE by NDCG@10,
one seed 5-17 % below it; BENCHMARKS.md, session 15).

**Content similarity** is one more retriever: ``{"name": "content-knn"}`` (the cosine of
each item's sentence embedding to the history's, :class:`~privrank.models.ContentKNN`), with
``"propose": false`` to add only its feature columns. Its item text comes from the catalogue
(ML-100K's titles and genres) or an item-text TSV (``params.item_text``); a data set without
text (Beauty, Video: integer ids only) is refused before anything is fitted. ``{"name":
"genre-profile", "propose": false}`` adds the cosine of the history's genre counts to each
candidate's genres (:class:`~privrank.models.GenreProfile`; ML-100K's ``u.item`` flags), the
same way.

**Privacy** (``fit`` with a :class:`~privrank.privacy.spec.PrivacySpec`; ``privrank train
--model two-stage --epsilon E``). The unit of privacy is one user's entire history: the whole
fit is user-level (ε, δ)-DP, every stage that reads the training data being private and
composed (:mod:`~privrank.ranking.two_stage._private` states the split and the composition):

- the data are contribution-bounded first (``max_interactions_per_user``), and each user's
  labels are carved by a key that is a pure function of the seed, the user's code and the
  row's rank in the user's history (no other user's rows move it);
- every retriever is fitted by its own private fit (DP-EASE, DP-ItemKNN, DP-iALS, noisy
  most-popular counts, DP-SGD SASRec/Mult-VAE) on the fit part, and again on the whole data
  with ``refit``; a retriever without a private fit is refused before anything is read;
- the item table keeps only the noisy popularity a private retriever released (the first
  retriever's); the last-seen time and mean position are constants;
- the ranker must be ``listwise``: user-level DP-SGD (Opacus ghost clipping, one query group
  per user, each group's gradient clipped to ``clipping_norm``), with no feature
  standardisation, no early stopping and no validation users (data-dependent choices that
  would be unaccounted releases). The Poisson rate is ``b / n`` with ``n`` the number of
  label users' groups, treated as public as the number of users is throughout privrank;
- LambdaMART is refused: LightGBM has no per-user gradient clipping or noisy split finding,
  so a GBDT here has no user-level DP (DP-GBDT designs add noise to every split gain and leaf
  value and bound each user's rows per tree; none is built), and its base-order choice and
  tree count are read off validation data;
- the candidate recall and the group counts of a private fit are not recorded (they are exact
  statistics of the data); ``training_info_`` holds the budget split and the ranker's facts.

The run spends (ε, δ) from the ledger once, in the workflow's fit-and-spend (the parts are
not charged separately).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrank.data._ordering import PURPOSE_TWO_STAGE_CARVE, random_keys, rank_within_user
from privrank.data.interactions import Interactions
from privrank.data.item_text import load_item_text
from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError, DataError
from privrank.models._artifact import Artifact
from privrank.models.base import FitOptions, Query, Recommender, create_model, register
from privrank.models.capabilities import PlannedPrivateFit, StagedModel
from privrank.ranking.ltr._base import LTRFitOptions, LTRRanker
from privrank.ranking.ltr._ndcg import group_ndcg
from privrank.ranking.ltr.listwise import ListwiseRanker
from privrank.ranking.ltr.registry import create_ranker, ranker_from_state
from privrank.ranking.two_stage._config import (
    ANY_DEFAULT_RETRIEVERS,
    BLEND_WEIGHTS,
    RetrieverSpec,
    TwoStageConfig,
    TwoStagePrivateConfig,
)
from privrank.ranking.two_stage._features import (
    Candidates,
    feature_names,
    item_features,
    rank_features,
)
from privrank.ranking.two_stage._private import (
    CalibratedSplit,
    calibrate_budget,
    compose_fit,
    private_item_table,
    split_budget,
)

__all__ = ["TwoStage"]

_FLOOR_GAP = 1.0

#: Retrievers that read item text (titles, genres) and are refused on data sets without it.
_TEXT_RETRIEVERS = ("content-knn", "genre-profile")


def concat_groups(parts: list[QueryGroups]) -> QueryGroups:
    """The groups of ``parts`` one after the other (every part has the same features)."""
    if len(parts) == 1:
        return parts[0]
    return QueryGroups(
        features=np.concatenate([p.features for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        group_sizes=np.concatenate([p.group_sizes for p in parts]),
        feature_names=parts[0].feature_names,
    )


@register("two-stage")
class TwoStage(Recommender, StagedModel):
    """Retrieval → learning-to-rank as one recommender (see the module docstring).

    Attributes:
        retrievers_: The fitted first-stage models, in config order.
        ranker_: The fitted :class:`~privrank.ranking.ltr.LTRRanker`.
        item_table_: ``(n_items, 3)`` item features (popularity, last seen, mean position).
        training_info_: Facts of the fit: candidate recall@N on the carved labels, groups,
            the ranker's validation NDCG.
    """

    Config = TwoStageConfig
    config: TwoStageConfig
    seeded = True
    supports_privacy = True
    supports_private_engine = False
    # It carves its ranker's labels from its own training rows and passes its retrievers no
    # validation split, so a protocol's validation part (each user's most recent item on a
    # leave-one-out protocol) is training data to it: without it every retriever, SASRec's
    # refit included, would train one item short of the same model evaluated alone.
    trains_on_validation_part = True
    PrivateConfig = TwoStagePrivateConfig

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        # What the user asked for; a fit resolves its data-dependent settings (retrievers,
        # carve) into ``config`` from the fit's test shape, so a second fit starts from this.
        self.requested_config: TwoStageConfig = self.config
        self._stage_times: dict[str, float] = defaultdict(float)

    # ---------------------------------------------------------------- capabilities
    @property
    def supports_fold_in(self) -> bool:  # type: ignore[override]
        retrievers = self.config.retrievers or ANY_DEFAULT_RETRIEVERS  # not yet resolved
        return all(create_model(r.name, r.params).supports_fold_in for r in retrievers)

    @property
    def retriever_specs(self) -> tuple[RetrieverSpec, ...]:
        """The retrievers of the fit: the config's, resolved (set by a fit or a load).

        Raises:
            ConfigError: The config leaves the retrievers to the test shape and the model has
                not been fitted yet.
        """
        specs = self.config.retrievers
        if specs is None:
            raise ConfigError(
                "two-stage: its retrievers follow the test shape and are chosen when it is "
                "fitted; fit it (or name them in the config) first"
            )
        return specs

    @property
    def user_state_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """The retrievers' per-user arrays (e.g. iALS user factors), emptied in a release."""
        if not hasattr(self, "retrievers_"):
            return ()
        return tuple(
            f"retriever{position}.model.{key}"
            for position, retriever in enumerate(self.retrievers_)
            for key in retriever.user_state_keys
        )

    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds spent in each stage since the fit (fit stages and scoring stages)."""
        return dict(self._stage_times)

    # ---------------------------------------------------------------- fit
    def _clear(self) -> None:
        """Forget the fit, and the config resolved for it: an unfitted model holds the
        requested config."""
        requested = self.requested_config
        super()._clear()
        self.config = self.requested_config = requested

    def _resolve_config(self, options: FitOptions, n_items: int) -> TwoStageConfig:
        """Set ``config`` to the requested config resolved for the fit's test shape and
        catalogue (:meth:`TwoStageConfig.resolved`: the default retrievers and carve of
        next-item or random-holdout data) and return it."""
        self.config = self.requested_config.resolved(options.test_shape, n_items)
        return self.config

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self._resolve_config(options, train.n_items)
        self._check_item_text(train)
        self._stage_times = defaultdict(float)
        if cfg.carves > 1 and cfg.carve != "random":
            chosen = " (carve = auto on a next-item protocol)" * (
                self.requested_config.carve == "auto"
            )
            raise ConfigError(
                f"two-stage: carves = {cfg.carves} needs carve = random (got {cfg.carve!r}"
                f"{chosen}): a last-items carve is the same every time"
            )
        parts: list[tuple[np.ndarray, QueryGroups]] = []
        recalls: list[float] = []
        for k in range(cfg.carves):
            fit_part, labels = self._carve(train, seed=cfg.seed + k)
            # The labels' features see the fit part only (popularity and recency that counted
            # the carved items would leak the labels into the features).
            self.item_table_ = self._item_table(fit_part)
            started = time.perf_counter()
            retrievers = self._fit_retrievers(fit_part, options)
            self._stage_times["fit.retrievers"] += time.perf_counter() - started
            carve_users, carve_groups, carve_recall = self._label_groups(
                retrievers, fit_part, labels
            )
            parts.append((carve_users, carve_groups))
            recalls.append(carve_recall)
        recall = float(np.mean(recalls))
        users = np.unique(np.concatenate([u for u, _ in parts]))
        groups = concat_groups([g for _, g in parts])
        group_users = np.concatenate([u for u, _ in parts])
        # The fit/validation draw is over users (one stream, as with one carve): every group of
        # a validation user validates.
        rng = np.random.default_rng(cfg.seed)
        n_valid_users = round(cfg.ranker_validation_users * users.size)
        order = rng.permutation(users.size)
        valid_users = users[order[:n_valid_users]]
        is_valid = np.isin(group_users, valid_users)
        valid, fit = np.flatnonzero(is_valid), np.flatnonzero(~is_valid)
        # A group without a relevant candidate has no pair to order: its LambdaRank gradients
        # are zero and its NDCG is the constant 1 (a shift of the mean that moves no choice), so
        # it only costs the ranker time and memory (most groups of a leave-one-out carve).
        relevant = np.add.reduceat(groups.labels, groups.offsets[:-1]) > 0
        valid, fit = valid[relevant[valid]], fit[relevant[fit]]
        n_valid = valid.size
        started = time.perf_counter()
        params = cfg.resolved_ranker_params()
        base = self._base_retriever(groups.take(fit)) if n_valid else None
        blend: dict[str, float] = {}
        if cfg.ranker == "lambdamart" and cfg.ranker_base and base is not None:
            if cfg.ranker_base_blend and "base_feature" not in params:
                base, blend = self._base_blend(groups.take(fit), base)
                params.update(base_feature=base, base_weight=1.0, base_blend=blend)
            params.setdefault("base_feature", base)
            params.setdefault("base_weight", -1.0)
        ranker = create_ranker(cfg.ranker, params)
        ranker.fit(
            groups.take(fit),
            groups.take(valid) if n_valid else None,
            LTRFitOptions(seed=options.seed, threads=options.threads),
        )
        self._stage_times["fit.ranker"] += time.perf_counter() - started
        self.ranker_: LTRRanker = ranker
        self.training_info_ = {
            "label_users": int(users.size),
            "carves": cfg.carves,
            "ranker_groups": {"fit": int(fit.size), "validation": int(valid.size)},
            "candidate_recall": recall,
            "base_retriever": base,
            "base_blend": blend,
            "ranker": ranker.info_,
        }
        self._report(1, 2, **{f"candidate_recall@{cfg.candidates}": recall})
        self.item_table_ = self._item_table(train)
        if cfg.refit:
            started = time.perf_counter()
            retrievers = self._fit_retrievers(train, options)
            self._stage_times["fit.retrievers_refit"] += time.perf_counter() - started
        self.retrievers_ = retrievers
        self._report(2, 2)

    def _check_item_text(self, train: Interactions) -> None:
        """Refuse, before anything is fitted, a ``content-knn`` or ``genre-profile`` retriever
        whose item text cannot be had (a data set without titles or genres, such as Beauty's
        integer ids).

        Raises:
            DataError: The retriever's text source (its ``item_text``, else the training
                data's name) has no item text; the message names the retriever.
        """
        for position, spec in enumerate(self.retriever_specs):
            if spec.name not in _TEXT_RETRIEVERS:
                continue
            source = spec.params.get("item_text") or train.metadata.name
            try:
                load_item_text(str(source))
            except DataError as exc:
                raise DataError(
                    f"two-stage retriever r{position} ({spec.name}) needs item text: {exc}",
                    field=f"retrievers[{position}].params.item_text",
                    value=source,
                    expected="a catalog data set with item text (ml-100k) or an item-text TSV",
                ) from exc

    def _base_retriever(self, groups: QueryGroups) -> str:
        """The ``log_rank`` column of the proposing retriever with the best NDCG@10 on
        ``groups`` (the ranker's training groups; ties: the earlier retriever)."""
        names = list(groups.feature_names)
        best, best_ndcg = "", -np.inf
        for position, spec in enumerate(self.retriever_specs):
            if not spec.propose:
                continue
            column = f"r{position}.{spec.name}.log_rank"
            ndcg = group_ndcg(
                -groups.features[:, names.index(column)], groups.labels, groups.group_sizes, 10
            )
            if ndcg > best_ndcg:
                best, best_ndcg = column, ndcg
        return best

    def _base_blend(self, groups: QueryGroups, base: str) -> tuple[str, dict[str, float]]:
        """The blended base order (``ranker_base_blend``): the ``relative_score`` column of
        the retriever of ``base`` (its ``log_rank`` column), and the weights of the other
        retrievers' ``relative_score`` columns, by coordinate ascent on NDCG@10 of ``groups``
        (two sweeps over :data:`~privrank.ranking.two_stage._config.BLEND_WEIGHTS` in config
        order; a weight changes only when NDCG@10 rises, so ties keep the smaller blend)."""
        names = list(groups.feature_names)
        head = base.removesuffix(".log_rank") + ".relative_score"
        others = [
            f"r{position}.{spec.name}.relative_score"
            for position, spec in enumerate(self.retriever_specs)
            if f"r{position}.{spec.name}.relative_score" != head
        ]
        columns = {c: groups.features[:, names.index(c)].astype(np.float64) for c in others}
        start = groups.features[:, names.index(head)].astype(np.float64)
        weights = dict.fromkeys(others, 0.0)

        def ndcg(w: dict[str, float]) -> float:
            score = start + sum(v * columns[c] for c, v in w.items() if v)
            return group_ndcg(score, groups.labels, groups.group_sizes, 10)

        best = ndcg(weights)
        for _ in range(2):
            for column in others:
                for value in BLEND_WEIGHTS:
                    trial = {**weights, column: value}
                    got = ndcg(trial)
                    if got > best:
                        best, weights = got, trial
        return head, {c: v for c, v in weights.items() if v}

    def _distinct_retrievers(self) -> int:
        """Number of distinct retriever fits (specs with the same name and params share one)."""
        return len({self._retriever_key(spec) for spec in self.retriever_specs})

    @staticmethod
    def _retriever_key(spec: Any) -> str:
        return json.dumps([spec.name, spec.params, spec.seed], sort_keys=True, default=str)

    def _fit_retrievers(
        self, data: Interactions, options: FitOptions, privacy: tuple[Any, ...] = ()
    ) -> list[Recommender]:
        """Every retriever fitted on ``data``, in config order; specs with the same name,
        params and seed (e.g. one on the whole history, one on its ``recent`` items) share one
        fit, seeded ``options.seed + spec.seed``. ``privacy``: one spec per distinct fit, in
        order of first appearance (private fits)."""
        fitted: dict[str, Recommender] = {}
        out = []
        for spec in self.retriever_specs:
            key = self._retriever_key(spec)
            if key not in fitted:
                model = create_model(spec.name, spec.params)
                part = privacy[len(fitted)] if privacy else None
                fitted[key] = model.fit(
                    data,
                    FitOptions(
                        seed=options.seed + spec.seed,
                        threads=options.threads,
                        privacy=part,
                        test_shape=options.test_shape,  # e.g. SASRec's own early-stopping carve
                    ),
                )
            out.append(fitted[key])
        return out

    def _item_table(self, data: Interactions) -> np.ndarray:
        indptr, items = data.sequences()
        stamps = data.timestamps() if data.has_timestamps else None
        ordered = None if stamps is None else np.asarray(stamps)[data.sorted_order()]
        return item_features(indptr, items.astype(np.int64), ordered, self.n_items_)

    def _carve(
        self, train: Interactions, per_user: bool = False, seed: int | None = None
    ) -> tuple[Interactions, sp.csr_matrix]:
        """The fit part (rows of ``train``) and the ``n_users × n_items`` carved labels.

        ``per_user`` (a private fit): a random carve draws each row's key from ``(seed, user
        code, the row's rank in the user's history)`` alone, so adding or removing a user
        changes no other user's carve (the plain carve draws keys in one stream over all rows).
        ``seed`` (default the config's) seeds a plain random carve.
        """
        cfg = self.config
        seed = cfg.seed if seed is None else seed
        order = train.sorted_order()  # rows grouped by user, time-ordered
        users = train.users()[order]
        counts = np.bincount(users, minlength=train.n_users)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.arange(len(order)) - np.repeat(starts, counts)
        n_labels = np.where(counts >= 2, np.maximum(1, np.round(cfg.label_fraction * counts)), 0)
        n_labels = np.minimum(n_labels, counts - 1).astype(np.int64)
        if cfg.carve == "last":
            is_label = position >= np.repeat(counts - n_labels, counts)
        else:
            if per_user:
                key = random_keys(
                    cfg.seed, PURPOSE_TWO_STAGE_CARVE, users, rank_within_user(users, counts)
                )
            else:
                key = np.random.default_rng(seed).random(len(order))
            # rank of each row's random key within its user: the smallest n_labels are labels
            within = np.lexsort((key, users))
            rank = np.empty(len(order), dtype=np.int64)
            rank[within] = np.arange(len(order)) - np.repeat(starts, counts)
            is_label = rank < np.repeat(n_labels, counts)
        label_rows = order[is_label]
        labels = sp.csr_matrix(
            (
                np.ones(label_rows.size, dtype=np.float32),
                (train.users()[label_rows], train.items()[label_rows]),
            ),
            shape=(train.n_users, train.n_items),
        )
        labels.sum_duplicates()
        labels.data[:] = 1.0
        return train.take(np.sort(order[~is_label])), labels

    def _label_groups(
        self, retrievers: list[Recommender], fit_part: Interactions, labels: sp.csr_matrix
    ) -> tuple[np.ndarray, QueryGroups, float]:
        """The ranker's training groups: for each user with carved labels, the candidates the
        retrievers propose from the user's fit-part history, their features, and whether each
        is one of the user's carved items (timed as ``fit.candidates_features``).

        Returns:
            The codes of the label users with a non-empty group, their groups (one a user, in
            that order), and the candidate recall of the carved items.
        """
        started = time.perf_counter()
        users = np.flatnonzero(np.diff(labels.indptr) > 0)
        indptr, items = fit_part.sequences()
        history = Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64)).take(users)
        groups, recall, kept = self._candidate_groups_kept(retrievers, history, labels[users])
        users = users[kept]
        self._stage_times["fit.candidates_features"] += time.perf_counter() - started
        return users, groups, recall

    def _candidate_groups(
        self, retrievers: list[Recommender], history: Query, labels: sp.csr_matrix
    ) -> tuple[QueryGroups, float]:
        """The non-empty candidate groups of ``history`` and the candidate recall of ``labels``."""
        groups, recall, _ = self._candidate_groups_kept(retrievers, history, labels)
        return groups, recall

    def _candidate_groups_kept(
        self, retrievers: list[Recommender], history: Query, labels: sp.csr_matrix
    ) -> tuple[QueryGroups, float, np.ndarray]:
        """:meth:`_candidate_groups`, and the rows of ``history`` whose group was kept."""
        features, targets, found, total = [], [], 0, 0
        for start in range(0, len(history), 512):
            rows = np.arange(start, min(start + 512, len(history)))
            sub = history.take(rows)
            candidates = self._candidates(retrievers, sub)
            truth = labels[rows].toarray()
            hit = np.take_along_axis(truth, np.maximum(candidates.items, 0), axis=1)
            hit = hit.astype(np.float32) * (candidates.items >= 0)
            found += int(hit.sum())
            total += int(truth.sum())
            valid = candidates.items >= 0
            for row in range(len(rows)):
                features.append(candidates.features[row][valid[row]])
                targets.append(hit[row][valid[row]])
        sizes = np.array([len(t) for t in targets], dtype=np.int64)
        groups = QueryGroups(
            features=np.concatenate(features),
            labels=np.concatenate(targets),
            group_sizes=sizes,
            feature_names=self._feature_names(),
        )
        keep = np.flatnonzero(sizes > 0)
        return groups.take(keep), found / max(total, 1), keep

    def _feature_names(self) -> tuple[str, ...]:
        return feature_names([r.name for r in self.retriever_specs])

    def _candidates(self, retrievers: list[Recommender], query: Query) -> Candidates:
        started = time.perf_counter()
        scores = self.retrieve(query, retrievers)
        self._stage_times["score.retrieval"] += time.perf_counter() - started
        started = time.perf_counter()
        candidates = self.featurize(query, scores)
        self._stage_times["score.features"] += time.perf_counter() - started
        return candidates

    # ---------------------------------------------------------------- the stages, one by one
    def retrieve(
        self, query: Query, retrievers: list[Recommender] | None = None
    ) -> list[np.ndarray]:
        """Stage 1: every retriever's ``(n, n_items)`` scores of the queries."""
        self._require_fitted()
        models = self.retrievers_ if retrievers is None else retrievers
        out = []
        for spec, model in zip(self.retriever_specs, models, strict=True):
            window = query if spec.recent is None else self._recent(query, spec.recent)
            out.append(np.asarray(model.score(window), dtype=np.float32))
        return out

    def _recent(self, query: Query, n: int) -> Query:
        """The last ``n`` items of each history of ``query`` (a users query: their training
        histories, which are in time order), as a history query."""
        codes = query.user_codes
        full = query if codes is None else self._training_histories(codes)
        indptr, items = full.ragged()
        ends = indptr[1:]
        starts = np.maximum(indptr[:-1], ends - n)
        lengths = ends - starts
        out_indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_indptr[1:])
        gather = np.repeat(starts - out_indptr[:-1], lengths) + np.arange(out_indptr[-1])
        return Query(indptr=out_indptr, items=np.asarray(items, dtype=np.int64)[gather])

    def featurize(self, query: Query, scores: list[np.ndarray]) -> Candidates:
        """Stage 2: the merged candidates of the queries and their features."""
        codes = query.user_codes
        histories = query if codes is None else self._training_histories(codes)
        indptr, items = histories.ragged()
        lengths = np.diff(indptr)
        eligible = np.ones((len(lengths), self.n_items_), dtype=bool)
        eligible[np.repeat(np.arange(len(lengths)), lengths), items] = False
        return rank_features(
            scores,
            [r.propose for r in self.retriever_specs],
            eligible,
            lengths,
            self.item_table_,
            self.config.candidates,
        )

    def rank(self, candidates: Candidates, threads: int | None = None) -> np.ndarray:
        """Stage 3: the ranker's ``(n, N)`` float32 scores (``-inf`` on padding; ``threads``:
        :meth:`~privrank.ranking.ltr.LTRRanker.score`)."""
        valid = candidates.items >= 0
        flat = self.ranker_.score(
            candidates.features.reshape(-1, candidates.features.shape[2]), threads=threads
        )
        return np.where(valid, flat.reshape(valid.shape), -np.inf).astype(np.float32)

    # ---------------------------------------------------------------- scoring
    def rerank(self, query: Query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates of each query, their ranker scores and their retrieval order.

        Returns:
            ``(items, ranker_scores, valid)``: ``(n, N)`` candidate codes in merged retrieval
            order (``-1`` pads), the ranker's float32 scores (``-inf`` on padding) and the
            mask of real candidates.
        """
        candidates = self._candidates(self.retrievers_, query)
        started = time.perf_counter()
        ranked = self.rank(candidates)
        self._stage_times["score.ranker"] += time.perf_counter() - started
        return candidates.items, ranked, candidates.items >= 0

    def _score_query(self, query: Query) -> np.ndarray:
        items, ranked, valid = self.rerank(query)
        out = np.empty((len(query), self.n_items_), dtype=np.float32)
        for row in range(len(query)):
            got = ranked[row][valid[row]]
            floor = (float(got.min()) if got.size else 0.0) - _FLOOR_GAP
            out[row] = floor
            out[row, items[row][valid[row]]] = got
        return out

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self._score_query(Query.users(user_codes))

    def _score_histories(self, histories: Query) -> np.ndarray:
        return self._score_query(histories)

    # ---------------------------------------------------------------- persistence
    def _artifact_info(self) -> dict[str, Any]:
        return {
            "ranker": self.ranker_.header(),
            "training": self.training_info_,
            "retrievers": [
                {
                    "name": r.name,
                    "n_users": r.n_users_,
                    "is_release": r.is_release_,
                    # a private retriever restores its private hyper-parameters from it
                    "privacy": None
                    if r.privacy_guarantee_ is None
                    else r.privacy_guarantee_.to_dict(),
                }
                for r in self.retrievers_
            ],
        }

    def _state(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "ranker_"):
            return dict(getattr(self, "_pending_state", {}))
        state: dict[str, np.ndarray] = {"item_table": self.item_table_}
        for position, retriever in enumerate(self.retrievers_):
            state[f"retriever{position}.popularity"] = retriever.item_popularity_
            for key, value in retriever._state().items():
                state[f"retriever{position}.model.{key}"] = np.asarray(value)
        for key, value in self.ranker_.state().items():
            state[f"ranker.{key}"] = value
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._pending_state = state

    def _restore(self, artifact: Any) -> None:
        super()._restore(artifact)
        state = self._pending_state
        info = artifact.header.get("info") or {}
        self.item_table_ = state["item_table"]
        if self.item_table_.shape != (self.n_items_, 3):
            raise ValueError("the item feature table does not match the vocabulary")
        retrievers = []
        for position, spec in enumerate(self.retriever_specs):
            prefix = f"retriever{position}."
            arrays: dict[str, np.ndarray] = {
                "base.history_indptr": self.history_indptr_,
                "base.history_items": self.history_items_,
                "base.item_popularity": state[prefix + "popularity"],
            }
            arrays.update(
                {
                    key[len(prefix) :]: value
                    for key, value in state.items()
                    if key.startswith(prefix + "model.")
                }
            )
            saved = (info.get("retrievers") or [{}] * (position + 1))[position]
            header = {
                "n_users": self.n_users_,
                "n_items": self.n_items_,
                "release": self.is_release_,
                "privacy": saved.get("privacy"),
            }
            retriever = create_model(spec.name, spec.params)
            retriever._restore(Artifact(header, arrays, self.user_ids_, self.item_ids_))
            retrievers.append(retriever)
        ranker_state = {k[len("ranker.") :]: v for k, v in state.items() if k.startswith("ranker.")}
        self.ranker_ = ranker_from_state(info["ranker"], ranker_state)
        if self.ranker_.n_features_ != len(self._feature_names()):
            raise ValueError("the ranker's features do not match the retrievers")
        self.retrievers_ = retrievers
        self.training_info_ = info.get("training", {})
        self._stage_times = defaultdict(float)
        del self._pending_state

    def check_privacy(self, spec: Any) -> None:
        """Refuse, before any data is read, a privacy spec the pipeline cannot honour.

        Raises:
            ConfigError: No contribution bound; a ``lambdamart`` ranker (no user-level DP for
                LightGBM here, see the module docstring); a retriever without a private fit.
        """
        spec.require_contribution_bound("two-stage's private fit")
        if self.config.ranker != "listwise":
            raise ConfigError(
                "two-stage: a private fit needs ranker='listwise' (user-level DP-SGD). "
                f"Got ranker={self.config.ranker!r}: LightGBM's LambdaMART has no user-level "
                "differential privacy here (no per-user clipping of its gradient statistics, "
                "no noisy split gains or leaf values, and its tree count and base order are "
                "chosen on validation data), so it is refused rather than trained without the "
                "guarantee."
            )
        # Not yet resolved (retrievers None): every retriever a default set may fit.
        retrievers = self.config.retrievers or ANY_DEFAULT_RETRIEVERS
        for position, retriever in enumerate(retrievers):
            model = create_model(retriever.name, retriever.params)
            try:
                model.check_privacy(spec)
            except ConfigError as exc:
                raise ConfigError(
                    f"two-stage retriever r{position} ({retriever.name}) has no private fit, so "
                    f"the pipeline cannot be private: {exc}"
                ) from exc

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: Any
    ) -> None:
        """The private fit (see the module docstring, **Privacy**)."""
        cfg = self._resolve_config(options, train.n_items)
        private = self.private_settings(TwoStagePrivateConfig)
        self._check_item_text(train)
        self._stage_times = defaultdict(float)
        budget = split_budget(spec, self._distinct_retrievers(), cfg.refit, private.ranker_share)
        bounded = spec.bound_contributions(train)
        fit_part, labels = self._carve(bounded, per_user=True)
        # The ranker samples its batches from every label user (one group each, or none when
        # no candidate came back): a count fixed before anything is fitted.
        population = max(1, int(np.count_nonzero(np.diff(labels.indptr))))
        ranker = create_ranker(cfg.ranker, cfg.resolved_ranker_params())
        calibrated = None
        if private.split == "calibrated":
            calibrated = self._calibrate(spec, budget, ranker, population, train)
            if calibrated is not None:
                budget = calibrated.budget
        started = time.perf_counter()
        retrievers = self._fit_retrievers(fit_part, options, budget.retrievers)
        self._stage_times["fit.retrievers"] += time.perf_counter() - started
        guarantees = self._retriever_guarantees(retrievers)
        self.item_table_ = private_item_table(retrievers[0].item_popularity_)
        _, groups, _ = self._label_groups(retrievers, fit_part, labels)
        started = time.perf_counter()
        ranker.fit(
            groups,
            None,
            LTRFitOptions(
                seed=options.seed,
                threads=options.threads,
                privacy=budget.ranker,
                population=population,
            ),
        )
        self._stage_times["fit.ranker"] += time.perf_counter() - started
        guarantees.append(ranker.privacy_guarantee_)  # type: ignore[attr-defined]
        self.ranker_ = ranker
        self._report(1, 2)
        if cfg.refit:
            started = time.perf_counter()
            retrievers = self._fit_retrievers(bounded, options, budget.refit)
            self._stage_times["fit.retrievers_refit"] += time.perf_counter() - started
            guarantees += self._retriever_guarantees(retrievers)
        self.retrievers_ = retrievers
        self.item_popularity_ = np.asarray(retrievers[0].item_popularity_, dtype=np.float32)
        self.item_table_ = private_item_table(self.item_popularity_)
        self.privacy_guarantee_ = compose_fit(
            spec, guarantees, train.n_users, private.ranker_share, calibrated
        )
        self.training_info_ = {
            "private": {
                "ranker_share": private.ranker_share,
                "retriever_fits": len(budget.retrievers) + len(budget.refit),
                "retriever_epsilon": budget.retrievers[0].epsilon,
                "ranker_epsilon": budget.ranker.epsilon,
                "split": "basic" if calibrated is None else "calibrated",
                "split_scale": 1.0 if calibrated is None else calibrated.scale,
                "pld_epsilon": self.privacy_guarantee_.epsilons.get("pld"),
            },
            "ranker": ranker.info_,
        }
        self._report(2, 2)

    def _calibrate(
        self,
        spec: Any,
        basic: Any,
        ranker: LTRRanker,
        population: int,
        train: Interactions,
    ) -> CalibratedSplit | None:
        """The split widened to the PLD-composed ε (``_private.calibrate_budget``), planned from
        the shape of ``train`` and the ranker's ``population``; ``None`` (the basic split) when
        a retriever or the ranker cannot state its releases in advance."""
        models, seen = [], set()
        for retriever in self.retriever_specs:
            key = self._retriever_key(retriever)
            if key not in seen:
                seen.add(key)
                models.append(create_model(retriever.name, retriever.params))
        if not all(isinstance(m, PlannedPrivateFit) for m in models) or not isinstance(
            ranker, ListwiseRanker
        ):
            return None
        n_users, n_items = train.n_users, train.n_items

        def retriever_plan(model: PlannedPrivateFit) -> Any:
            return lambda part: model.planned_releases(part, n_users, n_items)

        return calibrate_budget(
            spec,
            basic,
            [retriever_plan(m) for m in models],  # type: ignore[arg-type]
            lambda part: ranker.planned_releases(part, population),
        )

    def _retriever_guarantees(self, retrievers: list[Recommender]) -> list[Any]:
        """The guarantees of the distinct fits among ``retrievers``, in order."""
        out, seen = [], set()
        for model in retrievers:
            if id(model) not in seen:
                seen.add(id(model))
                out.append(model.privacy_guarantee_)
        return out
