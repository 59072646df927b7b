"""The model contract: every recommender fits, scores, recommends, saves and loads the same way.

A model is a configured object. Its *config* (a frozen pydantic :class:`ModelConfig`) is fixed at
construction and validated there; :meth:`Recommender.fit` learns from an
:class:`~privrank.data.Interactions` and returns the model; learned attributes end in ``_``;
fitting again replaces the old fit.

Scoring takes a :class:`Query`: known users by code, or ad-hoc histories of item codes that the
model *folds in* without retraining (a new user, or a history that stays on the user's device).
:meth:`Recommender.score` returns an ``(n_queries, n_items)`` float32 array (or the columns of a
candidate list); :meth:`Recommender.recommend` returns the top-k item codes and their scores,
excluding items already in the history by default, ties broken by the lower item code.

**Cold start.** A query whose history is empty (an ad-hoc empty history, or a known user who had
no training interactions) gets the *popularity* scores: the number of training users who
interacted with each item. External user ids the model never saw get the same (see
:meth:`Recommender.recommend_for_users`). Invalid *codes* are programming errors and raise
:class:`~privrank.errors.ConfigError`.

**Persistence.** :meth:`Recommender.save` writes safetensors arrays, a JSON header (registry
name, class, config, privrank version) and the id maps as Parquet, with the SHA-256 of every file;
:meth:`Recommender.load` verifies them all before parsing anything. Nothing is pickled.

**Releasing a private model.** A saved model also holds what is *not* covered by a differential
privacy guarantee: the training users' ids (membership), their histories (to exclude seen items
and score them by code) and any per-user state (e.g. iALS user factors). ``save(dir,
release=True)`` writes only what the guarantee covers: the learned item-side state and the
private popularity, with no user ids, no histories and every per-user array
(:attr:`Recommender.user_state_keys`) emptied. Such a *release artifact* loads as a model with no
known users: it folds in the histories it is sent and gives unknown users the (private)
popularity. Only a fit with a genuine guarantee can be released.

**Registry.** Each model class registers under a name (``ease``, ``ials``, ...), so the CLI builds
models with :func:`create_model` from a name and a config mapping.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from privrank.data.interactions import Interactions
from privrank.errors import ArtifactError, ConfigError, NotTrainedError, PrivrankError
from privrank.metrics.topk import top_k
from privrank.models._artifact import read_artifact, write_artifact
from privrank.models._code_index import CodeIndex
from privrank.models._config import FitOptions, FitProgress, ModelConfig, build_model_config
from privrank.models._query import Query
from privrank.models._registry import (
    create_model,
    model_class,
    model_names,
    register,
    registered,
)

if TYPE_CHECKING:
    from privrank.privacy.mechanism import PrivacyGuarantee
    from privrank.privacy.spec import PrivacySpec

__all__ = [
    "FitOptions",
    "FitProgress",
    "IdRecommendations",
    "ModelConfig",
    "ModelFitError",
    "Query",
    "Recommender",
    "create_model",
    "model_class",
    "model_names",
    "register",
]

P = TypeVar("P", bound=ModelConfig)


class ModelFitError(PrivrankError, ArithmeticError):
    """Training produced non-finite parameters (NaN or infinity)."""


# -------------------------------------------------------------------- results
@dataclass(frozen=True)
class IdRecommendations:
    """Recommendations in external ids.

    Attributes:
        item_ids: For each query, up to ``k`` external item ids, best first (fewer only when
            fewer than ``k`` items were eligible).
        scores: ``(n_queries, k)`` float32; ``-inf`` where no item was eligible.
        known: Whether each query used what the model knows (``False``: cold-start popularity).
    """

    item_ids: list[list[Any]]
    scores: np.ndarray
    known: np.ndarray


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -------------------------------------------------------------------- the contract
class Recommender(ABC):
    """Base class of every privrank recommender.

    Subclasses declare ``Config`` (a :class:`ModelConfig`) and the matching type of
    :attr:`config` (``Config = EASEConfig`` next to ``config: EASEConfig``), register a name with
    :func:`register` and implement :meth:`_fit`, :meth:`_score_histories`, :meth:`_state` and
    :meth:`_set_state`; they override :meth:`_score_users` when they keep per-user state.

    Class attributes:
        name: Registry name (set by :func:`register`).
        Config: The config class.
        supports_fold_in: Whether ad-hoc non-empty histories can be scored.
        trains_on_validation_part: Whether the model takes a protocol's validation part as
            training data: it reads no validation split (it carves its own labels from its
            training rows), so an evaluation or ``privrank train`` on a protocol fits it on
            train + validation (the test-time history) rather than leave each user's most
            recent items out of its fit.
        fold_in_matches_training: Whether scoring a training user's history as an ad-hoc
            history gives the same scores as scoring the user by code.
        personalised: Whether scores depend on the history (``False`` for popularity).
        sequential: Whether the order of a history matters to its scores.
        seeded: Whether the fit draws random numbers (so ``FitOptions.seed`` matters).
        uses_torch: Whether the fit runs torch kernels (``FitOptions.threads`` is applied).
        supports_engine: Whether the fit can run its data-parallel part on a
            :class:`~privrank.models.engine.FitEngine` (``FitOptions.engine``); other models
            refuse an engine.
        supports_private_engine: Whether a *private* fit can run on an engine too (with the
            same guarantee and one ledger charge); when ``False`` a fit with both an engine and
            a privacy spec is refused.
        supports_checkpoints: Whether a non-private fit writes a checkpoint after each epoch
            to ``FitOptions.checkpoint_dir`` and resumes from it; other models (and private
            fits) refuse a checkpoint directory.
        supports_privacy: Whether the model can fit under a
            :class:`~privrank.privacy.spec.PrivacySpec` (it then implements
            :meth:`_fit_private`); other models refuse a spec.
        PrivateConfig: The config class of a private fit's settings, or ``None`` when a private
            fit has none. ``Config`` then has a field ``private: PrivateConfig | None``: a fit
            without a privacy spec refuses a ``private`` block (it would ignore it), and a
            private fit without one uses ``PrivateConfig()``'s defaults
            (:meth:`private_settings`).
        user_state_keys: Keys of :meth:`_state` whose arrays hold one row per training user
            (user factors, ...): per-user data, emptied in a release artifact.

    Attributes:
        config: The validated hyper-parameters.
        n_users_: Users in the training vocabulary.
        n_items_: Items in the training vocabulary.
        user_ids_: External user ids, indexed by code.
        item_ids_: External item ids, indexed by code.
        item_popularity_: Training users per item (float32), the cold-start scores.
        history_indptr_: Offsets of each training user's history (int64, ``n_users_ + 1``).
        history_items_: Training histories, time-ordered when timestamps were present (int32).
        privacy_guarantee_: The :class:`~privrank.privacy.mechanisms.PrivacyGuarantee` of a
            private fit (saved with the model), ``None`` after a non-private fit.
        is_release_: Whether the model was loaded from a release artifact (no training users).
        resumed_from_epoch_: The epoch whose checkpoint the last fit resumed from (``None``:
            it started afresh, or the model has no ``supports_checkpoints``).
        recoveries_: Lost workers the last fit recovered from (0 for fits on one process).
    """

    name: ClassVar[str] = "unregistered"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    supports_fold_in: ClassVar[bool] = True
    trains_on_validation_part: ClassVar[bool] = False
    fold_in_matches_training: ClassVar[bool] = True
    personalised: ClassVar[bool] = True
    seeded: ClassVar[bool] = False
    sequential: ClassVar[bool] = False
    uses_torch: ClassVar[bool] = False
    supports_privacy: ClassVar[bool] = False
    supports_engine: ClassVar[bool] = False
    supports_private_engine: ClassVar[bool] = True
    supports_checkpoints: ClassVar[bool] = False
    PrivateConfig: ClassVar[type[ModelConfig] | None] = None
    user_state_keys: ClassVar[tuple[str, ...]] = ()
    config: ModelConfig
    privacy_guarantee_: PrivacyGuarantee | None
    resumed_from_epoch_: int | None = None
    recoveries_: int = 0

    def __init__(self, config: ModelConfig | Mapping[str, Any] | None = None, **params: Any):
        self.config = build_model_config(self.Config, type(self).__name__, config, params)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    # ---------------------------------------------------------------- fitting
    @classmethod
    def check_private_engine(cls, engine: str) -> None:
        """Refuse a private fit on ``engine`` when the model has none.

        Raises:
            ConfigError: ``supports_private_engine`` is ``False``.
        """
        if not cls.supports_private_engine:
            raise ConfigError(
                f"{cls.__name__} has no private fit on the {engine!r} engine: its private fit "
                "runs in one process only. Refusing rather than fit without the guarantee or "
                f"in this process: drop the engine (--engine local) or the privacy spec."
            )

    @classmethod
    def check_checkpoints(cls, private: bool) -> None:
        """Refuse a checkpoint directory for a fit that writes no checkpoints.

        Raises:
            ConfigError: The model has no ``supports_checkpoints``, or the fit is ``private``.
        """
        if private or not cls.supports_checkpoints:
            kind = "private fit" if private else "fit"
            raise ConfigError(
                f"{cls.__name__}'s {kind} writes no checkpoints (models that do: those "
                "declaring supports_checkpoints, non-private fits only). Refusing a checkpoint "
                "directory rather than ignore it."
            )

    def adopt_training_data(self, train: Interactions) -> None:
        """Keep what every fitted model keeps of its training data: the sizes, the id maps
        (the vocabulary) and the time-ordered histories (to score training users and exclude
        their items; a release artifact drops them). Called by :meth:`fit`, and by code that
        assembles a model trained elsewhere (a federated run's server state)."""
        indptr, items = train.sequences()
        self.n_users_ = train.n_users
        self.n_items_ = train.n_items
        self.user_ids_ = train.user_ids
        self.item_ids_ = train.item_ids
        self.history_indptr_ = indptr.astype(np.int64)
        self.history_items_ = items.astype(np.int32)

    def fit(self, train: Interactions, options: FitOptions | None = None) -> Self:
        """Learn from ``train`` (replacing any previous fit) and return ``self``.

        Every model sees the *binary* user × item matrix: a user either interacted with an item
        or did not; repeats count once. Sequence-aware models also read the time-ordered
        histories.

        Args:
            train: The training interactions; their id maps become the model's vocabulary.
            options: Seed, threads, progress callback, privacy spec.

        Raises:
            ConfigError: ``options.privacy`` is set and this model cannot honour it, or
                ``train`` is not an :class:`Interactions`.
            ModelFitError: Training produced NaN or infinite parameters.
        """
        options = FitOptions() if options is None else options
        if not isinstance(options, FitOptions):
            raise ConfigError(f"options must be a FitOptions. Got {type(options).__name__}.")
        if not isinstance(train, Interactions):
            raise ConfigError(f"{self.name} trains on Interactions. Got {type(train).__name__}.")
        if options.privacy is not None:
            self.check_privacy(options.privacy)
        if options.engine is not None and not self.supports_engine:
            raise ConfigError(
                f"{type(self).__name__} has no distributed fit: it cannot run on the "
                f"{options.engine.name!r} engine (models that can: those declaring "
                "supports_engine). Refusing rather than fit in this process."
            )
        if options.engine is not None and options.privacy is not None:
            self.check_private_engine(options.engine.name)
        if options.checkpoint_dir is not None:
            self.check_checkpoints(private=options.privacy is not None)
        block = self._private_block()
        if options.privacy is None and block is not None:
            given = block.model_dump(exclude_unset=True) or "its defaults"
            raise ConfigError(
                f"{type(self).__name__}'s config has a 'private' block (settings of a private "
                f"fit: {given}) but this fit has no privacy spec, so they would be ignored. "
                "Refusing to train: pass a privacy spec (FitOptions(privacy=...), or "
                "`privrank train --epsilon ...`) or drop the 'private' block."
            )
        if train.n_items == 0:
            raise ConfigError(f"{type(self).__name__} needs at least one item to train on.")
        spec = None if options.privacy is None else options.privacy.resolve(train.n_users)
        self._clear()
        self.adopt_training_data(train)
        self.privacy_guarantee_ = None
        self.is_release_ = False
        if spec is None:
            matrix = self._training_matrix()
            self.item_popularity_ = np.asarray(matrix.sum(axis=0), dtype=np.float32).ravel()
        else:
            # A private fit sees only the contribution-bounded data, and must set the (private)
            # cold-start popularity and the guarantee itself; the exact popularity is never kept.
            bounded_indptr, bounded_items = spec.bound_contributions(train).sequences()
            matrix = Query(indptr=bounded_indptr, items=bounded_items.astype(np.int64)).to_csr(
                self.n_items_
            )
        self._fit_started = time.perf_counter()
        self._options = options
        try:
            with _torch_threads(options.resolved_threads()) if self.uses_torch else nullcontext():
                if spec is None:
                    self._fit(train, matrix, options)
                else:
                    self._fit_private(train, matrix, options, spec)
            if spec is not None and (
                getattr(self, "item_popularity_", None) is None or self.privacy_guarantee_ is None
            ):
                raise ConfigError(
                    f"{type(self).__name__}._fit_private must set item_popularity_ and "
                    "privacy_guarantee_"
                )
            self._check_finite()
        except BaseException:
            self._clear()  # a failed fit leaves an unfitted model, never a half-fitted one
            raise
        return self

    def check_privacy(self, spec: PrivacySpec) -> None:
        """Refuse, before any data is read, a privacy spec this model cannot fit under.

        Every private fit of privrank derives its user-level sensitivity from the contribution
        bound (Gaussian counts and Gramians, DP-ALS, and DP-SGD's cold-start counts), so a spec
        without ``max_interactions_per_user`` is refused here rather than after other fits of a
        run have spent time. :meth:`fit` applies the same check.

        Raises:
            ConfigError: The model has no private fit, or the spec has no contribution bound.
        """
        if not self.supports_privacy:
            raise ConfigError(
                f"{type(self).__name__} cannot honour a privacy specification "
                f"({spec!r}); it trains without differential privacy only. "
                "Refusing to train rather than ignore it."
            )
        spec.require_contribution_bound(f"{type(self).__name__}'s private fit")

    def _private_block(self) -> ModelConfig | None:
        """The config's ``private`` block as given (``None``: not given, or no such block)."""
        if self.PrivateConfig is None:
            return None
        block: ModelConfig | None = getattr(self.config, "private", None)
        return block

    def private_settings(self, kind: type[P]) -> P:
        """The settings of a private fit: the config's ``private`` block, or, when none was
        given, the defaults of :attr:`PrivateConfig`.

        Args:
            kind: The class the caller reads them as: :attr:`PrivateConfig` or a base of it.

        Raises:
            ConfigError: The model has no private settings.
            TypeError: They are not a ``kind`` (the caller and :attr:`PrivateConfig` disagree).
        """
        if self.PrivateConfig is None:
            raise ConfigError(f"{type(self).__name__} has no settings of a private fit")
        block = self._private_block()
        settings = self.PrivateConfig() if block is None else block
        if not isinstance(settings, kind):
            raise TypeError(
                f"{type(self).__name__}'s private settings are a {type(settings).__name__}, "
                f"not a {kind.__name__}"
            )
        return settings

    def _report(self, epoch: int, epochs: int, loss: float | None = None, **metrics: float) -> None:
        """Send a :class:`FitProgress` to the fit's progress callback, if any."""
        callback = self._options.progress
        if callback is not None:
            callback(
                FitProgress(
                    model=self.name,
                    epoch=epoch,
                    epochs=epochs,
                    loss=None if loss is None else float(loss),
                    elapsed_s=time.perf_counter() - self._fit_started,
                    metrics=metrics,
                )
            )

    def _clear(self) -> None:
        """Forget every learned attribute and cache (refitting replaces the old fit)."""
        for attribute in [a for a in vars(self) if a != "config"]:
            delattr(self, attribute)

    def _check_finite(self) -> None:
        for key, array in self._full_state().items():
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
                raise ModelFitError(
                    f"{type(self).__name__} training produced {bad} non-finite value(s) in "
                    f"{key!r}; try stronger regularization or a smaller learning rate"
                )

    def fit_summary(self) -> dict[str, Any]:
        """What the fit chose on its own, for the training record (``training.json``).

        Iterative models with a validation part report the epochs they ran and the epoch whose
        weights they kept (:class:`~privrank.models._torch_training.EpochFitMixin`); a model
        whose fit makes no such choice reports nothing (``{}``, this default).

        Raises:
            NotTrainedError: The model is not fitted.
        """
        self._require_fitted()
        return {}

    @property
    def is_fitted(self) -> bool:
        """Whether the model has been fitted (or loaded)."""
        return hasattr(self, "n_items_")

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotTrainedError(f"{type(self).__name__} is not trained: call fit() or load()")

    # ---------------------------------------------------------------- scoring
    def score(self, query: Query | Sequence[int] | np.ndarray, items: Any = None) -> np.ndarray:
        """Scores of every item (or of ``items``) for each query; higher is better.

        Args:
            query: A :class:`Query`, or user codes (shorthand for ``Query.users(codes)``).
            items: Optional candidate item codes; the result then has one column per candidate,
                in the given order.

        Returns:
            ``(n_queries, n_items)`` float32 (``(n_queries, len(items))`` with candidates).
            Queries with an empty history get the popularity scores (cold start).

        Raises:
            NotTrainedError: Before ``fit``/``load``.
            ConfigError: A user or item code outside the training vocabulary, or a non-empty
                ad-hoc history for a model that cannot fold one in.
        """
        self._require_fitted()
        query = self._checked_query(query)
        candidates = None if items is None else self._checked_items(items, "candidate")
        lengths = self._query_lengths(query)
        scores = np.empty((len(query), self.n_items_), dtype=np.float32)
        known = np.flatnonzero(lengths > 0)
        if known.size:
            sub = query.take(known)
            if sub.user_codes is not None:
                part = self._score_users(sub.user_codes)
            else:
                part = self._score_histories(sub)
            scores[known] = part
        scores[lengths == 0] = self.item_popularity_
        return scores if candidates is None else np.ascontiguousarray(scores[:, candidates])

    def recommend(
        self,
        query: Query | Sequence[int] | np.ndarray,
        k: int,
        *,
        exclude_seen: bool = True,
        items: Any = None,
        batch_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for each query.

        Args:
            query: A :class:`Query`, or user codes.
            k: Items per query; ``1 <= k <=`` the number of candidates.
            exclude_seen: Leave out the items in each query's history (a known user's training
                history, or the ad-hoc history itself).
            items: Optional candidate item codes to choose from (unique).
            batch_size: Queries scored at once (bounds memory to ``batch_size × n_items``).

        Returns:
            ``(item_codes, scores)``: int64 and float32 arrays of shape ``(n_queries, k)``,
            best first, ties broken by the lower item code. Where fewer than ``k`` items are
            eligible the row is padded with code ``-1`` and score ``-inf``.
        """
        self._require_fitted()
        query = self._checked_query(query)
        candidates = (
            np.arange(self.n_items_)
            if items is None
            else np.sort(self._checked_items(items, "candidate"))
        )
        if items is not None and np.unique(candidates).size != candidates.size:
            raise ConfigError("Candidate items must be unique.")
        if (
            isinstance(k, bool)
            or not isinstance(k, int | np.integer)
            or not 1 <= k <= len(candidates)
        ):
            raise ConfigError(
                f"k must be an int between 1 and the number of candidate items "
                f"({len(candidates)}). Got {k!r} instead."
            )
        codes = np.empty((len(query), k), dtype=np.int64)
        values = np.empty((len(query), k), dtype=np.float32)
        for start in range(0, len(query), batch_size):
            positions = np.arange(start, min(start + batch_size, len(query)))
            sub = query.take(positions)
            scores = self.score(sub, None if items is None else candidates)
            if exclude_seen:
                seen = self._seen_matrix(sub)
                if items is not None:
                    seen = seen[:, candidates]
                rows, cols = seen.nonzero()
                scores[rows, cols] = -np.inf
            best = top_k(scores, k)
            best_scores = best.scores
            chosen = np.where(best.items >= 0, candidates[best.items], -1)
            chosen[~np.isfinite(best_scores)] = -1
            codes[positions] = chosen
            values[positions] = best_scores
        return codes, values

    # ---------------------------------------------------------------- external ids
    def user_codes(self, user_ids: Sequence[Any] | np.ndarray | pa.Array) -> np.ndarray:
        """Codes of external user ids; ``-1`` for ids the model never saw."""
        self._require_fitted()
        return self._code_index("user").codes(user_ids)

    def item_codes(self, item_ids: Sequence[Any] | np.ndarray | pa.Array) -> np.ndarray:
        """Codes of external item ids; ``-1`` for ids the model never saw."""
        self._require_fitted()
        return self._code_index("item").codes(item_ids)

    def _code_index(self, kind: str) -> CodeIndex:
        """The :class:`CodeIndex` of ``user_ids_`` or ``item_ids_``, kept after its first use
        (a new one when a fit or load replaced the vocabulary)."""
        vocabulary = self.user_ids_ if kind == "user" else self.item_ids_
        cached: CodeIndex | None = self.__dict__.get(f"_{kind}_code_index")
        if cached is None or cached.vocabulary is not vocabulary:
            cached = CodeIndex(vocabulary)
            self.__dict__[f"_{kind}_code_index"] = cached
        return cached

    def history_query(
        self, histories: Sequence[Sequence[Any]], *, ignore_unknown_items: bool = False
    ) -> Query:
        """A history :class:`Query` from histories of external item ids.

        Args:
            histories: One sequence of external item ids per query.
            ignore_unknown_items: Drop ids the model never saw instead of raising.

        Raises:
            ConfigError: An item id is unknown and ``ignore_unknown_items`` is false.
        """
        coded = []
        for position, history in enumerate(histories):
            codes = self.item_codes(list(history))
            unknown = codes < 0
            if unknown.any() and not ignore_unknown_items:
                missing = [h for h, u in zip(list(history), unknown, strict=True) if u][:5]
                raise ConfigError(
                    f"History {position} holds item ids the model was not trained on: "
                    f"{missing} ({int(unknown.sum())} in all). Pass ignore_unknown_items=True "
                    "to drop them."
                )
            coded.append(codes[~unknown])
        return Query.histories(coded)

    def recommend_for_users(
        self, user_ids: Sequence[Any], k: int, *, exclude_seen: bool = True
    ) -> IdRecommendations:
        """Top-k external item ids for external user ids.

        Users the model never saw get the cold-start popularity ranking and ``known=False``.
        """
        codes = self.user_codes(user_ids)
        known = codes >= 0
        if known.any():
            query = Query.users(np.where(known, codes, codes[known][0]))
            item_codes, scores = self.recommend(query, k, exclude_seen=exclude_seen)
        if (~known).any():
            cold_codes, cold_scores = self.recommend(Query.histories([[]]), k)
            if not known.any():  # e.g. a release artifact, which knows no users
                item_codes = np.repeat(cold_codes, len(codes), axis=0)
                scores = np.repeat(cold_scores, len(codes), axis=0)
            item_codes[~known] = cold_codes[0]
            scores[~known] = cold_scores[0]
        return self._to_ids(item_codes, scores, known)

    def recommend_for_histories(
        self,
        histories: Sequence[Sequence[Any]],
        k: int,
        *,
        exclude_seen: bool = True,
        ignore_unknown_items: bool = False,
    ) -> IdRecommendations:
        """Top-k external item ids for ad-hoc histories of external item ids (fold-in)."""
        query = self.history_query(histories, ignore_unknown_items=ignore_unknown_items)
        item_codes, scores = self.recommend(query, k, exclude_seen=exclude_seen)
        return self._to_ids(item_codes, scores, query.lengths() > 0)

    def _to_ids(
        self, codes: np.ndarray, scores: np.ndarray, known: np.ndarray
    ) -> IdRecommendations:
        ids = self.item_ids_.to_pylist()
        item_ids = [[ids[c] for c in row if c >= 0] for row in codes]
        return IdRecommendations(item_ids=item_ids, scores=scores, known=known)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path, *, release: bool = False) -> Path:
        """Write the model to ``directory`` atomically (see the module docstring).

        Args:
            directory: Where to write (must not hold anything but an earlier model).
            release: Write a release artifact: only what the model's differential privacy
                guarantee covers (no user ids, histories or per-user state).

        Raises:
            NotTrainedError: The model is not fitted.
            ConfigError: ``release`` for a model without a genuine privacy guarantee (a
                non-private fit, or noise scaled by a test), or for a model already released.
        """
        self._require_fitted()
        from privrank import __version__

        header = {
            "model": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.config.model_dump(mode="json"),
            "privrank_version": __version__,
            "n_users": self.n_users_,
            "n_items": self.n_items_,
            "info": self._artifact_info(),
            "privacy": None
            if self.privacy_guarantee_ is None
            else self.privacy_guarantee_.to_dict(),
            "release": self.is_release_,
        }
        state, user_ids = self._full_state(), self.user_ids_
        if release and not self.is_release_:
            self._check_releasable()
            header.update(n_users=0, release=True)
            state["base.history_indptr"] = np.zeros(1, dtype=np.int64)
            state["base.history_items"] = np.zeros(0, dtype=np.int32)
            for key in self.user_state_keys:
                state[f"model.{key}"] = state[f"model.{key}"][:0]
            user_ids = user_ids.slice(0, 0)
        return write_artifact(directory, header, state, user_ids, self.item_ids_)

    def _check_releasable(self) -> None:
        guarantee = self.privacy_guarantee_
        if guarantee is None:
            raise ConfigError(
                f"this {self.name} model was trained without differential privacy; only a "
                "private fit (trained with a privacy spec) can be released"
            )
        if guarantee.noise_seed is not None:
            raise ConfigError(
                f"this {self.name} model's noise came from the fixed noise seed "
                f"{guarantee.noise_seed} (--noise-seed, for testing): anyone with the seed can "
                "reproduce the noise, so it is not private and cannot be released; retrain "
                "without a noise seed"
            )
        if not guarantee.is_private:
            raise ConfigError(
                f"this {self.name} model's noise was scaled by {guarantee.noise_scale_for_testing}"
                " for testing: it is not private and cannot be released"
            )
        missing = [k for k in self.user_state_keys if k not in self._state()]
        if missing:  # pragma: no cover - a model declaring keys it does not have
            raise ConfigError(f"{self.name}: per-user state keys {missing} are not in its state")

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a model written by :meth:`save`, verifying every checksum first.

        Call it on :class:`Recommender` to load any model, or on a model class to insist on
        that class.

        Raises:
            ArtifactError: Missing, extra or modified files, another format version, a model of
                another class, or arrays that do not fit the config.
        """
        artifact = read_artifact(directory)
        name = artifact.header.get("model")
        found = registered(name) if isinstance(name, str) else None
        if found is None:
            raise ArtifactError(f"{directory}: unknown model {name!r}")
        if not issubclass(found, cls):
            raise ArtifactError(f"{directory} holds a {name!r} model, not a {cls.__name__}")
        try:
            config = found.Config.model_validate(
                _nest_flat_private_settings(found, artifact.header)
            )
        except Exception as exc:
            raise ArtifactError(f"{directory}: invalid config for {name!r}: {exc}") from exc
        model = found(config)
        try:
            model._restore(artifact)
        except (KeyError, ValueError, IndexError, ModelFitError) as exc:
            raise ArtifactError(f"{directory}: arrays do not fit a {name!r} model: {exc}") from exc
        return model

    def _full_state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {
            "base.history_indptr": self.history_indptr_,
            "base.history_items": self.history_items_,
            "base.item_popularity": self.item_popularity_,
        }
        state.update({f"model.{k}": np.asarray(v) for k, v in self._state().items()})
        return state

    def _restore(self, artifact: Any) -> None:
        arrays = artifact.arrays
        header = artifact.header
        self.n_users_ = int(header["n_users"])
        self.n_items_ = int(header["n_items"])
        self.user_ids_ = artifact.user_ids
        self.item_ids_ = artifact.item_ids
        self.history_indptr_ = arrays["base.history_indptr"]
        self.history_items_ = arrays["base.history_items"]
        self.item_popularity_ = arrays["base.item_popularity"]
        self.is_release_ = bool(header.get("release", False))
        self.privacy_guarantee_ = None
        if header.get("privacy") is not None:
            from privrank.privacy.mechanisms import PrivacyGuarantee

            self.privacy_guarantee_ = PrivacyGuarantee.from_dict(header["privacy"])
        if (
            len(self.user_ids_) != self.n_users_
            or len(self.item_ids_) != self.n_items_
            or self.history_indptr_.shape != (self.n_users_ + 1,)
            or self.item_popularity_.shape != (self.n_items_,)
        ):
            raise ValueError("sizes of the id maps, histories and popularity disagree")
        prefix = "model."
        self._set_state({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
        self._check_finite()

    def _artifact_info(self) -> dict[str, Any]:
        """Extra JSON facts to record in ``model.json`` (e.g. a peer library's version)."""
        return {}

    # ---------------------------------------------------------------- helpers for subclasses
    def _training_matrix(self) -> sp.csr_matrix:
        """The binary ``n_users × n_items`` training matrix (float32, cached)."""
        matrix = self.__dict__.get("_matrix")
        if matrix is None:
            matrix = Query(
                indptr=self.history_indptr_, items=self.history_items_.astype(np.int64)
            ).to_csr(self.n_items_)
            self._matrix = matrix
        return matrix

    def _training_histories(self, user_codes: np.ndarray) -> Query:
        """The training histories of known users as a history query.

        Gathers the users' items before widening them to int64 (widening the whole history
        array first cost a copy of every training row per call: a served request made
        several such calls)."""
        codes = np.asarray(user_codes, dtype=np.int64)
        starts, ends = self.history_indptr_[codes], self.history_indptr_[codes + 1]
        lengths = ends - starts
        indptr = np.zeros(len(codes) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Query(indptr=indptr, items=self.history_items_[gather].astype(np.int64))

    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        """Scores of known users (all with non-empty histories); default: fold in their
        training histories."""
        return self._score_histories(self._training_histories(user_codes))

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        """Learn the model's state from the binary training ``matrix`` (and ``train``)."""

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: Any
    ) -> None:
        """Learn under a resolved :class:`~privrank.privacy.spec.PrivacySpec` (models with
        ``supports_privacy``): ``matrix`` is the binary, contribution-bounded training matrix.
        Must set ``item_popularity_`` (from private statistics) and ``privacy_guarantee_``."""
        raise ConfigError(f"{type(self).__name__} cannot train with differential privacy.")

    @abstractmethod
    def _score_histories(self, histories: Query) -> np.ndarray:
        """``(n, n_items)`` scores of non-empty ad-hoc histories."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name (what :meth:`save` writes)."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore the learned arrays written by :meth:`_state` (raise on a mismatch)."""

    # ---------------------------------------------------------------- validation
    def _checked_query(self, given: Any) -> Query:
        query: Query = given if isinstance(given, Query) else Query.users(given)
        codes = query.user_codes
        if codes is not None:
            bad = codes[(codes < 0) | (codes >= self.n_users_)]
            if bad.size:
                raise ConfigError(
                    f"User code {int(bad[0])} is not a user of this model (codes run from 0 to "
                    f"{self.n_users_ - 1}); {bad.size} invalid code(s) in all. Score unknown "
                    "users by their history, or see recommend_for_users for cold start."
                )
        else:
            self._checked_items(query.items, "history item")
            if not self.supports_fold_in and (query.lengths() > 0).any():
                raise ConfigError(
                    f"{type(self).__name__} cannot fold in ad-hoc histories; score users it was "
                    "trained on by code instead."
                )
        return query

    def _checked_items(self, items: Any, what: str) -> np.ndarray:
        array = np.atleast_1d(np.asarray(items))
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"{what.capitalize()} codes must be integers. Got {array.dtype}.")
        array = array.astype(np.int64, copy=False)
        bad = array[(array < 0) | (array >= self.n_items_)]
        if bad.size:
            raise ConfigError(
                f"{what.capitalize()} code {int(bad[0])} is not an item of this model (codes run "
                f"from 0 to {self.n_items_ - 1}); {bad.size} invalid code(s) in all."
            )
        return array

    def _query_lengths(self, query: Query) -> np.ndarray:
        if query.is_users:
            return np.diff(self.history_indptr_)[query.user_codes]
        return query.lengths()

    def _seen_matrix(self, query: Query) -> sp.csr_matrix:
        if query.is_users:
            return self._training_matrix()[query.user_codes]
        return query.to_csr(self.n_items_)


def _nest_flat_private_settings(model: type[Recommender], header: dict[str, Any]) -> Any:
    """An artifact's config with pre-``private``-block settings moved into the block.

    Artifacts written before each model's private settings moved into its nested ``private``
    block keep them as flat ``private_X`` keys, always present with their defaults. For a
    non-private fit they were ignored, so they are dropped; for a private fit they become
    ``private.X`` (whose guarantee an older privrank wrote as a flat record, which
    :meth:`PrivacyGuarantee.from_dict` then refuses with a message to retrain).
    """
    config = header.get("config", {})
    if model.PrivateConfig is None or not isinstance(config, dict) or "private" in config:
        return config
    fields = model.PrivateConfig.model_fields
    flat = {
        key: value
        for key, value in config.items()
        if key.startswith("private_") and key.removeprefix("private_") in fields
    }
    if not flat:
        return config
    nested = {key: value for key, value in config.items() if key not in flat}
    if header.get("privacy") is not None:
        nested["private"] = {key.removeprefix("private_"): value for key, value in flat.items()}
    return nested
