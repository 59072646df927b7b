"""The Ray Train controller's poll interval during a checkpointing fit (no Ray run: fast)."""

from __future__ import annotations

import os

import pytest

from privrank.distributed import ray_train
from privrank.distributed.ray_train import HEALTH_CHECK_ENV, _controller_poll_interval


def test_ray_train_passes_the_interval_to_its_controller() -> None:
    # The setting only works if Ray Train propagates this variable from the driver to the
    # controller actor it starts; a renamed variable in a new Ray must fail here.
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert HEALTH_CHECK_ENV in ENV_VARS_TO_PROPAGATE


def test_the_interval_is_set_inside_the_block_and_removed_after(monkeypatch) -> None:
    monkeypatch.delenv(HEALTH_CHECK_ENV, raising=False)
    with _controller_poll_interval(ray_train.COMMIT_POLL_INTERVAL_S):
        assert float(os.environ[HEALTH_CHECK_ENV]) == pytest.approx(0.2)
    assert HEALTH_CHECK_ENV not in os.environ


def test_a_fit_without_checkpoints_leaves_ray_trains_default(monkeypatch) -> None:
    monkeypatch.delenv(HEALTH_CHECK_ENV, raising=False)
    with _controller_poll_interval(None):
        assert HEALTH_CHECK_ENV not in os.environ


def test_the_users_own_interval_is_kept(monkeypatch) -> None:
    monkeypatch.setenv(HEALTH_CHECK_ENV, "1.5")
    with _controller_poll_interval(0.2):
        assert os.environ[HEALTH_CHECK_ENV] == "1.5"
    assert os.environ[HEALTH_CHECK_ENV] == "1.5"
