"""Experiments and artifacts: protocols, run configs, the runner, reports, fit-and-spend, trained
model directories and the empirical audit.

What it owns:

- :mod:`~privrank.workflow.protocols`: named evaluation protocols (dataset + split + metrics)
  and the parts they hand to a run;
- :mod:`~privrank.workflow.run_config` and :mod:`~privrank.workflow.runner`: models ×
  protocols, fitted and evaluated with CIs and paired tests, written as result files;
- :mod:`~privrank.workflow.report`: markdown tables and charts from result files;
- :mod:`~privrank.workflow.spend`: :func:`fit_and_spend`, the one place a fit reserves,
  commits or releases privacy budget in the ledger;
- :mod:`~privrank.workflow.model_dir`: the one reader and writer of ``privrank train``'s
  output directory (``model/`` + ``training.json``, checksums cross-checked);
- :mod:`~privrank.workflow.audit`: the one-run empirical privacy audit with canary users;
- :mod:`~privrank.workflow.records`: library versions, atomic JSON, safe file names.

What it may import: ``privrank.models``, ``privrank.privacy``, ``privrank.metrics``,
``privrank.data`` and the base modules (``errors``, ``settings``, ``atomic``, ``database``).
``serving``, ``tuning``, ``distributed`` and ``cli`` sit above it and may import it; it never
imports them (an import-linter contract in ``pyproject.toml`` checks this).

Names are imported on first use, so that importing this package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privrank.workflow.audit import AuditResult, audit_model
    from privrank.workflow.model_dir import TrainedModel, load_trained, write_trained
    from privrank.workflow.protocols import PROTOCOLS, ProtocolSpec, prepare
    from privrank.workflow.run_config import ModelSpec, RunConfig
    from privrank.workflow.runner import RunSummary, run
    from privrank.workflow.spend import SpentFit, fit_and_spend

_LAZY: dict[str, str] = {
    "AuditResult": "privrank.workflow.audit",
    "ModelSpec": "privrank.workflow.run_config",
    "PROTOCOLS": "privrank.workflow.protocols",
    "ProtocolSpec": "privrank.workflow.protocols",
    "RunConfig": "privrank.workflow.run_config",
    "RunSummary": "privrank.workflow.runner",
    "SpentFit": "privrank.workflow.spend",
    "TrainedModel": "privrank.workflow.model_dir",
    "audit_model": "privrank.workflow.audit",
    "fit_and_spend": "privrank.workflow.spend",
    "load_trained": "privrank.workflow.model_dir",
    "prepare": "privrank.workflow.protocols",
    "run": "privrank.workflow.runner",
    "write_trained": "privrank.workflow.model_dir",
}

__all__ = [
    "PROTOCOLS",
    "AuditResult",
    "ModelSpec",
    "ProtocolSpec",
    "RunConfig",
    "RunSummary",
    "SpentFit",
    "TrainedModel",
    "audit_model",
    "fit_and_spend",
    "load_trained",
    "prepare",
    "run",
    "write_trained",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
