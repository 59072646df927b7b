"""The conformance suite every recommender passes.

Each check takes a *factory* (a no-argument callable returning a fresh, unfitted model with a
config small enough to fit in well under a second), a training set and a scratch directory, and
raises :class:`AssertionError` with a message on failure. Run them all with
:func:`check_recommender`, or parametrise a pytest test over :data:`RECOMMENDER_CHECKS`::

    @pytest.mark.parametrize("check", RECOMMENDER_CHECKS.values(), ids=RECOMMENDER_CHECKS.keys())
    def test_my_model(check, tmp_path):
        check(lambda: MyModel(factors=8), synthetic_interactions(), tmp_path)

Checks whose property a model does not define (fold-in equal to training scores, the
checkerboard known answer for a non-personalised model) test the documented alternative
instead: a model without fold-in must *refuse* ad-hoc histories.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.interactions import Interactions
from privrank.errors import ArtifactError, ConfigError, NotTrainedError
from privrank.models.base import (
    FitOptions,
    FitProgress,
    ModelFitError,
    Query,
    Recommender,
    create_model,
    model_class,
    model_names,
)
from privrank.models.capabilities import LocalDPCollection, SharedRanking
from privrank.testing._data import checkerboard

__all__ = ["RECOMMENDER_CHECKS", "ModelFactory", "check_recommender"]

ModelFactory = Callable[[], Recommender]
Check = Callable[[ModelFactory, Interactions, Path], None]

_SEED = FitOptions(seed=7, threads=1)


def _fit(factory: ModelFactory, data: Interactions, options: FitOptions = _SEED) -> Recommender:
    return factory().fit(data, options)


def _active_users(data: Interactions) -> np.ndarray:
    return np.flatnonzero(data.user_counts() > 0)


def _expect(error: type[BaseException], action: Callable[[], object], what: str) -> None:
    try:
        action()
    except error:
        return
    except Exception as exc:  # pragma: no cover - reported as a failure
        raise AssertionError(f"{what}: expected {error.__name__}, got {exc!r}") from exc
    raise AssertionError(f"{what}: expected {error.__name__}, nothing was raised")


def _close(actual: np.ndarray, expected: np.ndarray, what: str, rtol: float = 1e-4) -> None:
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


# -------------------------------------------------------------------- configuration
def check_config_round_trip(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """The config survives JSON and the registry, is frozen and rejects unknown parameters."""
    model = factory()
    config = model.config
    again = type(config).model_validate_json(config.model_dump_json())
    assert again == config, f"JSON round trip changed the config: {config} -> {again}"
    rebuilt = create_model(model.name, config.model_dump(mode="json"))
    assert type(rebuilt) is type(model) and rebuilt.config == config, "registry round trip"
    assert model_class(model.name) is type(model), f"{model.name!r} is not registered"
    _expect(ConfigError, lambda: type(model)(no_such_parameter=1), "an unknown parameter")
    first = next(iter(type(config).model_fields), None)
    if first is not None:
        _expect(Exception, lambda: setattr(config, first, None), "assigning to a frozen config")


def check_not_trained(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Using a model before fit raises NotTrainedError."""
    model = factory()
    assert not model.is_fitted
    _expect(NotTrainedError, lambda: model.score([0]), "score before fit")
    _expect(NotTrainedError, lambda: model.recommend([0], 1), "recommend before fit")
    _expect(NotTrainedError, lambda: model.save(workdir / "unfitted"), "save before fit")


# -------------------------------------------------------------------- fitting
def check_fit(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """fit returns self, reports progress, and every score is a finite float32."""
    reports: list[FitProgress] = []
    model = factory()
    returned = model.fit(data, FitOptions(seed=3, threads=1, progress=reports.append))
    assert returned is model, "fit must return self"
    assert model.n_users_ == data.n_users and model.n_items_ == data.n_items
    assert reports and all(isinstance(r, FitProgress) for r in reports), "no progress reports"
    assert reports[-1].epoch == reports[-1].epochs and reports[-1].model == model.name
    scores = model.score(np.arange(data.n_users))
    assert scores.dtype == np.float32 and scores.shape == (data.n_users, data.n_items)
    assert np.isfinite(scores).all(), "non-finite scores after fit"


def check_non_finite_detected(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """A NaN in a learned array is caught: ModelFitError in the model, ArtifactError on load."""
    model = _fit(factory, data)
    model._check_finite()
    floating = [k for k, v in model._full_state().items() if v.dtype.kind == "f" and v.size]
    key = sorted(floating, key=lambda k: not k.startswith("model."))[0]
    array = model._full_state()[key]
    saved = array.flat[0]
    array.flat[0] = np.nan
    try:
        _expect(ModelFitError, model._check_finite, f"a NaN in {key}")
        path = model.save(workdir / "nan")
        _expect(ArtifactError, lambda: Recommender.load(path), f"loading a NaN in {key}")
    finally:
        array.flat[0] = saved


def check_privacy_refused(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """A privacy spec the model cannot honour is refused, not ignored."""
    model = factory()
    if model.supports_privacy:  # pragma: no cover - DP variants
        return
    options = FitOptions(privacy={"epsilon": 1.0, "delta": 1e-6})
    _expect(ConfigError, lambda: model.fit(data, options), "fit with a privacy spec")
    assert not model.is_fitted, "a refused fit must not leave a fitted model"


def check_determinism(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """The same seed gives identical scores; a seeded model honours another seed."""
    users = np.arange(data.n_users)
    first = _fit(factory, data).score(users)
    second = _fit(factory, data).score(users)
    np.testing.assert_array_equal(first, second, err_msg="two fits with one seed differ")
    if factory().seeded:
        other = _fit(factory, data, FitOptions(seed=8, threads=1)).score(users)
        assert not np.array_equal(first, other), "the seed has no effect on a seeded model"


def check_refit_replaces(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Refitting on other data replaces the old fit entirely."""
    keep = data.users() < data.n_users // 2
    smaller = data.take(keep).compact()
    model = _fit(factory, smaller)
    model.fit(data, _SEED)
    fresh = _fit(factory, data)
    assert model.n_users_ == data.n_users and model.n_items_ == data.n_items
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(model.score(users), fresh.score(users), err_msg="refit")


# -------------------------------------------------------------------- persistence
def check_save_load(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """save/load reproduces scores exactly, by the base class and by the model's own class."""
    model = _fit(factory, data)
    path = model.save(workdir / "model")
    users = np.arange(data.n_users)
    for loader in (Recommender, type(model)):
        loaded = loader.load(path)
        assert type(loaded) is type(model) and loaded.config == model.config
        np.testing.assert_array_equal(loaded.score(users), model.score(users))
        assert loaded.item_ids_.equals(model.item_ids_) and loaded.user_ids_.equals(model.user_ids_)
        if model.supports_fold_in:
            query = model._training_histories(_active_users(data)[:5])
            np.testing.assert_array_equal(loaded.score(query), model.score(query))
        np.testing.assert_array_equal(loaded.recommend(users, 3)[0], model.recommend(users, 3)[0])
    other = next(
        model_class(n) for n in model_names() if not issubclass(type(model), model_class(n))
    )
    _expect(ArtifactError, lambda: other.load(path), f"loading a {model.name} as {other.__name__}")
    model.save(path)  # overwriting an existing model directory is atomic and allowed
    np.testing.assert_array_equal(Recommender.load(path).score(users), model.score(users))


def check_tampered_artifact(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """A modified, missing or extra file makes load fail with ArtifactError."""
    path = _fit(factory, data).save(workdir / "model")
    for name in sorted(p.name for p in path.iterdir()):
        copy = workdir / f"tampered-{name}"
        shutil.copytree(path, copy)
        target = copy / name
        content = bytearray(target.read_bytes())
        content[len(content) // 2] ^= 0x01
        target.write_bytes(bytes(content))
        _expect(ArtifactError, partial(Recommender.load, copy), f"a flipped bit in {name}")
        target.unlink()
        _expect(ArtifactError, partial(Recommender.load, copy), f"{name} missing")
    extra = workdir / "extra-file"
    shutil.copytree(path, extra)
    (extra / "notes.txt").write_text("not covered by a checksum\n")
    _expect(ArtifactError, lambda: Recommender.load(extra), "an unlisted file")
    _expect(ArtifactError, lambda: Recommender.load(workdir / "nowhere"), "a missing directory")


# -------------------------------------------------------------------- queries
def check_unknown_users_and_items(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Bad codes raise ConfigError; unknown external users get the cold-start ranking."""
    model = _fit(factory, data)
    n_users, n_items = data.n_users, data.n_items
    _expect(ConfigError, lambda: model.score([n_users]), "a user code past the vocabulary")
    _expect(ConfigError, lambda: model.score([-1]), "a negative user code")
    _expect(ConfigError, lambda: model.score(Query.histories([[n_items]])), "an unknown item")
    _expect(ConfigError, lambda: model.score([0], items=[n_items]), "an unknown candidate")
    _expect(ConfigError, lambda: model.score(np.array(["a"])), "a non-integer user code")
    result = model.recommend_for_users(["no-such-user", data.user_ids[0].as_py()], 3)
    assert list(result.known) == [False, True], f"known flags {result.known}"
    cold = model.recommend(Query.histories([[]]), 3)[0][0]
    ids = data.item_ids.to_pylist()
    assert result.item_ids[0] == [ids[c] for c in cold], "unknown user is not cold-started"
    assert (model.user_codes(["no-such-user"]) == -1).all()
    assert (model.item_codes(["no-such-item"]) == -1).all()
    known_item = ids[int(np.argmax(data.item_counts()))]
    _expect(
        ConfigError,
        lambda: model.history_query([[known_item, "no-such-item"]]),
        "an unknown item id in a history",
    )
    dropped = model.history_query([[known_item, "no-such-item"]], ignore_unknown_items=True)
    assert dropped.history(0).tolist() == model.item_codes([known_item]).tolist()


def check_cold_start(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Empty histories and users without training data get finite popularity scores: the
    exact training popularity, or, for a model decoded from a local-DP collection, the
    collection's (randomised) popularity, never the exact one."""
    model = _fit(factory, data)
    popularity = data.to_csr().astype(bool).sum(axis=0).A1.astype(np.float32)
    if isinstance(model, LocalDPCollection):
        assert not np.array_equal(model.item_popularity_, popularity), "exact popularity kept"
        popularity = model.item_popularity_
    empty = model.score(Query.histories([[], []]))
    assert np.isfinite(empty).all()
    np.testing.assert_array_equal(empty, np.vstack([popularity, popularity]))
    idle = np.flatnonzero(data.user_counts() == 0)
    if idle.size:
        np.testing.assert_array_equal(model.score(idle), np.tile(popularity, (idle.size, 1)))
    codes, _ = model.recommend(Query.histories([[]]), 5)
    expected = np.lexsort((np.arange(data.n_items), -popularity))[:5]
    np.testing.assert_array_equal(codes[0], expected, err_msg="cold-start ranking")


def check_fold_in(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Folding in a training user's history reproduces their training-time scores (where the
    model defines that); models without fold-in refuse ad-hoc histories."""
    model = _fit(factory, data)
    users = _active_users(data)
    histories = model._training_histories(users)
    if not model.supports_fold_in:
        _expect(ConfigError, lambda: model.score(histories), "fold-in on a model without it")
        return
    folded = model.score(histories)
    assert np.isfinite(folded).all() and folded.shape == (len(users), data.n_items)
    if model.fold_in_matches_training:
        _close(folded, model.score(users), "fold-in scores differ from training-time scores")
    # Batch composition does not matter: one history alone scores as it does in the batch.
    alone = model.score(histories.take(np.array([len(users) - 1])))
    _close(alone[0], folded[-1], "fold-in depends on the other histories in the batch")
    # Order and repeats in a history do not matter to a bag-of-items model's fold-in.
    first = histories.history(0)
    reordered = model.score(Query.histories([np.concatenate([first[::-1], first[:1]])]))
    if not model.sequential:
        _close(reordered[0], folded[0], "fold-in depends on history order or repeats")


def check_shared_ranking(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """A model declaring :class:`~privrank.models.capabilities.SharedRanking` (and only such a
    model is non-personalised) scores every query, known user, ad-hoc history or empty
    history, by its ``shared_scores()`` (which the evaluator ranks instead of scoring)."""
    model = factory()
    shared = isinstance(model, SharedRanking)
    assert model.personalised != shared, "personalised and SharedRanking disagree"
    if not shared:
        return
    _expect(NotTrainedError, model.shared_scores, "shared_scores before fit")  # type: ignore[attr-defined]
    model = _fit(factory, data)
    assert isinstance(model, SharedRanking)
    vector = model.shared_scores()
    assert vector.shape == (data.n_items,) and vector.dtype == np.float32
    users = _active_users(data)
    queries: list[Any] = [users, Query.histories([[]])]
    if model.supports_fold_in:
        queries.append(model._training_histories(users))
    for query in queries:
        scores = model.score(query)
        np.testing.assert_array_equal(scores, np.broadcast_to(vector, scores.shape))


def check_recommend(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """recommend returns k unique unseen items, best first, ties by lower code, consistent with
    score; candidates and padding behave as documented."""
    model = _fit(factory, data)
    users = np.arange(data.n_users)
    k = 5
    codes, values = model.recommend(users, k)
    assert codes.shape == values.shape == (len(users), k) and codes.dtype == np.int64
    scores = model.score(users)
    seen = data.to_csr().astype(bool).toarray()
    for user in range(data.n_users):  # the codes in ``users``
        row, row_scores = codes[user], values[user]
        assert len(set(row.tolist())) == k, f"user {user}: repeated items {row}"
        assert not seen[user, row].any(), f"user {user}: recommended a seen item"
        np.testing.assert_array_equal(row_scores, scores[user, row])
        eligible = np.flatnonzero(~seen[user])
        expected = eligible[np.lexsort((eligible, -scores[user, eligible]))][:k]
        np.testing.assert_array_equal(row, expected, err_msg=f"user {user}: not the top-k")
    raw = model.recommend(users, 1, exclude_seen=False)[0][:, 0]
    best = np.array([np.lexsort((np.arange(data.n_items), -s))[0] for s in scores])
    np.testing.assert_array_equal(raw, best, err_msg="exclude_seen=False")
    _expect(ConfigError, lambda: model.recommend(users, 0), "k = 0")
    _expect(ConfigError, lambda: model.recommend(users, data.n_items + 1), "k > n_items")
    _expect(ConfigError, lambda: model.recommend(users, 2, items=[1, 1]), "repeated candidates")
    # Candidates: a user's seen items plus one unseen item; k = 3 leaves two slots to pad.
    user = int(np.argmax(data.user_counts()))
    seen_items = np.flatnonzero(seen[user])[:2]
    unseen = int(np.flatnonzero(~seen[user])[0])
    cand = np.array([unseen, *seen_items])
    picked, picked_scores = model.recommend([user], 3, items=cand)
    assert picked[0].tolist() == [unseen, -1, -1], f"padding: {picked[0]}"
    assert np.isfinite(picked_scores[0, 0]) and np.isneginf(picked_scores[0, 1:]).all()
    # Another batch may round differently in float32 (BLAS kernels), hence a tolerance.
    _close(model.score([user], items=cand), scores[[user]][:, cand], "candidate scores", 1e-5)


def check_external_ids(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Recommendations by external id match recommendations by code."""
    model = _fit(factory, data)
    users = _active_users(data)[:4]
    user_ids = [data.user_ids[int(u)].as_py() for u in users]
    np.testing.assert_array_equal(model.user_codes(user_ids), users)
    by_id = model.recommend_for_users(user_ids, 3)
    codes, _ = model.recommend(users, 3)
    item_ids = data.item_ids.to_pylist()
    assert by_id.item_ids == [[item_ids[c] for c in row] for row in codes]
    assert by_id.known.all()
    if model.supports_fold_in:
        history = [item_ids[c] for c in model._training_histories(users[:1]).history(0)]
        folded = model.recommend_for_histories([history], 3)
        assert folded.known.tolist() == [True] and len(folded.item_ids[0]) == 3


def check_checkerboard(factory: ModelFactory, data: Interactions, workdir: Path) -> None:
    """Known answer (implicit's checkerboard): user u's best unseen item is u.

    Sequential models are exempt: the checkerboard puts each user's answer in the middle of an
    order-free history, which a next-item model is not trained to predict. Their test modules
    check the sequence analogue instead (item i always followed by i + 1 → i + 1 predicted).
    """
    if factory().sequential:
        return
    board = checkerboard(50)
    model = _fit(factory, board)
    top = model.recommend(np.arange(50), 1)[0][:, 0]
    if not model.personalised:
        popularity = board.item_counts()
        assert (popularity[top] == popularity.max()).all()
        return
    wrong = np.flatnonzero(top != np.arange(50))
    assert wrong.size == 0, f"users {wrong.tolist()} got {top[wrong].tolist()}, not themselves"


RECOMMENDER_CHECKS: dict[str, Check] = {
    "config_round_trip": check_config_round_trip,
    "not_trained": check_not_trained,
    "fit": check_fit,
    "non_finite_detected": check_non_finite_detected,
    "privacy_refused": check_privacy_refused,
    "determinism": check_determinism,
    "refit_replaces": check_refit_replaces,
    "save_load": check_save_load,
    "tampered_artifact": check_tampered_artifact,
    "unknown_users_and_items": check_unknown_users_and_items,
    "cold_start": check_cold_start,
    "fold_in": check_fold_in,
    "shared_ranking": check_shared_ranking,
    "recommend": check_recommend,
    "external_ids": check_external_ids,
    "checkerboard": check_checkerboard,
}


def check_recommender(
    factory: ModelFactory,
    data: Interactions,
    workdir: str | Path | None = None,
    *,
    skip: tuple[str, ...] = (),
) -> None:
    """Run every conformance check (except ``skip``) on a model.

    Args:
        factory: Returns a fresh, unfitted model (small config: each check fits it anew).
        data: Training data; :func:`~privrank.testing.synthetic_interactions` fits.
        workdir: Scratch directory for artifacts (a temporary one when ``None``).
        skip: Names of checks not to run (keys of :data:`RECOMMENDER_CHECKS`).

    Raises:
        AssertionError: Naming the first failing check.
    """
    unknown = set(skip) - set(RECOMMENDER_CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        for name, check in RECOMMENDER_CHECKS.items():
            if name in skip:
                continue
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            try:
                check(factory, data, folder)
            except AssertionError as exc:
                raise AssertionError(f"{factory().name}: check {name!r} failed: {exc}") from exc
