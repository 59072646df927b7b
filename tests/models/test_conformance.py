"""Every registered model through the conformance suite of privrank.testing."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

import privrank.models as models
from privrank.models import (
    BPR,
    EASE,
    IALS,
    ContentKNN,
    EASESparse,
    FedMF,
    GenreProfile,
    ImplicitALS,
    ImplicitBPR,
    ItemKNN,
    LDPPopular,
    MostPopular,
    MultVAE,
    Recommender,
    SASRec,
    model_names,
)
from privrank.testing import RECOMMENDER_CHECKS, synthetic_interactions, write_group_item_text

# Item text for content-knn: one text per cluster of the synthetic data (and per parity of the
# checkerboard), so the content model has the structure the checks expect.
_TEXT_DIR = Path(tempfile.mkdtemp(prefix="privrank-item-text-"))
ITEM_TEXT = str(write_group_item_text(_TEXT_DIR / "items.tsv"))

# Small configs: every check fits its model anew. Keys are case ids; the registry name of each
# model must appear among the classes below (see test_every_registered_model_is_covered).
FACTORIES = {
    "most-popular": lambda: MostPopular(),
    "ldp-popular": lambda: LDPPopular(m=64, k=16, epsilon=4.0),
    "ldp-popular-hcms": lambda: LDPPopular(sketch="hcms", m=64, k=16, epsilon=4.0),
    "itemknn": lambda: ItemKNN(neighbors=10, shrinkage=2.0),
    "content-knn": lambda: ContentKNN(item_text=ITEM_TEXT),
    "genre-profile": lambda: GenreProfile(item_text=ITEM_TEXT),
    "ease": lambda: EASE(regularization=20.0),
    "ease-float64": lambda: EASE(regularization=20.0, dtype="float64"),
    "ease-sparse": lambda: EASESparse(regularization=20.0, neighbors=10),
    "ease-sparse-exact": lambda: EASESparse(regularization=20.0, neighbors=100, dtype="float64"),
    "ials": lambda: IALS(factors=8, epochs=5, regularization=0.02),
    "fedmf": lambda: FedMF(factors=8, epochs=5, regularization=0.02),
    "ials-cg": lambda: IALS(factors=8, epochs=5, regularization=0.02, solver="cg"),
    "implicit-als": lambda: ImplicitALS(factors=8, iterations=8),
    "implicit-bpr": lambda: ImplicitBPR(factors=8, iterations=60, learning_rate=0.05),
    "bpr": lambda: BPR(
        factors=8,
        epochs=20,
        batch_size=64,
        learning_rate=0.05,
        regularization=1e-2,
        fold_in_steps=30,
    ),
    "sasrec": lambda: SASRec(
        factors=16,
        blocks=1,
        max_length=10,
        epochs=20,
        batch_size=64,
        dropout=0.1,
        negatives=16,
        learning_rate=0.01,
    ),
    "mult-vae": lambda: MultVAE(
        hidden=32,
        latent=8,
        epochs=40,
        batch_size=16,
        learning_rate=0.01,
        anneal_steps=50,
        dropout=0.2,
    ),
}

DATA = synthetic_interactions(n_users=60, n_items=40, seed=0)


def test_every_built_in_model_is_covered():
    """Each model that ``privrank.models`` exports (hence registers) has a factory here."""
    exported = {
        obj.name
        for obj in vars(models).values()
        if isinstance(obj, type) and issubclass(obj, Recommender) and obj.name in model_names()
    }
    covered = {factory().name for factory in FACTORIES.values()}
    assert exported == covered


@pytest.fixture(autouse=True, scope="module")
def _embedding_cache():
    """content-knn caches its embeddings: in a temporary folder, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRIVRANK_CACHE_DIR", str(_TEXT_DIR / "cache"))
        yield


@pytest.mark.parametrize("check", RECOMMENDER_CHECKS.values(), ids=RECOMMENDER_CHECKS.keys())
@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_conformance(factory, check, tmp_path):
    check(factory, DATA, tmp_path)
