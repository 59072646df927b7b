"""Lazy package exports (PEP 562): a package names what it exports and the submodule each
name lives in; the submodule is imported the first time the name is used.

This keeps ``import privrank.metrics`` or ``import privrank.privacy`` from importing torch,
scipy.stats or ``dp_accounting`` before a caller needs them, so the CLI starts fast.

Base module: imports nothing from privrank.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    where: Mapping[str, Iterable[str]],
    *,
    exported: Iterable[str],
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's ``__getattr__`` and ``__dir__`` from one table.

    Use in a package's ``__init__``, after its literal ``__all__`` (which linters and type
    checkers read) and its ``if TYPE_CHECKING:`` imports of the same names::

        __getattr__, __dir__ = lazy_exports(__name__, {"ledger": ["Ledger"]}, exported=__all__)

    Args:
        package: The package's ``__name__``.
        where: Module → the names it exports: a submodule's name relative to the package, or
            an absolute module name of the same top-level package (``privrank.privacy.updates``
            re-exported by ``privrank.federated``).
        exported: The package's ``__all__``; it must name exactly the names of ``where``.
        submodules: Submodules reachable as attributes before anything imported them
            (``privrank.metrics.stats`` without ``import privrank.metrics.stats``).

    Returns:
        ``(__getattr__, __dir__)``. ``__getattr__`` imports the
        submodule of a name on first use and stores the value in the package, so later
        look-ups do not call it again; an unknown name raises :class:`AttributeError`.

    Raises:
        ValueError: A name listed under two submodules, or ``exported`` and ``where`` naming
            different names (raised at import, so a drifted table cannot ship).
    """
    module_of: dict[str, str] = {}
    for module, names in where.items():
        for name in names:
            if name in module_of:
                raise ValueError(
                    f"{package}: {name!r} is exported by both {module_of[name]!r} and {module!r}"
                )
            module_of[name] = module
    exported = sorted(exported)
    if sorted(module_of) != exported:
        raise ValueError(
            f"{package}: __all__ and the lazy table differ: only in __all__ "
            f"{sorted(set(exported) - set(module_of))}, only in the table "
            f"{sorted(set(module_of) - set(exported))}"
        )
    attribute_submodules = frozenset(submodules)
    root = package.split(".")[0] + "."

    def _module(name: str) -> str:
        return name if name.startswith(root) else f"{package}.{name}"

    def __getattr__(name: str) -> Any:  # noqa: N807 - the PEP 562 hook's name
        module = module_of.get(name)
        if module is None:
            if name in attribute_submodules:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(_module(module)), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807 - the PEP 562 hook's name
        return sorted(set(vars(sys.modules[package])) | set(exported))

    return __getattr__, __dir__
