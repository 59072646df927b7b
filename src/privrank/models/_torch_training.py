"""Shared pieces of the iterative (PyTorch) models: the validation set, seeding, the glue to
the epoch loop (:mod:`privrank.models._epochs`) and the persistence of a network.

An iterative model can be given a *validation split* at fit time
(``model.fit(train, FitOptions(validation=part))``, an :class:`~privrank.data.Interactions` with
the training data's vocabulary, e.g. ``split(...).validation``). After each evaluated epoch the
model ranks **all items** for every validation user, with the user's training items removed, and
reports NDCG@k and HR@k of the validation items (:func:`ranking_metrics`, over
:mod:`privrank.metrics`); the epoch loop keeps the weights of the best epoch and stops after
``patience`` evaluations without improvement.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import torch

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.metrics import ranking
from privrank.metrics.ranking import RankedRelevance
from privrank.metrics.topk import as_score_array, top_k
from privrank.models._config import FitOptions
from privrank.models._epochs import (
    EpochHistory,
    EpochSchedule,
    LoopState,
    ProgressReport,
    Validation,
    run_epochs,
)
from privrank.models._query import Query
from privrank.models._torch_checkpoint import TorchCheckpoints, TorchFitState, histories_digest
from privrank.models.base import Recommender
from privrank.models.parallel import stop_agreement

__all__ = [
    "EpochFitMixin",
    "NetworkFitEngine",
    "NetworkStateMixin",
    "TorchFitState",
    "ValidationSet",
    "adam",
    "ranking_metrics",
    "seeded",
]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator (dropout, init) inside the block, restoring it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def ranking_metrics(
    scores: np.ndarray, targets: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row NDCG@k and HR@k of full-ranking ``scores`` against sets of relevant items.

    A thin adapter over :mod:`privrank.metrics`: the top ``k`` of every row by
    :func:`~privrank.metrics.topk.top_k` (ties broken by the lower item code; items scored
    ``-inf`` are never ranked), then binary-gain :func:`~privrank.metrics.ranking.ndcg` (DCG
    over the ideal DCG of ``min(k, |targets|)`` hits) and
    :func:`~privrank.metrics.ranking.hit_rate`. Items to exclude must already carry ``-inf``.
    A NaN score (a diverging fit) is ranked like ``-inf`` (never a hit, never above a hit), so
    validation reports the collapse instead of failing the fit; the fit's final check catches
    non-finite parameters.

    Args:
        scores: ``(n, n_items)`` scores.
        targets: ``n`` arrays of distinct relevant item codes (non-empty).
        k: Cutoff.

    Returns:
        ``(ndcg, hit)``: float64 arrays of length ``n``.
    """
    n = scores.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    lengths = np.array([len(t) for t in targets], dtype=np.int64)
    scores = as_score_array(scores)
    nan = np.isnan(scores)
    if nan.any():
        scores = np.where(nan, -np.inf, scores)
    lists = top_k(scores, k)
    judged = RankedRelevance.from_lists(
        lists.items, np.repeat(np.arange(n), lengths), np.concatenate(targets)
    )
    return ranking.ndcg(judged, k, gain="binary"), ranking.hit_rate(judged, k)


@dataclass(frozen=True)
class ValidationSet:
    """Validation users, their training histories and their held-out items.

    Attributes:
        users: Codes of users with at least one validation item and a training history.
        histories: Their training histories (what the model is asked to extend).
        targets: Their validation items, one array per user.
    """

    users: np.ndarray
    histories: Query
    targets: list[np.ndarray]

    @classmethod
    def build(
        cls,
        validation: Interactions,
        history_indptr: np.ndarray,
        history_items: np.ndarray,
        n_users: int,
        n_items: int,
    ) -> Self:
        """Pair the validation rows with the training histories (same vocabulary required)."""
        if not isinstance(validation, Interactions):
            raise ConfigError(
                f"validation must be an Interactions. Got {type(validation).__name__} instead."
            )
        if validation.n_users != n_users or validation.n_items != n_items:
            raise ConfigError(
                f"validation must share the training vocabulary ({n_users} users, {n_items} "
                f"items). Got {validation.n_users} users and {validation.n_items} items; "
                "use the parts of one split."
            )
        indptr, items = validation.sequences()
        lengths = np.diff(indptr)
        trained = np.diff(history_indptr) > 0
        users = np.flatnonzero((lengths > 0) & trained)
        if users.size == 0:
            raise ConfigError("validation holds no rows of users with a training history.")
        histories = Query(
            indptr=history_indptr.astype(np.int64), items=history_items.astype(np.int64)
        ).take(users)
        targets = [np.unique(items[indptr[u] : indptr[u + 1]]) for u in users]
        return cls(users=users, histories=histories, targets=targets)

    def evaluate(
        self,
        score: Callable[[np.ndarray, Query], np.ndarray],
        k: int = 10,
        batch_size: int = 1024,
    ) -> dict[str, float]:
        """Mean NDCG@k and HR@k, ranking all items with each training history removed.

        Args:
            score: ``(user codes, their training histories) -> (n, n_items)`` scores.
            k: Cutoff.
            batch_size: Users scored at once.
        """
        ndcg_parts, hit_parts = [], []
        for start in range(0, len(self.users), batch_size):
            positions = np.arange(start, min(start + batch_size, len(self.users)))
            query = self.histories.take(positions)
            scores = np.array(score(self.users[positions], query), dtype=np.float32, copy=True)
            seen = query.to_csr(scores.shape[1])
            rows, cols = seen.nonzero()
            scores[rows, cols] = -np.inf
            ndcg, hit = ranking_metrics(scores, [self.targets[p] for p in positions], k)
            ndcg_parts.append(ndcg)
            hit_parts.append(hit)
        return {
            f"ndcg@{k}": float(np.concatenate(ndcg_parts).mean()),
            f"hr@{k}": float(np.concatenate(hit_parts).mean()),
        }


class EpochFitMixin(Recommender):
    """Connects an iterative model to the epoch loop (:func:`~privrank.models._epochs.run_epochs`).

    ``fit`` keeps :meth:`Recommender.fit`'s signature; the model's ``_fit`` reads the fit's
    validation split with :meth:`_validation_set` and trains with :meth:`_run_epochs`, which
    reports progress through the fit's callback and records ``loss_history_``,
    ``validation_history_`` and ``best_epoch_``. Given the fit's :class:`TorchFitState` and a
    ``FitOptions.checkpoint_dir``, the loop checkpoints after every epoch and resumes from the
    checkpoint of the same fit (:mod:`privrank.models._torch_checkpoint`), recording the epoch
    it resumed from in ``resumed_from_epoch_`` (``None``: started afresh).
    """

    def fit_summary(self) -> dict[str, Any]:
        """The epochs run and the epoch kept, for the training record.

        Returns:
            ``epochs_run`` (epochs of the loss history), ``best_epoch`` (the epoch whose weights
            were kept: the best validated one, or the last one without validation) and, with a
            validation part, ``best_validation``: NDCG@10 and HR@10 of the kept epoch.
        """
        summary: dict[str, Any] = super().fit_summary() | {
            "epochs_run": len(self.loss_history_),
            "best_epoch": int(self.best_epoch_),
        }
        evaluations = np.asarray(self.validation_history_).reshape(-1, 3)
        kept = evaluations[evaluations[:, 0] == self.best_epoch_]
        if kept.size:
            summary["best_validation"] = {"ndcg@10": float(kept[0, 1]), "hr@10": float(kept[0, 2])}
        return summary

    def _validation_set(self) -> ValidationSet | None:
        """The validation set of the fit in progress (``FitOptions.validation``), or ``None``."""
        pending = self._options.validation
        if pending is None:
            return None
        return ValidationSet.build(
            pending,
            self.history_indptr_,
            self.history_items_,
            self.n_users_,
            self.n_items_,
        )

    def _run_epochs(
        self,
        schedule: EpochSchedule,
        train_epoch: Callable[[int], float | None],
        validation: Validation | None = None,
        resumable: TorchFitState | None = None,
    ) -> EpochHistory:
        """Run :func:`~privrank.models._epochs.run_epochs` and record its history.

        Args:
            schedule: Epochs, patience, validation cadence and time budget.
            train_epoch: Trains one epoch; returns its mean loss, or ``None`` (private fits).
            validation: How to validate and keep the best weights (``None``: no validation).
            resumable: The fit's network, optimizer and generators, to checkpoint after every
                epoch and resume from when the fit has a checkpoint directory.

        Returns:
            The history of the run (the model's weights are the kept ones).
        """
        history, self.resumed_from_epoch_ = self._checkpointed_epochs(
            schedule, train_epoch, validation, resumable
        )
        self.loss_history_ = history.losses
        self.validation_history_ = history.evaluations
        self.best_epoch_ = history.best_epoch
        return history

    def _checkpointed_epochs(
        self,
        schedule: EpochSchedule,
        train_epoch: Callable[[int], float | None],
        validation: Validation | None = None,
        resumable: TorchFitState | None = None,
        *,
        stage: Mapping[str, object] | None = None,
        report: ProgressReport | None = None,
    ) -> tuple[EpochHistory, int | None]:
        """Run :func:`~privrank.models._epochs.run_epochs`, checkpointed, recording nothing.

        The loop behind :meth:`_run_epochs`, and a later loop of the same fit (SASRec's refit):
        such a *stage* has its own checkpoint, the file ``<name>.<stage>`` with the fit's
        identity plus ``stage``'s entries, so that resuming the fit finds both the first loop's
        checkpoint and the stage's. On a data-parallel fit (``FitOptions.parallel`` with more
        than one worker) the loop takes its stop decisions together with the other workers
        (:func:`~privrank.models.parallel.stop_agreement`), so all of them stop after the same
        epoch and a later stage budgeted from this loop's ``elapsed_s`` starts on all or none.

        Args:
            schedule: Epochs, patience, validation cadence and time budget.
            train_epoch: Trains one epoch; returns its mean loss, or ``None``.
            validation: How to validate and keep the best weights (``None``: no validation).
            resumable: The loop's network, optimizer and generators, to checkpoint after every
                epoch and resume from when the fit has a checkpoint directory.
            stage: ``None``: the fit's first loop; else what sets this loop apart (its
                ``"stage"`` entry names the checkpoint file).
            report: Receives the loop's progress; ``None``: the fit's progress callback.

        Returns:
            The loop's history and the epoch its checkpoint resumed from (``None``: started
            afresh).
        """
        resume: LoopState | None = None
        save = None
        directory = self._options.checkpoint_dir
        if resumable is not None and directory is not None:
            name, identity = self.name, self._checkpoint_identity()
            if stage is not None:
                name, identity = f"{name}.{stage['stage']}", identity | dict(stage)
            store = TorchCheckpoints(directory, name, identity)
            resume = store.load(resumable)

            def save(state: LoopState) -> None:
                store.save(resumable, state)

        history = run_epochs(
            schedule,
            train_epoch,
            validation=validation,
            report=self._report if report is None else report,
            resume=resume,
            save=save,
            agree=stop_agreement(self._options.parallel),
        )
        return history, None if resume is None else resume.epoch

    def _checkpoint_identity(self) -> dict[str, object]:
        """What this fit is, for its checkpoints: model, config, seed, training histories (in
        time order), validation part, test shape, and this worker's place in a shared fit."""
        options = self._options
        validation = options.validation
        parallel = options.parallel
        return {
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "seed": options.seed,
            "histories_sha256": histories_digest(self.history_indptr_, self.history_items_),
            "validation_sha256": None
            if validation is None
            else histories_digest(*validation.sequences()),
            "test_shape": options.test_shape,
            "worker": None if parallel is None else [parallel.rank, parallel.world_size],
        }


class _AdamSettings(Protocol):
    @property
    def learning_rate(self) -> float: ...

    @property
    def weight_decay(self) -> float: ...


def adam(network: torch.nn.Module, config: _AdamSettings) -> torch.optim.Adam:
    """Adam over all of ``network``'s weights at the config's learning rate and weight decay."""
    return torch.optim.Adam(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )


@runtime_checkable
class NetworkFitEngine(Protocol):
    """An engine that trains a torch model's network data-parallel on its workers.

    Attributes:
        name: Short name recorded with the fit.
    """

    name: str

    def fit_network(
        self, model: Recommender, train: Interactions, options: FitOptions
    ) -> Recommender:
        """A new model of ``model``'s class and config, fitted on ``train`` with ``options``
        (seed, privacy, validation) by this engine's workers; ``model`` is not changed.

        A private fit's guarantee must be that of the same fit in one process (the workers
        share each logical DP-SGD batch and the noise is added once per step)."""
        ...


class NetworkStateMixin(Recommender):
    """Validation and persistence of a torch model's ``network_``.

    The host model builds its (untrained) network with :meth:`_new_network` from its config
    (declaring ``network_`` as that network's class) and keeps ``network_``, ``loss_history_``,
    ``validation_history_`` and ``best_epoch_``. Weights travel as named arrays
    (``network.<parameter>``), so saving goes through safetensors like every other model.
    """

    network_: torch.nn.Module
    loss_history_: np.ndarray
    validation_history_: np.ndarray
    best_epoch_: int

    @abstractmethod
    def _new_network(self) -> torch.nn.Module:
        """A new, untrained network of the shape the config and the vocabulary give."""

    def _network_validation(
        self, network: torch.nn.Module, validation: ValidationSet | None
    ) -> Validation | None:
        """Validation of ``network`` mid-fit (``None`` without a validation set).

        Evaluating puts the network in eval mode as ``network_`` and scores the validation
        users' training histories with ``_score_histories``; the kept weights are the network's
        state dict. The host's epoch puts the network back in training mode.
        """
        if validation is None:
            return None

        def evaluate() -> dict[str, float]:
            self.network_ = network.eval()
            return validation.evaluate(lambda _, histories: self._score_histories(histories))

        return Validation(
            evaluate=evaluate, snapshot=network.state_dict, restore=network.load_state_dict
        )

    def _fit_on_engine(self, train: Interactions, options: FitOptions) -> bool:
        """Train on the fit's engine when it has one (``False``: train here).

        The engine (a :class:`~privrank.models.engine.NetworkFitEngine`) fits a replica of this
        model data-parallel on its workers; this model takes its network, histories of loss and
        validation, cold-start popularity, (private fit) guarantee and what the engine recovered
        from (``recoveries_``, ``resumed_from_epoch_``), and reports the per-epoch losses to
        the fit's progress callback afterwards (then the epochs of
        :meth:`_epochs_after_selection`, without a loss). A checkpoint directory goes to the
        engine when it declares ``supports_checkpoints`` (Ray: per-rank checkpoints in Ray
        Train's storage).

        Raises:
            ConfigError: The engine cannot train a network, or takes no checkpoint directory.
        """
        engine = options.engine
        if engine is None:
            return False
        if options.checkpoint_dir is not None and not getattr(
            engine, "supports_checkpoints", False
        ):
            raise ConfigError(
                f"{type(self).__name__}'s data-parallel fit on the {engine.name!r} engine writes "
                "no checkpoints to a checkpoint directory; refusing the directory rather "
                "than ignore it (drop --checkpoint-dir, or fit in this process)"
            )
        if not isinstance(engine, NetworkFitEngine):
            raise ConfigError(
                f"{type(self).__name__} trains its network data-parallel; the {engine.name!r} "
                "engine cannot (it has no fit_network)"
            )
        fitted = engine.fit_network(self, train, options)
        if type(fitted) is not type(self) or fitted.n_items_ != self.n_items_:
            raise ConfigError(f"the {engine.name!r} engine returned a model that is not this fit")
        self._set_state(fitted._state())
        self.item_popularity_ = fitted.item_popularity_
        self.privacy_guarantee_ = fitted.privacy_guarantee_
        self.recoveries_ = fitted.recoveries_
        self.resumed_from_epoch_ = fitted.resumed_from_epoch_
        run, after = len(self.loss_history_), self._epochs_after_selection()
        for epoch, loss in enumerate(self.loss_history_.tolist(), start=1):
            self._report(epoch, run, loss)
        for epoch in range(run + 1, run + after + 1):  # their losses stayed on the workers
            self._report(epoch, run + after)
        return True

    def _epochs_after_selection(self) -> int:
        """Epochs of the kept network trained after the loss history's run (SASRec's refit),
        reported by :meth:`_fit_on_engine` without a loss; 0 here."""
        return 0

    def _state(self) -> dict[str, np.ndarray]:
        state = {
            f"network.{k}": v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()
        }
        state["loss_history"] = self.loss_history_
        state["validation_history"] = self.validation_history_
        state["best_epoch"] = np.asarray([self.best_epoch_], dtype=np.int64)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        network = self._new_network()
        prefix = "network."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            network.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        except RuntimeError as exc:
            raise ValueError(f"network weights do not fit the config: {exc}") from None
        self.network_ = network.eval()
        self.loss_history_ = state["loss_history"]
        self.validation_history_ = state["validation_history"]
        self.best_epoch_ = int(np.asarray(state["best_epoch"]).reshape(-1)[0])
