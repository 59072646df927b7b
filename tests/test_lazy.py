"""The lazy package exports of privrank._lazy, on the real packages and on a made-up one."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from privrank._lazy import lazy_exports


@pytest.mark.parametrize("package", ["privrank.metrics", "privrank.privacy", "privrank.workflow"])
def test_every_exported_name_resolves_to_its_submodules_object(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert vars(module)[name] is value  # cached: the next look-up skips __getattr__
        assert name in dir(module)


def test_unknown_name_is_an_attribute_error():
    import privrank.privacy

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        privrank.privacy.nope  # noqa: B018


def test_a_table_that_drifted_from_all_is_refused_at_import():
    with pytest.raises(ValueError, match=r"only in __all__ \['b'\], only in the table \[\]"):
        lazy_exports("pkg", {"m": ["a"]}, exported=["a", "b"])
    with pytest.raises(ValueError, match="'a' is exported by both 'm' and 'n'"):
        lazy_exports("pkg", {"m": ["a"], "n": ["a"]}, exported=["a"])


def test_importing_the_ledger_does_not_import_dp_accounting():
    code = (
        "import sys, privrank.privacy.ledger; "
        "print('dp_accounting' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
