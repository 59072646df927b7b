"""User-level DP-SGD (privrank.privacy.dpsgd) and the private fits of BPR, Mult-VAE and SASRec.

Oracles: plain autograd on the same batch (zero noise, no clipping), per-user gradients taken
one user at a time from the batched graph (clipping), the noise's sample moments, dp_accounting
and Opacus's RDP accountant (accounting)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from privrank.errors import ConfigError
from privrank.models import FitOptions, Recommender
from privrank.models._sasrec_network import SASRecNetwork
from privrank.models.bpr import BPR, user_bpr_loss
from privrank.models.sasrec import SASRec, _private_batch, _user_sequence_loss
from privrank.models.vae import MultVAE, MultVAENetwork, vae_user_losses
from privrank.privacy.accounting import Accountant, dpsgd_event, gaussian_event
from privrank.privacy.dpsgd import (
    PLD_DISCRETIZATION,
    DPSGDTrainer,
    GhostClipping,
    PoissonSampler,
    VmapClipping,
    local_vocabulary,
    plan_dpsgd,
)
from privrank.privacy.mechanisms import PrivacyGuarantee, _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.testing import RECOMMENDER_CHECKS, synthetic_interactions

DATA = synthetic_interactions(n_users=40, n_items=30, seed=0)
N_ITEMS = 30
DATA_CONFORMANCE = synthetic_interactions(n_users=60, n_items=40, seed=0)


def vae_setup(batch: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    network = MultVAENetwork(N_ITEMS, 12, 4, 0.0)
    x = (torch.rand(batch, N_ITEMS, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    x[:, 0] = 1.0  # no empty history
    return network, x


def vae_losses(model, x):
    return vae_user_losses(x, *model(x), 0.2)


def sasrec_setup(batch: int = 5, loss_name: str = "sampled-softmax"):
    torch.manual_seed(0)
    network = SASRecNetwork(N_ITEMS, 8, 1, 2, 6, 0.0)
    g = torch.Generator().manual_seed(1)
    sequences = torch.randint(1, N_ITEMS + 1, (batch, 7), generator=g)
    sequences[0, :3] = 0  # a shorter (left-padded) user
    if loss_name in ("sampled-softmax", "gbce"):
        negatives = torch.randint(N_ITEMS, (9,), generator=g).expand(batch, -1)
    else:
        negatives = torch.randint(N_ITEMS, (batch, 6), generator=g)

    def loss(params, local, data):
        return _user_sequence_loss(network, params, data, loss_name, beta=0.3)

    return network, sequences, negatives, loss


def bpr_setup(batch: int = 5):
    g = torch.Generator().manual_seed(3)
    params = {
        "item_factors": torch.nn.Parameter(torch.randn(N_ITEMS, 4, generator=g)),
        "item_bias": torch.nn.Parameter(torch.randn(N_ITEMS, generator=g) * 0.1),
    }
    users = torch.randn(batch, 4, generator=g)
    pos = torch.randint(N_ITEMS, (batch, 4), generator=g)
    neg = torch.randint(N_ITEMS, (batch, 4), generator=g)
    mask = (torch.arange(4) < torch.tensor([4, 2, 3, 1, 4][:batch]).unsqueeze(1)).float()

    def loss(p, local, data):
        return user_bpr_loss(p, local[0], *data, 1e-3)

    return params, users, (pos, neg, mask), loss


def grads(parameters):
    return [p.grad.detach().clone() for p in parameters]


# -------------------------------------------------------------------- zero noise = plain step
def test_ghost_step_without_noise_or_clipping_equals_the_plain_sgd_step():
    network, x = vae_setup()
    plain_net, _ = vae_setup()
    plain_net.load_state_dict(network.state_dict())
    engine = GhostClipping(network, vae_losses, clipping_norm=1e9)
    with _noise_scale_for_testing(0.0):
        trainer = DPSGDTrainer(
            engine,
            torch.optim.SGD(network.parameters(), lr=0.1),
            noise_multiplier=3.0,
            expected_batch_size=len(x),
            noise=torch.Generator().manual_seed(0),
        )
    network.train()
    torch.manual_seed(5)  # the same reparameterisation draws in both steps
    trainer.step(x)
    engine.close()
    plain_net.train()
    torch.manual_seed(5)
    optimizer = torch.optim.SGD(plain_net.parameters(), lr=0.1)
    vae_user_losses(x, *plain_net(x), 0.2).mean().backward()
    optimizer.step()
    for mine, theirs in zip(network.parameters(), plain_net.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["sasrec", "sasrec-gbce", "bpr"])
def test_vmap_gradient_without_noise_or_clipping_equals_autograd_of_the_mean(which):
    if which.startswith("sasrec"):
        loss_name = "gbce" if which == "sasrec-gbce" else "sampled-softmax"
        network, sequences, negatives, loss = sasrec_setup(loss_name=loss_name)
        named = dict(network.named_parameters())
        local, data = (), (sequences, negatives)
    else:
        named, users, data, loss = bpr_setup()
        local = (users,)
    engine = VmapClipping(named, loss, clipping_norm=1e9)
    with _noise_scale_for_testing(0.0):
        trainer = DPSGDTrainer(
            engine,
            None,
            noise_multiplier=2.0,
            expected_batch_size=len(data[0]),
            noise=torch.Generator().manual_seed(0),
        )
    _, local_grads = trainer.privatise(local, data)
    mine = grads(named.values())
    # Oracle: plain autograd of the mean of the users' losses on the same batch.
    for p in named.values():
        p.grad = None
    leaves = tuple(t.clone().requires_grad_(True) for t in local)
    total = sum(
        loss(named, tuple(t[b] for t in leaves), tuple(t[b] for t in data))
        for b in range(len(data[0]))
    )
    (total / len(data[0])).backward()
    for a, b in zip(mine, grads(named.values()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, leaf in zip(local_grads, leaves, strict=True):
        torch.testing.assert_close(a, leaf.grad, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------- per-user clipping
def per_user_oracle(losses: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each user's gradient alone, from the batched graph (users do not interact)."""
    out = []
    for b in range(len(losses)):
        g = torch.autograd.grad(losses[b], parameters, retain_graph=True)
        out.append(torch.cat([t.reshape(-1) for t in g]))
    return out


def test_ghost_clipping_bounds_each_users_gradient_and_matches_the_oracle():
    network, x = vae_setup(batch=7)
    network.train()
    parameters = list(network.parameters())
    torch.manual_seed(9)
    oracle = per_user_oracle(vae_losses(network, x), parameters)
    norms = torch.stack([g.norm() for g in oracle])
    clip = float(norms.median())  # about half the users are clipped
    engine = GhostClipping(network, vae_losses, clipping_norm=clip)
    torch.manual_seed(9)
    engine.clipped_sum(x)
    engine.close()
    torch.testing.assert_close(engine.last_norms, norms, rtol=1e-4, atol=1e-6)
    expected = sum(g * min(1.0, clip / (float(g.norm()) + 1e-6)) for g in oracle)
    got = torch.cat([p.grad.reshape(-1) for p in parameters])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    clipped = [g * min(1.0, clip / (float(g.norm()) + 1e-6)) for g in oracle]
    assert max(float(g.norm()) for g in clipped) <= clip
    assert (norms > clip).sum() >= 2  # the test did clip


@pytest.mark.parametrize("which", ["sasrec", "bpr"])
def test_vmap_clipping_bounds_each_users_gradient_and_matches_the_oracle(which):
    if which == "sasrec":
        network, sequences, negatives, loss = sasrec_setup()
        named = dict(network.named_parameters())
        local, data = (), (sequences, negatives)
    else:
        named, users, data, loss = bpr_setup()
        local = (users,)
    parameters = list(named.values())
    oracle = []
    for b in range(len(data[0])):
        value = loss(named, tuple(t[b] for t in local), tuple(t[b] for t in data))
        g = torch.autograd.grad(value, parameters)
        oracle.append(torch.cat([t.reshape(-1) for t in g]))
    norms = torch.stack([g.norm() for g in oracle])
    clip = float(norms.median())
    engine = VmapClipping(named, loss, clipping_norm=clip, chunk_bytes=1)  # one user per chunk
    assert engine.chunk_size() == 1
    engine.clipped_sum(local, data)
    torch.testing.assert_close(engine.last_norms, norms, rtol=1e-4, atol=1e-6)
    expected = sum(g * min(1.0, clip / (float(g.norm()) + 1e-6)) for g in oracle)
    got = torch.cat([p.grad.reshape(-1) for p in parameters])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert (norms > clip).sum() >= 2


def test_local_vocabulary_maps_each_code_to_its_rows_distinct_items():
    codes = torch.tensor([[4, -1, 2, 4, 7], [1, 1, -1, -1, -1]])
    items, local = local_vocabulary(codes, 10)
    assert items.tolist() == [[2, 4, 7], [1, -1, -1]]
    assert local.tolist() == [[1, -1, 0, 1, 2], [0, 0, -1, -1, -1]]


@pytest.mark.parametrize("loss_name", ["sampled-softmax", "gbce", "bce"])
def test_gathered_embedding_rows_give_the_dense_per_user_gradients(loss_name):
    """SASRec's private path gives each user only its rows of the item embedding; the norms
    and the clipped sum equal those of the whole table."""
    network, sequences, negatives, loss = sasrec_setup(batch=6, loss_name=loss_name)
    named = dict(network.named_parameters())
    dense = VmapClipping(named, loss, clipping_norm=0.05)
    dense.clipped_sum((), (sequences, negatives))
    expected = grads(named.values())
    data, gathered = _private_batch(sequences, negatives, N_ITEMS)
    assert gathered["item_embedding.weight"].shape[1] < N_ITEMS + 1  # fewer rows per user
    sparse = VmapClipping(named, loss, clipping_norm=0.05, chunk_bytes=8_000)
    assert sparse.chunk_size(gathered) < len(sequences)  # several chunks
    sparse.clipped_sum((), data, gathered)
    torch.testing.assert_close(sparse.last_norms, dense.last_norms, rtol=1e-4, atol=1e-6)
    assert (dense.last_norms > 0.05).all()  # every user clipped
    for a, b in zip(grads(named.values()), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------- the noise
def test_noise_on_the_mean_gradient_has_std_m_c_over_the_expected_batch():
    named = {"w": torch.nn.Parameter(torch.zeros(200, 200))}

    def loss(params, local, data):
        return (params["w"][data[0]] * 3.0).sum()

    data = (torch.tensor([[1], [2], [3]]),)
    m, c, b = 1.7, 0.5, 40.0
    with _noise_scale_for_testing(0.0):
        quiet = DPSGDTrainer(
            VmapClipping(named, loss, clipping_norm=c),
            None,
            noise_multiplier=m,
            expected_batch_size=b,
            noise=torch.Generator().manual_seed(0),
        )
    quiet.privatise((), data)
    signal = named["w"].grad.clone()
    noisy = DPSGDTrainer(
        VmapClipping(named, loss, clipping_norm=c),
        None,
        noise_multiplier=m,
        expected_batch_size=b,
        noise=torch.Generator().manual_seed(1),
    )
    noisy.privatise((), data)
    noise = (named["w"].grad - signal).double()
    sigma = m * c / b
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * sigma / math.sqrt(n)
    # The sample variance of n normals has relative std sqrt(2/n) (≈ 0.7 % here).
    assert abs(float(noise.std()) / sigma - 1) < 4 * math.sqrt(2 / n)
    # Every clipped user adds c·(its direction); 3 users, each clipped to c.
    assert float(signal.sum()) == pytest.approx(3 * c * math.sqrt(200) / b, rel=1e-4)


def test_poisson_sampler_includes_each_user_with_the_sampling_rate():
    sampler = PoissonSampler(500, 0.2, np.random.default_rng(0))
    sizes = [len(batch) for batch in sampler.epoch(200)]
    assert np.mean(sizes) == pytest.approx(100, rel=0.02)
    assert PoissonSampler(7, 1.0, np.random.default_rng(0)).sample().tolist() == list(range(7))
    with pytest.raises(ConfigError):
        PoissonSampler(5, 0.0, np.random.default_rng(0))


# -------------------------------------------------------------------- accounting
def resolved(epsilon=2.0, accountant="pld", **kw) -> PrivacySpec:
    spec = PrivacySpec(
        epsilon=epsilon, max_interactions_per_user=5, noise_seed=0, accountant=accountant, **kw
    )
    return spec.resolve(40)


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_the_plan_meets_the_target_and_rdp_bounds_pld(accountant):
    spec = resolved(accountant=accountant)
    plan = plan_dpsgd(spec, 40, 10, 3)
    assert (plan.sampling_rate, plan.steps_per_epoch, plan.steps) == (0.25, 4, 12)
    achieved = plan.pld_epsilon if accountant == "pld" else plan.rdp_epsilon
    assert 0.98 * spec.epsilon <= achieved <= spec.epsilon
    assert plan.rdp_epsilon >= plan.pld_epsilon
    # Independent recomputation from the recorded fields.
    again = (
        Accountant("pld", pld_discretization=PLD_DISCRETIZATION)
        .compose(gaussian_event(plan.popularity_noise_multiplier))
        .compose(dpsgd_event(plan.sampling_rate, plan.noise_multiplier, plan.steps))
        .epsilon(plan.delta)
    )
    assert again == pytest.approx(plan.pld_epsilon, rel=1e-9)
    # A 1 % smaller multiplier misses the target: the calibration is tight.
    smaller = (
        Accountant(accountant, pld_discretization=PLD_DISCRETIZATION)
        .compose(gaussian_event(plan.popularity_noise_multiplier))
        .compose(dpsgd_event(plan.sampling_rate, 0.99 * plan.noise_multiplier, plan.steps))
        .epsilon(plan.delta)
    )
    assert smaller > spec.epsilon


def test_the_rdp_cross_check_agrees_with_opacus_rdp_accountant():
    from opacus.accountants import RDPAccountant

    spec = resolved()
    plan = plan_dpsgd(spec, 40, 10, 3, with_popularity=False)
    opacus = RDPAccountant()
    opacus.history = [(plan.noise_multiplier, plan.sampling_rate, plan.steps)]
    theirs = opacus.get_epsilon(plan.delta)
    assert theirs >= plan.pld_epsilon
    assert theirs == pytest.approx(plan.rdp_epsilon, rel=0.1)


def test_a_guarantee_of_the_flat_format_is_refused_with_a_clear_error():
    """Guarantees saved before the composition was recorded are not read (retrain instead)."""
    _, guarantee = private_counts()
    assert not guarantee.is_dpsgd and "L2 sensitivity" in guarantee.describe()
    flat = {
        "mechanism": "gaussian-item-counts",
        "statistic": "the item counts (users per item)",
        "epsilon": 2.0,
        "delta": 1e-3,
        "contribution_bound": 5,
        "selection": "most_recent",
        "sensitivity": 5**0.5,
        "noise_multiplier": 1.0,
        "noise_std": 5**0.5,
        "releases": 1,
        "accounting": "one Gaussian release",
        "accountant": "pld",
        "accountant_epsilon": 2.0,
        "n_users": 40,
    }
    with pytest.raises(ValueError, match="older privrank"):
        PrivacyGuarantee.from_dict(flat)


def private_counts():
    from privrank.models import Query
    from privrank.privacy.mechanisms import private_item_counts

    spec = resolved()
    indptr, items = spec.bound_contributions(DATA).sequences()
    matrix = Query(indptr=indptr, items=items.astype(np.int64)).to_csr(DATA.n_items)
    return private_item_counts(matrix, spec)


# -------------------------------------------------------------------- the three models
FACTORIES = {
    "bpr": lambda: BPR(factors=4, epochs=2, private={"batch_size": 10}),
    "mult-vae": lambda: MultVAE(hidden=8, latent=4, epochs=2, batch_size=10),
    "sasrec": lambda: SASRec(
        factors=8, blocks=1, heads=2, max_length=5, epochs=2, batch_size=10, negatives=8
    ),
}


def private_fit(name: str, noise_seed: int = 0) -> Recommender:
    spec = PrivacySpec(epsilon=2.0, max_interactions_per_user=5, noise_seed=noise_seed)
    return FACTORIES[name]().fit(DATA, FitOptions(seed=0, threads=1, privacy=spec))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_each_model_trains_privately_end_to_end(name, tmp_path):
    model = private_fit(name)
    guarantee = model.privacy_guarantee_
    assert guarantee.is_dpsgd
    assert guarantee.noise_scale_for_testing == 1.0 and guarantee.noise_seed is not None
    assert not guarantee.is_private  # a fixed noise seed is recorded: for tests only
    assert guarantee.epsilon == 2.0 and guarantee.unit == "user"
    assert guarantee.sampling_rate == 0.25 and guarantee.steps == 8 and guarantee.epochs == 2
    assert guarantee.clipping_norm == 1.0 and guarantee.contribution_bound == 5
    assert guarantee.pld_epsilon <= 2.0 <= guarantee.rdp_epsilon
    # Nothing computed from the data without noise is kept (no loss or validation history).
    assert model.loss_history_.size == 0 and model.validation_history_.size == 0
    text = guarantee.describe()
    assert "DP-SGD" in text and "entire history" in text and "clipped to L2 norm 1" in text
    items, scores = model.recommend(np.arange(DATA.n_users), 5)
    assert np.isfinite(scores).all() and (items >= 0).all()
    cold = model.score(np.arange(1))  # noisy popularity is set and finite
    assert np.isfinite(model.item_popularity_).all() and np.isfinite(cold).all()
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    assert loaded.privacy_guarantee_ == guarantee
    np.testing.assert_allclose(loaded.score(np.arange(3)), model.score(np.arange(3)), rtol=1e-5)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_the_same_seeds_reproduce_the_same_private_model(name):
    first, second = private_fit(name), private_fit(name)
    other = private_fit(name, noise_seed=1)
    users = np.arange(DATA.n_users)
    np.testing.assert_array_equal(first.score(users), second.score(users))
    np.testing.assert_array_equal(first.item_popularity_, second.item_popularity_)
    assert not np.array_equal(first.score(users), other.score(users))


def test_a_private_fit_records_the_test_noise_scale():
    with _noise_scale_for_testing(0.0):
        model = private_fit("mult-vae")
    assert not model.privacy_guarantee_.is_private
    assert model.privacy_guarantee_.describe().startswith("NOT PRIVATE")


def test_dpsgd_models_refuse_a_spec_without_a_contribution_bound():
    spec = PrivacySpec(epsilon=2.0, noise_seed=0)
    with pytest.raises(ConfigError, match="contribution bound"):
        FACTORIES["mult-vae"]().fit(DATA, FitOptions(seed=0, threads=1, privacy=spec))


def test_sasrec_refuses_per_position_negatives_in_a_private_fit():
    spec = PrivacySpec(epsilon=2.0, max_interactions_per_user=5, noise_seed=0)
    model = SASRec(factors=8, max_length=5, epochs=1, negatives=8, negative_sharing="position")
    with pytest.raises(ConfigError, match=r"negative_sharing: got 'position'; expected 'batch'"):
        model.fit(DATA, FitOptions(seed=0, threads=1, privacy=spec))


def test_bpr_private_user_loss_is_the_sum_of_bpr_terms():
    named, users, (pos, neg, mask), _ = bpr_setup()
    value = user_bpr_loss(named, users[1], pos[1], neg[1], mask[1], 0.01)
    h, bias = named["item_factors"], named["item_bias"]
    expected = 0.0
    for t in range(int(mask[1].sum())):
        i, j = int(pos[1, t]), int(neg[1, t])
        x = users[1] @ (h[i] - h[j]) + bias[i] - bias[j]
        penalty = users[1].square().sum() + h[i].square().sum() + h[j].square().sum()
        expected = (
            expected + functional.softplus(-x) + 0.01 * (penalty + bias[i] ** 2 + bias[j] ** 2)
        )
    torch.testing.assert_close(value, expected)


# -------------------------------------------------------------------- conformance (slow)
CONFORMANCE = {
    "bpr": lambda: BPR(factors=8, epochs=20, learning_rate=0.05, private={"batch_size": 30}),
    "sasrec": lambda: SASRec(
        factors=16,
        blocks=1,
        max_length=10,
        epochs=20,
        batch_size=30,
        dropout=0.1,
        negatives=16,
        learning_rate=0.01,
    ),
    "mult-vae": lambda: MultVAE(
        hidden=32,
        latent=8,
        epochs=40,
        batch_size=30,
        learning_rate=0.01,
        anneal_steps=50,
        dropout=0.2,
    ),
}
CONFORMANCE_SPEC = PrivacySpec(epsilon=50.0, max_interactions_per_user=30, noise_seed=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    "check",
    [c for n, c in RECOMMENDER_CHECKS.items() if n != "cold_start"],
    ids=[n for n in RECOMMENDER_CHECKS if n != "cold_start"],
)
@pytest.mark.parametrize("factory", CONFORMANCE.values(), ids=CONFORMANCE.keys())
def test_conformance_of_private_dpsgd_fits(factory, check, tmp_path, monkeypatch):
    """The whole contract with every fit private (``cold_start`` pins the exact popularity,
    which a private model must not keep)."""
    cls = type(factory())
    plain_fit = cls.fit

    def fit(self, train, options=None, **kw):
        options = FitOptions() if options is None else options
        if options.privacy is None:
            options = options.model_copy(update={"privacy": CONFORMANCE_SPEC})
        return plain_fit(self, train, options, **kw)

    monkeypatch.setattr(cls, "fit", fit)
    check(factory, DATA_CONFORMANCE, tmp_path)


def test_ghost_clipping_refuses_eval_mode():
    network, x = vae_setup()
    engine = GhostClipping(network.eval(), vae_losses, clipping_norm=1.0)
    with pytest.raises(ConfigError, match="training mode"):
        engine.clipped_sum(x)
    engine.close()


def test_bpr_gathered_item_rows_give_the_dense_per_user_gradients():
    from privrank.models.bpr import _gathered_pairs

    named, users, (pos, neg, mask), loss = bpr_setup()
    dense = VmapClipping(named, loss, clipping_norm=0.5)
    _, dense_local = dense.clipped_sum((users,), (pos, neg, mask))
    expected = grads(named.values())
    data, gathered = _gathered_pairs(pos.numpy(), neg.numpy(), mask.numpy() > 0, N_ITEMS)
    assert gathered["item_factors"].shape[1] <= 8 < N_ITEMS
    sparse = VmapClipping(named, loss, clipping_norm=0.5)
    _, sparse_local = sparse.clipped_sum((users,), data, gathered)
    torch.testing.assert_close(sparse.last_norms, dense.last_norms, rtol=1e-4, atol=1e-6)
    assert (dense.last_norms > 0.5).sum() >= 2
    for a, b in zip(grads(named.values()), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(sparse_local[0], dense_local[0], rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------------- the CLI
def test_privrank_train_fits_a_dpsgd_model_with_the_clipping_norm_and_accountant(
    tmp_path, privrank_home
):
    from typer.testing import CliRunner

    import privrank.cli.train  # noqa: F401  (register the command)
    from privrank.cli.app import app
    from privrank.data.interactions import DatasetMetadata
    from privrank.privacy.ledger import Ledger

    dataset = DATA.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")
    Ledger().set_budget("tiny", 10.0, 1e-2)
    out = tmp_path / "model"
    args = ["train", "--data", str(dataset), "--model", "mult-vae", "--out", str(out)]
    args += ["--param", "hidden=8", "--param", "latent=4", "--param", "epochs=2"]
    args += ["--param", "batch_size=10", "--epsilon", "2", "--max-per-user", "5"]
    args += ["--clipping-norm", "0.5", "--accountant", "rdp", "--noise-seed", "0"]
    done = CliRunner().invoke(app, args, catch_exceptions=True)
    assert done.exit_code == 0, done.output
    guarantee = Recommender.load(out / "model").privacy_guarantee_
    assert guarantee.clipping_norm == 0.5 and guarantee.accountant == "rdp"
    assert guarantee.rdp_epsilon <= 2.0 and guarantee.pld_epsilon <= guarantee.rdp_epsilon
    assert "DP-SGD" in done.output
    bad = [*args[:-6], "--accountant", "nope"]
    bad[bad.index(str(out))] = str(tmp_path / "other")
    refused = CliRunner().invoke(app, bad, catch_exceptions=True)
    assert refused.exit_code != 0
    assert "accountant" in f"{refused.output} {refused.exception}"
    assert not (tmp_path / "other").exists()
