"""The models the simulator trains, each as its device code, server code, initial server
arrays and finished model:

- fedmf (:class:`~privrank.models.fedmf.FedMFConfig`): Federated Reconstruction on the iALS
  objective (:mod:`privrank.models._fedmf_rounds`); the result is a
  :class:`~privrank.models.fedmf.FedMF`;
- Mult-VAE (:class:`~privrank.models._fedvae_rounds.FedVAEConfig`): FedAvg of the whole network
  (:mod:`privrank.models._fedvae_rounds`); the result is an ordinary
  :class:`~privrank.models.vae.MultVAE` (saved, evaluated and served as one).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np

from privrank.data.interactions import Interactions
from privrank.federated.clients import DeviceCode, ServerCode
from privrank.federated.settings import FederatedSettings
from privrank.models._fedmf_rounds import FedMFClient, FedMFServer
from privrank.models._fedvae_rounds import (
    FedVAEClient,
    FedVAEConfig,
    FedVAEServer,
    network_shapes,
)
from privrank.models.base import Recommender
from privrank.models.fedmf import FedMF, FedMFConfig
from privrank.privacy.mechanism import PrivacyGuarantee

__all__ = [
    "FederatedConfig",
    "assemble_model",
    "device_code",
    "initial_arrays",
    "resolved_config",
    "server_code",
]

#: The configs the simulator trains.
FederatedConfig: TypeAlias = FedMFConfig | FedVAEConfig


def resolved_config(
    config: FederatedConfig, item_counts: np.ndarray, population: int
) -> FederatedConfig:
    """The config the rounds run with: fedmf's :math:`\\alpha_0` fixed from the released item
    counts (:meth:`~privrank.models._fedmf_rounds.FedMFConfig.resolved`); Mult-VAE's as given."""
    if isinstance(config, FedVAEConfig):
        return config
    return config.resolved(item_counts, population)


def device_code(config: FederatedConfig, n_items: int, seed: int) -> DeviceCode:
    """The model's device side."""
    if isinstance(config, FedVAEConfig):
        return FedVAEClient(config, n_items, seed)
    return FedMFClient(config, n_items)


def initial_arrays(config: FederatedConfig, n_items: int, seed: int) -> dict[str, np.ndarray]:
    """The server's public initial arrays."""
    if isinstance(config, FedVAEConfig):
        return FedVAEServer.initial_arrays(config, n_items, seed)
    return {"item_factors": FedMFServer.initial_factors(config, n_items, seed)}


def server_code(
    config: FederatedConfig,
    population: int,
    item_counts: np.ndarray,
    settings: FederatedSettings,
) -> ServerCode:
    """The model's server side (fedmf's step uses the released item counts)."""
    if isinstance(config, FedVAEConfig):
        return FedVAEServer(config)
    return FedMFServer(config, population, item_counts, settings.server_learning_rate)


def assemble_model(
    config: FederatedConfig,
    train: Interactions,
    arrays: dict[str, np.ndarray],
    popularity: np.ndarray,
    guarantee: PrivacyGuarantee | None,
) -> Recommender:
    """The finished run's model, with the released cold-start popularity and the guarantee."""
    if isinstance(config, FedVAEConfig):
        return _assemble_vae(config, train, arrays["network"], popularity, guarantee)
    return FedMF.assemble(config, train, arrays["item_factors"], popularity, guarantee)


def _assemble_vae(
    config: FedVAEConfig,
    train: Interactions,
    flat: np.ndarray,
    popularity: np.ndarray,
    guarantee: PrivacyGuarantee | None,
) -> Recommender:
    from privrank.models.vae import MultVAE, MultVAEConfig

    network = {
        "hidden": config.hidden,
        "latent": config.latent,
        "dropout": config.dropout,
        "beta": config.beta,
    }
    model = MultVAE(MultVAEConfig.model_validate(network))
    model.adopt_training_data(train)
    model.item_popularity_ = np.asarray(popularity, dtype=np.float32)
    model.privacy_guarantee_ = guarantee
    model.is_release_ = False
    values = np.asarray(flat, dtype=np.float32)
    state: dict[str, np.ndarray] = {}
    start = 0
    for name, shape in network_shapes(config, train.n_items):
        size = int(np.prod(shape))
        state[f"network.{name}"] = values[start : start + size].reshape(shape).copy()
        start += size
    state["loss_history"] = np.zeros(0)
    state["validation_history"] = np.zeros((0, 3))
    state["best_epoch"] = np.asarray([0], dtype=np.int64)
    model._set_state(state)
    model._check_finite()
    return model
