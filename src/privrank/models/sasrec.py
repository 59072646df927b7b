"""SASRec: self-attentive sequential recommendation (Kang and McAuley 2018)."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator

from privrank.data.interactions import Interactions
from privrank.models._sasrec_network import SASRecNetwork, left_padded, sequence_loss, trimmed
from privrank.models._torch_training import (
    EarlyStopping,
    NetworkStateMixin,
    ValidatedFitMixin,
    seeded,
)
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register

__all__ = ["SASRec", "SASRecConfig"]


class SASRecConfig(ModelConfig):
    """Hyper-parameters of :class:`SASRec`.

    Attributes:
        factors: Hidden size :math:`d` (divisible by ``heads``).
        blocks: Self-attention blocks.
        heads: Attention heads.
        max_length: :math:`L`, the most recent items a prediction looks at.
        dropout: Dropout rate (embeddings, attention weights, feed-forward outputs).
        loss: ``softmax`` (full cross-entropy over all items), ``sampled-softmax``
            (cross-entropy against ``negatives`` uniformly drawn items, the eSASRec choice) or
            ``bce`` (the paper's binary cross-entropy, one negative per position).
        negatives: Negatives per batch for ``sampled-softmax``.
        epochs: Most training epochs.
        batch_size: Sequences per step.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 weight decay.
        patience: With a validation split: evaluations without a better NDCG@10 before stopping
            (0: train all epochs, still keeping the best epoch's weights).
        validate_every: Epochs between validation evaluations.
        max_seconds: Stop after the first epoch that ends past this many seconds of training
            (then the result depends on the machine's speed); ``None``: no limit.
    """

    factors: int = Field(64, ge=1)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    max_length: int = Field(50, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    loss: Literal["softmax", "sampled-softmax", "bce"] = "sampled-softmax"
    negatives: int = Field(256, ge=1)
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=0)
    validate_every: int = Field(1, ge=1)
    max_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _heads_divide_factors(self) -> SASRecConfig:
        if self.factors % self.heads:
            raise ValueError(
                f"The 'factors' parameter ({self.factors}) must be divisible by 'heads' "
                f"({self.heads})."
            )
        return self


@register("sasrec")
class SASRec(ValidatedFitMixin, NetworkStateMixin, Recommender):
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
      items drawn uniformly per batch (a drawn item equal to the target is masked out);
    - ``bce``: :math:`-\log\sigma\langle h_t, e_{s_{t+1}}\rangle - \log\sigma(-\langle h_t,
      e_j\rangle)`, one uniform negative :math:`j` per position.

    Training: Adam over shuffled users, each contributing its last :math:`L + 1` training items.
    With ``fit(..., validation=part)`` every ``validate_every`` epochs the model ranks all items
    for each validation user after their training sequence (training items removed), reports
    NDCG@10/HR@10, keeps the best epoch's weights and stops after ``patience`` evaluations
    without improvement. **Fold-in** is native: any history is scored by running the network
    on it, so a training user's fold-in equals its training-time score.

    Attributes:
        network_: The trained :class:`SASRecNetwork` (eval mode).
        loss_history_: Mean training loss per epoch (float64).
        validation_history_: ``(evaluations, 3)``: epoch, NDCG@10, HR@10 (empty without
            validation).
        best_epoch_: The epoch whose weights were kept (the last one without validation).
    """

    Config = SASRecConfig
    seeded = True
    uses_torch = True
    sequential = True

    def _fit(self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions) -> None:
        cfg = self.config
        validation = self._validation_set()
        sequences = left_padded(self.history_indptr_, self.history_items_, cfg.max_length + 1)
        sequences = torch.from_numpy(sequences[(sequences > 0).sum(axis=1) >= 2])
        with seeded(options.seed):
            network = self._new_network()
            generator = torch.Generator().manual_seed(options.seed)
            optimizer = torch.optim.Adam(
                network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
            stopper = EarlyStopping(cfg.patience)
            losses, evaluations = [], []
            started = time.perf_counter()
            for epoch in range(1, cfg.epochs + 1):
                loss = self._train_epoch(network, optimizer, sequences, generator)
                losses.append(loss)
                last = epoch == cfg.epochs or (
                    cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds
                )
                metrics, stop = self._end_of_epoch(
                    network, epoch, last, validation, stopper, evaluations
                )
                self._report(epoch, cfg.epochs, loss, **metrics)
                if stop or last:
                    break
        self._keep_best(network, stopper, losses, evaluations)

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
    ) -> float:
        cfg = self.config
        total, count = 0.0, 0
        network.train()
        for batch in self._batches(sequences, generator):
            loss = sequence_loss(network, batch, cfg.loss, cfg.negatives, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
        return total / max(count, 1)

    def _batches(self, sequences: torch.Tensor, generator: torch.Generator):
        """Shuffled batches of similar lengths: a random permutation is cut into chunks of 32
        batches, each chunk sorted by length and cut into batches, and the batches shuffled
        (less padding to compute, same expected gradient)."""
        size = self.config.batch_size
        order = torch.randperm(len(sequences), generator=generator)
        lengths = (sequences > 0).sum(dim=1)
        batches = []
        for start in range(0, len(order), size * 32):
            chunk = order[start : start + size * 32]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield sequences[batches[position]]

    def _score_histories(self, histories: Query, batch_size: int = 512) -> np.ndarray:
        padded = left_padded(histories.indptr, histories.items, self.config.max_length)
        order = np.argsort(np.minimum(histories.lengths(), self.config.max_length), kind="stable")
        out = np.empty((len(histories), self.n_items_), dtype=np.float32)
        network = self.network_
        with torch.no_grad():
            items = network.item_vectors()
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                hidden = network(trimmed(torch.from_numpy(padded[rows])))[:, -1]
                out[rows] = (hidden @ items.T).numpy()
        return out
