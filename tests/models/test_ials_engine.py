"""iALS's half-steps behind the ALSBlocks interface, its per-epoch checkpoints and its recovery.

Oracle: the epoch loop of iALS as it was written before the half-steps moved behind
:class:`~privrank.models.engine.ALSBlocks` (the pre-refactor ``IALS._fit``, restated below on
the same solver kernels): the refactored fit, the in-process blocked fit, a fit resumed from a
checkpoint and a fit that lost a worker must all give its factors.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import threadpoolctl

from privrank.data.interactions import Interactions
from privrank.errors import ArtifactError, ConfigError, WorkerLostError
from privrank.models import IALS, FitOptions, FitProgress
from privrank.models._als_blocks import (
    LocalALSBlocks,
    block_bounds,
    row_block,
    stack_solutions,
)
from privrank.models._als_solvers import gramian, row_objectives, solve_cg, solve_exact
from privrank.models._checkpoint import (
    Checkpoint,
    checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from privrank.models.engine import ALSProblem, Side
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

SMALL = {"factors": 6, "epochs": 5, "regularization": 0.05, "unobserved_weight": 0.2}


def reference_fit(model: IALS, data: Interactions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The pre-refactor epoch loop of ``IALS._fit`` (items then users; the last user pass
    exact; conjugate gradient warm-started otherwise when ``solver="cg"``)."""
    cfg = model.config
    matrix = sp.csr_matrix((data.to_csr() > 0).astype(np.float32))
    n_users, n_items = matrix.shape
    alpha0 = IALS.resolve_unobserved_weight(cfg, matrix)
    rng = np.random.default_rng(seed)
    scale = np.float32(cfg.init_std / math.sqrt(cfg.factors))
    users = rng.standard_normal((n_users, cfg.factors), dtype=np.float32) * scale
    items = rng.standard_normal((n_items, cfg.factors), dtype=np.float32) * scale
    by_item = sp.csr_matrix(matrix.T)

    def reg(counts: np.ndarray, n_other: int) -> np.ndarray:
        base = counts.astype(np.float64) + alpha0 * n_other
        return (cfg.regularization * np.power(base, cfg.regularization_exponent)).astype(np.float32)

    user_reg = reg(np.diff(matrix.indptr), n_items)
    item_reg = reg(np.diff(by_item.indptr), n_users)

    def solve(rows, other, regularization, current, exact):
        gram = gramian(other)
        if cfg.solver == "cg" and not exact:
            return solve_cg(rows, other, gram, regularization, alpha0, current, cfg.cg_steps, 1)[0]
        return solve_exact(rows, other, gram, regularization, alpha0, 1)

    with threadpoolctl.threadpool_limits(1, "blas"):  # as the old loop ran its Gramians
        for epoch in range(1, cfg.epochs + 1):
            items = solve(by_item, users, item_reg, items, exact=False)
            users = solve(matrix, items, user_reg, users, exact=epoch == cfg.epochs)
    # the loss of the last epoch, as the old loop computed it
    row_objectives(matrix, users, items, gramian(items), user_reg, alpha0, 1)
    return users, items


@pytest.fixture(scope="module")
def data() -> Interactions:
    return synthetic_interactions(n_users=70, n_items=45, per_user=7, seed=4)


class BlockedEngine:
    """An in-process :class:`~privrank.models.engine.ALSEngine` that cuts each side into
    ``blocks`` row blocks and solves them one by one (what a Ray actor does with its block);
    ``fail_on`` lists the solve calls (1-based) that raise :class:`WorkerLostError` instead."""

    name = "blocked"

    def __init__(self, blocks: int, fail_on: tuple[int, ...] = ()) -> None:
        self.blocks = blocks
        self.fail_on = set(fail_on)
        self.calls = 0

    def als_blocks(self, problem: ALSProblem) -> _Blocks:
        return _Blocks(self, problem)

    def gram_statistics(self, matrix: sp.csr_matrix):
        raise AssertionError("iALS does not ask for Gram statistics")

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "blocks": self.blocks}


class _Blocks:
    def __init__(self, engine: BlockedEngine, problem: ALSProblem) -> None:
        self.engine = engine
        self.problem = problem
        self.parts = {
            side: [
                row_block(problem, side, a, b)
                for a, b in block_bounds(matrix, engine.blocks, problem.factors)
            ]
            for side, matrix in (("users", problem.by_user), ("items", problem.by_item))
        }

    def solve(self, side: Side, other, current, exact, loss):
        self.engine.calls += 1
        if self.engine.calls in self.engine.fail_on:
            raise WorkerLostError(f"worker lost on call {self.engine.calls}")
        gram = gramian(other)
        parts = [
            block.solve(other, gram, current[block.start : block.stop], exact, loss, 1)
            for block in self.parts[side]
        ]
        return stack_solutions(parts, current.shape[0], other.shape[1], loss)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_fit_equals_the_pre_refactor_loop(data, solver) -> None:
    model = IALS(**SMALL, solver=solver).fit(data, FitOptions(seed=3, threads=1))
    users, items = reference_fit(model, data, seed=3)
    np.testing.assert_array_equal(model.user_factors_, users)
    np.testing.assert_array_equal(model.item_factors_, items)
    assert model.recoveries_ == 0 and model.resumed_from_epoch_ is None


@pytest.mark.realdata
def test_fit_equals_the_pre_refactor_loop_on_ml100k() -> None:
    from tests.models.test_realdata_ml100k import ml100k

    train = ml100k()
    model = IALS(factors=32, epochs=3).fit(train, FitOptions(seed=0, threads=2))
    users, items = reference_fit(model, train, seed=0)
    np.testing.assert_array_equal(model.user_factors_, users)
    np.testing.assert_array_equal(model.item_factors_, items)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
@pytest.mark.parametrize("blocks", [1, 3, 8])
def test_blocked_half_steps_equal_the_whole_ones(data, solver, blocks) -> None:
    local = IALS(**SMALL, solver=solver).fit(data, FitOptions(seed=1, threads=1))
    engine = BlockedEngine(blocks)
    blocked = IALS(**SMALL, solver=solver).fit(data, FitOptions(seed=1, threads=1, engine=engine))
    assert engine.calls == 2 * SMALL["epochs"]
    np.testing.assert_array_equal(blocked.user_factors_, local.user_factors_)
    np.testing.assert_array_equal(blocked.item_factors_, local.item_factors_)
    np.testing.assert_allclose(blocked.loss_history_, local.loss_history_, rtol=1e-12)


def test_block_bounds_cover_every_row_in_balanced_runs() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, size=200)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = rng.integers(0, 50, size=int(indptr[-1]))
    matrix = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(200, 50))
    bounds = block_bounds(matrix, 4, factors=8)
    assert len(bounds) == 4 and bounds[0][0] == 0 and bounds[-1][1] == 200
    assert all(a < b for a, b in bounds)
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(bounds))
    costs = [float(np.sum(lengths[a:b] + 8)) for a, b in bounds]
    assert max(costs) - min(costs) <= 2 * (lengths.max() + 8)  # one row's cost apart at most
    many = block_bounds(matrix, 500, factors=8)  # more blocks than rows: at most one a row
    assert many[0][0] == 0 and many[-1][1] == 200 and 100 < len(many) <= 200
    assert all(a < b for a, b in many) and all(
        b == c for (_, b), (c, _) in itertools.pairwise(many)
    )
    assert block_bounds(sp.csr_matrix((0, 5)), 3, factors=8) == []


def test_local_blocks_solve_both_sides(data) -> None:
    matrix = sp.csr_matrix((data.to_csr() > 0).astype(np.float32))
    by_item = sp.csr_matrix(matrix.T)
    problem = ALSProblem(
        by_user=matrix,
        by_item=by_item,
        user_regularization=np.full(matrix.shape[0], 0.5, dtype=np.float32),
        item_regularization=np.full(matrix.shape[1], 0.5, dtype=np.float32),
        unobserved_weight=0.1,
        cg_steps=None,
        factors=4,
    )
    rng = np.random.default_rng(2)
    items = rng.standard_normal((matrix.shape[1], 4)).astype(np.float32)
    users, rows = LocalALSBlocks(problem, 1).solve("users", items, np.zeros(1), True, True)
    expected = solve_exact(matrix, items, gramian(items), problem.user_regularization, 0.1, 1)
    np.testing.assert_array_equal(users, expected)
    assert rows is not None and rows.shape == (matrix.shape[0],)


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "ials")
    assert read_checkpoint(path) is None
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "loss": np.array([2.0, 1.0])}
    write_checkpoint(path, Checkpoint(2, {"model": "ials", "seed": 5}, arrays))
    back = read_checkpoint(path)
    assert back is not None and back.epoch == 2 and back.identity == {"model": "ials", "seed": 5}
    assert set(back.arrays) == {"w", "loss"}
    np.testing.assert_array_equal(back.arrays["w"], arrays["w"])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_a_changed_byte_is_a_checksum_mismatch(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "ials")
    arrays = {"w": np.ones((4, 4), dtype=np.float32)}
    write_checkpoint(path, Checkpoint(1, {"model": "ials"}, arrays))
    payload = bytearray(path.read_bytes())
    payload[-3] ^= 0x40  # a bit of the last array's data
    path.write_bytes(bytes(payload))
    with pytest.raises(ArtifactError, match="checksum mismatch") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "ials")
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(ArtifactError, match="not a readable checkpoint"):
        read_checkpoint(path)


class Interrupted(Exception):
    pass


def interrupt_after(epoch: int):
    def progress(report: FitProgress) -> None:
        if report.epoch == epoch:
            raise Interrupted

    return progress


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_resume_from_epoch_k_gives_the_uninterrupted_fit(data, tmp_path: Path, solver) -> None:
    whole = IALS(**SMALL, solver=solver).fit(data, FitOptions(seed=7, threads=1))
    with pytest.raises(Interrupted):
        IALS(**SMALL, solver=solver).fit(
            data,
            FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path, progress=interrupt_after(3)),
        )
    saved = read_checkpoint(checkpoint_path(tmp_path, "ials"))
    assert saved is not None and saved.epoch == 3
    epochs: list[int] = []
    resumed = IALS(**SMALL, solver=solver).fit(
        data,
        FitOptions(
            seed=7, threads=1, checkpoint_dir=tmp_path, progress=lambda p: epochs.append(p.epoch)
        ),
    )
    assert resumed.resumed_from_epoch_ == 3 and epochs == [4, 5]
    np.testing.assert_array_equal(resumed.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(resumed.item_factors_, whole.item_factors_)
    np.testing.assert_array_equal(resumed.loss_history_, whole.loss_history_)
    final = read_checkpoint(checkpoint_path(tmp_path, "ials"))
    assert final is not None and final.epoch == SMALL["epochs"]


def test_the_checkpoint_of_another_fit_is_not_resumed(data, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        IALS(**SMALL).fit(
            data,
            FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path, progress=interrupt_after(2)),
        )
    other_seed = IALS(**SMALL).fit(data, FitOptions(seed=8, threads=1, checkpoint_dir=tmp_path))
    assert other_seed.resumed_from_epoch_ is None
    fresh = IALS(**SMALL).fit(data, FitOptions(seed=8, threads=1))
    np.testing.assert_array_equal(other_seed.user_factors_, fresh.user_factors_)
    other_data = synthetic_interactions(n_users=70, n_items=45, per_user=7, seed=5)
    with pytest.raises(Interrupted):
        IALS(**SMALL).fit(
            data,
            FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path, progress=interrupt_after(2)),
        )
    assert (
        IALS(**SMALL)
        .fit(other_data, FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path))
        .resumed_from_epoch_
        is None
    )


def test_a_corrupted_checkpoint_stops_the_fit_with_a_clear_error(data, tmp_path: Path) -> None:
    with pytest.raises(Interrupted):
        IALS(**SMALL).fit(
            data,
            FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path, progress=interrupt_after(2)),
        )
    path = checkpoint_path(tmp_path, "ials")
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0x01
    path.write_bytes(bytes(payload))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        IALS(**SMALL).fit(data, FitOptions(seed=7, threads=1, checkpoint_dir=tmp_path))


# ------------------------------------------------------------------------------ recovery
@pytest.mark.parametrize("with_directory", [False, True])
def test_a_lost_worker_resumes_from_the_last_checkpoint(data, tmp_path: Path, with_directory):
    whole = IALS(**SMALL).fit(data, FitOptions(seed=9, threads=1))
    engine = BlockedEngine(3, fail_on=(5,))  # the items half-step of epoch 3
    epochs: list[int] = []
    recovered = IALS(**SMALL).fit(
        data,
        FitOptions(
            seed=9,
            threads=1,
            engine=engine,
            checkpoint_dir=tmp_path if with_directory else None,
            progress=lambda p: epochs.append(p.epoch),
        ),
    )
    assert recovered.recoveries_ == 1 and epochs == [1, 2, 3, 4, 5]
    # epoch 3 ran again from epoch 2's state: 2 solves per epoch, and the lost one
    assert engine.calls == 2 * SMALL["epochs"] + 1
    np.testing.assert_array_equal(recovered.user_factors_, whole.user_factors_)
    np.testing.assert_array_equal(recovered.item_factors_, whole.item_factors_)
    np.testing.assert_array_equal(recovered.loss_history_, whole.loss_history_)


def test_a_worker_lost_again_and_again_ends_the_fit(data) -> None:
    engine = BlockedEngine(2, fail_on=(3, 4, 5, 6))  # four losses in a row from epoch 2
    with pytest.raises(WorkerLostError, match="worker lost on call 6"):
        IALS(**SMALL).fit(data, FitOptions(seed=9, threads=1, engine=engine))


def test_losses_between_completed_epochs_do_not_accumulate(data) -> None:
    engine = BlockedEngine(2, fail_on=(1, 2, 3, 6, 7, 8))  # three in a row, twice
    model = IALS(**SMALL).fit(data, FitOptions(seed=9, threads=1, engine=engine))
    assert model.recoveries_ == 6
    np.testing.assert_array_equal(
        model.user_factors_, IALS(**SMALL).fit(data, FitOptions(seed=9, threads=1)).user_factors_
    )


def test_a_private_fit_refuses_an_engine(data) -> None:
    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, noise_seed=1)
    with pytest.raises(ConfigError, match="no private fit on the 'blocked' engine"):
        IALS(**SMALL).fit(data, FitOptions(seed=1, privacy=spec, engine=BlockedEngine(2)))


def test_fits_without_checkpoints_refuse_a_checkpoint_directory(data, tmp_path: Path) -> None:
    from privrank.models import EASE

    with pytest.raises(ConfigError, match="EASE's fit writes no checkpoints"):
        EASE().fit(data, FitOptions(checkpoint_dir=tmp_path))
    spec = PrivacySpec(epsilon=4.0, max_interactions_per_user=20, noise_seed=1)
    with pytest.raises(ConfigError, match="IALS's private fit writes no checkpoints"):
        IALS(**SMALL).fit(data, FitOptions(privacy=spec, checkpoint_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []
