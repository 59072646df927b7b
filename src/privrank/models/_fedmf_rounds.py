"""Federated Reconstruction on the iALS objective: the device's and the server's halves.

After Singhal et al., "Federated Reconstruction: Partially Local Federated Learning" (NeurIPS
2021). The server holds the item factors :math:`H`; a device holds one user's history
:math:`I_u` and never sends it, nor its user factor.

**Device** (:class:`FedMFClient`, the same code for a vectorised batch of devices in the
simulator and for a batch of one on a Flower ClientApp). Given :math:`H` and :math:`G = H^\\top
H` it *reconstructs* its factor exactly,

.. math:: w_u = (\\alpha_0 G + H_{I_u}^\\top H_{I_u} + \\lambda_u I)^{-1} H_{I_u}^\\top 1,

(the iALS user solve, :class:`~privrank.models.fedmf.FedMF`) and sends the item-side update

.. math:: \\Delta_u = \\Big(-\\big(\\textstyle\\sum_{j\\in I_u} e_{uj}\\, \\mathbf e_j w_u^\\top
          + \\alpha_0 H w_u w_u^\\top\\big),\\; w_u w_u^\\top\\Big),
          \\qquad e_{uj} = h_j^\\top w_u - 1,

the negative half-gradient of its loss term with respect to :math:`H` at its optimal
:math:`w_u` (by the envelope theorem, the gradient of :math:`\\min_w` of the term) and its
contribution to the users' Gramian, flattened into one vector of dimension
:math:`|I|d + d^2`.

**Server** (:class:`FedMFServer`). From the mean update :math:`\\bar\\Delta` of a cohort it
estimates the gradient of the whole objective, :math:`g = -N\\bar\\Delta_H + \\Lambda H`
(:math:`\\Lambda = \\mathrm{diag}(\\lambda_j)`, :math:`\\lambda_j = \\lambda\\max(\\tilde n_j^+ +
\\alpha_0 N, 1)^\\nu`, see :class:`FedMFServer`), and the users' Gramian :math:`\\hat G_W =
N\\bar\\Delta_G` (projected onto the PSD cone), and takes the preconditioned step

.. math:: h_j \\leftarrow h_j - \\eta\\, \\big((\\alpha_0 + \\tilde n_j/N)\\hat G_W
          + \\lambda_j I\\big)^{-1} g_j,

which with full participation, :math:`\\eta = 1` and :math:`\\sum_{u\\in U_j} w_u w_u^\\top`
replaced by :math:`(\\tilde n_j/N) G_W` is the iALS item solve (:math:`\\tilde n_j`: the item
counts the server released). Every step is computed through one eigendecomposition of
:math:`\\hat G_W`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.errors import ConfigError
from privrank.models._als_solvers import gramian, solve_exact
from privrank.models._config import ModelConfig
from privrank.privacy.updates import ClientUpdates

__all__ = [
    "FedMFClient",
    "FedMFConfig",
    "FedMFServer",
    "MFBroadcast",
    "MFUpdates",
    "full_participation_round",
]

#: Devices whose updates are computed together in :func:`full_participation_round`.
_BATCH = 4096


class FedMFConfig(ModelConfig):
    """Hyper-parameters of :class:`~privrank.models.fedmf.FedMF`: the iALS objective (see
    :class:`~privrank.models.ials.IALSConfig`) and the reference fit's rounds.

    Attributes:
        factors: :math:`d`.
        regularization: :math:`\\lambda`.
        regularization_exponent: :math:`\\nu`.
        unobserved_weight: :math:`\\alpha_0`; ``None`` (the default): the rule of
            :class:`~privrank.models.ials.IALSConfig`, :math:`\\alpha_0 = \\rho\\,|S|/(|U||I|)`
            (an average user's unobserved pairs weigh :math:`\\rho` times their observed ones),
            fixed once per run by :meth:`resolved` from the item counts the server released
            (so :math:`|S| = \\sum_j \\tilde n_j`, floored at one pair per device:
            post-processing of that release, no extra privacy cost). A constant 0.1 (the old
            default, chosen on ML-100K) drowned each Beauty user's ~7 observed pairs in
            :math:`0.1\\cdot 12{,}101` unobserved ones.
        unobserved_ratio: :math:`\\rho` of that rule (iALS's default, chosen on validation
            parts of six data sets).
        init_std: The public initial item factors are drawn from
            :math:`\\mathcal N(0, (\\sigma/\\sqrt d)^2)`.
        epochs: Rounds of :meth:`~privrank.models.fedmf.FedMF.fit` (every user in each).
        learning_rate: :math:`\\eta` of the server step in ``fit`` (the federated runs set
            their own).
    """

    factors: int = Field(64, ge=1)
    regularization: float = Field(0.03, gt=0)
    regularization_exponent: float = Field(1.0, ge=0)
    unobserved_weight: float | None = Field(None, ge=0)
    unobserved_ratio: float = Field(4.0, gt=0)
    init_std: float = Field(0.1, gt=0)
    epochs: int = Field(10, ge=1)
    learning_rate: float = Field(0.5, gt=0)

    def resolved(self, item_counts: np.ndarray, population: int) -> FedMFConfig:
        r"""This config with :math:`\alpha_0` fixed: its own, or
        :math:`\rho\,\max(\sum_j \tilde n_j, N)/(N|I|)` from the released ``item_counts``
        (the raw noisy sum, which is unbiased) and ``population`` :math:`N`.

        The floor counts one pair per device (:math:`\alpha_0 \ge \rho/|I|`): a device takes
        part because it holds a history, so a released sum below :math:`N` is noise, not data.
        Without it a noisy sum at or below 0 (under distributed DP at :math:`\varepsilon = 8`
        and the default :math:`\delta` on 60 devices and 30 items, about one run in twenty)
        gave :math:`\alpha_0 = 0`: no unobserved term, item systems regularised by
        :math:`\lambda` alone, and server steps that blew the item factors up until the
        devices' float32 solves failed. The floor reads the release and the public :math:`N`
        only: post-processing, no privacy cost. Exact counts (a non-private run) sum to at
        least :math:`N` whenever the users hold one item each on average, and then the rule is
        iALS's unchanged."""
        if self.unobserved_weight is not None:
            return self
        counts = np.asarray(item_counts, dtype=np.float64)
        cells = max(int(population) * len(counts), 1)
        pairs = max(float(counts.sum()), float(population))  # at least one pair per device
        return self.model_copy(update={"unobserved_weight": self.unobserved_ratio * pairs / cells})

    @property
    def alpha0(self) -> float:
        """:math:`\\alpha_0` of a resolved config.

        Raises:
            ConfigError: Not resolved (``unobserved_weight`` is ``None``; see :meth:`resolved`).
        """
        if self.unobserved_weight is None:
            raise ConfigError(
                "fedmf: the unobserved weight is not fixed yet; resolve the config from the "
                "released item counts first (FedMFConfig.resolved)"
            )
        return float(self.unobserved_weight)


@dataclass(frozen=True)
class MFBroadcast:
    """What the server sends the devices of a round.

    Attributes:
        item_factors: :math:`H`, ``n_items × d`` float32.
        gram: :math:`G = H^\\top H` (``d × d`` float32).
    """

    item_factors: np.ndarray
    gram: np.ndarray

    @classmethod
    def of(cls, item_factors: np.ndarray) -> MFBroadcast:
        """The broadcast of :math:`H`."""
        items = np.ascontiguousarray(item_factors, dtype=np.float32)
        return cls(items, gramian(items))


class MFUpdates(ClientUpdates):
    """A batch of fedmf updates in factored form (see the module docstring).

    Holds each device's :math:`w_u` and its residuals :math:`e_{uj}` on its own items; norms
    and sums are computed from them without forming ``devices × (|I|d + d²)`` numbers.
    ``dense`` gives the explicit vectors (for a secure aggregator and for tests).
    """

    def __init__(
        self,
        histories: sp.csr_matrix,
        user_factors: np.ndarray,
        residuals: np.ndarray,
        broadcast: MFBroadcast,
        unobserved_weight: float,
    ) -> None:
        self.histories = histories
        self.user_factors = user_factors.astype(np.float64)
        self.residuals = residuals.astype(np.float64)
        self.broadcast = broadcast
        self.alpha0 = float(unobserved_weight)
        self.n_items, self.d = broadcast.item_factors.shape

    @property
    def dim(self) -> int:
        return self.n_items * self.d + self.d * self.d

    def __len__(self) -> int:
        return int(self.user_factors.shape[0])

    def _per_device(self, values: np.ndarray) -> np.ndarray:
        sums = np.zeros(len(self), dtype=np.float64)
        owners = np.repeat(np.arange(len(self)), np.diff(self.histories.indptr))
        np.add.at(sums, owners, values)
        return sums

    def norms(self) -> np.ndarray:
        w = self.user_factors
        e = self.residuals
        w2 = np.einsum("bd,bd->b", w, w)
        gw = w @ self.broadcast.gram.astype(np.float64)
        wgw = np.einsum("bd,bd->b", gw, w)
        squares = w2 * (
            self._per_device(e * e)
            + 2.0 * self.alpha0 * self._per_device(e * (e + 1.0))
            + self.alpha0**2 * wgw
        )
        squares += w2 * w2
        return np.sqrt(np.maximum(squares, 0.0))

    def finite(self) -> np.ndarray:
        ok = np.isfinite(self.user_factors).all(axis=1)
        return ok & np.isfinite(self._per_device(self.residuals))

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        c = np.asarray(weights, dtype=np.float64)
        keep = c != 0
        w = np.where(keep[:, None], self.user_factors, 0.0)
        owners = np.repeat(np.arange(len(self)), np.diff(self.histories.indptr))
        values = np.where(keep[owners], c[owners] * self.residuals, 0.0)
        scatter = sp.csr_matrix(
            (values, self.histories.indices, self.histories.indptr),
            shape=(len(self), self.n_items),
        )
        grams = (w * c[:, None]).T @ w
        items = -(scatter.T @ w) - self.alpha0 * (
            self.broadcast.item_factors.astype(np.float64) @ grams
        )
        return np.concatenate([np.asarray(items).ravel(), grams.ravel()])

    def dense(self, start: int, stop: int) -> np.ndarray:
        """Device b's vector: items ``−Σ_j e_bj w_b 1_j − α₀ (H w_b) w_bᵀ``, then ``w_b w_bᵀ``."""
        w = self.user_factors[start:stop]
        h = self.broadcast.item_factors.astype(np.float64)
        items = -self.alpha0 * (w @ h.T)[:, :, None] * w[:, None, :]
        indptr = self.histories.indptr
        lo, hi = int(indptr[start]), int(indptr[stop])
        rows = np.repeat(np.arange(stop - start), np.diff(indptr[start : stop + 1]))
        cols = self.histories.indices[lo:hi]
        np.subtract.at(items, (rows, cols), self.residuals[lo:hi, None] * w[rows])
        grams = w[:, :, None] * w[:, None, :]
        return np.concatenate([items.reshape(stop - start, -1), grams.reshape(stop - start, -1)], 1)


class FedMFClient:
    """The device's computation of fedmf, vectorised over a batch of devices.

    Args:
        config: The objective's hyper-parameters.
        n_items: :math:`|I|`.
    """

    def __init__(self, config: FedMFConfig, n_items: int) -> None:
        self.config = config
        self.n_items = int(n_items)
        #: The dimension of a device's update, :math:`|I| d + d^2`.
        self.update_dim = self.n_items * config.factors + config.factors**2

    def broadcast_of(self, arrays: dict[str, np.ndarray], round_index: int) -> MFBroadcast:
        """The round's broadcast (:math:`H`, :math:`G`) from the server's arrays."""
        return MFBroadcast.of(arrays["item_factors"])

    def user_regularization(self, lengths: np.ndarray) -> np.ndarray:
        """:math:`\\lambda_u` of histories of ``lengths`` items (float32)."""
        cfg = self.config
        base = lengths.astype(np.float64) + cfg.alpha0 * self.n_items
        return (cfg.regularization * np.power(base, cfg.regularization_exponent)).astype(np.float32)

    def local_update(
        self, histories: sp.csr_matrix, broadcast: MFBroadcast
    ) -> tuple[MFUpdates, np.ndarray]:
        """Each device's update and its loss term.

        Args:
            histories: ``devices × n_items`` binary CSR, row ``b`` the history of device ``b``
                (a batch of one on a real device).
            broadcast: :math:`H` and :math:`G`.

        Returns:
            ``(updates, losses)``: the updates (:class:`MFUpdates`) and each device's
            :math:`\\lVert H_{I_u} w_u - 1\\rVert^2 + \\alpha_0 w_u^\\top G w_u +
            \\lambda_u\\lVert w_u\\rVert^2` (float64).
        """
        cfg = self.config
        histories = sp.csr_matrix(histories, dtype=np.float32)
        items = broadcast.item_factors
        lengths = np.diff(histories.indptr)
        regularization = self.user_regularization(lengths)
        w = solve_exact(histories, items, broadcast.gram, regularization, cfg.alpha0)
        owners = np.repeat(np.arange(histories.shape[0]), lengths)
        predicted = np.einsum(
            "nd,nd->n",
            items[histories.indices].astype(np.float64),
            w[owners].astype(np.float64),
        )
        residuals = predicted - 1.0
        updates = MFUpdates(histories, w, residuals, broadcast, cfg.alpha0)
        w64 = w.astype(np.float64)
        unobserved = np.einsum("bd,bd->b", w64 @ broadcast.gram.astype(np.float64), w64)
        losses = (
            updates._per_device(residuals * residuals)
            + cfg.alpha0 * unobserved
            + regularization.astype(np.float64) * np.einsum("bd,bd->b", w64, w64)
        )
        return updates, losses


class FedMFServer:
    r"""The server's step of fedmf (see the module docstring).

    **Every item's system is positive definite.** Item :math:`j`'s penalty is
    :math:`\lambda_j = \lambda\max(\tilde n_j^+ + \alpha_0 N, 1)^\nu`: the iALS weight
    :math:`\lambda(n_j + \alpha_0 N)^\nu` with the pairs that weigh on the item floored at one.
    Without the floor an item with no (released) count gets :math:`\lambda_j = 0` when
    :math:`\alpha_0 = 0`, and so does its weight :math:`\alpha_0 + \tilde n_j^+/N` on
    :math:`\hat G_W`: its system is the zero matrix, and the step divides by zero (NaN item
    factors, then every device's solve fails). That happens to a run with
    ``unobserved_weight=0`` and an item nobody holds (or whose noisy count is negative), and it
    happened to private runs whose noisy counts summed to at most 0 before the rule for
    :math:`\alpha_0` had its floor (:meth:`FedMFConfig.resolved`). With the floor the
    system is at least :math:`\lambda I`, and an item that no pair weighs on is pulled towards 0
    (with :math:`\eta = 1` set to 0, as iALS sets an empty row). The floor reads only the
    released counts and the public :math:`N` and :math:`\alpha_0`: post-processing of the DP
    release, so a private run keeps its :math:`(\varepsilon, \delta)`. It changes nothing where
    :math:`\tilde n_j^+ + \alpha_0 N \ge 1` for every item (any run in which every item is
    held by a device or :math:`\alpha_0 N \ge 1`, as the default rule gives whenever
    :math:`\rho\,|S| \ge |I|`).

    Args:
        config: The objective's hyper-parameters.
        population: :math:`N`, the devices of the run.
        item_counts: :math:`\tilde n`, the released item counts (clipped at 0 here:
            :math:`\tilde n^+`).
        learning_rate: :math:`\eta`.
    """

    def __init__(
        self,
        config: FedMFConfig,
        population: int,
        item_counts: np.ndarray,
        learning_rate: float,
    ) -> None:
        self.config = config
        self.population = int(population)
        self.counts = np.maximum(np.asarray(item_counts, dtype=np.float64), 0.0)
        self.learning_rate = float(learning_rate)
        # at least one pair weighs on every item: each item's system is ⪰ λI (see above)
        base = np.maximum(self.counts + config.alpha0 * self.population, 1.0)
        self.item_regularization = config.regularization * np.power(
            base, config.regularization_exponent
        )

    #: The server array :meth:`apply` steps (the released model).
    key = "item_factors"

    def apply(self, arrays: dict[str, np.ndarray], mean: np.ndarray, learning_rate: float) -> None:
        """Step the server's arrays in place from the round's mean update (:meth:`step`)."""
        arrays["item_factors"] = self.step(arrays["item_factors"], mean, learning_rate)

    @staticmethod
    def initial_factors(config: FedMFConfig, n_items: int, seed: int) -> np.ndarray:
        """Public random :math:`H_0 \\sim \\mathcal N(0, (\\sigma/\\sqrt d)^2)`."""
        rng = np.random.default_rng(seed)
        scale = np.float32(config.init_std / math.sqrt(config.factors))
        return rng.standard_normal((n_items, config.factors), dtype=np.float32) * scale

    def step(
        self, item_factors: np.ndarray, mean_update: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """:math:`H` after one round, from the round's mean update (a new float32 array), with
        ``learning_rate`` (default: the server's :math:`\\eta`)."""
        n_items, d = item_factors.shape
        h = item_factors.astype(np.float64)
        n = float(self.population)
        delta_h = mean_update[: n_items * d].reshape(n_items, d)
        gram = mean_update[n_items * d :].reshape(d, d) * n
        gram = (gram + gram.T) / 2.0
        values, vectors = np.linalg.eigh(gram)
        values = np.maximum(values, 0.0)
        gradient = -n * delta_h + self.item_regularization[:, None] * h
        weight = self.config.alpha0 + self.counts / n
        denominator = weight[:, None] * values[None, :] + self.item_regularization[:, None]
        step = ((gradient @ vectors) / denominator) @ vectors.T
        rate = self.learning_rate if learning_rate is None else float(learning_rate)
        return (h - rate * step).astype(np.float32)


def full_participation_round(
    client: FedMFClient,
    server: FedMFServer,
    histories: sp.csr_matrix,
    item_factors: np.ndarray,
) -> tuple[np.ndarray, float]:
    """One round in which every device takes part: the new :math:`H` and the objective's
    device terms summed (at the round's start)."""
    broadcast = MFBroadcast.of(item_factors)
    n_items, d = item_factors.shape
    total = np.zeros(n_items * d + d * d, dtype=np.float64)
    loss = 0.0
    n = histories.shape[0]
    for start in range(0, n, _BATCH):
        updates, losses = client.local_update(histories[start : start + _BATCH], broadcast)
        total += updates.weighted_sum(np.ones(len(updates)))
        loss += float(losses.sum())
    return server.step(item_factors, total / n), loss
