"""Federated averaging of the Mult-VAE: the device's and the server's halves.

The network of :class:`~privrank.models.vae.MultVAE` (encoder :math:`g_\\phi`, decoder
:math:`f_\\theta`, both shared) is one flat parameter vector :math:`\\Theta` held by the
server; a device holds one user's binary history :math:`x_u` and never sends it.

**Device** (:class:`FedVAEClient`, one vectorised batch of devices in the simulator). Given
:math:`\\Theta` it takes ``local_steps`` steps of plain SGD on its own annealed negative ELBO

.. math:: \\ell_u(\\Theta) = -\\sum_i x_{ui} \\log \\operatorname{softmax}(f_\\theta(z_u))_i
          + \\beta_t\\, \\mathrm{KL}\\big(\\mathcal N(\\mu_u, \\sigma_u^2)\\,\\Vert\\,
          \\mathcal N(0, I)\\big), \\qquad z_u = \\mu_u + \\epsilon_u \\odot \\sigma_u,

(:math:`[\\mu_u, \\log\\sigma_u^2] = g_\\phi(\\mathrm{dropout}(x_u / \\lVert x_u\\rVert))`, the
dropout mask and :math:`\\epsilon_u` drawn on the device), starting from :math:`\\Theta`, and
sends :math:`\\Delta_u = \\Theta_u^{(K)} - \\Theta`. With one local step,
:math:`\\Delta_u = -\\eta_c \\nabla \\ell_u(\\Theta)`. The per-device gradients of a batch are
computed at once (``torch.func.vmap`` over ``grad``): no Python object per device.
:math:`\\beta_t = \\beta \\min(1, t / T_\\beta)` anneals over rounds.

**Server** (:class:`FedVAEServer`). From the cohort's mean update :math:`\\bar\\Delta` (noisy
under DP-FedAvg: the simulator's ``step_private``) it steps :math:`\\Theta \\leftarrow \\Theta +
\\eta \\bar\\Delta` (``sgd``: FedAvg with a server learning rate) or takes an Adam step on the
pseudo-gradient :math:`-\\bar\\Delta` (``adam``: FedAdam, Reddi et al., "Adaptive Federated
Optimization", ICLR 2021; moments kept in the server state, adaptivity :math:`\\tau`). Both are
post-processing of the released mean.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrank.models._config import ModelConfig
from privrank.privacy.updates import ClientUpdates, DenseUpdates

__all__ = ["FedVAEClient", "FedVAEConfig", "FedVAEServer", "VAEBroadcast", "network_shapes"]

#: The network's parameters in :class:`~privrank.models.vae.MultVAENetwork`'s state order.
_NAMES = (
    "encoder.0.weight",
    "encoder.0.bias",
    "encoder.2.weight",
    "encoder.2.bias",
    "decoder.0.weight",
    "decoder.0.bias",
    "decoder.2.weight",
    "decoder.2.bias",
)


class FedVAEConfig(ModelConfig):
    """Hyper-parameters of federated Mult-VAE (``privrank federated train --model mult-vae``).

    Attributes:
        hidden: Width of the encoder's and decoder's hidden layer.
        latent: Latent dimension :math:`k`.
        dropout: Dropout rate on the normalised input (on the device).
        beta: :math:`\\beta`, the cap of the KL weight.
        anneal_rounds: :math:`T_\\beta`, rounds over which the KL weight grows to ``beta``.
        local_steps: SGD steps a device takes on its own loss per round.
        client_learning_rate: :math:`\\eta_c` of the devices' SGD.
        server_optimizer: ``adam`` (FedAdam) or ``sgd`` (FedAvg with a server learning rate).
        adam_betas: FedAdam's moment decays.
        adam_tau: FedAdam's adaptivity :math:`\\tau`.
    """

    hidden: int = Field(600, ge=1)
    latent: int = Field(200, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    beta: float = Field(0.2, ge=0)
    anneal_rounds: int = Field(100, ge=1)
    local_steps: int = Field(1, ge=1)
    client_learning_rate: float = Field(1.0, gt=0, allow_inf_nan=False)
    server_optimizer: Literal["adam", "sgd"] = "adam"
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_tau: float = Field(1e-3, gt=0, allow_inf_nan=False)


def network_shapes(config: FedVAEConfig, n_items: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the flat vector's parts, in order."""
    h, k = config.hidden, config.latent
    shapes = [(h, n_items), (h,), (2 * k, h), (2 * k,), (h, k), (h,), (n_items, h), (n_items,)]
    return list(zip(_NAMES, shapes, strict=True))


@dataclass(frozen=True)
class VAEBroadcast:
    """What the server sends a round's devices: :math:`\\Theta`, the round and the run's seed
    (the devices' dropout and latent draws are seeded from it, so a run is deterministic)."""

    parameters: np.ndarray
    round: int
    seed: int


class FedVAEClient:
    """The device's side: local SGD on its own ELBO (see the module docstring)."""

    def __init__(self, config: FedVAEConfig, n_items: int, seed: int = 0) -> None:
        self.config = config
        self.n_items = int(n_items)
        self.seed = int(seed)
        self.shapes = network_shapes(config, n_items)
        self.update_dim = int(sum(int(np.prod(s)) for _, s in self.shapes))

    def broadcast_of(self, arrays: dict[str, np.ndarray], round_index: int) -> VAEBroadcast:
        """The round's broadcast from the server's arrays."""
        return VAEBroadcast(arrays["network"], int(round_index), self.seed)

    def beta(self, round_index: int) -> float:
        """:math:`\\beta_t`."""
        cfg = self.config
        return cfg.beta * min(1.0, round_index / cfg.anneal_rounds)

    def draws(
        self, histories: sp.csr_matrix, broadcast: VAEBroadcast
    ) -> tuple[np.ndarray, np.ndarray]:
        """The devices' own random draws for all local steps: dropout keep-masks
        ``(steps, B, n_items)`` and latent noise ``(steps, B, k)``, seeded by the run's seed,
        the round and the batch's histories."""
        cfg = self.config
        key = [
            broadcast.seed,
            broadcast.round,
            zlib.crc32(np.ascontiguousarray(histories.indptr).tobytes()),
            zlib.crc32(np.ascontiguousarray(histories.indices).tobytes()),
        ]
        rng = np.random.default_rng(key)
        b = histories.shape[0]
        keep = rng.random((cfg.local_steps, b, self.n_items), dtype=np.float32) >= cfg.dropout
        eps = rng.standard_normal((cfg.local_steps, b, cfg.latent), dtype=np.float32)
        return keep, eps

    def unflatten(self, flat: object) -> dict[str, object]:
        """The flat vector (numpy or torch, leading batch axes allowed) as named tensors."""
        import torch

        tensor = flat if isinstance(flat, torch.Tensor) else torch.as_tensor(flat)
        lead = tuple(tensor.shape[:-1])
        out: dict[str, object] = {}
        start = 0
        for name, shape in self.shapes:
            size = int(np.prod(shape))
            out[name] = tensor[..., start : start + size].reshape(*lead, *shape)
            start += size
        return out

    def local_update(
        self, histories: sp.csr_matrix, broadcast: VAEBroadcast
    ) -> tuple[ClientUpdates, np.ndarray]:
        """Every device of the batch: ``local_steps`` SGD steps on its own loss.

        Returns:
            ``(the batch's updates Δ (float32, dense), (B,) losses at Θ)``.
        """
        import torch
        from torch.func import grad_and_value, vmap

        cfg = self.config
        b = histories.shape[0]
        if b == 0:
            return DenseUpdates(np.zeros((0, self.update_dim), np.float32)), np.zeros(0)
        keep, eps = self.draws(histories, broadcast)
        x = torch.from_numpy(sp.csr_matrix(histories, dtype=np.float32).toarray())
        beta = self.beta(broadcast.round)
        scale = 1.0 / (1.0 - cfg.dropout)
        theta = torch.from_numpy(np.asarray(broadcast.parameters, dtype=np.float32))

        def loss(flat: torch.Tensor, xu: torch.Tensor, ku: torch.Tensor, eu: torch.Tensor):
            p = self.unflatten(flat)
            return _device_loss(p, xu, ku, eu, beta, scale, cfg.latent)

        step = vmap(grad_and_value(loss), in_dims=(0, 0, 0, 0))
        with torch.no_grad():
            current = theta.expand(b, -1).clone()
        losses = np.zeros(b)
        with torch.enable_grad():
            for s in range(cfg.local_steps):
                grads, values = step(
                    current, x, torch.from_numpy(keep[s]), torch.from_numpy(eps[s])
                )
                if s == 0:
                    losses = values.detach().numpy().astype(np.float64)
                current = (current - cfg.client_learning_rate * grads).detach()
        delta = (current - theta).numpy()
        return DenseUpdates(delta), losses


def _device_loss(p, x, keep, eps, beta: float, scale: float, latent: int):  # type: ignore[no-untyped-def]
    """One device's annealed negative ELBO with its own dropout mask and latent noise."""
    from torch.nn import functional

    h = functional.normalize(x, dim=0) * keep * scale
    hidden = functional.linear(h, p["encoder.0.weight"], p["encoder.0.bias"]).tanh()
    out = functional.linear(hidden, p["encoder.2.weight"], p["encoder.2.bias"])
    mu, logvar = out[:latent], out[latent:]
    z = mu + eps * (0.5 * logvar).exp()
    hidden = functional.linear(z, p["decoder.0.weight"], p["decoder.0.bias"]).tanh()
    logits = functional.linear(hidden, p["decoder.2.weight"], p["decoder.2.bias"])
    likelihood = -(functional.log_softmax(logits, dim=0) * x).sum()
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum()
    return likelihood + beta * kl


class FedVAEServer:
    """The server's side: the FedAvg (or FedAdam) step on the released mean update."""

    key = "network"

    def __init__(self, config: FedVAEConfig) -> None:
        self.config = config

    @staticmethod
    def initial_arrays(config: FedVAEConfig, n_items: int, seed: int) -> dict[str, np.ndarray]:
        """The public initial network (:class:`~privrank.models.vae.MultVAENetwork`'s own
        initialisation under ``seed``) and zero FedAdam moments."""
        import torch

        from privrank.models.vae import MultVAENetwork

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            network = MultVAENetwork(n_items, config.hidden, config.latent, config.dropout)
        state = network.state_dict()
        flat = np.concatenate([state[name].numpy().ravel() for name in _NAMES])
        flat = flat.astype(np.float64)
        return {"network": flat, "adam_m": np.zeros_like(flat), "adam_v": np.zeros_like(flat)}

    def apply(self, arrays: dict[str, np.ndarray], mean: np.ndarray, learning_rate: float) -> None:
        """Step the server's arrays in place from the cohort's mean update."""
        cfg = self.config
        if cfg.server_optimizer == "sgd":
            arrays["network"] = arrays["network"] + learning_rate * mean
            return
        b1, b2 = cfg.adam_betas
        gradient = -mean
        arrays["adam_m"] = b1 * arrays["adam_m"] + (1 - b1) * gradient
        arrays["adam_v"] = b2 * arrays["adam_v"] + (1 - b2) * gradient**2
        arrays["network"] = arrays["network"] - learning_rate * arrays["adam_m"] / (
            np.sqrt(arrays["adam_v"]) + cfg.adam_tau
        )
