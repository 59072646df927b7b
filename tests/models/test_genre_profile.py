"""genre-profile: scores are cosines of the history's genre counts to each item's genres
(checked against a loop over the items by hand), fold-in, coverage refusal, and ML-100K's genres."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import GenreProfile, Query

GENRES = {
    0: ("Space wars", "Sci-Fi"),
    1: ("Alien invasion", "Sci-Fi|Action"),
    2: ("Wedding planner", "Romance|Comedy"),
    3: ("Love in Paris", "Romance"),
    4: ("Untitled", ""),
}


@pytest.fixture
def item_text(tmp_path):
    path = tmp_path / "items.tsv"
    rows = [f"{item}\t{title}\t{genres}" for item, (title, genres) in GENRES.items()]
    path.write_text("item\ttitle\tgenres\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data():
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 1, 2, 3, 2, 1])
    return Interactions.from_codes(users, items, n_users=3, n_items=5)


def _oracle(history: list[int]) -> list[float]:
    """cos(genre counts of the history, the item's genre set), one item at a time."""
    sets = {i: {g for g in genres.split("|") if g} for i, (_, genres) in GENRES.items()}
    counts: dict[str, int] = {}
    for item in history:
        for genre in sets[item]:
            counts[genre] = counts.get(genre, 0) + 1
    norm_c = math.sqrt(sum(c * c for c in counts.values()))
    out = []
    for item in sorted(GENRES):
        dot = sum(counts.get(g, 0) for g in sets[item])
        norm_g = math.sqrt(len(sets[item]))
        out.append(dot / (norm_c * norm_g) if norm_c and norm_g else 0.0)
    return out


def test_scores_are_cosines_of_the_genre_counts(item_text, data):
    model = GenreProfile(item_text=str(item_text), min_genre_coverage=0.5).fit(data)
    for user, history in ((0, [0, 1]), (1, [2]), (2, [3, 2, 1])):
        expected = _oracle(history)
        np.testing.assert_allclose(model.score([user])[0], expected, atol=1e-6)
        # fold-in of the same history equals the known user
        np.testing.assert_allclose(model.score(Query.histories([history]))[0], expected, atol=1e-6)
    # user 2: Romance 2, Comedy 1, Sci-Fi 1, Action 1 -> item 3 (Romance) beats item 0 (Sci-Fi)
    assert model.score([2])[0, 3] > model.score([2])[0, 0]
    # an item without a genre scores 0; a factor model: user vectors . item vectors
    assert model.score([0])[0, 4] == 0.0
    np.testing.assert_allclose(
        model.user_vectors(Query.users(np.array([2]))) @ model.item_vectors().T,
        model.score([2]),
        atol=1e-6,
    )


def test_a_vocabulary_without_genres_is_refused(item_text):
    other = Interactions.from_codes(np.array([0, 0]), np.array([0, 1]), n_users=1, n_items=10)
    with pytest.raises(ConfigError, match=r"only 40\.0% of the training items have a genre"):
        GenreProfile(item_text=str(item_text)).fit(other)


def test_save_and_load_keep_the_scores(item_text, data, tmp_path):
    model = GenreProfile(item_text=str(item_text), min_genre_coverage=0.5).fit(data)
    model.save(tmp_path / "model")
    loaded = GenreProfile.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.score([0, 1, 2]), model.score([0, 1, 2]))


@pytest.mark.realdata
def test_ml100k_genres_come_from_u_item():
    """Toy Story (id 1) is Animation, Children's, Comedy in ``u.item``; the model's unit row
    has 1/sqrt(3) in exactly those three columns."""
    root = os.environ.get("PRIVRANK_DATA_DIR")
    if not root or not (Path(root) / "ml-100k" / "u.item").is_file():
        pytest.skip("ML-100K is not under PRIVRANK_DATA_DIR")
    from privrank.data.item_text import load_item_text
    from privrank.models.genre_profile import genre_matrix

    text = load_item_text("ml-100k")
    data = Interactions.from_columns(np.array([7]), np.array([1]))
    genres, names = genre_matrix(text, data)
    assert {names[c] for c in np.flatnonzero(genres[0])} == {"Animation", "Children's", "Comedy"}
    assert len(names) == 18
