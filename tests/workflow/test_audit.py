"""The one-run empirical privacy audit (Steinke, Nasr & Jagielski 2023): the bound against
scipy and a plain-Python oracle, its validity on simulated randomized response, honest DP fits
that pass, deliberately broken mechanisms that are caught, and the CLI's exit codes."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import privrank.privacy.mechanisms as mechanisms
from privrank.cli import main
from privrank.data.interactions import DatasetMetadata
from privrank.errors import ConfigError, PrivacyBudgetExceeded
from privrank.privacy.ledger import Ledger
from privrank.privacy.mechanisms import _noise_scale_for_testing
from privrank.testing import synthetic_interactions
from privrank.workflow.audit import (
    audit_model,
    canary_scores,
    design_canaries,
    epsilon_lower_bound,
    guess_and_bound,
    p_value_one_run,
    with_canaries,
)

DATA = synthetic_interactions(n_users=100, n_items=40, seed=0)
PARAMS = {
    "most-popular": {},
    "ease": {"regularization": 20.0},
    "itemknn": {"neighbors": 10, "shrinkage": 2.0},
}


def audit(name: str, epsilon: float, **kw):
    """An audit that checks the bound, not the ledger (see the ledger tests below)."""
    kw.setdefault("canaries", 200)
    kw.setdefault("no_ledger", True)
    return audit_model(name, DATA, epsilon, 4, params=PARAMS[name], noise_seed=1, **kw)


# -------------------------------------------------------------------- the bound
def _oracle_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """SNJ23 App. D's loop, written with math.comb (independent of scipy)."""
    q = 1 / (1 + math.exp(-eps))

    def pmf(j: int) -> float:
        return math.comb(r, j) * q**j * (1 - q) ** (r - j)

    tail = math.fsum(pmf(j) for j in range(v, r + 1))
    alpha = total = 0.0
    for i in range(1, v + 1):
        total += pmf(v - i)
        if total > i * alpha:
            alpha = total / i
    return min(tail + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize("eps", [0.0, 0.3, 1.0, 2.5, 6.0])
@pytest.mark.parametrize(("r", "v"), [(1, 1), (10, 7), (40, 40), (100, 71), (60, 0)])
def test_pure_dp_p_value_is_the_randomized_response_binomial_tail(eps, r, v):
    expected = scipy.stats.binom.sf(v - 1, r, math.exp(eps) / (1 + math.exp(eps)))
    assert p_value_one_run(200, r, v, eps, 0.0) == pytest.approx(expected, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("delta", [1e-5, 1e-3, 0.02])
@pytest.mark.parametrize(
    ("m", "r", "v", "eps"),
    [(50, 20, 15, 0.5), (200, 100, 80, 1.5), (300, 60, 60, 3.0), (80, 40, 22, 0.1)],
)
def test_approximate_dp_p_value_matches_the_papers_loop(m, r, v, eps, delta):
    assert p_value_one_run(m, r, v, eps, delta) == pytest.approx(
        _oracle_p_value(m, r, v, eps, delta), rel=1e-9
    )


def test_p_value_by_hand_for_one_guess():
    # r = v = 1: P[Bin(1, q) ≥ 1] = q, and α = P[Bin(1, q) = 0] / 1 = 1 − q.
    eps, delta, m = 0.7, 1e-3, 10
    q = math.exp(eps) / (1 + math.exp(eps))
    assert p_value_one_run(m, 1, 1, eps, delta) == pytest.approx(q + 2 * m * delta * (1 - q))


@pytest.mark.parametrize(("r", "beta"), [(10, 0.05), (100, 0.05), (500, 0.01)])
def test_lower_bound_with_every_guess_right_has_a_closed_form(r, beta):
    # δ = 0, v = r: q^r ≤ β ⇔ q ≥ β^(1/r) ⇔ ε ≥ logit(β^(1/r)).
    q = beta ** (1 / r)
    assert epsilon_lower_bound(r, r, r, 0.0, beta) == pytest.approx(math.log(q / (1 - q)), 1e-9)


def test_lower_bound_is_zero_for_chance_guessing_and_grows_with_correct_guesses():
    assert epsilon_lower_bound(200, 100, 50, 1e-5) == 0.0
    bounds = [epsilon_lower_bound(200, 100, v, 1e-5) for v in (60, 70, 80, 90, 100)]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    # The δ term can only make the bound smaller.
    assert epsilon_lower_bound(200, 100, 80, 1e-3) < epsilon_lower_bound(200, 100, 80, 0.0)


def test_lower_bound_is_valid_for_randomized_response():
    """An ε-DP randomized response on each canary: the bound exceeds ε in at most β of runs."""
    rng = np.random.default_rng(0)
    eps, r, runs = 1.0, 100, 4000
    correct = rng.binomial(r, math.exp(eps) / (1 + math.exp(eps)), size=runs)
    bound = {v: epsilon_lower_bound(r, r, int(v), 0.0, 0.05) for v in np.unique(correct)}
    exceed = np.mean([bound[v] > eps for v in correct])
    assert exceed <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_bound_rejects_bad_input():
    with pytest.raises(ConfigError, match="v ≤ r ≤ m"):
        p_value_one_run(10, 20, 5, 1.0, 0.0)
    with pytest.raises(ConfigError, match="δ"):
        p_value_one_run(10, 5, 5, 1.0, 1.5)
    with pytest.raises(ConfigError, match="β"):
        epsilon_lower_bound(10, 5, 5, 0.0, 0.0)


# -------------------------------------------------------------------- canaries and guesses
def test_canaries_own_fresh_items_and_only_included_ones_are_trained_on():
    design = design_canaries(DATA, 50, 3, seed=4)
    assert design.items.shape == (50, 3) and design.items.min() == DATA.n_items
    assert np.unique(design.items).size == 150  # each canary's items are its own
    assert 10 < design.included.sum() < 40
    train = with_canaries(DATA, design)
    assert (train.n_users, train.n_items) == (DATA.n_users + 50, DATA.n_items + 150)
    assert len(train) == len(DATA) + 3 * int(design.included.sum())
    counts = train.user_counts()[DATA.n_users :]
    np.testing.assert_array_equal(counts, 3 * design.included)


def test_guesses_are_exact_for_perfectly_separated_scores():
    included = np.arange(100) % 2 == 0
    guesses, correct, bound, ceiling = guess_and_bound(included.astype(float), included, 0.0)
    assert guesses == correct == 100 and bound == pytest.approx(ceiling)
    # Scores that carry no information guess at chance.
    noise = np.random.default_rng(1).random(100)
    assert guess_and_bound(noise, included, 0.0)[2] == 0.0


def test_scores_use_public_methods_and_separate_a_noiseless_fit():
    from privrank.models import FitOptions, MostPopular
    from privrank.privacy.spec import PrivacySpec

    design = design_canaries(DATA, 40, 4, seed=0)
    spec = PrivacySpec(epsilon=1.0, delta=1e-4, max_interactions_per_user=4, noise_seed=0)
    with _noise_scale_for_testing(0.0):
        model = MostPopular().fit(with_canaries(DATA, design), FitOptions(privacy=spec))
    scores = canary_scores(model, design)
    assert scores[design.included].min() > scores[~design.included].max()


# -------------------------------------------------------------------- honest fits pass
@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
@pytest.mark.parametrize("epsilon", [1.0, 4.0])
def test_private_fits_pass_the_audit(name, epsilon):
    result = audit(name, epsilon)
    assert result.passed and result.empirical_epsilon <= epsilon
    assert result.noise_scale_for_testing == 1.0
    assert result.canaries == 200 and result.canary_items == 4
    assert 0 <= result.correct <= result.guesses <= result.canaries


# -------------------------------------------------------------------- broken fits are caught
@pytest.mark.parametrize("name", ["most-popular", "ease", "itemknn"])
@pytest.mark.parametrize("scale", [0.0, 0.05])
def test_a_broken_mechanism_is_caught(name, scale):
    with _noise_scale_for_testing(scale):  # two items per canary: a smaller Gram, faster
        result = audit(name, 1.0, canary_items=2)
    assert result.verdict == "violated" and result.empirical_epsilon > 1.0
    assert result.noise_scale_for_testing == scale
    assert "NOT PRIVATE" in result.describe()


def test_a_broken_mechanism_at_epsilon_4_is_caught_with_enough_canaries():
    with _noise_scale_for_testing(0.05):
        result = audit("most-popular", 4.0, canaries=1000, delta=1e-6)
    assert result.verdict == "violated" and result.empirical_epsilon > 4.0


def test_an_understated_sensitivity_is_caught(monkeypatch):
    """A mechanism that calibrates to a fifth of the true sensitivity √c (a bug, not a test
    switch: the guarantee claims to be private) fails the audit."""
    true = mechanisms.item_count_sensitivity
    monkeypatch.setattr(mechanisms, "item_count_sensitivity", lambda c: true(c) / 5)
    result = audit("most-popular", 1.0)
    assert result.noise_scale_for_testing == 1.0  # nothing says it is broken
    assert result.verdict == "violated" and result.empirical_epsilon > 1.0


# -------------------------------------------------------------------- the ledger
def test_the_audit_spends_from_the_ledger(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    key = DATA.metadata.name
    with Ledger(url) as book:
        book.set_budget(key, 3.0, 1e-2)
    result = audit("most-popular", 1.0, no_ledger=False, ledger_url=url)
    with Ledger(url) as book:
        (spend,) = book.spends(key)
    assert spend.status.value == "committed" and spend.id == result.ledger["spend_id"]
    assert (spend.epsilon, spend.delta) == (1.0, result.delta)
    assert result.ledger == {
        "ledger_key": key, "spend_id": spend.id, "epsilon": 1.0, "delta": result.delta
    }  # fmt: skip
    assert f"from ledger key {key!r}" in result.describe()
    assert "NO PRIVACY BUDGET SPENT" not in result.describe()


def test_an_audit_over_budget_is_refused_before_it_fits(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget(DATA.metadata.name, 0.5, 1e-2)
    with pytest.raises(PrivacyBudgetExceeded):
        audit("most-popular", 1.0, no_ledger=False, ledger_url=url)
    with Ledger(url) as book:
        assert book.spends() == []


def test_no_ledger_spends_nothing_and_says_so(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with Ledger(url) as book:
        book.set_budget(DATA.metadata.name, 3.0, 1e-2)
    result = audit("most-popular", 1.0, no_ledger=True, ledger_url=url)
    assert result.ledger is None and result.to_dict()["ledger"] is None
    assert "NO PRIVACY BUDGET SPENT (--no-ledger)" in result.describe()
    with Ledger(url) as book:
        assert book.spends() == []


def test_audit_refuses_bad_input():
    with pytest.raises(ConfigError, match="exceeds the contribution bound"):
        audit("ease", 1.0, canary_items=5)
    with pytest.raises(ConfigError, match="canaries"):
        audit("ease", 1.0, canaries=1)


# -------------------------------------------------------------------- the CLI
@pytest.fixture
def dataset(tmp_path: Path, privrank_home: Path) -> Path:
    Ledger().set_budget("tiny", 3.0, 1e-2)
    return DATA.with_metadata(DatasetMetadata(name="tiny")).save(tmp_path / "tiny")


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["privrank", "audit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main.app()
    return exit_info.value.code or 0


def _args(dataset: Path, *extra: str) -> list[str]:
    return ["--model", "most-popular", "--data", str(dataset), "--epsilon", "1",
            "--max-per-user", "4", "--noise-seed", "1", *extra]  # fmt: skip


def test_cli_exit_0_on_pass_and_writes_json(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "audit.json"
    assert _cli(monkeypatch, *_args(dataset, "--json", str(out))) == 0
    assert "PASSED" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["verdict"] == "passed" and record["claimed_epsilon"] == 1.0
    assert record["empirical_epsilon"] <= 1.0 and record["canaries"] == 200
    # The audited fit trained on the data: it spent from the dataset's budget.
    (spend,) = Ledger().spends("tiny")
    assert spend.status.value == "committed" and spend.epsilon == 1.0
    assert record["ledger"]["spend_id"] == spend.id and record["no_ledger"] is False


def test_cli_no_ledger_spends_nothing_and_says_so(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "audit.json"
    assert _cli(monkeypatch, *_args(dataset, "--no-ledger", "--json", str(out))) == 0
    assert "NO PRIVACY BUDGET SPENT (--no-ledger)" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["no_ledger"] is True and record["ledger"] is None
    assert Ledger().spends("tiny") == []


def test_cli_over_budget_is_refused_before_the_fit(dataset, monkeypatch):
    Ledger().set_budget("tiny", 0.5, 1e-2)
    assert _cli(monkeypatch, *_args(dataset)) == 2
    assert Ledger().spends("tiny") == []


def test_cli_exit_1_on_a_violation(dataset, monkeypatch, capsys):
    # A deliberately broken fit has no (ε, δ) to spend: it runs only with --no-ledger.
    args = _args(dataset, "--break-noise-for-testing", "0", "--no-ledger")
    assert _cli(monkeypatch, *args) == 1
    captured = capsys.readouterr()
    assert "NOT PRIVATE" in captured.err and "VIOLATED" in captured.out
    assert Ledger().spends("tiny") == []


def test_cli_broken_noise_needs_no_ledger(dataset, monkeypatch):
    assert _cli(monkeypatch, *_args(dataset, "--break-noise-for-testing", "0")) == 2
    assert Ledger().spends("tiny") == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--canary-items", "9"],
        ["--canaries", "1"],
        ["--break-noise-for-testing", "2"],
        ["--model", "no-such-model"],
        ["--epsilon", "-1"],
    ],
)
def test_cli_exit_2_on_bad_input(dataset, monkeypatch, extra):
    args = _args(dataset)
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert _cli(monkeypatch, *args) == 2
