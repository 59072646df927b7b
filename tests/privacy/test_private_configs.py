"""Each model's private settings live in one nested ``private`` block; ignored ones are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privrank.cli.train  # noqa: F401  (register the commands)
from privrank.cli.app import app
from privrank.cli.train import parse_params
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError
from privrank.models import (
    BPR,
    EASE,
    IALS,
    BPRPrivateConfig,
    DPSGDPrivateConfig,
    EASEPrivateConfig,
    FitOptions,
    IALSPrivateConfig,
    ItemKNN,
    ItemKNNPrivateConfig,
    MostPopular,
    MultVAE,
    Recommender,
    SASRec,
)
from privrank.privacy.ledger import Ledger
from privrank.privacy.spec import PrivacySpec
from privrank.testing import synthetic_interactions

DATA = synthetic_interactions(n_users=40, n_items=30, seed=0)
SPEC = PrivacySpec(epsilon=4.0, max_interactions_per_user=6, noise_seed=5)
BLOCKS = {
    EASE: (EASEPrivateConfig, {"count_share": 0.5}),
    ItemKNN: (ItemKNNPrivateConfig, {"threshold": 1.0}),
    IALS: (IALSPrivateConfig, {"epochs": 3}),
    BPR: (BPRPrivateConfig, {"batch_size": 10}),
    MultVAE: (DPSGDPrivateConfig, {"batch_size": 10}),
    SASRec: (DPSGDPrivateConfig, {"batch_size": 10}),
}


@pytest.mark.parametrize("factory", list(BLOCKS))
def test_every_private_model_has_one_nested_block_and_no_flat_private_fields(factory):
    block_class, settings = BLOCKS[factory]
    assert factory.PrivateConfig is block_class
    assert not [name for name in factory.Config.model_fields if name.startswith("private_")]
    model = factory(private=settings)
    assert isinstance(model.config.private, block_class)
    assert model.private_settings(block_class) == block_class(**settings)
    assert factory().private_settings(block_class) == block_class()  # the defaults when not given


@pytest.mark.parametrize("factory", list(BLOCKS))
def test_a_private_block_is_refused_by_a_fit_without_a_privacy_spec(factory):
    _, settings = BLOCKS[factory]
    model = factory(private=settings)
    refusal = r"'private' block \(settings of a private fit: \{.*\}\) but this fit has no privacy"
    with pytest.raises(ConfigError, match=refusal):
        model.fit(DATA, FitOptions(seed=0, threads=1))
    assert not model.is_fitted


def test_a_model_without_private_settings_has_no_block():
    assert MostPopular.PrivateConfig is None
    with pytest.raises(ConfigError, match="no parameter 'private'"):
        MostPopular(private={})


def test_a_privacy_spec_without_a_block_uses_the_block_defaults():
    options = FitOptions(seed=0, threads=1, privacy=SPEC)
    implicit = EASE().fit(DATA, options)
    explicit = EASE(private=EASEPrivateConfig()).fit(DATA, options)
    users = np.arange(DATA.n_users)
    np.testing.assert_array_equal(implicit.score(users), explicit.score(users))
    assert implicit.privacy_guarantee_ == explicit.privacy_guarantee_


def test_flat_private_fields_are_refused_with_a_pointer_to_the_block():
    with pytest.raises(ConfigError, match=r"private=\{'count_share': \.\.\.\}"):
        EASE(private_count_share=0.3)
    with pytest.raises(ConfigError, match=r"--param private\.epochs=VALUE"):
        IALS(private_epochs=3)
    with pytest.raises(
        ConfigError, match=r"EASE\.private\.count_share: got 1\.5; expected a float"
    ):
        EASE(private={"count_share": 1.5})
    with pytest.raises(
        ConfigError, match=r"IALS\.private\.nope: got 1; IALS\.private has no parameter 'nope'"
    ):
        IALS(private={"nope": 1})


# -------------------------------------------------------------------- the CLI
def test_dotted_params_set_the_private_block(tmp_path: Path):
    (tmp_path / "p.toml").write_text("regularization = 20.0\n[private]\ncount_share = 0.2\n")
    params = parse_params(
        ["private.signal_ratio=null", "private.count_share=0.5", "dtype=float64"],
        tmp_path / "p.toml",
    )
    assert params == {
        "regularization": 20.0,
        "private": {"count_share": 0.5, "signal_ratio": None},
        "dtype": "float64",
    }
    for bad in ("private.=1", ".x=1", "private.a.b=1"):
        with pytest.raises(ConfigError, match=r"BLOCK\.KEY=VALUE"):
            parse_params([bad])
    with pytest.raises(ConfigError, match="already set"):
        parse_params(["private=3", "private.count_share=0.5"])


@pytest.fixture
def dataset(tmp_path: Path, privrank_home: Path) -> Path:
    data = synthetic_interactions(n_users=60, n_items=40, seed=0)
    data = data.with_metadata(DatasetMetadata(name="tiny"))
    return data.save(tmp_path / "tiny")


def test_privrank_train_takes_private_params_and_refuses_them_without_epsilon(
    dataset: Path, tmp_path: Path
):
    runner = CliRunner()
    base = ["train", "--data", str(dataset), "--model", "ials"]
    refused = runner.invoke(
        app, [*base, "--out", str(tmp_path / "a"), "--param", "private.epochs=3"]
    )
    assert isinstance(refused.exception, ConfigError)
    assert "no --epsilon" in str(refused.exception)
    assert not (tmp_path / "a").exists()
    Ledger().set_budget("tiny", 10.0, 1e-2)
    args = [*base, "--out", str(tmp_path / "b"), "--param", "private.epochs=3"]
    done = runner.invoke(app, [*args, "--epsilon", "2", "--max-per-user", "10"])
    assert done.exit_code == 0, done.output
    model = Recommender.load(tmp_path / "b" / "model")
    assert model.config.private == IALSPrivateConfig(epochs=3)
    assert model.privacy_guarantee_.releases == 3
