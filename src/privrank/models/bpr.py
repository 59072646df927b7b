"""BPR: matrix factorisation trained by Bayesian personalised ranking (Rendle et al. 2009)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch.nn import functional

from privrank.data.interactions import Interactions
from privrank.models._bpr_fold_in import fold_in_vectors
from privrank.models._epochs import EpochSchedule, Validation
from privrank.models._private import PlannedDPSGDFit
from privrank.models._torch_training import EpochFitMixin, seeded
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.capabilities import StoredFactors

__all__ = ["BPR", "BPRConfig", "BPRPrivateConfig", "bpr_loss", "user_bpr_loss"]

_NEGATIVE_ROUNDS = 64


class BPRPrivateConfig(ModelConfig):
    """Settings of a private BPR fit (DP-SGD), the ``private`` block of :class:`BPRConfig`.

    Attributes:
        batch_size: Expected *users* per DP-SGD step (Poisson sampling; each sampled user
            brings all of its pairs).
    """

    batch_size: int = Field(256, ge=1)


class BPRConfig(ModelConfig):
    """Hyper-parameters of :class:`BPR`.

    Attributes:
        factors: Embedding dimension :math:`d`.
        epochs: Most epochs (each visits every observed pair once).
        batch_size: Triples per Adam step.
        learning_rate: Adam's step size. The default, 0.003 (was 0.01), was chosen on
            validation parts carved from training data (BENCHMARKS.md, "Models that hold up,
            round 3"): of 0.003 / 0.01 / 0.03 it is best on ML-100K, Beauty and two synthetic
            densities (+8% to +9% NDCG@10 over 0.01 on each). A private fit uses it too.
        regularization: :math:`\\lambda`, the L2 weight on the parameters of each triple.
            The default, 0.01, was chosen on validation parts carved from training data
            (BENCHMARKS.md, "Defaults that generalise"): the earlier 1e-4 let Adam overfit
            (ML-100K validation NDCG@10 0.153 against 0.231 at 0.01; implicit's BPR 0.171), the
            main reason BPR trailed implicit's BPR.
        init_std: Initial factors are drawn from :math:`\\mathcal N(0, \\sigma^2)`.
        patience: With a validation split: evaluations without a better NDCG@10 before stopping
            (0: train all epochs, still keeping the best epoch's weights).
        validate_every: Epochs between validation evaluations.
        fold_in_steps: Adam steps that fit a new history's user vector (fold-in).
        fold_in_negatives: :math:`K`, negatives drawn per history at each fold-in step (all
            of them when it has at most :math:`K`).
        fold_in_learning_rate: Their step size.
        max_seconds: Stop after the first epoch that ends past this many seconds; ``None``: no
            limit.
        private: Settings of a private fit (DP-SGD, :class:`BPRPrivateConfig`); ``None``:
            its defaults when the fit has a privacy spec. Refused by a fit without one.
    """

    factors: int = Field(64, ge=1)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(0.003, gt=0)
    regularization: float = Field(0.01, ge=0)
    init_std: float = Field(0.1, gt=0)
    patience: int = Field(5, ge=0)
    validate_every: int = Field(1, ge=1)
    fold_in_steps: int = Field(100, ge=1)
    fold_in_negatives: int = Field(128, ge=1)
    fold_in_learning_rate: float = Field(0.05, gt=0)
    max_seconds: float | None = Field(None, gt=0)
    private: BPRPrivateConfig | None = None


def bpr_loss(
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    positive_bias: torch.Tensor,
    negative_bias: torch.Tensor,
    regularization: float,
) -> torch.Tensor:
    r"""Mean BPR loss of a batch of triples :math:`(u, i, j)` given their parameters.

    .. math:: \frac1B \sum_b -\log\sigma(\hat x_{ui} - \hat x_{uj})
        + \lambda(\lVert w_u\rVert^2 + \lVert h_i\rVert^2 + \lVert h_j\rVert^2 + b_i^2 + b_j^2),
        \qquad \hat x_{ui} = \langle w_u, h_i\rangle + b_i

    Args:
        users, positives, negatives: ``(B, d)`` rows of :math:`W`, :math:`H` (positive item),
            :math:`H` (negative item).
        positive_bias, negative_bias: ``(B,)`` item biases.
        regularization: :math:`\lambda`.
    """
    difference = (users * (positives - negatives)).sum(-1) + positive_bias - negative_bias
    penalty = (
        users.square().sum(-1)
        + positives.square().sum(-1)
        + negatives.square().sum(-1)
        + positive_bias.square()
        + negative_bias.square()
    )
    return (functional.softplus(-difference) + regularization * penalty).mean()


@register("bpr")
class BPR(EpochFitMixin, Recommender, StoredFactors, PlannedDPSGDFit):
    r"""Matrix factorisation learned with Bayesian Personalised Ranking (Rendle, Freudenthaler,
    Gantner and Schmidt-Thieme, UAI 2009), in PyTorch.

    User :math:`u` and item :math:`i` get :math:`w_u, h_i \in \mathbb R^d` and item :math:`i`
    a bias :math:`b_i`; the score is :math:`\hat x_{ui} = \langle w_u, h_i\rangle + b_i`. Each
    epoch visits every observed pair :math:`(u, i)` once in random order, draws a negative
    :math:`j` uniformly among the items :math:`u` has *not* interacted with, and takes Adam
    steps on the mean of (see :func:`bpr_loss`)

    .. math:: -\log\sigma(\hat x_{ui} - \hat x_{uj}) + \lambda(\lVert w_u\rVert^2
              + \lVert h_i\rVert^2 + \lVert h_j\rVert^2 + b_i^2 + b_j^2).

    With ``fit(..., validation=part)``, every ``validate_every`` epochs the model ranks all
    items for the validation users (training items removed), reports NDCG@10/HR@10, keeps the
    best epoch's weights and stops after ``patience`` evaluations without improvement.

    **Fold-in** (:mod:`privrank.models._bpr_fold_in`). A new history :math:`P` gets the user
    vector minimising the same objective against all its negatives, with the item parameters
    fixed,

    .. math:: w^\star = \arg\min_w \frac{1}{|P|\,|I\setminus P|}\sum_{i\in P}
              \sum_{j\notin P} -\log\sigma(\langle w, h_i - h_j\rangle + b_i - b_j)
              + \lambda\lVert w\rVert^2,

    approximated by ``fold_in_steps`` Adam steps from :math:`w = 0`, all histories of a batch
    at once. Each step estimates the sum over :math:`j\notin P` from ``fold_in_negatives``
    (:math:`K`) fresh uniform draws from :math:`I\setminus P` (all of it when it has at most
    :math:`K` items: the gradient is then exact), drawn by a generator seeded by the history's
    items, so each history is folded in independently, order and repeats ignored, the same in
    every run. A step costs :math:`O((|P| + K)\,d + |P|\,K)` per history, whatever the
    catalogue size. Tolerance (``tests/models/test_bpr.py``): with every negative drawn, the
    vectors equal those of a per-history reference with all negatives to 1e-4 (relative);
    with fewer, each history's scores keep a Pearson correlation of at least 0.95 with that
    reference's, and training users' fold-in scores match their training-time scores as
    closely as the reference's do. A training user's stored vector came from stochastic
    training instead, so its fold-in scores are close to, not equal to, its training-time
    scores (``fold_in_matches_training = False``).

    **Private fit** (``FitOptions(privacy=spec)``): user-level DP-SGD on the *item side*
    (:mod:`privrank.privacy.dpsgd`), in the billboard model of joint DP (as DP-EASE keeps each
    user's history). One user is one example: in each of ``epochs · round(n/b)`` steps users are
    Poisson-sampled with probability ``q = b/n`` (``b = private.batch_size``), and a sampled
    user's loss is the sum of the objective above over **all** its contribution-bounded
    positives, each with one uniform negative. Its gradient with respect to the item factors
    and biases is computed exactly (``torch.func``, on that user's rows only), clipped to the
    spec's clipping norm C, and Gaussian noise of std ``m·C`` is added to the sum before
    dividing by ``b``; Adam updates from it. The user's own factor :math:`w_u` gets that
    user's unclipped gradient (divided by ``b``) and is updated only from it and the released
    item parameters.

    What is (ε, δ)-DP, user-level: the **item factors and item biases** (every iterate) and the
    noisy item counts used for cold start, composed under the spec's accountant. What is *not*
    a release: each user's factor :math:`w_u`, computed from that user's own data and the DP
    item parameters, like the user's stored history; a user's recommendations therefore depend
    on other users only through DP outputs (joint DP), but ``user_factors_`` (saved with the
    model) is personal data and must not be published. Fold-in of a new history uses only the
    item parameters. A private fit trains all ``epochs``: it ignores ``validation`` and
    ``max_seconds``, and records no validation or loss history (the loss is computed without
    noise, so it is not released).

    Attributes:
        user_factors_: :math:`W`, ``n_users × d`` float32.
        item_factors_: :math:`H`, ``n_items × d`` float32.
        item_bias_: :math:`b`, ``n_items`` float32.
        loss_history_: Mean training loss per epoch (float64).
        validation_history_: ``(evaluations, 3)``: epoch, NDCG@10, HR@10.
        best_epoch_: The epoch whose weights were kept.
    """

    Config = BPRConfig
    config: BPRConfig
    PrivateConfig = BPRPrivateConfig
    seeded = True
    uses_torch = True
    fold_in_matches_training = False
    supports_privacy = True
    user_state_keys = ("user_factors",)

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self.config
        validation = self._validation()
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        users = np.repeat(np.arange(self.n_users_), np.diff(matrix.indptr))
        items = matrix.indices.astype(np.int64)
        keys = users.astype(np.int64) * self.n_items_ + items  # sorted: CSR order
        generator = torch.Generator().manual_seed(options.seed)
        rng = np.random.default_rng(options.seed)
        user_factors, item_factors, item_bias = self._initial_parameters(options.seed, generator)
        parameters = [user_factors, item_factors, item_bias]
        optimizer = torch.optim.Adam(parameters, lr=cfg.learning_rate)

        def train_epoch(epoch: int) -> float:
            order = rng.permutation(len(users))
            negatives = self._negatives(users[order], keys, rng)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                rows = order[start : start + cfg.batch_size]
                u = torch.from_numpy(users[rows])
                i = torch.from_numpy(items[rows])
                j = torch.from_numpy(negatives[start : start + cfg.batch_size])
                loss = bpr_loss(
                    user_factors[u],
                    item_factors[i],
                    item_factors[j],
                    item_bias[i],
                    item_bias[j],
                    cfg.regularization,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            self._store(user_factors, item_factors, item_bias)
            return total / max(len(order), 1)

        self._run_epochs(EpochSchedule.of(cfg), train_epoch, validation)

    def _validation(self) -> Validation | None:
        """Validation on the fit's validation split (``None`` without one): rank all items
        for each validation user from the stored factors; keep and restore the factors."""
        held = self._validation_set()
        if held is None:
            return None
        return Validation(
            evaluate=lambda: held.evaluate(lambda users, _: self._score_users(users)),
            snapshot=self._state_during_fit,
            restore=self._restore_during_fit,
        )

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: Any
    ) -> None:
        from privrank.privacy.dpsgd import VmapClipping, start_private_run

        cfg = self.config
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        run = start_private_run(spec, matrix, self.private_batch_size(), cfg.epochs)
        self.item_popularity_ = run.item_counts.astype(np.float32)
        indptr = matrix.indptr.astype(np.int64)
        lengths = np.diff(indptr)
        users_of = np.repeat(np.arange(self.n_users_), lengths)
        keys = users_of.astype(np.int64) * self.n_items_ + matrix.indices  # sorted: CSR order
        generator = torch.Generator().manual_seed(options.seed)
        rng = np.random.default_rng(options.seed)
        user_factors, item_factors, item_bias = self._initial_parameters(options.seed, generator)
        optimizer = torch.optim.Adam([user_factors, item_factors, item_bias], lr=cfg.learning_rate)
        regularization = cfg.regularization

        def user_loss(params, local, data):
            return user_bpr_loss(params, local[0], *data, regularization)

        engine = VmapClipping(
            {"item_factors": item_factors, "item_bias": item_bias}, user_loss, spec.clipping_norm
        )
        trainer = run.trainer(engine, optimizer)

        def train_epoch(epoch: int) -> None:  # no loss: it is not a private release
            for users in run.sampler.epoch(run.plan.steps_per_epoch):
                users = users[lengths[users] > 0]  # a user without items adds nothing
                positives, mask = _padded_rows(indptr, matrix.indices, users)
                flat = np.repeat(users, mask.sum(axis=1))
                negatives = np.zeros_like(positives)
                negatives[mask] = self._negatives(flat, keys, rng)
                data, gathered = _gathered_pairs(positives, negatives, mask, self.n_items_)
                codes = torch.from_numpy(users)
                _, (local,) = trainer.privatise((user_factors.detach()[codes],), data, gathered)
                user_factors.grad = torch.zeros_like(user_factors).index_add_(0, codes, local)
                optimizer.step()

        # Every epoch, no validation, no time budget: the accounting covers exactly these steps.
        self._run_epochs(EpochSchedule(cfg.epochs), train_epoch)
        self._store(user_factors, item_factors, item_bias)
        self.privacy_guarantee_ = run.guarantee(
            spec,
            statistic="the summed per-user clipped gradients of the item factors and biases",
            released=(
                "the item factors and item biases (each user's own factor is computed from that "
                "user's data and the released item parameters only, and is not a release)"
            ),
        )

    def private_batch_size(self) -> int:
        """``b`` of a private fit: the ``private`` block's batch size."""
        return self.private_settings(BPRPrivateConfig).batch_size

    def _store(self, users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor) -> None:
        self.user_factors_ = users.detach().numpy().copy()
        self.item_factors_ = items.detach().numpy().copy()
        self.item_bias_ = bias.detach().numpy().copy()

    def _negatives(
        self, users: np.ndarray, keys: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One uniform item per row that the row's user has not interacted with.

        Rejection sampling, at most ``_NEGATIVE_ROUNDS`` rounds: a row still unresolved after
        them belongs to a user who has interacted with (nearly) every item, and keeps its last
        draw (its pair then carries no ranking signal) instead of looping for ever.
        """
        negatives = rng.integers(self.n_items_, size=len(users))
        pending = np.arange(len(users))
        for _ in range(_NEGATIVE_ROUNDS):
            if not pending.size:
                break
            candidate = users[pending].astype(np.int64) * self.n_items_ + negatives[pending]
            found = np.searchsorted(keys, candidate)
            seen = (found < len(keys)) & (keys[np.minimum(found, len(keys) - 1)] == candidate)
            pending = pending[seen]
            negatives[pending] = rng.integers(self.n_items_, size=pending.size)
        return negatives

    # ---------------------------------------------------------------- scoring
    def _score_users(self, user_codes: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_codes] @ self.item_factors_.T + self.item_bias_

    def _score_histories(self, histories: Query) -> np.ndarray:
        return self.fold_in(histories) @ self.item_factors_.T + self.item_bias_

    def item_biases(self) -> np.ndarray:
        """The item biases :math:`b`."""
        return self.item_bias_

    def fold_in(self, histories: Query, batch_size: int = 1024) -> np.ndarray:
        """User vectors for ad-hoc histories (see the class docstring), ``(n, d)`` float32;
        zero rows for empty histories. ``batch_size``: most histories fitted together."""
        self._require_fitted()
        query = self._checked_query(histories)
        if query.user_codes is not None:
            query = self._training_histories(query.user_codes)
        cfg = self.config
        return fold_in_vectors(
            self.item_factors_,
            self.item_bias_,
            query.to_csr(self.n_items_),
            negatives=cfg.fold_in_negatives,
            steps=cfg.fold_in_steps,
            learning_rate=cfg.fold_in_learning_rate,
            regularization=cfg.regularization,
            max_users=batch_size,
        )

    # ---------------------------------------------------------------- state
    def _initial_parameters(self, seed: int, generator: Any) -> tuple[Any, Any, Any]:
        """User factors, item factors (both ``N(0, init_std²)``) and zero item biases."""
        cfg = self.config
        with seeded(seed):
            user_factors = torch.nn.Parameter(
                torch.randn((self.n_users_, cfg.factors), generator=generator) * cfg.init_std
            )
            item_factors = torch.nn.Parameter(
                torch.randn((self.n_items_, cfg.factors), generator=generator) * cfg.init_std
            )
            item_bias = torch.nn.Parameter(torch.zeros(self.n_items_))
        return user_factors, item_factors, item_bias

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "item_bias": self.item_bias_,
            "loss_history": self.loss_history_,
            "validation_history": self.validation_history_,
            "best_epoch": np.asarray([self.best_epoch_], dtype=np.int64),
        }

    def _state_during_fit(self) -> dict[str, np.ndarray]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "item_bias": self.item_bias_,
        }

    def _restore_during_fit(self, state: dict[str, np.ndarray]) -> None:
        self.user_factors_ = state["user_factors"]
        self.item_factors_ = state["item_factors"]
        self.item_bias_ = state["item_bias"]

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        d = self.config.factors
        users, items, bias = state["user_factors"], state["item_factors"], state["item_bias"]
        if (
            users.shape != (self.n_users_, d)
            or items.shape != (self.n_items_, d)
            or bias.shape != (self.n_items_,)
        ):
            raise ValueError(
                f"factors have shapes {users.shape}, {items.shape} and {bias.shape}, expected "
                f"({self.n_users_}, {d}), ({self.n_items_}, {d}) and ({self.n_items_},)"
            )
        self.user_factors_, self.item_factors_, self.item_bias_ = users, items, bias
        self.loss_history_ = state["loss_history"]
        self.validation_history_ = state["validation_history"]
        self.best_epoch_ = int(np.asarray(state["best_epoch"]).reshape(-1)[0])


def user_bpr_loss(
    params: dict[str, torch.Tensor],
    user: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    mask: torch.Tensor,
    regularization: float,
) -> torch.Tensor:
    r"""One user's BPR objective: the sum over its (masked) pairs of the terms of
    :func:`bpr_loss`, given the item parameters ``params`` (``item_factors``, ``item_bias``)
    and the user's factor ``user`` (``(d,)``); ``positives``, ``negatives``, ``mask``: ``(k,)``.
    Written for ``torch.func.vmap`` (one user's slices)."""
    items, bias = params["item_factors"], params["item_bias"]
    h_i, h_j = items[positives], items[negatives]
    b_i, b_j = bias[positives], bias[negatives]
    difference = (h_i - h_j) @ user + b_i - b_j
    penalty = (
        user.square().sum()
        + h_i.square().sum(-1)
        + h_j.square().sum(-1)
        + b_i.square()
        + b_j.square()
    )
    return ((functional.softplus(-difference) + regularization * penalty) * mask).sum()


def _gathered_pairs(
    positives: np.ndarray, negatives: np.ndarray, mask: np.ndarray, n_items: int
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """The engine's ``(data, gathered)`` for padded ``(B, k)`` pairs: each user gets only the
    rows of its own positives and negatives of the item factors and biases (distinct; padded
    with global row 0 at local positions no pair uses), and its pairs in those local rows."""
    from privrank.privacy.dpsgd import local_vocabulary

    both = np.concatenate([mask, mask], axis=1)
    codes = torch.from_numpy(np.where(both, np.concatenate([positives, negatives], axis=1), -1))
    distinct, local = local_vocabulary(codes, n_items)
    rows = distinct.clamp(min=0)
    width = positives.shape[1]
    local = local.clamp(min=0)  # a masked pair (weight 0 in the loss) points at local row 0
    data = (local[:, :width], local[:, width:], torch.from_numpy(mask.astype(np.float32)))
    return data, {"item_factors": rows, "item_bias": rows}


def _padded_rows(
    indptr: np.ndarray, indices: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The items of each user in ``users`` as a ``(len(users), k_max)`` int64 array padded with
    0, and the boolean mask of real entries (at least one column)."""
    lengths = indptr[users + 1] - indptr[users]
    width = max(int(lengths.max(initial=0)), 1)
    mask = np.arange(width) < lengths[:, None]
    out = np.zeros((len(users), width), dtype=np.int64)
    rows = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, offsets] = indices[np.repeat(indptr[users], lengths) + offsets]
    return out, mask
