"""User-level DP-SGD of the listwise ranker: zero noise and no clipping equals plain full-batch
training, the guarantee is the accountant's, noise is drawn, and LightGBM is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrank.data.query_groups import QueryGroups
from privrank.errors import ConfigError
from privrank.privacy.dpsgd import plan_dpsgd
from privrank.privacy.mechanisms import _noise_scale_for_testing
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ltr import ListwiseRanker, LTRFitOptions
from privrank.ranking.ltr.listwise import _network, _padded, group_losses


def _groups(n: int = 24, seed: int = 0) -> QueryGroups:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 8, n)
    x = rng.random((int(sizes.sum()), 4)).astype(np.float32)
    labels = (x[:, 0] > 0.6).astype(np.float32)
    return QueryGroups(x, labels, sizes, ("a", "b", "c", "d"))


@pytest.mark.slow  # ~40 s (Opacus set-up and the DP-SGD calibration)
def test_zero_noise_and_no_clipping_equals_full_batch_training() -> None:
    groups = _groups()
    config = {"hidden": (8,), "epochs": 3, "learning_rate": 0.01, "private": {"batch_size": 24}}
    spec = PrivacySpec(epsilon=1.0, delta=1e-3, clipping_norm=1e9, noise_seed=1)
    with _noise_scale_for_testing(0.0):
        private = ListwiseRanker(config).fit(groups, options=LTRFitOptions(seed=3, privacy=spec))
    # The reference: the same network and Adam on the mean loss over every group, per step.
    ranker_config = private.config
    torch.manual_seed(3)
    network = _network(groups.n_features, ranker_config)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    everything = np.arange(groups.n_queries)
    x, gains, mask = _padded(groups, everything, np.zeros(4, np.float32), np.ones(4, np.float32))
    for _ in range(3):
        optimizer.zero_grad()
        loss = group_losses(network(x).squeeze(-1), gains, mask, ranker_config).sum() / 24
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        expected = network(torch.from_numpy(groups.features)).squeeze(-1).numpy()
    # The listwise loss is blind to a constant added to every score, so the output bias gets a
    # zero gradient that Adam's normalisation turns into steps of ±lr from rounding noise alone
    # (in either run); compare the scores up to that constant.
    got = private.score(groups.features)
    np.testing.assert_allclose(got - got.mean(), expected - expected.mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # ~25 s (two DP-SGD calibrations)
def test_the_guarantee_is_the_accountants() -> None:
    groups = _groups(n=200, seed=1)
    spec = PrivacySpec(epsilon=2.0, delta=1e-4, clipping_norm=1.0)
    ranker = ListwiseRanker(hidden=(4,), epochs=2, private={"batch_size": 20})
    ranker.fit(groups, options=LTRFitOptions(privacy=spec))
    guarantee = ranker.privacy_guarantee_
    assert guarantee.epsilon == pytest.approx(2.0)
    assert guarantee.delta == pytest.approx(1e-4)
    plan = plan_dpsgd(spec, 200, 20, 2, with_popularity=False)
    assert plan.steps == 20  # 2 epochs x round(200 / 20)
    assert plan.pld_epsilon <= 2.0 + 1e-9
    assert plan.pld_epsilon >= 1.9  # calibrated tightly, not loosely
    assert guarantee.noise_multiplier == pytest.approx(plan.noise_multiplier)
    assert ranker.info_["privacy"]["epsilon"] == pytest.approx(2.0)


def test_noise_is_drawn_with_the_planned_scale() -> None:
    groups = _groups(n=50, seed=2)
    spec = PrivacySpec(epsilon=1.0, delta=1e-3, clipping_norm=1e-6, noise_seed=5)
    # With a tiny clipping norm the data's gradients vanish: the weights move by noise only,
    # so two noise seeds give different weights and the same seed the same weights.
    fit = lambda seed: ListwiseRanker(hidden=(4,), epochs=1, private={"batch_size": 50}).fit(  # noqa: E731
        groups, options=LTRFitOptions(privacy=spec.model_copy(update={"noise_seed": seed}))
    )
    a, b, c = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(a.score(groups.features), b.score(groups.features))
    assert not np.allclose(a.score(groups.features), c.score(groups.features))


def test_a_population_beyond_the_groups_is_planned_in_advance() -> None:
    """With ``population`` n > groups, q = b/n and T = epochs · round(n/b) are fixed before the
    groups exist, and the fit makes exactly the releases ``planned_releases`` stated."""
    groups = _groups(n=24, seed=2)
    spec = PrivacySpec(epsilon=2.0, delta=1e-3, clipping_norm=1.0, noise_seed=4)
    ranker = ListwiseRanker(hidden=(4,), epochs=2, private={"batch_size": 10})
    planned = ranker.planned_releases(spec, 50)
    ranker.fit(groups, options=LTRFitOptions(privacy=spec, population=50))
    (made,) = ranker.privacy_guarantee_.composition
    (step,) = planned
    assert made.sampling_rate == pytest.approx(10 / 50) == step.sampling_rate
    assert made.count == 2 * 5 == step.count
    assert made.noise_multiplier == pytest.approx(step.noise_multiplier)
    with pytest.raises(ConfigError, match="smaller than its 24 query groups"):
        ListwiseRanker(hidden=(4,), epochs=1).fit(
            groups, options=LTRFitOptions(privacy=spec, population=10)
        )
