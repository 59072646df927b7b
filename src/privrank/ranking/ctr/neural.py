r"""privrank's neural CTR rankers: logistic regression, FM, DeepFM, DCN-v2 and FinalMLP.

Each is a :class:`~privrank.ranking.ctr.base.CTRRanker` over one network of
:mod:`privrank.ranking.ctr.networks`, trained by one loop (:func:`train_network`):

- minimise the binary cross-entropy :math:`-\frac1B \sum_i y_i \log \sigma(z_i) + (1 - y_i) \log
  (1 - \sigma(z_i))` plus :math:`\lambda` times the batch's mean squared embedding norm
  (``embedding_l2``), with Adam (learning rate ``lr``, decoupled ``weight_decay`` on the dense
  layers);
- mini-batches are drawn from the feature table's arrays by a seeded permutation each epoch:
  only a batch is gathered at a time, the data is never copied whole (10M+ rows fit); a
  :class:`~privrank.data.ad_log_stream.ChunkedFeatureTable` is read part by part instead (parts
  in a seeded order, rows shuffled within a part), so the training rows are never in memory
  together (``supports_streaming``);
- after each epoch the validation log loss and AUC are computed and reported; the weights of the
  epoch with the lowest validation log loss are kept, and training stops after ``patience``
  epochs without a better one (or ``epochs``, or ``max_seconds``).
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from privrank.data.ad_log_stream import ChunkedFeatureTable
from privrank.data.features import CTRFrame, FeatureEncoder, FeatureTable
from privrank.errors import ArtifactError, ConfigError
from privrank.metrics.ctr import auc, log_loss
from privrank.models import FitOptions
from privrank.privacy.mechanism import PrivacyGuarantee
from privrank.ranking.ctr.base import CTRConfig, CTRRanker
from privrank.ranking.ctr.networks import FM, CTRNetwork, DCNv2, DeepFM, FinalMLP, Linear
from privrank.ranking.ctr.private import (
    CTRPrivateConfig,
    private_tables,
    train_network_private,
)

__all__ = [
    "DEFAULT_ENSEMBLE",
    "DCNv2Config",
    "DCNv2Ranker",
    "DeepFMConfig",
    "DeepFMRanker",
    "FMConfig",
    "FMRanker",
    "FinalMLPConfig",
    "FinalMLPRanker",
    "LogisticConfig",
    "LogisticRanker",
    "NeuralCTRConfig",
    "NeuralCTRRanker",
    "train_network",
]


DEFAULT_ENSEMBLE = 5
"""Members of a neural ranker's non-private in-memory fit when ``ensemble`` is not set."""


class NeuralCTRConfig(CTRConfig):
    """Training options of every neural ranker.

    Attributes:
        embedding_dim: Embedding size :math:`k` per field.
        lr: Adam learning rate.
        batch_size: Rows per mini-batch.
        epochs: Most epochs.
        patience: Epochs without a lower validation log loss before stopping.
        embedding_l2: :math:`\\lambda`, weight of the embedding regulariser.
        embedding_regularizer: ``batch``: :math:`\\lambda` times the batch's mean squared
            embedding norm (only rows in the batch shrink); ``table``: :math:`\\tfrac\\lambda2
            \\lVert E\\rVert_F^2` over the whole table at every step (FuxiCTR/BARS).
        embedding_init_std: Standard deviation of the embeddings' normal initialisation.
        lr_decay: On an epoch without a lower validation log loss, the learning rate is
            multiplied by this factor (FuxiCTR's reduce-on-plateau uses 0.1; 1: constant).
        weight_decay: Decoupled weight decay of the dense layers (AdamW).
        max_seconds: Stop after the first epoch that ends past this budget (``None``: none).
        eval_batch_size: Rows per batch when predicting.
        private: DP-SGD settings, read only when the fit gets a privacy spec
            (:mod:`privrank.ranking.ctr.private`; ``None``: their defaults).
        ensemble: :math:`N`, networks trained on the same rows with the same settings from
            seeds ``seed, seed + 1, ..., seed + N - 1``; the raw score is the sigmoid of the
            mean of their logits, :math:`\\sigma(\\tfrac1N \\sum_i z_i(x))`, calibrated after
            like one model's. Cost: :math:`N` times the fit time (``max_seconds`` caps each
            member), the scoring time and the saved size. ``1`` is the single model, bit for
            bit. An explicit :math:`N > 1` is refused (``ConfigError``) with a privacy spec:
            each member would be one more DP-SGD release of the same users' rows
            (:math:`N` releases) and the one spending path accounts one. ``None`` (the
            default) applies the default rule, :meth:`members_for`.
    """

    embedding_dim: int = Field(default=16, ge=1, le=1024)
    lr: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=1024, ge=1)
    epochs: int = Field(default=50, ge=1)
    patience: int = Field(default=2, ge=1)
    embedding_l2: float = Field(default=1e-3, ge=0)
    embedding_regularizer: Literal["batch", "table"] = "batch"
    embedding_init_std: float = Field(default=1e-2, gt=0)
    lr_decay: float = Field(default=1.0, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_seconds: float | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=65536, ge=1)
    private: CTRPrivateConfig | None = None
    ensemble: int | None = Field(default=None, ge=1, le=64)

    def members_for(self, *, private: bool, streamed: bool) -> int:
        """How many networks a fit trains: ``ensemble`` if set, else the default rule.

        The rule: :data:`DEFAULT_ENSEMBLE` (5) members for a non-private fit on rows in memory;
        one member under a privacy spec (one DP-SGD release, the one the ledger accounts) and on
        streamed rows (each member would be one more pass over 10M+ rows, a size the rule was
        not chosen on). :math:`N = 5` was chosen against :math:`N \\in \\{1, 3\\}` on validation
        parts only, on both data sets at hand (BENCHMARKS.md, "ctr9", "ctr10"): frappe (FM, DCN-v2;
        ~55k training rows: +0.0010 to +0.0038 validation AUC over one network, two seeds
        each; N = 3 ties) and the 1M-row synthetic ad log (DCN-v2, 180k training rows:
        +0.0015 and +0.0024, two seeds; N = 3 is 0.0003 to 0.0006 lower).
        """
        if self.ensemble is not None:
            return self.ensemble
        return 1 if private or streamed else DEFAULT_ENSEMBLE


class LogisticConfig(NeuralCTRConfig):
    """Logistic regression (``embedding_dim`` unused; a larger default learning rate).

    One member by default (``ensemble=1``), not the neural rule's five: its log loss is convex,
    so members from other seeds head for the same optimum and differ only by SGD noise; the
    rule was chosen on non-convex networks (FM, DCN-v2) and never measured here.
    """

    lr: float = Field(default=1e-2, gt=0, le=1)
    ensemble: int | None = Field(default=1, ge=1, le=64)


class FMConfig(NeuralCTRConfig):
    """Factorisation machine (a larger learning rate, wider embeddings, a stronger penalty).

    ``embedding_dim`` 32 and ``embedding_l2`` 1e-2 were chosen on validation parts carved
    from training data only (``bench/bench_ctr_select.py``; BENCHMARKS.md, "ctr6"): against
    dim 16 / 1e-3 they raised the validation AUC on frappe (0.9418 → 0.9560) and on the
    synthetic ad log (0.6803 → 0.6952); the stronger penalty is what lets the wider
    embeddings help (dim 32 at 1e-3: 0.9480 on frappe).
    """

    lr: float = Field(default=1e-2, gt=0, le=1)
    embedding_dim: int = Field(default=32, ge=1, le=1024)
    embedding_l2: float = Field(default=1e-2, ge=0)


class _DeepConfig(NeuralCTRConfig):
    """Attributes:
    hidden: Widths of the MLP's hidden layers.
    dropout: Dropout after each hidden layer.
    batch_norm: Batch normalisation in the MLP.
    """

    hidden: tuple[int, ...] = Field(default=(400, 400, 400), min_length=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    batch_norm: bool = False


class DeepFMConfig(_DeepConfig):
    """DeepFM."""


class DCNv2Config(_DeepConfig):
    """DCN-v2; ``cross_layers`` full-rank cross layers."""

    cross_layers: int = Field(default=3, ge=1, le=10)


class FinalMLPConfig(_DeepConfig):
    """FinalMLP; ``hidden`` is stream 1, ``hidden2`` stream 2, ``heads`` bilinear heads."""

    hidden2: tuple[int, ...] = Field(default=(400, 400, 400), min_length=1)
    heads: int = Field(default=10, ge=1)


def train_network(
    network: CTRNetwork,
    train: FeatureTable | ChunkedFeatureTable,
    validation: FeatureTable,
    config: NeuralCTRConfig,
    options: FitOptions,
    report: Any,
) -> None:
    """The one training loop of the neural rankers (see the module docstring)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    embeddings = [p for n, p in network.named_parameters() if "embedding" in n or "weights." in n]
    embedding_ids = {id(p) for p in embeddings}
    dense = [p for p in network.parameters() if id(p) not in embedding_ids]
    optimizer = torch.optim.AdamW(
        [{"params": embeddings, "weight_decay": 0.0},
         {"params": dense, "weight_decay": config.weight_decay}],
        lr=config.lr,
    )  # fmt: skip
    criterion = nn.BCEWithLogitsLoss()
    best_loss, best_state, stale = np.inf, None, 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        network.train()
        total, rows = 0.0, 0
        for codes, numeric, labels in train.batches(config.batch_size, rng):
            if len(labels) < 2 and rows:  # batch norm cannot train on a final batch of one row
                continue  # (that row, another each epoch by the shuffle, waits for the next)
            logits = network(torch.from_numpy(codes), torch.from_numpy(numeric))
            target = torch.from_numpy(labels)
            loss = criterion(logits, target)
            regulariser = (
                network.penalty()
                if config.embedding_regularizer == "batch"
                else network.table_penalty()
            )
            objective = loss + config.embedding_l2 * regulariser
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += float(loss.detach()) * len(labels)
            rows += len(labels)
        p = predict_network(network, validation, config.eval_batch_size)
        val_loss = log_loss(validation.labels, p)
        val_auc = auc(validation.labels, p)
        report(epoch, config.epochs, total / max(rows, 1),
               val_log_loss=val_loss, val_auc=val_auc)  # fmt: skip
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, stale = val_loss, copy.deepcopy(network.state_dict()), 0
        else:
            stale += 1
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
        out_of_time = config.max_seconds is not None and (
            time.perf_counter() - started > config.max_seconds
        )
        if stale >= config.patience or out_of_time:
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()


@torch.no_grad()
def predict_network(
    network: nn.Module, rows: FeatureTable, batch_size: int, logits: bool = False
) -> np.ndarray:
    """``[n]`` float64 probabilities of ``rows`` (``logits``: the logits), in batches."""
    network.eval()
    out = np.empty(len(rows), dtype=np.float64)
    start = 0
    for codes, numeric, _ in rows.batches(batch_size):
        z = network(torch.from_numpy(codes), torch.from_numpy(numeric))
        out[start : start + len(codes)] = (z if logits else torch.sigmoid(z)).double().numpy()
        start += len(codes)
    return out


def fm_forward_numpy(
    network: nn.Module, codes: np.ndarray, numeric: np.ndarray, logits: bool = False
) -> np.ndarray:
    """``[n]`` float64 probabilities (``logits``: the logits) of an :class:`FM` network
    computed with numpy (float32).

    Reads the network's parameters without copying them (CPU tensors share memory), so a
    network still training is read as it stands.
    """
    params = {k: v.detach().cpu().numpy() for k, v in network.state_dict().items()}
    codes = np.asarray(codes, dtype=np.int64)
    numeric = np.asarray(numeric, dtype=np.float32)
    fields = params["embedding.weight"][codes]  # [n, F, k]
    linear = params["weights.weight"][codes, 0].sum(axis=1) + params["bias"][0]
    if numeric.shape[1]:
        fields = np.concatenate(
            [fields, numeric[:, :, None] * params["numeric_vectors"][None]], axis=1
        )
        linear = linear + numeric @ params["numeric_weights.weight"][0]
        linear = linear + params["numeric_weights.bias"][0]
    total = fields.sum(axis=1)
    pairwise = 0.5 * (total * total - (fields * fields).sum(axis=1)).sum(axis=1)
    z = (linear + pairwise).astype(np.float64)
    return z if logits else 0.5 * (1.0 + np.tanh(0.5 * z))


class NeuralCTRRanker(CTRRanker):
    """A CTR ranker over one PyTorch network, trained by :func:`train_network`, or, given a
    privacy spec, by user-level DP-SGD (:func:`~privrank.ranking.ctr.private.
    train_network_private`; the guarantee is in ``privacy_guarantee_`` and the saved header).
    """

    config: NeuralCTRConfig
    supports_privacy: ClassVar[bool] = True
    supports_streaming: ClassVar[bool] = True
    privacy_guarantee_: PrivacyGuarantee | None = None
    privacy_facts_: dict[str, Any] | None = None

    def fit(self, train: Any, validation: Any, options: FitOptions | None = None) -> CTRRanker:
        """:meth:`CTRRanker.fit`; a private fit on raw rows encodes them with
        :func:`~privrank.ranking.ctr.private.private_tables` (the user field is not a feature).

        Raises:
            ConfigError: ``ensemble > 1`` with a privacy spec (:math:`N` DP-SGD releases).
        """
        explicit = self.config.ensemble
        if options is not None and options.privacy is not None and (explicit or 1) > 1:
            raise ConfigError(
                f"{self.name}: ensemble={explicit} with differential privacy would "
                f"be {explicit} DP-SGD releases of the same rows; use ensemble=1"
            )
        if options is not None and options.privacy is not None and isinstance(train, CTRFrame):
            encoder = FeatureEncoder(
                hash_buckets=self.config.hash_buckets, min_count=self.config.min_count
            )
            train, validation = private_tables(train, validation, encoder)
        return super().fit(train, validation, options)

    def _build(self) -> CTRNetwork:
        raise NotImplementedError

    def _dims(self) -> tuple[int, int, int, int]:
        assert self.vocabulary_ is not None
        v = self.vocabulary_
        return v.n_codes, len(v.fields), len(v.numeric), self.config.embedding_dim

    def _fit(self, train: FeatureTable | ChunkedFeatureTable, validation: FeatureTable,
             options: FitOptions, report: Any) -> None:  # fmt: skip
        threads = options.resolved_threads()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(options.seed)
            self.network_ = self._build()
            self.network_.init_embeddings(self.config.embedding_init_std)
            self.members_ = [self.network_]
            if options.privacy is None:
                members = self.config.members_for(
                    private=False, streamed=isinstance(train, ChunkedFeatureTable)
                )
                first = report if members == 1 else _member_report(report, 0)
                train_network(self.network_, train, validation, self.config, options, first)
                for i in range(1, members):
                    member_options = options.model_copy(update={"seed": options.seed + i})
                    torch.manual_seed(member_options.seed)
                    network = self._build()
                    network.init_embeddings(self.config.embedding_init_std)
                    train_network(
                        network,
                        train,
                        validation,
                        self.config,
                        member_options,
                        _member_report(report, i),
                    )
                    self.members_.append(network)
                self.privacy_guarantee_, self.privacy_facts_ = None, None
                return
            assert isinstance(train, FeatureTable)  # CTRRanker.fit refuses streamed private fits
            self.privacy_guarantee_, self.privacy_facts_ = train_network_private(
                self.network_,
                train,
                validation,
                self.config.private or CTRPrivateConfig(),
                self.config.weight_decay,
                options.privacy,
                report,
                self._predict,
            )
        finally:
            torch.set_num_threads(previous)

    def _predict(self, rows: FeatureTable) -> np.ndarray:
        members = getattr(self, "members_", [self.network_])
        if len(members) == 1:
            return self._predict_member(self.network_, rows, logits=False)
        z = np.mean([self._predict_member(m, rows, logits=True) for m in members], axis=0)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def _predict_member(self, network: nn.Module, rows: FeatureTable, logits: bool) -> np.ndarray:
        """``[n]`` float64 probabilities (``logits``: logits) of one member network."""
        return predict_network(network, rows, self.config.eval_batch_size, logits)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, Any]]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.network_.state_dict().items()}
        for i, member in enumerate(getattr(self, "members_", [])[1:], start=1):
            for k, v in member.state_dict().items():
                arrays[f"member{i}.{k}"] = v.detach().cpu().numpy()
        extra: dict[str, Any] = {}
        if self.privacy_guarantee_ is not None:
            extra["privacy"] = self.privacy_guarantee_.to_dict()
            extra["privacy_facts"] = self.privacy_facts_
        return arrays, {}, extra

    def _restore(self, arrays: dict[str, np.ndarray], files: dict[str, str],
                 extra: dict[str, Any]) -> None:  # fmt: skip
        count = 1 + len({k.split(".", 1)[0] for k in arrays if k.startswith("member")})
        if self.config.ensemble is not None and count != self.config.ensemble:
            raise ArtifactError(
                f"{self.name}: the config says ensemble={self.config.ensemble}, "
                f"the saved arrays hold {count} member network(s)"
            )

        def restore(prefix: str) -> CTRNetwork:
            network = self._build()
            network.load_state_dict(
                {
                    k[len(prefix) :]: torch.from_numpy(v)
                    for k, v in arrays.items()
                    if (k.startswith(prefix) if prefix else not k.startswith("member"))
                }
            )
            network.eval()
            return network

        self.network_ = restore("")
        self.members_ = [self.network_]
        self.members_ += [restore(f"member{i}.") for i in range(1, count)]
        if "privacy" in extra:
            self.privacy_guarantee_ = PrivacyGuarantee.from_dict(extra["privacy"])
            self.privacy_facts_ = extra.get("privacy_facts")


def _member_report(report: Any, member: int) -> Any:
    """``report`` with ``member=i`` among the metrics: an ensemble's history (and progress) holds
    every member's epochs in order, each entry naming its member."""

    def member_report(epoch: int, epochs: int, loss: float | None, **metrics: float) -> None:
        report(epoch, epochs, loss, member=member, **metrics)

    return member_report


class LogisticRanker(NeuralCTRRanker):
    """Logistic regression on one-hot fields (the linear part only)."""

    name: ClassVar[str] = "logistic"
    Config = LogisticConfig

    def _build(self) -> CTRNetwork:
        return Linear(*self._dims())


class FMRanker(NeuralCTRRanker):
    """Factorisation machine."""

    name: ClassVar[str] = "fm"
    Config = FMConfig

    def _build(self) -> CTRNetwork:
        return FM(*self._dims())

    def _predict_member(self, network: nn.Module, rows: FeatureTable, logits: bool) -> np.ndarray:
        r"""The FM forward pass in numpy (no torch call per request; serving's cost), float32
        like the network: :math:`\sigma(b + \sum_f w_{c_f} + \tfrac12 \sum_k
        ((\sum_f v_{fk})^2 - \sum_f v_{fk}^2))`; :func:`predict_network` is the oracle."""
        if not isinstance(rows, FeatureTable):  # a streamed table: torch, batch by batch
            return super()._predict_member(network, rows, logits)
        step = self.config.eval_batch_size
        out = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), step):
            stop = start + step
            out[start:stop] = fm_forward_numpy(
                network, rows.codes[start:stop], rows.numeric[start:stop], logits
            )
        return out


class DeepFMRanker(NeuralCTRRanker):
    """DeepFM (privrank's PyTorch implementation)."""

    name: ClassVar[str] = "deepfm"
    Config = DeepFMConfig
    config: DeepFMConfig

    def _build(self) -> CTRNetwork:
        c = self.config
        return DeepFM(*self._dims(), c.hidden, c.dropout, c.batch_norm)


class DCNv2Ranker(NeuralCTRRanker):
    """DCN-v2 (privrank's PyTorch implementation)."""

    name: ClassVar[str] = "dcn-v2"
    Config = DCNv2Config
    config: DCNv2Config

    def _build(self) -> CTRNetwork:
        c = self.config
        return DCNv2(*self._dims(), c.hidden, c.dropout, c.batch_norm, c.cross_layers)


class FinalMLPRanker(NeuralCTRRanker):
    """FinalMLP (privrank's PyTorch implementation)."""

    name: ClassVar[str] = "finalmlp"
    Config = FinalMLPConfig
    config: FinalMLPConfig

    def _build(self) -> CTRNetwork:
        c = self.config
        return FinalMLP(*self._dims(), c.hidden, c.hidden2, c.dropout, c.batch_norm, c.heads)
