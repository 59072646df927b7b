"""Click-through-rate rankers over field-aware feature tables, behind one contract.

privrank's PyTorch models (``logistic``, ``fm``, ``deepfm``, ``dcn-v2``, ``finalmlp``) and the
peers run in the same harness (``lightgbm``, ``deepctr-deepfm``, ``deepctr-dcn``) are found by
name in :data:`CTR_RANKERS`; :func:`create_ranker` builds one with validated parameters and
:func:`load_ranker` reads a saved one. See :mod:`privrank.ranking.ctr.base` for the contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privrank.errors import ConfigError
from privrank.ranking.ctr.base import CTRConfig, CTRRanker, Rows
from privrank.ranking.ctr.base import load_ranker as _load
from privrank.ranking.ctr.calibration import Calibrator, fit_calibrator
from privrank.ranking.ctr.neural import (
    DCNv2Ranker,
    DeepFMRanker,
    FinalMLPRanker,
    FMRanker,
    LogisticRanker,
    NeuralCTRRanker,
)
from privrank.ranking.ctr.peers import DeepCTRDCN, DeepCTRDeepFM, LightGBMRanker

__all__ = [
    "CTR_RANKERS",
    "CTRConfig",
    "CTRRanker",
    "Calibrator",
    "DCNv2Ranker",
    "DeepCTRDCN",
    "DeepCTRDeepFM",
    "DeepFMRanker",
    "FMRanker",
    "FinalMLPRanker",
    "LightGBMRanker",
    "LogisticRanker",
    "NeuralCTRRanker",
    "Rows",
    "create_ranker",
    "fit_calibrator",
    "is_ranker",
    "load_ranker",
    "ranker_names",
]

#: Every CTR ranker by registry name: privrank's models, then the peers.
CTR_RANKERS: dict[str, type[CTRRanker]] = {
    cls.name: cls
    for cls in (
        LogisticRanker,
        FMRanker,
        DeepFMRanker,
        DCNv2Ranker,
        FinalMLPRanker,
        LightGBMRanker,
        DeepCTRDeepFM,
        DeepCTRDCN,
    )
}


def ranker_names() -> list[str]:
    """Registry names of the CTR rankers."""
    return list(CTR_RANKERS)


def is_ranker(name: str) -> bool:
    """Whether ``name`` is a CTR ranker's registry name."""
    return name in CTR_RANKERS


def create_ranker(name: str, params: dict[str, Any] | None = None) -> CTRRanker:
    """A CTR ranker by registry name with validated parameters.

    Raises:
        ConfigError: Unknown name (the known ones listed) or invalid parameters.
    """
    try:
        cls = CTR_RANKERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown CTR ranker {name!r}; the CTR rankers are {', '.join(CTR_RANKERS)}"
        ) from None
    return cls(params or {})


def load_ranker(directory: str | Path) -> CTRRanker:
    """Read a saved CTR ranker (checksums verified first)."""
    return _load(directory, CTR_RANKERS)
