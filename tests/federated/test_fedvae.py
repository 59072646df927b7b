"""FedAvg of the Mult-VAE: one round against a centralised SGD step (the oracle), DP-FedAvg with
zero noise and no clipping against the non-private run, and the CLI end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.federated import FederatedSettings, simulate
from privrank.federated.cohorts import device_histories
from privrank.models._fedvae_rounds import FedVAEClient, FedVAEConfig, VAEBroadcast
from privrank.models.vae import MultVAE, MultVAENetwork, vae_user_losses
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanism import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import RoundLedger

CONFIG = FedVAEConfig(
    hidden=8,
    latent=3,
    dropout=0.3,
    beta=0.2,
    anneal_rounds=1,
    local_steps=1,
    client_learning_rate=0.05,
    server_optimizer="sgd",
)


def _settings(n: int, **overrides) -> FederatedSettings:
    values = {
        "rounds": 1,
        "clients_per_round": n,  # Poisson with q = 1: every device
        "server_learning_rate": 1.0,
        "learning_rate_schedule": "constant",
        "batch_size": n,
        "seed": 4,
        "adaptive_clipping": False,
    }
    return FederatedSettings(**(values | overrides))


def _centralised_step(data, settings: FederatedSettings) -> dict[str, np.ndarray]:
    """The oracle: the Mult-VAE module itself, one SGD step on the users' mean loss (autograd
    over the whole batch), with the devices' own dropout masks and latent draws."""
    torch.manual_seed(settings.seed)
    network = MultVAENetwork(data.n_items, CONFIG.hidden, CONFIG.latent, CONFIG.dropout)
    histories = device_histories(data)
    parameters = {
        name: value.detach().numpy().ravel() for name, value in network.state_dict().items()
    }
    flat = np.concatenate(list(parameters.values()))
    keep, eps = FedVAEClient(CONFIG, data.n_items, settings.seed).draws(
        histories, VAEBroadcast(flat, 1, settings.seed)
    )
    x = torch.from_numpy(histories.toarray().astype(np.float32))
    h = torch.nn.functional.normalize(x, dim=1) * torch.from_numpy(keep[0]) / (1 - CONFIG.dropout)
    mu, logvar = network.encoder(h).split(CONFIG.latent, dim=1)
    z = mu + torch.from_numpy(eps[0]) * torch.exp(0.5 * logvar)
    loss = vae_user_losses(x, network.decoder(z), mu, logvar, CONFIG.beta).mean()
    optimizer = torch.optim.SGD(network.parameters(), lr=CONFIG.client_learning_rate)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {name: value.detach().numpy() for name, value in network.state_dict().items()}


@pytest.mark.parametrize("n_users", [2, 7])  # 2: one active device (and one empty)
def test_one_full_round_of_plain_fedavg_equals_a_centralised_sgd_step(tmp_path, n_users):
    data = synthetic_interactions(n_users=n_users, n_items=12, per_user=4, seed=2)
    settings = _settings(n_users)
    result = simulate(CONFIG, data, settings, run_dir=tmp_path / "run")
    assert isinstance(result.model, MultVAE)
    federated = {k: v.detach().numpy() for k, v in result.model.network_.state_dict().items()}
    expected = _centralised_step(data, settings)
    assert federated.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(federated[name], expected[name], rtol=1e-4, atol=1e-6)
    # and the round moved the network (the comparison is not of two initial networks)
    torch.manual_seed(settings.seed)
    initial = MultVAENetwork(data.n_items, CONFIG.hidden, CONFIG.latent, CONFIG.dropout)
    moved = initial.state_dict()["decoder.2.bias"].numpy()
    assert not np.allclose(federated["decoder.2.bias"], moved, atol=1e-6)


def test_dp_fedavg_without_noise_and_clipping_equals_the_non_private_run(tmp_path):
    data = synthetic_interactions(n_users=12, n_items=10, per_user=3, seed=3)
    settings = _settings(12, rounds=2, batch_size=5)
    plain = simulate(CONFIG, data, settings, run_dir=tmp_path / "plain")
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("synth", 100.0, 1e-2)
    spec = PrivacySpec(
        epsilon=8.0, delta=1e-3, max_interactions_per_user=3, clipping_norm=1e6, noise_seed=1
    )
    with _noise_scale_for_testing(0.0), RoundLedger("synth", "t", url) as ledger:
        private = simulate(
            CONFIG, data, settings, run_dir=tmp_path / "dp", spec=spec, ledger=ledger
        )
    for (name, a), b in zip(
        plain.model.network_.state_dict().items(),
        private.model.network_.state_dict().values(),
        strict=True,
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
    assert private.guarantee is not None and private.state.released_rounds == 2
    with Ledger(url) as book:
        committed = [s for s in book.spends("synth") if s.status.value == "committed"]
    assert len(committed) == 3  # the item counts and both rounds


def test_the_run_is_deterministic_for_a_seed(tmp_path):
    data = synthetic_interactions(n_users=30, n_items=10, per_user=3, seed=3)
    settings = _settings(10, rounds=2, batch_size=4)
    config = CONFIG.model_copy(update={"local_steps": 2, "server_optimizer": "adam"})
    runs = [simulate(config, data, settings, run_dir=tmp_path / str(i)) for i in range(2)]
    for a, b in zip(
        runs[0].model.network_.state_dict().values(),
        runs[1].model.network_.state_dict().values(),
        strict=True,
    ):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
