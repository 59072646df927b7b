"""A torch fit (SASRec, Mult-VAE) interrupted after an epoch and resumed from its checkpoint
ends with the uninterrupted fit's weights, bit for bit (the oracle: the same fit, never
stopped, in the same process)."""

from __future__ import annotations

import pytest
import torch

from privrank.data.splits import LeaveLastOut, split
from privrank.errors import ArtifactError, ConfigError
from privrank.models._checkpoint import checkpoint_path, read_checkpoint
from privrank.models._epochs import LoopState
from privrank.models._torch_checkpoint import TorchCheckpoints, TorchFitState
from privrank.models.base import FitOptions, FitProgress
from privrank.models.sasrec import SASRec
from privrank.models.vae import MultVAE
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

PARTS = split(
    synthetic_interactions(n_users=60, n_items=40, per_user=8, seed=3),
    LeaveLastOut(k=1, validation=True),
)


def sasrec() -> SASRec:
    return SASRec(
        factors=16, blocks=1, max_length=10, epochs=6, batch_size=16, dropout=0.2,
        negatives=8, learning_rate=0.01, patience=3, loss="sampled-softmax",
    )  # fmt: skip


def vae() -> MultVAE:
    return MultVAE(
        hidden=24, latent=8, epochs=6, batch_size=16, anneal_steps=7, patience=3, dropout=0.3
    )


MODELS = {"sasrec": sasrec, "mult-vae": vae}


class Killed(Exception):
    """Stands for the process dying after an epoch's checkpoint was written."""


def options(directory=None, kill_after: int | None = None, seed: int = 4) -> FitOptions:
    def progress(report: FitProgress) -> None:
        if report.epoch == kill_after:
            raise Killed

    return FitOptions(
        seed=seed, threads=1, progress=progress, validation=PARTS.validation,
        checkpoint_dir=directory,
    )  # fmt: skip


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.network_.state_dict().items()}


def reported_epochs(model) -> int:
    """Epochs the fit reported: the selection run's, then (SASRec) the refit's."""
    return len(model.loss_history_) + getattr(model, "refit_epochs_", 0)


def check_resumption(make, kill_after: int, directory) -> tuple[object, object]:
    """Kill a fit after reported epoch ``kill_after``, resume it, and compare it with the
    uninterrupted fit; then run the finished fit again. Returns (uninterrupted, resumed)."""
    whole = make().fit(PARTS.train, options())
    assert whole.resumed_from_epoch_ is None
    with pytest.raises(Killed):
        make().fit(PARTS.train, options(directory, kill_after=kill_after))
    heard: list[int] = []
    resumed = make().fit(
        PARTS.train,
        options(directory).model_copy(update={"progress": lambda r: heard.append(r.epoch)}),
    )
    assert resumed.resumed_from_epoch_ == kill_after
    assert heard == list(range(kill_after + 1, reported_epochs(whole) + 1))  # nothing redone
    expected, got = weights(whole), weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert resumed.loss_history_.tolist() == whole.loss_history_.tolist()
    assert resumed.validation_history_.tolist() == whole.validation_history_.tolist()
    assert resumed.best_epoch_ == whole.best_epoch_
    assert getattr(resumed, "refit_epochs_", 0) == getattr(whole, "refit_epochs_", 0)
    # The finished fit's checkpoints say so: a third run trains nothing and keeps the weights.
    epochs: list[int] = []
    again = make().fit(
        PARTS.train,
        FitOptions(seed=4, threads=1, validation=PARTS.validation, checkpoint_dir=directory,
                   progress=lambda r: epochs.append(r.epoch)),
    )  # fmt: skip
    assert epochs == [] and again.resumed_from_epoch_ == reported_epochs(whole)
    for key in expected:
        assert torch.equal(expected[key], weights(again)[key]), key
    assert again.validation_history_.tolist() == whole.validation_history_.tolist()
    return whole, resumed


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("kill_after", [1, 4])
def test_a_resumed_fit_ends_with_the_uninterrupted_weights(make, kill_after, tmp_path):
    whole, _ = check_resumption(make, kill_after, tmp_path)
    assert len(whole.loss_history_) > 4  # the kills fell in the selection run
    with pytest.raises(Killed):
        make().fit(PARTS.train, options(tmp_path / "again", kill_after=kill_after))
    saved = read_checkpoint(checkpoint_path(tmp_path / "again", whole.name))
    assert saved is not None and saved.epoch == kill_after


@pytest.mark.parametrize("refit_epoch", ["first", "last"])
def test_a_fit_killed_in_the_refit_resumes_there(refit_epoch, tmp_path):
    whole = sasrec().fit(PARTS.train, options())
    run, refit = len(whole.loss_history_), whole.refit_epochs_
    assert whole.config.refit and refit == whole.best_epoch_ >= 2
    kill_after = run + (1 if refit_epoch == "first" else refit)
    with pytest.raises(Killed):
        sasrec().fit(PARTS.train, options(tmp_path / "killed", kill_after=kill_after))
    selection = read_checkpoint(checkpoint_path(tmp_path / "killed", "sasrec"))
    refitted = read_checkpoint(checkpoint_path(tmp_path / "killed", "sasrec.refit"))
    assert selection is not None and selection.epoch == run  # finished, kept beside the refit's
    assert refitted is not None and refitted.epoch == kill_after - run
    assert refitted.identity["stage"] == "refit" and refitted.identity["epochs"] == refit
    # and the whole check: resumed in the refit, it ends with the uninterrupted weights
    check_resumption(sasrec, kill_after, tmp_path / "resumed")


def test_a_fit_without_validation_resumes_too(tmp_path):
    def run(**kw):
        return vae().fit(PARTS.train, FitOptions(seed=2, threads=1, **kw))

    whole = run()
    with pytest.raises(Killed):
        run(checkpoint_dir=tmp_path, progress=lambda r: (_ for _ in ()).throw(Killed()))
    resumed = run(checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch_ == 1
    for key, value in weights(whole).items():
        assert torch.equal(value, weights(resumed)[key]), key


def test_the_checkpoint_of_another_fit_is_not_resumed(tmp_path):
    with pytest.raises(Killed):
        sasrec().fit(PARTS.train, options(tmp_path, kill_after=2, seed=4))
    other = sasrec().fit(PARTS.train, options(tmp_path, seed=5))
    assert other.resumed_from_epoch_ is None
    fresh = sasrec().fit(PARTS.train, options(seed=5))
    for key, value in weights(fresh).items():
        assert torch.equal(value, weights(other)[key]), key


def test_a_corrupted_checkpoint_stops_the_fit(tmp_path):
    with pytest.raises(Killed):
        vae().fit(PARTS.train, options(tmp_path, kill_after=1))
    path = checkpoint_path(tmp_path, "mult-vae")
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        vae().fit(PARTS.train, options(tmp_path))


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_a_private_fit_refuses_a_checkpoint_directory(make, tmp_path):
    spec = PrivacySpec(epsilon=1.0, delta=1e-5, max_interactions_per_user=10, noise_seed=1)
    with pytest.raises(ConfigError, match="private fit writes no checkpoints"):
        make().fit(PARTS.train, FitOptions(privacy=spec, checkpoint_dir=tmp_path))
    assert not any(tmp_path.iterdir())


def test_the_training_record_says_where_the_fit_resumed_from(tmp_path, privrank_home):
    import json

    from typer.testing import CliRunner

    import privrank.cli.train  # noqa: F401  (register the command)
    from privrank.cli.app import app
    from privrank.data.splits import HoldoutSplit

    data = synthetic_interactions(n_users=60, n_items=40, per_user=8, seed=3)
    split_dir = split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "split")
    common = ["train", "--data", str(split_dir), "--model", "mult-vae", "--param", "hidden=16",
              "--param", "latent=4", "--param", "epochs=2", "--threads", "1",
              "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    records = []
    for run in ("first", "again"):
        done = CliRunner().invoke(app, [*common, "--out", str(tmp_path / run)])
        assert done.exit_code == 0, done.output
        records.append(json.loads((tmp_path / run / "training.json").read_text()))
    assert records[0]["checkpoints"]["resumed_from_epoch"] is None
    assert records[1]["checkpoints"]["resumed_from_epoch"] == 2  # the finished fit's epoch
    assert [r["checkpoints"]["recoveries"] for r in records] == [0, 0]
    assert records[1]["checkpoints"]["directory"] == str((tmp_path / "ck").resolve())


class _EngineWithoutCheckpoints:
    """A network fit engine that does not declare ``supports_checkpoints``."""

    name = "plain"

    def gram_statistics(self, matrix):  # pragma: no cover - never reached
        raise AssertionError("not a Gram fit")

    def describe(self) -> dict[str, object]:
        return {"engine": self.name}

    def fit_network(self, model, train, options):  # pragma: no cover - never reached
        raise AssertionError("the checkpoint directory should have been refused first")


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_an_engine_without_checkpoints_refuses_a_checkpoint_directory(make, tmp_path):
    options = FitOptions(engine=_EngineWithoutCheckpoints(), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="writes no checkpoints to a checkpoint directory"):
        make().fit(PARTS.train, options)
    assert not any(tmp_path.iterdir())


class FakeCudaGenerator:
    """Stands for a CUDA device's generator on a machine without one: ``get_rng_state`` gives
    its state, ``set_rng_state`` records what was put back (no GPU run is claimed here)."""

    def __init__(self, state: torch.Tensor) -> None:
        self.state = state
        self.restored: list[tuple[torch.Tensor, torch.device]] = []

    def get_rng_state(self, device: torch.device) -> torch.Tensor:
        assert device.type == "cuda"
        return self.state.clone()

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        self.restored.append((state.clone(), device))


def small_fit() -> TorchFitState:
    network = torch.nn.Linear(3, 2)
    return TorchFitState(network, torch.optim.Adam(network.parameters(), lr=0.1))


def loop_state(epoch: int) -> LoopState:
    return LoopState(
        epoch=epoch, losses=(0.5,) * epoch, evaluations=(), best_value=float("-inf"),
        best_epoch=0, best_state=None, stale=0, elapsed_s=0.0, finished=None,
    )  # fmt: skip


def on_fake_cuda(monkeypatch, generator: FakeCudaGenerator) -> None:
    import privrank.models._torch_checkpoint as module

    monkeypatch.setattr(module, "network_device", lambda network: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_rng_state", generator.get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", generator.set_rng_state)


def test_the_cuda_generator_round_trips_through_a_checkpoint(monkeypatch, tmp_path):
    state = torch.randint(
        0, 256, (816,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    generator = FakeCudaGenerator(state)
    on_fake_cuda(monkeypatch, generator)
    store = TorchCheckpoints(tmp_path, "toy", {"fit": 1})
    store.save(small_fit(), loop_state(2))
    saved = read_checkpoint(checkpoint_path(tmp_path, "toy"))
    assert saved is not None
    assert torch.equal(torch.from_numpy(saved.arrays["rng.cuda"]), state)
    generator.state = torch.zeros_like(state)  # the device's stream moved on since the save
    resumed = store.load(small_fit())
    assert resumed is not None and resumed.epoch == 2
    ((restored, device),) = generator.restored
    assert torch.equal(restored, state) and device == torch.device("cuda", 0)


def test_a_cpu_checkpoint_holds_no_cuda_generator(tmp_path):
    with pytest.raises(Killed):
        sasrec().fit(PARTS.train, options(tmp_path, kill_after=1))
    saved = read_checkpoint(checkpoint_path(tmp_path, "sasrec"))
    assert saved is not None
    assert "rng.torch" in saved.arrays and "rng.cuda" not in saved.arrays


@pytest.mark.parametrize("written_on", ["cuda", "cpu"])
def test_a_checkpoint_of_the_other_device_is_not_resumed(written_on, monkeypatch, tmp_path):
    generator = FakeCudaGenerator(torch.arange(16, dtype=torch.uint8))
    with monkeypatch.context() as patch:
        if written_on == "cuda":
            on_fake_cuda(patch, generator)
        TorchCheckpoints(tmp_path, "toy", {"fit": 1}).save(small_fit(), loop_state(3))
    if written_on == "cpu":
        on_fake_cuda(monkeypatch, generator)
    fit = small_fit()
    before = {k: v.clone() for k, v in fit.network.state_dict().items()}
    assert TorchCheckpoints(tmp_path, "toy", {"fit": 1}).load(fit) is None
    assert generator.restored == []
    for key, value in fit.network.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing was put back
