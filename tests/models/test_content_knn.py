"""content-knn: scores are cosines to the history's mean embedding (checked against the encoder
called directly), fold-in, offline loading and the embedding cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privrank.data.interactions import Interactions
from privrank.errors import ConfigError
from privrank.models import ContentKNN, Query
from privrank.models.text_embedding import embed_texts, embedding_cache_path, text_encoder

TEXTS = {
    0: ("Space wars", "Sci-Fi"),
    1: ("Alien invasion", "Sci-Fi|Action"),
    2: ("Wedding planner", "Romance|Comedy"),
    3: ("Love in Paris", "Romance"),
}


@pytest.fixture
def item_text(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVRANK_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "items.tsv"
    rows = [f"{item}\t{title}\t{genres}" for item, (title, genres) in TEXTS.items()]
    path.write_text("item\ttitle\tgenres\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data():
    users = np.array([0, 0, 1, 2])
    items = np.array([0, 1, 2, 3])
    return Interactions.from_codes(users, items, n_users=3, n_items=4)


def test_scores_are_cosines_to_the_mean_embedding(item_text, data):
    model = ContentKNN(item_text=str(item_text)).fit(data)
    # Oracle: the encoder called directly, the cosine computed by hand.
    texts = [f"{t}. {', '.join(g.split('|'))}" for t, g in TEXTS.values()]
    raw = np.asarray(text_encoder().encode(texts), dtype=np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    profile = unit[0] + unit[1]
    profile /= np.linalg.norm(profile)
    expected = unit @ profile
    np.testing.assert_allclose(model.score([0])[0], expected, atol=1e-5)
    # Fold-in of the same history equals the known user; sci-fi history ranks sci-fi first.
    np.testing.assert_allclose(model.score(Query.histories([[0, 1]]))[0], expected, atol=1e-6)
    top = model.recommend(Query.histories([[0]]), 1, exclude_seen=True)[0]
    assert top[0, 0] == 1
    assert embedding_cache_path(texts).is_file()


def test_cache_is_read_and_a_corrupt_file_is_rewritten(item_text):
    texts = ["one", "two"]
    first = embed_texts(texts)
    path = embedding_cache_path(texts)
    np.testing.assert_array_equal(embed_texts(texts), first)
    path.write_bytes(b"not safetensors")
    np.testing.assert_allclose(embed_texts(texts), first, atol=1e-6)
    assert path.stat().st_size > 100


def test_a_vocabulary_without_text_is_refused(item_text):
    other = Interactions.from_codes(np.array([0, 0]), np.array([0, 1]), n_users=1, n_items=10)
    with pytest.raises(ConfigError, match=r"only 40\.0% of the training items have text"):
        ContentKNN(item_text=str(item_text)).fit(other)


@pytest.mark.slow
def test_the_encoder_loads_with_the_network_refused(tmp_path):
    """The packaged weights load and encode with every socket connection refused."""
    import subprocess
    import sys

    script = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from privrank.models.text_embedding import embed_texts\n"
        "print(embed_texts(['a film'], cache=False).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(1, 384)")
