"""The model registry: names to classes, so the CLI builds models from a name and a config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from privrank.errors import ConfigError

if TYPE_CHECKING:
    from privrank.models._config import ModelConfig
    from privrank.models.base import Recommender

__all__ = ["create_model", "model_class", "model_names", "register", "registered"]

_REGISTRY: dict[str, type[Recommender]] = {}
M = TypeVar("M", bound="Recommender")


def register(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: make a model constructible by ``name`` (unique)."""

    def decorate(cls: type[M]) -> type[M]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name]}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


#: The built-in models' modules by name: a module is imported (and registers its model) the
#: first time its name is asked for, so that using one model does not import every other's
#: dependencies (torch, implicit, faiss).
BUILTIN_MODULES = {
    "most-popular": "privrank.models.popular",
    "ldp-popular": "privrank.models.ldp_popular",
    "itemknn": "privrank.models.itemknn",
    "ease": "privrank.models.ease",
    "ease-sparse": "privrank.models.ease_sparse",
    "ials": "privrank.models.ials",
    "fedmf": "privrank.models.fedmf",
    "implicit-als": "privrank.models.peers",
    "implicit-bpr": "privrank.models.peers",
    "bpr": "privrank.models.bpr",
    "mult-vae": "privrank.models.vae",
    "sasrec": "privrank.models.sasrec",
    "content-knn": "privrank.models.content_knn",
    "genre-profile": "privrank.models.genre_profile",
}


def registered(name: str) -> type[Recommender] | None:
    """The class registered under ``name``, or ``None`` (a built-in model's module is imported
    on the first ask)."""
    if name not in _REGISTRY and name in BUILTIN_MODULES:
        import importlib

        importlib.import_module(BUILTIN_MODULES[name])
    return _REGISTRY.get(name)


def model_names() -> list[str]:
    """Names of every registered model (the built-in ones included), sorted."""
    return sorted(set(_REGISTRY) | set(BUILTIN_MODULES))


def model_class(name: str) -> type[Recommender]:
    """The model class registered under ``name``."""
    found = registered(name)
    if found is None:
        raise ConfigError(f"Unknown model {name!r}. Known models: {', '.join(model_names())}.")
    return found


def create_model(name: str, config: Mapping[str, Any] | ModelConfig | None = None) -> Recommender:
    """Construct a registered model from its name and a config (mapping or instance)."""
    return model_class(name)(config)
