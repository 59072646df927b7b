"""SASRec: self-attentive sequential recommendation (Kang and McAuley 2018)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models._device import DeviceName, torch_device
from privrank.models._epochs import EpochHistory, EpochSchedule
from privrank.models._private import DPSGDPrivateConfig, PlannedDPSGDFit
from privrank.models._sasrec_network import (
    SASRecNetwork,
    gbce_beta,
    left_padded,
    sequence_loss,
    trimmed,
)
from privrank.models._torch_training import (
    EpochFitMixin,
    NetworkStateMixin,
    TorchFitState,
    ValidationSet,
    adam,
    seeded,
)
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.parallel import (
    DataParallel,
    all_reduce_gradients,
    share,
    sync_generator,
    worker_seed,
)

__all__ = ["SASRec", "SASRecConfig"]


class SASRecConfig(ModelConfig):
    r"""Hyper-parameters of :class:`SASRec`.

    Attributes:
        factors: Hidden size :math:`d` (divisible by ``heads``).
        blocks: Self-attention blocks.
        heads: Attention heads.
        max_length: :math:`L`, the most recent items a prediction looks at.
        dropout: Dropout rate (embeddings, attention weights, feed-forward outputs).
        loss: ``softmax`` (full cross-entropy over all items), ``sampled-softmax``
            (cross-entropy against ``negatives`` uniformly drawn items, the eSASRec choice),
            ``gbce`` (gSASRec's generalised binary cross-entropy against ``negatives`` uniformly
            drawn items, calibrated by ``gbce_t``) or ``bce`` (the paper's binary
            cross-entropy, one negative per position).
        negatives: Negatives per batch (or per position) for ``sampled-softmax`` and ``gbce``.
        negative_sharing: ``batch``: one set of ``negatives`` uniformly drawn items shared by
            every position of a batch; ``position``: an independent set per position (as
            RecTools and the eSASRec study draw them; non-private fits only).
        gbce_t: gSASRec's calibration :math:`t \in [0, 1]` of ``gbce`` (0: plain BCE against
            the negatives; 1: fully calibrated to the catalogue).
        epochs: Most training epochs.
        batch_size: Sequences per step.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 weight decay.
        patience: With a validation split: evaluations without a better NDCG@10 before stopping
            (0: train all epochs, still keeping the best epoch's weights).
        validate_every: Epochs between validation evaluations.
        max_seconds: Stop after the first epoch that ends past this many seconds of training
            (then the result depends on the machine's speed); the budget covers the selection
            run and the refit together; ``None``: no limit.
        carve_validation: When the fit is given no validation part, carve one from the
            training data for early stopping (``carve`` says how). ``False``: without a
            validation part, train all ``epochs``.
        carve: Which item of every user with at least 3 training items the carve holds out as
            that user's validation target: ``last`` (the next-item task; the item stays in the
            user's history for scoring, as a leave-one-out validation item does), ``random``
            (one item drawn uniformly from the user's sequence after its first, removed from the
            training sequence and from the validation history: the task of a random holdout),
            or ``auto`` (the default): the task the fit says it will be tested on
            (``FitOptions.test_shape``: ``random`` for a random holdout), else ``last``. A
            carve of the wrong shape picks the wrong epoch: on a random 20% carve of ML-100K's
            training data, stopping on the last items kept epoch 25 (validation NDCG@10 0.129,
            below most-popular's 0.141), stopping on random items epoch 9 (BENCHMARKS.md,
            "SASRec on ML-100K").
        refit: After early stopping has chosen the best epoch :math:`E` on a validation part
            (given or carved), train a fresh network from the same seed for exactly :math:`E`
            epochs on the training sequences with the validation items put back (a given
            part's items appended after each user's training items, in time order; a carve's
            items back in their places), and keep that network. The validation items are
            each user's most recent interactions, the ones a next-item test follows; the cost
            is :math:`E` more epochs, inside ``max_seconds`` (a refit the budget leaves no room
            for is skipped or dropped, keeping the best validated weights; see
            :class:`SASRec`). ``True`` (default) was
            chosen one item earlier on Beauty, on data without the test items (the
            protocol's validation item scored, the item before it for early stopping): NDCG@10
            0.0616 [0.0590, 0.0641] with the refit against 0.0494 [0.0470, 0.0517] without,
            and on ML-100K's random holdout it changed nothing measurable (0.2238 against
            0.2256, at 2.5x the fit; BENCHMARKS.md, "models18" and "lead (session 13)").
            ``False``: keep the best validated weights.
        private: Settings of a private fit (DP-SGD,
            :class:`~privrank.models._private.DPSGDPrivateConfig`); ``None``: its defaults
            when the fit has a privacy spec. Refused by a fit without one.
        device: Where the network trains, validates and scores (:mod:`privrank.models._device`):
            ``cpu`` (default), ``cuda`` or ``auto`` (CUDA when visible). Batches and negatives
            are drawn on the CPU whatever the device; scores come back as CPU arrays. Private
            and data-parallel fits run on the CPU (``auto`` gives the CPU, ``cuda`` is refused).
    """

    factors: int = Field(64, ge=1)
    blocks: int = Field(1, ge=1)
    heads: int = Field(1, ge=1)
    max_length: int = Field(50, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    loss: Literal["softmax", "sampled-softmax", "gbce", "bce"] = "softmax"
    negatives: int = Field(256, ge=1)
    negative_sharing: Literal["batch", "position"] = "batch"
    gbce_t: float = Field(0.75, ge=0, le=1)
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=0)
    validate_every: int = Field(1, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    carve_validation: bool = True
    carve: Literal["auto", "last", "random"] = "auto"
    refit: bool = True
    private: DPSGDPrivateConfig | None = None
    device: DeviceName = "cpu"

    @model_validator(mode="after")
    def _heads_divide_factors(self) -> SASRecConfig:
        if self.factors % self.heads:
            raise ValueError(
                f"The 'factors' parameter ({self.factors}) must be divisible by 'heads' "
                f"({self.heads})."
            )
        return self


@register("sasrec")
class SASRec(EpochFitMixin, NetworkStateMixin, Recommender, PlannedDPSGDFit):
    r"""Self-Attentive Sequential Recommendation (Kang and McAuley, ICDM 2018), trained with
    full or sampled softmax as in the eSASRec study (arXiv 2508.06450).

    **Architecture.** A history :math:`s_1, \dots, s_n` (its last :math:`L` items, left-padded)
    is embedded as :math:`x_t = \sqrt d\, e_{s_t} + p_t` (item embedding :math:`E`, learned
    position embedding :math:`P`, slot :math:`L` holding the latest item). ``blocks`` blocks
    follow, each

    .. math::

        q = \mathrm{LN}(x),\quad x \leftarrow q + \mathrm{MHA}(q, x, x)
            \text{ (causal: slot } t \text{ attends to slots } \le t),\\
        x \leftarrow \mathrm{LN}(x),\quad x \leftarrow x + W_2\,\mathrm{ReLU}(W_1 x + b_1) + b_2,

    and a final layer norm gives :math:`h_t`. The score of item :math:`i` after the history is
    :math:`\hat y_i = \langle h_n, e_i\rangle` (input and output embeddings are shared).

    **Losses** (mean over every position :math:`t` with a next item :math:`s_{t+1}`):

    - ``softmax``: :math:`-\log \frac{\exp \langle h_t, e_{s_{t+1}}\rangle}{\sum_{j\in I}
      \exp \langle h_t, e_j\rangle}`;
    - ``sampled-softmax``: the same over :math:`\{s_{t+1}\} \cup N`, with :math:`N` ``negatives``
      items drawn uniformly per batch, or per position with ``negative_sharing="position"`` (a
      drawn item equal to the target is masked out);
    - ``bce``: :math:`-\log\sigma\langle h_t, e_{s_{t+1}}\rangle - \log\sigma(-\langle h_t,
      e_j\rangle)`, one uniform negative :math:`j` per position.
    - ``gbce`` (gSASRec, Petrov and Macdonald, RecSys 2023): :math:`-\beta \log\sigma\langle
      h_t, e_{s_{t+1}}\rangle - \sum_{j \in N} \log\sigma(-\langle h_t, e_j\rangle)` over the
      same per-batch negatives as ``sampled-softmax`` (the target masked out), with
      :math:`\beta = \alpha(t(1 - 1/\alpha) + 1/\alpha)`, :math:`\alpha = |N| / (|I| - 1)`
      and calibration :math:`t` = ``gbce_t``, which counters the overconfidence that negative
      sampling gives BCE.

    Training: Adam over shuffled users, each contributing its last :math:`L + 1` training items.
    With ``fit(..., validation=part)`` every ``validate_every`` epochs the model ranks all items
    for each validation user after their training sequence (training items removed), reports
    NDCG@10/HR@10, keeps the best epoch's weights and stops after ``patience`` evaluations
    without improvement. Without a validation part (and ``carve_validation``, the default)
    the fit carves one from the training data (:func:`carve_last_items`: the last item of each
    user with at least 3 training items is a validation target, not a training target) and
    stops early on it the same way: a fixed epoch count overfits small data sets (on ML-100K
    validation NDCG@10 peaks near epoch 10 of 200). With ``refit`` (the default) the
    validation part only chooses the epoch count :math:`E` (``best_epoch_``): a fresh network
    is then trained from the fit's seed for :math:`E` epochs on the training sequences with
    the validation items put back, so that the most recent items are training targets too,
    and that network is kept (``refit_epochs_ = E``). Its epochs are reported after the
    selection run's, numbered on from its last, without validation metrics; the selection
    run's ``loss_history_``, ``validation_history_`` and ``best_epoch_`` stay.

    **Time budget.** ``max_seconds`` bounds the whole fit, the refit included: the refit gets
    what the selection run left of it. When nothing is left (the selection run stopped on the
    budget, or its last epoch ended past it) the refit does not start; when the budget runs
    out before its :math:`E` epochs, its network is dropped (an under-trained network that no
    validation has looked at). In both cases the best validated weights are kept and
    ``refit_epochs_`` is 0. As any time budget, this makes the result depend on the machine's
    speed.

    **Checkpoints** (``FitOptions(checkpoint_dir=...)``): after every epoch of the selection run
    (``sasrec.checkpoint.safetensors``) and of the refit (``sasrec.refit.checkpoint.safetensors``,
    the fit's identity plus the refit's epoch count :math:`E`), each holding the network, Adam's
    state and the random streams (:mod:`privrank.models._torch_checkpoint`). A fit stopped after
    any epoch of either and run again goes on from there and ends with the uninterrupted fit's
    weights, bit for bit on a CPU with the same threads; a finished fit run again trains
    nothing. ``resumed_from_epoch_`` counts in the progress reports' numbering (selection epochs
    run, then refit epochs).

    **Fold-in** is native: any history is scored by running the network on it, so a training
    user's fold-in equals its training-time score.

    **Private fit** (``FitOptions(privacy=spec)``): user-level DP-SGD
    (:mod:`privrank.privacy.dpsgd`). The sequences are rebuilt from the contribution-bounded
    data (each user's ``max_interactions_per_user`` kept rows, in time order), and one user's
    sequence (its last :math:`L + 1` bounded items) is one example whose loss is the mean of the
    chosen loss over its positions. Each of ``epochs · round(n/b)`` steps Poisson-samples users
    with probability ``q = b/n`` (``b = private.batch_size``), computes every sampled user's
    exact gradient with ``torch.func`` (the item embeddings are tied to the output layer, which
    per-layer hooks cannot see; with ``sampled-softmax``, ``gbce`` or ``bce`` each user gets only
    the embedding rows of its own items and negatives, so the cost does not grow with the
    catalogue), clips it to the spec's clipping norm C and adds Gaussian noise
    of std ``m·C`` to the sum before dividing by ``b``; Adam updates from it. Negatives and
    dropout come from the fit's seed and are shared or independent of the data. Released, and
    user-level (ε, δ)-DP: **all network weights** and the noisy item counts used for cold start
    (one Gaussian release composed with the steps under the spec's accountant). A private fit
    trains all ``epochs``: it ignores ``validation`` and ``max_seconds``, and records no
    validation or loss history (the loss is computed without noise, so it is not released).

    **Data-parallel fit** (``FitOptions(engine=RayEngine(workers=N))``, ``privrank train
    --engine ray --workers N``): the fit runs on N Ray Train workers, each a replica that takes
    its share of every batch, gradients summed over the workers
    (:mod:`privrank.models.parallel`); one worker gives this fit exactly, and a private fit's
    guarantee (sampling rate, steps, multiplier, ε) is this fit's, the noise added once per
    step.

    Attributes:
        network_: The trained :class:`SASRecNetwork` (eval mode).
        loss_history_: Mean training loss per epoch (float64).
        validation_history_: ``(evaluations, 3)``: epoch, NDCG@10, HR@10 (empty without
            validation).
        best_epoch_: The selection run's kept epoch: the best validated one (the last one
            without validation), and the refit's epoch count.
        refit_epochs_: Epochs of the refit network that was kept; 0: the kept weights are the
            selection run's (no refit asked for, no validation, a private fit, or the time
            budget left the refit no room).
    """

    Config = SASRecConfig
    config: SASRecConfig
    network_: SASRecNetwork
    PrivateConfig = DPSGDPrivateConfig
    seeded = True
    uses_torch = True
    sequential = True
    supports_privacy = True
    supports_engine = True
    supports_checkpoints = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        if self._fit_on_engine(train, options):
            return
        cfg = self.config
        parallel = options.parallel
        device = torch_device(
            cfg.device,
            model="SASRec",
            cpu_only=None if parallel is None else "a data-parallel fit's workers use the CPU",
        )
        validation = self._validation_set()
        indptr, items = self.history_indptr_, self.history_items_
        full = (indptr, items)  # what a refit trains on: train + the validation items
        if validation is None and cfg.carve_validation:
            shape = cfg.carve if cfg.carve != "auto" else options.test_shape
            if shape == "random":
                indptr, items, validation = carve_random_items(indptr, items, options.seed)
            else:
                indptr, items, validation = carve_last_items(indptr, items)
        elif validation is not None and cfg.refit:
            assert options.validation is not None
            full = appended_sequences(indptr, items, options.validation)
        with seeded(options.seed):
            network, optimizer, generator, sequences = self._start(indptr, items, device, options)
            history = self._run_epochs(
                EpochSchedule.of(cfg),
                lambda epoch: self._train_epoch(network, optimizer, sequences, generator, parallel),
                self._network_validation(network, validation),
                TorchFitState(network, optimizer, {"batches": generator}),
            )
        self.refit_epochs_ = 0
        if cfg.refit and validation is not None and len(history.evaluations):
            refitted = self._refit(*full, device, options, history)
            if refitted is not None:
                network, self.refit_epochs_ = refitted, self.best_epoch_
        self.network_ = network.eval()

    def _start(
        self, indptr: np.ndarray, items: np.ndarray, device: torch.device, options: FitOptions
    ) -> tuple[SASRecNetwork, torch.optim.Adam, torch.Generator, torch.Tensor]:
        """A new network, its Adam, the batch generator (seeded by the fit's seed, inside
        :func:`seeded`) and the training sequences (each user's last ``L + 1`` items, users
        with at least 2)."""
        padded = left_padded(indptr, items, self.config.max_length + 1)
        sequences = torch.from_numpy(padded[(padded > 0).sum(axis=1) >= 2])
        network = self._new_network().to(device)
        generator = torch.Generator().manual_seed(options.seed)
        optimizer = adam(network, self.config)
        parallel = options.parallel
        if parallel is not None and parallel.rank:  # this worker's own dropout stream
            torch.manual_seed(worker_seed(options.seed, parallel))
        return network, optimizer, generator, sequences

    def _refit(
        self,
        indptr: np.ndarray,
        items: np.ndarray,
        device: torch.device,
        options: FitOptions,
        selection: EpochHistory,
    ) -> SASRecNetwork | None:
        """The ``refit`` option: a fresh network trained for ``best_epoch_`` epochs on these
        sequences (train + the validation items), from the fit's seed; ``None`` when the time
        budget leaves no room for it (then the selection run's best weights stay).

        The refit is the epoch loop again (no validation, no early stopping), with what is left
        of ``max_seconds`` after the selection run as its budget: none left, it does not start;
        cut short by it, its network is dropped. Its progress reports are numbered on from the
        selection run's last epoch (``epochs_run + 1``, ...; no validation metrics). It is
        checkpointed as the fit's ``refit`` stage (its own file, the fit's identity plus the
        stage and its epoch count), so a resumed fit goes on from the refit's last epoch, and
        ``resumed_from_epoch_`` counts in the progress reports' numbering. The selection run's
        loss and validation histories and ``best_epoch_`` stay.
        """
        count, run = self.best_epoch_, selection.epochs_run
        budget = self.config.max_seconds
        left = None if budget is None else budget - selection.elapsed_s
        if left is not None and left <= 0:
            return None

        def report(epoch: int, epochs: int, loss: float | None = None, **metrics: float) -> None:
            self._report(run + epoch, run + count, loss, **metrics)  # epochs == count

        with seeded(options.seed):
            network, optimizer, generator, sequences = self._start(indptr, items, device, options)
            history, resumed = self._checkpointed_epochs(
                EpochSchedule(count, max_seconds=left),
                lambda epoch: self._train_epoch(
                    network, optimizer, sequences, generator, options.parallel
                ),
                resumable=TorchFitState(network, optimizer, {"batches": generator}),
                stage={"stage": "refit", "epochs": count},
                report=report,
            )
        if resumed is not None:
            self.resumed_from_epoch_ = run + resumed
        return network if history.stopped_by == "epochs" else None

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: Any
    ) -> None:
        from privrank.privacy.dpsgd import VmapClipping, start_private_run

        if self._fit_on_engine(train, options):
            return
        cfg = self.config
        torch_device(cfg.device, model="SASRec", cpu_only="DP-SGD runs on the CPU")
        if cfg.negative_sharing == "position":
            raise ConfigError(
                "SASRec.negative_sharing: got 'position'; expected 'batch' for a private fit "
                "(its per-user gradients gather each user's negatives' rows, one set per batch)"
            )
        parallel = options.parallel
        batch = self.private_batch_size()
        run = start_private_run(spec, matrix, batch, cfg.epochs)
        self.item_popularity_ = run.item_counts.astype(np.float32)
        indptr, items = spec.bound_contributions(train).sequences()
        sequences = torch.from_numpy(left_padded(indptr, items, cfg.max_length + 1))
        trainable = (sequences > 0).sum(dim=1) >= 2  # a user with one item has no position
        with seeded(options.seed):
            network = self._new_network()
            generator = torch.Generator().manual_seed(options.seed)
            optimizer = adam(network, cfg)
            if parallel is not None and parallel.rank:  # this worker's own dropout stream
                torch.manual_seed(worker_seed(options.seed, parallel))

            beta = gbce_beta(cfg.negatives, self.n_items_, cfg.gbce_t)

            def user_loss(params, local, data):
                return _user_sequence_loss(network, params, data, cfg.loss, beta)

            engine = VmapClipping(dict(network.named_parameters()), user_loss, spec.clipping_norm)
            trainer = run.trainer(engine, optimizer, parallel)

            def train_epoch(epoch: int) -> None:  # no loss: it is not a private release
                network.train()
                for users in run.sampler.epoch(run.plan.steps_per_epoch):
                    picked = torch.from_numpy(share(parallel, users))
                    batch = sequences[picked[trainable[picked]]]
                    width = max(int((batch > 0).sum(dim=1).max()) if len(batch) else 0, 2)
                    batch = batch[:, -width:]
                    negatives = None
                    if cfg.loss in ("sampled-softmax", "gbce"):
                        drawn = torch.randint(self.n_items_, (cfg.negatives,), generator=generator)
                        negatives = drawn.expand(len(batch), -1)
                    elif cfg.loss == "bce":
                        negatives = torch.randint(
                            self.n_items_, (len(batch), width - 1), generator=generator
                        )
                    data, gathered = _private_batch(batch, negatives, self.n_items_)
                    trainer.step((), data, gathered)

            # Every epoch, no validation, no time budget: the accounting covers these steps.
            self._run_epochs(EpochSchedule(cfg.epochs), train_epoch)
        self.network_ = network.eval()
        self.refit_epochs_ = 0
        self.privacy_guarantee_ = run.guarantee(
            spec,
            statistic="the summed per-user clipped gradients of all network weights",
            released="all SASRec network weights",
        )

    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state["refit_epochs"] = np.asarray([self.refit_epochs_], dtype=np.int64)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        super()._set_state(state)
        refit = state.get("refit_epochs")  # absent from artifacts saved before the refit record
        self.refit_epochs_ = 0 if refit is None else int(np.asarray(refit).reshape(-1)[0])

    def _epochs_after_selection(self) -> int:
        return self.refit_epochs_

    def fit_summary(self) -> dict[str, Any]:
        """:meth:`EpochFitMixin.fit_summary` plus ``refit_epochs``: epochs of the refit network
        that was kept (0: the kept weights are the selection run's ``best_epoch``)."""
        return super().fit_summary() | {"refit_epochs": int(self.refit_epochs_)}

    def _new_network(self) -> SASRecNetwork:
        cfg = self.config
        return SASRecNetwork(
            self.n_items_, cfg.factors, cfg.blocks, cfg.heads, cfg.max_length, cfg.dropout
        )

    def _train_epoch(
        self,
        network: SASRecNetwork,
        optimizer: torch.optim.Optimizer,
        sequences: torch.Tensor,
        generator: torch.Generator,
        parallel: DataParallel | None = None,
    ) -> float:
        cfg = self.config
        total, count = 0.0, 0
        network.train()
        sync_generator(parallel, generator)
        parameters = list(network.parameters())
        device = parameters[0].device
        for batch in self._batches(sequences, generator):
            mine = share(parallel, batch).to(device)
            optimizer.zero_grad(set_to_none=True)
            if len(mine):
                loss = sequence_loss(
                    network,
                    mine,
                    cfg.loss,
                    cfg.negatives,
                    generator,
                    cfg.gbce_t,
                    cfg.negative_sharing,
                )
                loss.backward()
                total += loss.item() * len(mine)
                count += len(mine)
            elif cfg.loss in ("sampled-softmax", "gbce"):  # the batch's shared negatives
                torch.randint(self.n_items_, (cfg.negatives,), generator=generator)
            if parallel is not None:
                pairs = (mine[:, :-1] > 0) & (mine[:, 1:] > 0)  # the positions of the mean
                all_reduce_gradients(parallel, parameters, float(pairs.sum()))
            optimizer.step()
        if parallel is not None:
            sums = torch.tensor([total, float(count)], dtype=torch.float64)
            parallel.all_reduce([sums])
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1)

    def _batches(self, sequences: torch.Tensor, generator: torch.Generator):
        """Shuffled batches of similar lengths: a random permutation is cut into chunks of 32
        batches, each chunk sorted by length and cut into batches, and the batches shuffled
        (less padding to compute, same expected gradient)."""
        size = self.config.batch_size
        order = torch.randperm(len(sequences), generator=generator)
        lengths = (sequences > 0).sum(dim=1)
        batches: list[torch.Tensor] = []
        for start in range(0, len(order), size * 32):
            chunk = order[start : start + size * 32]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield sequences[batches[position]]

    def _score_histories(self, histories: Query, batch_size: int = 512) -> np.ndarray:
        length = self.config.max_length
        padded = left_padded(*histories.ragged(), length)
        kept = np.minimum(histories.lengths(), length)
        order = np.argsort(kept, kind="stable")
        out = np.empty((len(histories), self.n_items_), dtype=np.float32)
        network = self.network_
        device = network.item_embedding.weight.device
        with torch.inference_mode():
            items = network.item_vectors()
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = trimmed(padded[rows], kept[rows]).to(device)
                out[rows] = (network(batch)[:, -1] @ items.T).cpu().numpy()
        return out


def appended_sequences(
    indptr: np.ndarray, items: np.ndarray, extra: Interactions
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's sequence followed by that user's rows of ``extra`` (in time order).

    Args:
        indptr: Ragged sequence offsets (``n + 1``, one per user of ``extra``'s vocabulary).
        items: Item codes, each sequence in time order.
        extra: Later interactions over the same vocabulary (a leave-one-out validation part).

    Returns:
        ``(indptr, items)`` of the longer sequences.
    """
    extra_indptr, extra_items = extra.sequences()
    lengths = np.diff(indptr) + np.diff(extra_indptr)
    out_indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out_items = np.empty(int(out_indptr[-1]), dtype=items.dtype)
    own = np.repeat(out_indptr[:-1] - indptr[:-1], np.diff(indptr))
    out_items[np.arange(len(items)) + own] = items
    tail = out_indptr[:-1] + np.diff(indptr) - extra_indptr[:-1]
    out_items[np.arange(len(extra_items)) + np.repeat(tail, np.diff(extra_indptr))] = extra_items
    return out_indptr, out_items


def carve_last_items(
    indptr: np.ndarray, items: np.ndarray, min_length: int = 3
) -> tuple[np.ndarray, np.ndarray, ValidationSet | None]:
    """Hold out the last item of every sequence of at least ``min_length`` items.

    Args:
        indptr: Ragged sequence offsets (``n + 1``).
        items: Item codes, each sequence in time order.
        min_length: Shortest sequence that gives up its last item.

    Returns:
        ``(indptr, items, validation)``: the sequences without the held-out items, and a
        :class:`ValidationSet` whose users are those sequences, their histories the shortened
        sequences and their targets the held-out items (``None`` when no sequence is long
        enough; then the sequences are returned unchanged).
    """
    lengths = np.diff(indptr)
    users = np.flatnonzero(lengths >= min_length)
    if users.size == 0:
        return indptr, items, None
    return _hold_out(indptr, items, users, indptr[users + 1] - 1)


def carve_random_items(
    indptr: np.ndarray, items: np.ndarray, seed: int, min_length: int = 3
) -> tuple[np.ndarray, np.ndarray, ValidationSet | None]:
    """Hold out one random item of every sequence of at least ``min_length`` items.

    The held-out item is drawn uniformly from the sequence's positions after its first (so the
    validation history is never empty) and removed from the sequence: the validation task is
    to rank an item missing from anywhere in the history, as in a random per-user holdout.

    Args:
        indptr: Ragged sequence offsets (``n + 1``).
        items: Item codes, each sequence in time order.
        seed: Seed of the draw.
        min_length: Shortest sequence that gives up an item.

    Returns:
        ``(indptr, items, validation)`` as :func:`carve_last_items` returns them (histories are
        the sequences without the held-out item).
    """
    lengths = np.diff(indptr)
    users = np.flatnonzero(lengths >= min_length)
    if users.size == 0:
        return indptr, items, None
    rng = np.random.default_rng(seed)
    offsets = 1 + (rng.random(users.size) * (lengths[users] - 1)).astype(np.int64)
    held = indptr[users] + np.minimum(offsets, lengths[users] - 1)
    return _hold_out(indptr, items, users, held)


def _hold_out(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray, held: np.ndarray
) -> tuple[np.ndarray, np.ndarray, ValidationSet]:
    """Remove position ``held[j]`` (an index into ``items``) from the sequence of ``users[j]``;
    the removed items are the validation targets, the shortened sequences their histories."""
    kept = np.ones(len(items), dtype=bool)
    kept[held] = False
    shortened = np.diff(indptr)
    shortened[users] -= 1
    new_indptr = np.concatenate([[0], np.cumsum(shortened)]).astype(indptr.dtype)
    new_items = items[kept]
    histories = Query(indptr=new_indptr.astype(np.int64), items=new_items.astype(np.int64))
    targets = [items[i : i + 1].astype(np.int64) for i in held]
    validation = ValidationSet(users=users, histories=histories.take(users), targets=targets)
    return new_indptr, new_items, validation


def _user_sequence_loss(
    network: SASRecNetwork,
    params: dict[str, torch.Tensor],
    data: tuple[torch.Tensor, ...],
    loss: str,
    beta: float = 1.0,
) -> torch.Tensor:
    """One user's loss (under ``vmap``): the mean over the positions of its left-padded
    ``(W + 1,)`` sequence of the loss of :func:`sequence_loss` (masks, not boolean indexing).

    ``data`` is ``(sequence,)`` for ``softmax``, ``(sequence, drawn)`` for ``sampled-softmax``
    and ``gbce`` (the batch's ``(N,)`` negatives; ``beta`` is gBCE's power) and ``(sequence,
    negatives)`` for ``bce`` (``(W,)``, one per position). Codes index
    ``params["item_embedding.weight"]`` (row ``code + 1`` is item ``code``), which may be a
    user's gathered rows (then the codes are local to them).
    """
    from torch.func import functional_call
    from torch.nn import functional

    sequence = data[0]
    inputs, targets = sequence[:-1], sequence[1:]
    table = params["item_embedding.weight"]
    valid = ((inputs > 0) & (targets > 0)).to(table.dtype)
    hidden = functional_call(network, params, (inputs.unsqueeze(0),))[0]  # (W, d)
    items = table[1:]
    target = (targets - 1).clamp(min=0)
    if loss == "softmax":
        per_position = (
            -functional.log_softmax(hidden @ items.T, dim=-1)
            .gather(-1, target.unsqueeze(-1))
            .squeeze(-1)
        )
    elif loss in ("sampled-softmax", "gbce"):
        drawn = data[1]
        positive = (hidden * items[target]).sum(-1, keepdim=True)
        negative = hidden @ items[drawn].T
        clash = drawn.unsqueeze(0) == target.unsqueeze(1)
        if loss == "gbce":
            pushed = functional.softplus(negative).masked_fill(clash, 0.0).sum(-1)
            per_position = beta * functional.softplus(-positive.squeeze(-1)) + pushed
        else:
            negative = negative.masked_fill(clash, float("-inf"))
            logits = torch.cat([positive, negative], dim=1)
            per_position = -functional.log_softmax(logits, dim=1)[:, 0]
    else:
        positive = (hidden * items[target]).sum(-1)
        negative = (hidden * items[data[1]]).sum(-1)
        per_position = functional.softplus(-positive) + functional.softplus(negative)
    return (per_position * valid).sum() / valid.sum().clamp(min=1.0)


def _private_batch(
    batch: torch.Tensor, negatives: torch.Tensor | None, n_items: int
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor] | None]:
    """The engine's ``(data, gathered)`` for a batch of left-padded sequences.

    Without negatives (full softmax, which touches every item) the sequences index the whole
    embedding. Otherwise each user gets its own rows of the item embedding: the padding row and
    the distinct items of its sequence and its negatives (``(B, N)``), in
    :func:`~privrank.privacy.dpsgd.local_vocabulary` order; its codes are rewritten to them.
    """
    from privrank.privacy.dpsgd import local_vocabulary

    if negatives is None:
        return (batch,), None
    width = batch.shape[1]
    codes = torch.cat([batch - 1, negatives], dim=1)  # padding becomes -1
    distinct, local = local_vocabulary(codes, n_items)
    rows = torch.cat([torch.zeros(len(batch), 1, dtype=torch.long), distinct + 1], dim=1)
    sequence = torch.where(batch > 0, local[:, :width] + 1, 0)
    return (sequence, local[:, width:]), {"item_embedding.weight": rows}
