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

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports

if TYPE_CHECKING:
    from privrank.workflow.audit import AuditResult, audit_model
    from privrank.workflow.model_dir import TrainedModel, load_trained, write_trained
    from privrank.workflow.protocols import PROTOCOLS, ProtocolSpec, prepare
    from privrank.workflow.run_config import ModelSpec, RunConfig
    from privrank.workflow.runner import RunSummary, run
    from privrank.workflow.spend import SpentFit, fit_and_spend

_WHERE = {
    "audit": ["AuditResult", "audit_model"],
    "run_config": ["ModelSpec", "RunConfig"],
    "protocols": ["PROTOCOLS", "ProtocolSpec", "prepare"],
    "runner": ["RunSummary", "run"],
    "spend": ["SpentFit", "fit_and_spend"],
    "model_dir": ["TrainedModel", "load_trained", "write_trained"],
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

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, exported=__all__)
