"""Recommender models behind one contract (see :mod:`privrank.models.base`).

Every built-in model is registered under its name (its module is imported when the name or
the class is first used):

==================  ==========================================================
``most-popular``    :class:`MostPopular`: item popularity, the cold-start fallback
``ldp-popular``     :class:`LDPPopular`: popularity from a local-DP sketch (CMS/HCMS)
``itemknn``         :class:`ItemKNN`: item kNN, shrunk cosine, top-k neighbours
``ease``            :class:`EASE`: closed-form shallow autoencoder
``ease-sparse``     :class:`EASESparse`: EASE on pruned neighbourhoods (large catalogues)
``ials``            :class:`IALS`: implicit ALS, frequency-scaled regularisation
``fedmf``           :class:`FedMF`: the iALS objective trained by federated reconstruction
``implicit-als``    :class:`ImplicitALS`: implicit's ALS, as a peer
``implicit-bpr``    :class:`ImplicitBPR`: implicit's BPR, as a peer
``bpr``             :class:`BPR`: matrix factorisation with the BPR loss (PyTorch)
``mult-vae``        :class:`MultVAE`: variational autoencoder, multinomial likelihood
``sasrec``          :class:`SASRec`: self-attentive sequential model, full/sampled softmax
``content-knn``     :class:`ContentKNN`: cosine to the history in a text-embedding space
``genre-profile``   :class:`GenreProfile`: cosine of the history's genre mix to an item's
==================  ==========================================================

Layer: may import privacy (mechanisms), metrics (validation, top-k), data and the base modules;
never workflow, tuning, serving or anything above (contracts in ``pyproject.toml``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports
from privrank.models.base import (
    FitOptions,
    FitProgress,
    IdRecommendations,
    ModelConfig,
    ModelFitError,
    Query,
    Recommender,
    create_model,
    model_class,
    model_names,
    register,
)

if TYPE_CHECKING:
    from privrank.models._private import DPSGDPrivateConfig
    from privrank.models.bpr import BPR, BPRConfig, BPRPrivateConfig
    from privrank.models.content_knn import ContentKNN, ContentKNNConfig
    from privrank.models.ease import EASE, EASEConfig, EASEPrivateConfig
    from privrank.models.ease_sparse import EASESparse, EASESparseConfig
    from privrank.models.fedmf import FedMF, FedMFConfig
    from privrank.models.genre_profile import GenreProfile, GenreProfileConfig
    from privrank.models.ials import IALS, IALSConfig, IALSPrivateConfig
    from privrank.models.itemknn import ItemKNN, ItemKNNConfig, ItemKNNPrivateConfig
    from privrank.models.ldp_popular import LDPPopular, LDPPopularConfig
    from privrank.models.peers import (
        ImplicitALS,
        ImplicitALSConfig,
        ImplicitBPR,
        ImplicitBPRConfig,
    )
    from privrank.models.popular import MostPopular, MostPopularConfig
    from privrank.models.sasrec import SASRec, SASRecConfig
    from privrank.models.vae import MultVAE, MultVAEConfig

#: Where each model class (and its configs) lives: imported on first use, so that importing
#: this package (or a light module under it, e.g. fedmf's device code on a Flower SuperNode)
#: does not import torch, implicit or faiss. The registry loads a model's module by its name
#: the same way (:data:`privrank.models._registry.BUILTIN_MODULES`).
_LAZY = {
    "_private": ["DPSGDPrivateConfig"],
    "bpr": ["BPR", "BPRConfig", "BPRPrivateConfig"],
    "content_knn": ["ContentKNN", "ContentKNNConfig"],
    "ease": ["EASE", "EASEConfig", "EASEPrivateConfig"],
    "ease_sparse": ["EASESparse", "EASESparseConfig"],
    "fedmf": ["FedMF", "FedMFConfig"],
    "genre_profile": ["GenreProfile", "GenreProfileConfig"],
    "ials": ["IALS", "IALSConfig", "IALSPrivateConfig"],
    "itemknn": ["ItemKNN", "ItemKNNConfig", "ItemKNNPrivateConfig"],
    "ldp_popular": ["LDPPopular", "LDPPopularConfig"],
    "peers": ["ImplicitALS", "ImplicitALSConfig", "ImplicitBPR", "ImplicitBPRConfig"],
    "popular": ["MostPopular", "MostPopularConfig"],
    "sasrec": ["SASRec", "SASRecConfig"],
    "vae": ["MultVAE", "MultVAEConfig"],
}

__all__ = [
    "BPR",
    "EASE",
    "IALS",
    "BPRConfig",
    "BPRPrivateConfig",
    "ContentKNN",
    "ContentKNNConfig",
    "DPSGDPrivateConfig",
    "EASEConfig",
    "EASEPrivateConfig",
    "EASESparse",
    "EASESparseConfig",
    "FedMF",
    "FedMFConfig",
    "FitOptions",
    "FitProgress",
    "GenreProfile",
    "GenreProfileConfig",
    "IALSConfig",
    "IALSPrivateConfig",
    "IdRecommendations",
    "ImplicitALS",
    "ImplicitALSConfig",
    "ImplicitBPR",
    "ImplicitBPRConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "ItemKNNPrivateConfig",
    "LDPPopular",
    "LDPPopularConfig",
    "ModelConfig",
    "ModelFitError",
    "MostPopular",
    "MostPopularConfig",
    "MultVAE",
    "MultVAEConfig",
    "Query",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "create_model",
    "model_class",
    "model_names",
    "register",
]

__getattr__, __dir__ = lazy_exports(
    __name__, _LAZY, exported=[name for name in __all__ if name not in globals()]
)
