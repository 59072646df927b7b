"""iALS on Ray actors equals the in-process fit; a killed actor or task is recovered from the
last checkpoint, with the uninterrupted result and one ledger charge for a private fit.

Oracle: the in-process fit with the same seed (itself checked against the pre-refactor loop in
tests/models/test_ials_engine.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privrank.distributed.ray_als import ALSWorker, RayALSBlocks
from privrank.errors import ConfigError
from privrank.models import EASE, IALS, FitOptions
from privrank.models.engine import ALSProblem
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions
from privrank.workflow.spend import fit_and_spend

pytestmark = pytest.mark.ray

DATA = synthetic_interactions(n_users=400, n_items=120, per_user=9, seed=6)
CONFIG = {"factors": 8, "epochs": 4, "regularization": 0.05}


def dying_worker(marker: Path, on_call: int, side: str = "items") -> type[ALSWorker]:
    """An :class:`ALSWorker` whose process exits (``os._exit``, as a kill would end it) in the
    middle of its ``on_call``-th ``side`` half-step, once: the marker file says it already died,
    so its restarted incarnation computes normally."""

    class DiesOnce(ALSWorker):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0

        def solve(self, which, *args, **kwargs):
            if which == side:
                self.calls += 1
                if self.calls == on_call and not marker.exists():
                    marker.write_text(str(os.getpid()))
                    os._exit(1)
            return super().solve(which, *args, **kwargs)

    return DiesOnce


def faulty_engine(worker_class: type[ALSWorker] = ALSWorker, workers: int = 2):
    """A RayEngine whose actors are ``worker_class`` (and that keeps its blocks for the test)."""
    from privrank.distributed import RayEngine, ensure_ray

    class FaultyEngine(RayEngine):
        def __init__(self, **settings) -> None:
            super().__init__(**settings)
            self.blocks: list[RayALSBlocks] = []

        def als_blocks(self, problem: ALSProblem) -> RayALSBlocks:
            ensure_ray(self.config)
            blocks = RayALSBlocks(problem, self.config.workers, worker_class=worker_class)
            self.blocks.append(blocks)
            return blocks

    return FaultyEngine(workers=workers)


@pytest.mark.parametrize(
    "solver",
    ["cholesky", pytest.param("cg", marks=pytest.mark.slow)],  # each: actors start
)
def test_ials_on_ray_actors_is_the_in_process_fit(ray_local, solver) -> None:
    from privrank.distributed import RayEngine

    local = IALS(**CONFIG, solver=solver).fit(DATA, FitOptions(seed=2, threads=1))
    on_ray = IALS(**CONFIG, solver=solver).fit(
        DATA, FitOptions(seed=2, threads=1, engine=RayEngine(workers=2))
    )
    np.testing.assert_array_equal(on_ray.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(on_ray.item_factors_, local.item_factors_)
    np.testing.assert_allclose(on_ray.loss_history_, local.loss_history_, rtol=1e-12)
    assert on_ray.recoveries_ == 0


@pytest.mark.slow  # a fit on new actors: out of make test's time
def test_the_actors_hold_their_blocks_for_the_whole_fit(ray_local) -> None:
    engine = faulty_engine()
    pids: list[list[int]] = []

    def record(report) -> None:
        (blocks,) = engine.blocks
        pids.append(blocks.pids())

    IALS(**CONFIG).fit(DATA, FitOptions(seed=2, threads=1, engine=engine, progress=record))
    (blocks,) = engine.blocks
    assert len(pids) == CONFIG["epochs"] and len(pids[0]) == 2
    assert all(p == pids[0] for p in pids)  # the same two processes every epoch
    spans = blocks._spans  # each side cut once, in row order, covering every row
    for side, rows in (("users", DATA.n_users), ("items", DATA.n_items)):
        assert [index for index, _, _ in spans[side]] == [0, 1]
        assert spans[side][0][1] == 0 and spans[side][0][2] == spans[side][1][1]
        assert spans[side][1][2] == rows
    assert blocks.actors == []  # released after the fit


def test_a_worker_that_dies_mid_fit_is_recovered_from_the_checkpoint(
    ray_local, tmp_path: Path
) -> None:
    whole = IALS(**CONFIG).fit(DATA, FitOptions(seed=5, threads=1))
    marker = tmp_path / "died"
    engine = faulty_engine(dying_worker(marker, on_call=3))  # the items half-step of epoch 3
    epochs: list[int] = []
    recovered = IALS(**CONFIG).fit(
        DATA,
        FitOptions(
            seed=5,
            threads=1,
            engine=engine,
            checkpoint_dir=tmp_path / "checkpoints",
            progress=lambda p: epochs.append(p.epoch),
        ),
    )
    assert marker.exists(), "the worker did not die: the test tested nothing"
    assert recovered.recoveries_ == 1 and epochs == [1, 2, 3, 4]
    np.testing.assert_array_equal(recovered.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(recovered.item_factors_, whole.item_factors_)
    np.testing.assert_array_equal(recovered.loss_history_, whole.loss_history_)


@pytest.mark.slow  # a fit on new actors: out of make test's time
def test_an_actor_killed_by_ray_between_epochs_gives_the_same_fit(ray_local) -> None:
    whole = IALS(**CONFIG).fit(DATA, FitOptions(seed=5, threads=1))
    engine = faulty_engine()
    pids: list[list[int]] = []

    def kill_after_epoch_2(report) -> None:
        if report.epoch == 2:
            (blocks,) = engine.blocks
            pids.append(blocks.pids())
            ray_local.kill(blocks.actors[1], no_restart=False)

    killed = IALS(**CONFIG).fit(
        DATA, FitOptions(seed=5, threads=1, engine=engine, progress=kill_after_epoch_2)
    )
    assert pids, "nothing was killed"
    assert killed.recoveries_ <= 1  # the next half-step fails, or waits for the restart
    np.testing.assert_array_equal(killed.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(killed.item_factors_, whole.item_factors_)


def test_more_workers_than_the_cluster_has_cpus_is_refused(ray_local) -> None:
    from privrank.distributed import RayEngine

    with pytest.raises(ConfigError, match="more than the 2 CPUs"):
        IALS(**CONFIG).fit(DATA, FitOptions(seed=1, threads=1, engine=RayEngine(workers=5)))


def test_private_ials_refuses_the_ray_engine(ray_local) -> None:
    from privrank.distributed import RayEngine

    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, noise_seed=1)
    with pytest.raises(ConfigError, match="no private fit on the 'ray' engine"):
        IALS(**CONFIG).fit(DATA, FitOptions(seed=1, privacy=spec, engine=RayEngine(workers=2)))


def test_a_killed_gram_task_is_retried_and_the_ledger_charged_once(
    ray_local, tmp_path: Path, monkeypatch
) -> None:
    """The private Gram fit (DP-EASE) on Ray: a task process dies mid-fit; Ray reruns the
    task, the noise is added once on the driver, and the ledger holds one committed charge."""
    import privrank.distributed.ray_engine as ray_engine
    from privrank.distributed import RayEngine
    from privrank.privacy.gram_release import partial_gram

    marker = tmp_path / "died"

    def dies_once(*args, **kwargs):
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return partial_gram(*args, **kwargs)

    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=12, noise_seed=7)
    local = EASE(regularization=30.0).fit(DATA, FitOptions(threads=1, privacy=spec))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget("toy", 10.0, 1e-2)
    monkeypatch.setattr(ray_engine, "partial_gram", dies_once)
    options = FitOptions(threads=1, privacy=spec, engine=RayEngine(workers=2, partitions=4))
    with fit_and_spend(
        EASE(regularization=30.0), DATA, options, budget_key="toy", description="killed task",
        ledger_url=url,
    ) as fitted:  # fmt: skip
        model = fitted.model
    assert marker.exists(), "no task died: the test tested nothing"
    np.testing.assert_allclose(model.weights_, local.weights_, rtol=1e-5, atol=1e-6)
    with Ledger(url) as book:
        spends = book.spends("toy")
        budget = book.budget("toy")
    assert [s.status.value for s in spends] == ["committed"]
    assert spends[0].epsilon == spec.epsilon
    assert budget.epsilon_remaining == pytest.approx(10.0 - spec.epsilon)


# ------------------------------------------------------------------------------ the CLI
def _cli():
    from typer.testing import CliRunner

    import privrank.cli.train  # noqa: F401  (register the command)
    from privrank.cli.app import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.mark.slow  # a fit on new actors: out of make test's time
def test_train_ials_engine_ray_saves_the_in_process_model(
    tmp_path: Path, privrank_home, ray_local
) -> None:
    import json

    from privrank.data.splits import HoldoutSplit, split
    from privrank.models import Recommender

    invoke = _cli()
    split_dir = split(DATA, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "split")
    common = ("--data", split_dir, "--model", "ials", "--param", "factors=8", "--param",
              "epochs=3", "--threads", 1)  # fmt: skip
    local = invoke("train", *common, "--out", tmp_path / "local")
    on_ray = invoke(
        "train", *common, "--engine", "ray", "--workers", 2, "--out", tmp_path / "ray",
        "--checkpoint-dir", tmp_path / "checkpoints",
    )  # fmt: skip
    assert local.exit_code == 0, local.output
    assert on_ray.exit_code == 0, on_ray.output
    record = json.loads((tmp_path / "ray" / "training.json").read_text())
    assert record["engine"]["engine"] == "ray" and record["engine"]["workers"] == 2
    a = Recommender.load(tmp_path / "local" / "model")
    b = Recommender.load(tmp_path / "ray" / "model")
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert (tmp_path / "checkpoints" / "ials.checkpoint.safetensors").is_file()


def test_private_ials_on_ray_and_stray_checkpoints_are_refused(tmp_path: Path, privrank_home):
    invoke = _cli()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    private = invoke(
        "train", "--data", "x", "--model", "ials", "--epsilon", 2, "--max-per-user", 20,
        "--engine", "ray", "--ledger", url, "--out", tmp_path / "m",
    )  # fmt: skip
    assert isinstance(private.exception, ConfigError)  # the entry point's exit code 2
    assert "no private fit on the 'ray' engine" in str(private.exception)
    assert not (tmp_path / "ledger.sqlite").exists()  # refused before the ledger is opened
    for extra in (("--model", "ease"), ("--model", "ials", "--epsilon", 2, "--max-per-user", 5)):
        refused = invoke(
            "train", "--data", "x", *extra, "--checkpoint-dir", tmp_path, "--out", tmp_path / "m"
        )
        assert isinstance(refused.exception, ConfigError)
        assert "writes no checkpoints" in str(refused.exception)
