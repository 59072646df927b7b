"""Mult-VAE: the variational autoencoder with a multinomial likelihood of Liang et al. (2018)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from privrank.data.interactions import Interactions
from privrank.models._device import DeviceName, torch_device
from privrank.models._epochs import EpochSchedule
from privrank.models._private import DPSGDPrivateConfig, PlannedDPSGDFit
from privrank.models._torch_training import (
    EpochFitMixin,
    NetworkStateMixin,
    TorchFitState,
    adam,
    seeded,
)
from privrank.models.base import FitOptions, ModelConfig, Query, Recommender, register
from privrank.models.parallel import all_reduce_gradients, share, worker_seed

__all__ = ["MultVAE", "MultVAEConfig", "MultVAENetwork"]


class MultVAEConfig(ModelConfig):
    """Hyper-parameters of :class:`MultVAE`.

    Attributes:
        hidden: Width of the encoder's and decoder's hidden layer (600 in the paper).
        latent: Latent dimension :math:`k` (200 in the paper).
        dropout: Dropout rate on the normalised input.
        beta: :math:`\\beta_{\\max}`, the cap of the annealed KL weight.
        anneal_steps: Steps over which :math:`\\beta` grows linearly from 0 to the cap, a
            constant (the paper's 200,000); ``None`` (default): the rule of ``anneal_fraction``.
        anneal_fraction: With ``anneal_steps=None``: :math:`\\beta` reaches its cap after this
            fraction of the fit's planned steps, ``epochs · ⌈active users / batch_size⌉``
            (``epochs`` times the steps of one epoch, so the KL weight's schedule scales with
            the data instead of being a constant that a small data set never reaches). The
            default rule (``None``, 0.2) was chosen on validation parts carved from the
            training data of every shared data set (``bench/select_defaults.py``; no test part
            read): best NDCG@10 against the paper's constant, Video 0.0431 vs 0.0368 (20
            epochs), synth-small 0.3058 vs 0.2923, Beauty 0.0368 vs 0.0361 (15 epochs),
            ML-100K 0.2592 vs 0.2556, synth-dense 0.4308 vs 0.4353 (BENCHMARKS.md, sessions
            of 2026-12-05/06).
        epochs: Most epochs.
        batch_size: Users per step.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 weight decay.
        patience: With a validation split: evaluations without a better NDCG@10 before stopping
            (0: train all epochs, still keeping the best epoch's weights).
        validate_every: Epochs between validation evaluations.
        max_seconds: Stop after the first epoch that ends past this many seconds; ``None``: no
            limit.
        private: Settings of a private fit (DP-SGD,
            :class:`~privrank.models._private.DPSGDPrivateConfig`); ``None``: its defaults
            when the fit has a privacy spec. Refused by a fit without one.
        device: Where the network trains, validates and scores (:mod:`privrank.models._device`):
            ``cpu`` (default), ``cuda`` or ``auto`` (CUDA when visible). The user order is
            drawn on the CPU whatever the device; scores come back as CPU arrays. Private and
            data-parallel fits run on the CPU (``auto`` gives the CPU, ``cuda`` is refused).
    """

    hidden: int = Field(600, ge=1)
    latent: int = Field(200, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    beta: float = Field(0.2, ge=0)
    anneal_steps: int | None = Field(None, ge=1)
    anneal_fraction: float = Field(0.2, gt=0, allow_inf_nan=False)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(500, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=0)
    validate_every: int = Field(1, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    private: DPSGDPrivateConfig | None = None
    device: DeviceName = "cpu"

    def anneal_length(self, steps_per_epoch: int) -> int:
        """:math:`T_\\beta`, the steps after which :math:`\\beta` reaches ``beta``:
        ``anneal_steps``, or ``max(1, round(anneal_fraction · epochs · steps_per_epoch))`` when
        it is ``None``."""
        if self.anneal_steps is not None:
            return self.anneal_steps
        return max(1, round(self.anneal_fraction * self.epochs * steps_per_epoch))

    def kl_weight(self, step: int, anneal_length: int) -> float:
        """:math:`\\beta_t = \\beta \\min(1, t / T_\\beta)` at Adam step ``t`` (0-based)."""
        return min(self.beta, self.beta * step / anneal_length)


class MultVAENetwork(nn.Module):
    """Encoder ``n_items → hidden → 2k`` and decoder ``k → hidden → n_items`` (tanh)."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.latent = latent
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.Sequential(
            nn.Linear(n_items, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_items)
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.normal_(module.bias, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, mu, logvar)``; samples :math:`z` in training mode, uses :math:`\\mu`
        otherwise."""
        h = self.dropout(functional.normalize(x, dim=1))
        mu, logvar = self.encoder(h).split(self.latent, dim=1)
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def vae_loss(
    x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Mean over users of the negative multinomial log-likelihood plus ``beta`` × KL."""
    return vae_user_losses(x, logits, mu, logvar, beta).mean()


def vae_user_losses(
    x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per user (``(B,)``): the negative multinomial log-likelihood plus ``beta`` × KL."""
    likelihood = -(functional.log_softmax(logits, dim=1) * x).sum(1)
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
    return likelihood + beta * kl


@register("mult-vae")
class MultVAE(EpochFitMixin, NetworkStateMixin, Recommender, PlannedDPSGDFit):
    r"""Variational autoencoder for collaborative filtering with a multinomial likelihood
    (Liang, Krishnan, Hoffman and Jebara, "Variational Autoencoders for Collaborative
    Filtering", WWW 2018).

    A user's binary history :math:`x_u \in \{0,1\}^{|I|}` is L2-normalised, passed through
    dropout and encoded, :math:`[\mu_u, \log\sigma_u^2] = g_\phi(x_u)`; a latent
    :math:`z_u \sim \mathcal N(\mu_u, \operatorname{diag}\sigma_u^2)` is decoded to item
    probabilities :math:`\pi(z_u) = \operatorname{softmax}(f_\theta(z_u))` (both :math:`g, f`
    one tanh hidden layer). Training maximises the annealed ELBO

    .. math:: \mathcal L_\beta(x_u) = \sum_i x_{ui}\log \pi_i(z_u)
              - \beta\,\mathrm{KL}\big(\mathcal N(\mu_u, \sigma_u^2)\,\Vert\,\mathcal N(0, I)\big)

    with the reparameterisation trick, :math:`\beta_t = \beta \min(1, t / T_\beta)` growing
    linearly from 0 to ``beta`` over :math:`T_\beta` steps: ``anneal_steps``, or, when that is
    ``None``, ``anneal_fraction`` of the fit's planned steps (``epochs`` times the steps of
    one epoch), a rule of the data's size (:meth:`MultVAEConfig.anneal_length`). Scores are
    :math:`f_\theta(\mu_u)` (no sampling, no dropout), so any history — a training user's or a
    new one — is folded in by one forward pass, and a training user's fold-in equals its
    training-time score.

    With ``fit(..., validation=part)`` the model reports NDCG@10/HR@10 per evaluated epoch,
    keeps the best epoch's weights and stops after ``patience`` evaluations without
    improvement.

    **Private fit** (``FitOptions(privacy=spec)``): user-level DP-SGD
    (:mod:`privrank.privacy.dpsgd`), one user's whole contribution-bounded multi-hot history
    being one example. Each of ``epochs · round(n/b)`` steps Poisson-samples users with
    probability ``q = b/n`` (``b = private.batch_size``), clips each user's gradient of
    :math:`-\mathcal L_\beta(x_u)` to the spec's clipping norm C (Opacus ghost clipping: no
    per-user copy of the ``n_items × hidden`` layers) and adds Gaussian noise of std ``m·C``
    to the sum before dividing by ``b``; Adam updates from it. Released, and user-level
    (ε, δ)-DP: **all network weights** and the noisy item counts used for cold start (one
    Gaussian release composed with the steps under the spec's accountant). Scoring a history is
    a forward pass of the released network, so a user's scores depend on other users only
    through DP outputs. A private fit trains all ``epochs``: it ignores ``validation`` and
    ``max_seconds`` (early stopping on held-out rows would spend privacy the accounting does
    not cover), and records no validation or loss history (the training loss is computed on
    users' data without noise, so it is not reported either).

    **Data-parallel fit** (``FitOptions(engine=RayEngine(workers=N))``, ``privrank train
    --engine ray --workers N``): the fit runs on N Ray Train workers, each a replica that takes
    its share of every batch, gradients summed over the workers
    (:mod:`privrank.models.parallel`); one worker gives this fit exactly, and a private fit's
    guarantee (sampling rate, steps, multiplier, ε) is this fit's, the noise added once per
    step.

    Attributes:
        network_: The trained :class:`MultVAENetwork` (eval mode).
        loss_history_: Mean training loss per epoch (float64).
        validation_history_: ``(evaluations, 3)``: epoch, NDCG@10, HR@10.
        best_epoch_: The epoch whose weights were kept.
    """

    Config = MultVAEConfig
    config: MultVAEConfig
    network_: MultVAENetwork
    PrivateConfig = DPSGDPrivateConfig
    seeded = True
    uses_torch = True
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
            model="MultVAE",
            cpu_only=None if parallel is None else "a data-parallel fit's workers use the CPU",
        )
        validation = self._validation_set()
        active = np.flatnonzero(np.diff(matrix.indptr) > 0)
        generator = torch.Generator().manual_seed(options.seed)
        steps_per_epoch = -(-len(active) // cfg.batch_size)
        anneal = cfg.anneal_length(steps_per_epoch)
        with seeded(options.seed):
            network = self._new_network().to(device)
            optimizer = adam(network, cfg)
            parameters = list(network.parameters())
            if (
                parallel is not None and parallel.rank
            ):  # this worker's own dropout and latent samples
                torch.manual_seed(worker_seed(options.seed, parallel))

            def train_epoch(epoch: int) -> float:
                step = (epoch - 1) * steps_per_epoch  # Adam steps so far (the KL anneals)
                network.train()
                order = active[torch.randperm(len(active), generator=generator).numpy()]
                total = 0.0
                for start in range(0, len(order), cfg.batch_size):
                    rows = share(parallel, order[start : start + cfg.batch_size])
                    beta = cfg.kl_weight(step, anneal)
                    optimizer.zero_grad(set_to_none=True)
                    if len(rows):
                        x = torch.from_numpy(matrix[rows].toarray()).to(device)
                        logits, mu, logvar = network(x)
                        loss = vae_loss(x, logits, mu, logvar, beta)
                        loss.backward()
                        total += loss.item() * len(rows)
                    all_reduce_gradients(parallel, parameters, float(len(rows)))
                    optimizer.step()
                    step += 1
                if parallel is not None:
                    sums = torch.tensor([total], dtype=torch.float64)
                    parallel.all_reduce([sums])
                    total = float(sums[0])
                return total / max(len(order), 1)

            self._run_epochs(
                EpochSchedule.of(cfg),
                train_epoch,
                self._network_validation(network, validation),
                TorchFitState(network, optimizer, {"order": generator}),
            )
        self.network_ = network.eval()

    def _fit_private(
        self, train: Interactions, matrix: sp.csr_matrix, options: FitOptions, spec: Any
    ) -> None:
        from privrank.privacy.dpsgd import GhostClipping, start_private_run

        if self._fit_on_engine(train, options):
            return
        cfg = self.config
        torch_device(cfg.device, model="MultVAE", cpu_only="DP-SGD runs on the CPU")
        parallel = options.parallel
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        batch = self.private_batch_size()
        run = start_private_run(spec, matrix, batch, cfg.epochs)
        self.item_popularity_ = run.item_counts.astype(np.float32)
        lengths = np.diff(matrix.indptr)
        anneal = cfg.anneal_length(run.plan.steps_per_epoch)
        step = 0
        with seeded(options.seed):
            network = self._new_network()
            optimizer = adam(network, cfg)
            if (
                parallel is not None and parallel.rank
            ):  # this worker's own dropout and latent samples
                torch.manual_seed(worker_seed(options.seed, parallel))

            def user_losses(model: torch.nn.Module, x: torch.Tensor, beta: float) -> torch.Tensor:
                logits, mu, logvar = model(x)
                return vae_user_losses(x, logits, mu, logvar, beta)

            engine = GhostClipping(network, user_losses, spec.clipping_norm)
            trainer = run.trainer(engine, optimizer, parallel)

            def train_epoch(epoch: int) -> None:  # no loss: it is not a private release
                nonlocal step
                network.train()
                for users in run.sampler.epoch(run.plan.steps_per_epoch):
                    mine = share(parallel, users)  # this worker's share of the logical batch
                    rows = mine[lengths[mine] > 0]  # an empty history adds nothing
                    x = torch.from_numpy(matrix[rows].toarray())
                    beta = cfg.kl_weight(step, anneal)
                    trainer.step(x, beta)
                    step += 1

            try:
                # Every epoch, no validation, no time budget: the accounting covers these steps.
                self._run_epochs(EpochSchedule(cfg.epochs), train_epoch)
            finally:
                engine.close()
        self.network_ = network.eval()
        self.privacy_guarantee_ = run.guarantee(
            spec,
            statistic="the summed per-user clipped gradients of all network weights",
            released="all Mult-VAE network weights",
        )

    def _new_network(self) -> MultVAENetwork:
        cfg = self.config
        return MultVAENetwork(self.n_items_, cfg.hidden, cfg.latent, cfg.dropout)

    def _score_histories(self, histories: Query, batch_size: int = 1024) -> np.ndarray:
        rows = histories.to_csr(self.n_items_)
        out = np.empty((len(histories), self.n_items_), dtype=np.float32)
        device = next(self.network_.parameters()).device
        with torch.no_grad():
            for start in range(0, rows.shape[0], batch_size):
                x = torch.from_numpy(rows[start : start + batch_size].toarray()).to(device)
                out[start : start + x.shape[0]] = self.network_(x)[0].cpu().numpy()
        return out
