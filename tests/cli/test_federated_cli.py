"""``privrank federated train`` end to end: train, evaluate, resume, private runs, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.evaluate
import privrank.cli.federated
import privrank.cli.privacy  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.data.splits import HoldoutSplit, split
from privrank.errors import PrivrankError
from privrank.models import FedMF
from privrank.testing import synthetic_interactions
from privrank.workflow.model_dir import load_trained

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def _refused(result, message: str) -> bool:
    """A privrank error (the console script maps it to exit code 2) naming ``message``."""
    return isinstance(result.exception, PrivrankError) and message in str(result.exception)


@pytest.fixture
def split_dir(tmp_path: Path, privrank_home: Path) -> Path:
    data = synthetic_interactions(60, 30, per_user=8, seed=5)
    return split(data, HoldoutSplit(fraction=0.25, seed=2)).save(tmp_path / "toy-split")


def test_train_evaluate_and_resume(tmp_path: Path, split_dir: Path) -> None:
    out = tmp_path / "fed"
    args = ("federated", "train", "--data", split_dir, "--out", out, "--rounds", "4")
    result = invoke(*args, "--clients-per-round", "20", "--param", "factors=8")
    assert result.exit_code == 0, result.output
    assert "trained fedmf on 60 devices in 4 rounds" in result.output
    trained = load_trained(out)
    assert trained.model.name == "fedmf" and trained.record["federated"]["rounds"] == 4
    lines = (tmp_path / "fed.run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4]
    result = invoke("evaluate", "--model", out, "--out", tmp_path / "eval", "--resamples", "50")
    assert result.exit_code == 0, result.output
    assert "fedmf" in result.output and "NDCG@10" in result.output
    # the same run again without --resume is refused; with it, nothing is left to do
    result = invoke(*args, "--clients-per-round", "20", "--param", "factors=8")
    assert _refused(result, "--resume")
    result = invoke(*args, "--clients-per-round", "20", "--param", "factors=8", "--resume")
    assert result.exit_code == 0, result.output


def test_a_private_run_spends_from_the_ledger(tmp_path: Path, split_dir: Path) -> None:
    out = tmp_path / "dp"
    args = ("federated", "train", "--data", split_dir, "--out", out, "--rounds", "3")
    dp = ("--epsilon", "4", "--max-per-user", "20", "--clients-per-round", "30")
    result = invoke(*args, *dp)
    assert _refused(result, "no privacy budget")
    assert not out.exists()
    name = json.loads((split_dir / "split.json").read_text())["source"]["name"]
    assert invoke("privacy", "budget", name, "--epsilon", "10", "--delta", "1e-2").exit_code == 0
    result = invoke(*args, *dp)
    assert result.exit_code == 0, result.output
    assert "DP-FedAvg" in result.output
    record = load_trained(out).record
    assert record["privacy"]["ledger_key"] == name
    assert len(record["privacy"]["spend_ids"]) == 4  # the counts and 3 rounds
    assert record["privacy"]["epsilon"] <= 4.0


def _distributed_dp_run(split_dir: Path, out: Path, noise_seed: int):
    """``federated train`` over SecAgg+ with distributed DP on the toy split (budget set)."""
    pytest.importorskip("cryptography")
    name = json.loads((split_dir / "split.json").read_text())["source"]["name"]
    assert invoke("privacy", "budget", name, "--epsilon", "10", "--delta", "1e-2").exit_code == 0
    return invoke(
        "federated", "train", "--data", split_dir, "--out", out, "--rounds", "2",
        "--clients-per-round", "30", "--min-clients", "10", "--epsilon", "8",
        "--max-per-user", "10", "--no-adaptive-clipping", "--aggregation", "secagg",
        "--distributed-dp", "--dropout", "0.1", "--noise-seed", noise_seed,
    )  # fmt: skip


def test_secagg_with_distributed_dp_spends_from_the_ledger(tmp_path: Path, split_dir: Path) -> None:
    out = tmp_path / "ddp"
    result = _distributed_dp_run(split_dir, out, 0)
    assert result.exit_code == 0, result.output
    record = load_trained(out).record
    assert record["federated"]["aggregation"] == "secagg" and record["federated"]["distributed_dp"]
    assert len(record["privacy"]["spend_ids"]) == 1 + record["federated"]["released_rounds"]
    assert 0 < record["privacy"]["epsilon"] <= 8.0
    assert "untrusted for individual updates" in result.output


def test_distributed_dp_noisy_counts_summing_below_zero_degrade_the_run(
    tmp_path: Path, split_dir: Path
) -> None:
    """A recorded draw on which this run used to crash (seed 10): the noisy item counts sum
    to less than 0 (seeded or not, about one run in twenty), so the rule gave α₀ = 0, and
    items with a negative count had a zero system in the server step (NaN item factors;
    round 2's devices then failed with "38 ALS normal-equation matrices are not positive
    definite"). Now α₀ is the rule's floor ρ/|I| (one pair per device) and the run completes
    with finite factors and scores."""
    out = tmp_path / "ddp"
    result = _distributed_dp_run(split_dir, out, 10)
    assert result.exit_code == 0, result.output
    trained = load_trained(out)
    run_dir = Path(trained.record["federated"]["run_dir"])
    with np.load(run_dir / "state.npz") as arrays:
        assert arrays["item_counts"].sum() < 0  # still the degenerate draw this test is about
    model = trained.model
    assert isinstance(model, FedMF)
    assert model.unobserved_weight_ == pytest.approx(4.0 / model.n_items_)
    assert trained.record["federated"]["released_rounds"] == 2
    assert np.isfinite(model.item_factors_).all()
    assert np.isfinite(model.score(np.arange(model.n_users_))).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # a private release may not depend on the cohort's size (fixed cohorts are accounted)
        (
            ("--cohort", "fixed", "--epsilon", "1", "--max-per-user", "5", "--min-clients", "999"),
            "exceeds the fixed cohort",
        ),
        (("--epsilon", "1", "--max-per-user", "5", "--min-clients", "5"), "whatever the size"),
        (
            (
                "--rounds",
                "0",
            ),
            "rounds",
        ),
        (("--model", "ials"), "fedmf"),
        (("--param", "factors=-1"), "factors"),
        (("--aggregation", "magic"), "plain or secagg"),
        (("--distributed-dp",), "--aggregation secagg and --epsilon"),
        (("--epsilon", "1", "--max-per-user", "5", "--aggregation", "secagg"), "--sampling fixed"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(
    tmp_path, split_dir, options, message
) -> None:
    result = invoke("federated", "train", "--data", split_dir, "--out", tmp_path / "x", *options)
    assert _refused(result, message), result.output


def test_bracketed_output_folder_is_printed_verbatim(tmp_path: Path, split_dir: Path) -> None:
    """Rich markup is off: a folder named ``run[a]`` is not shortened to ``run``."""
    out = tmp_path / "run[a]"
    args = ("federated", "train", "--data", split_dir, "--out", out, "--rounds", "1")
    result = invoke(*args, "--clients-per-round", "10", "--param", "factors=4")
    assert result.exit_code == 0, result.output
    assert "run[a]" in " ".join(result.output.split())
