"""Train a neural click model on a synthetic ad log with user-level DP-SGD; spend from the ledger.

:func:`train_dpsgd_click_model` is what ``privrank ads train --mechanism dp-sgd`` runs:

1. read the first ``max_rows`` impressions (:func:`~privrank.data.ad_log_frames.ad_log_frame`);
2. set aside a *validation panel*: the users whose seeded hash falls in the
   ``validation_share`` (default 5 %). Their rows are never trained on; they serve the progress
   report (loss and AUC per epoch) and the calibration, and are **not** protected by the
   guarantee (think of an opted-in panel). Every other user is a training user;
3. resolve δ (default ``1 / (10 · n)`` for the ``n`` training users) and reserve (ε, δ) in the
   ledger (:func:`privrank.workflow.spend.spend_release`) before anything trains;
4. train the CTR ranker by user-level DP-SGD (:mod:`privrank.ranking.ctr.private`: at most
   ``max_rows_per_user`` rows a user, Poisson sampling of users, per-user clipping, Gaussian
   noise calibrated by the PLD accountant). Unit of privacy: **all rows of one user**;
5. save the ranker directory (its header carries the guarantee), then commit the spend.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from privrank.data.ad_log_frames import USER_FIELD, ad_log_frame
from privrank.errors import ConfigError
from privrank.models import FitOptions, FitProgress
from privrank.privacy.mechanism import PrivacyGuarantee
from privrank.privacy.spec import PrivacySpec
from privrank.ranking.ctr import CTR_RANKERS, NeuralCTRRanker, create_ranker
from privrank.workflow.spend import Spend, spend_release

__all__ = ["DPSGDClickResult", "split_validation_panel", "train_dpsgd_click_model"]


@dataclass
class DPSGDClickResult:
    """A DP-SGD click-model fit: the ranker, its guarantee and the spend."""

    ranker: NeuralCTRRanker
    guarantee: PrivacyGuarantee
    facts: dict[str, Any]
    spend: Spend
    seconds: float


def split_validation_panel(users: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows of panel users: those whose ``crc32(seed:user) / 2^32 < share``.

    The choice of a user depends on its id only, never on anybody's rows.
    """
    if not 0 < share < 1:
        raise ConfigError(f"validation share must be in (0, 1). Got {share!r}")
    distinct, inverse = np.unique(users, return_inverse=True)
    hashed = np.array([zlib.crc32(f"{seed}:{u}".encode()) for u in distinct], dtype=np.float64)
    return (hashed / 2**32 < share)[inverse]


def train_dpsgd_click_model(
    log: str | Path,
    out: str | Path,
    *,
    epsilon: float,
    budget_key: str,
    model: str = "fm",
    delta: float | None = None,
    max_rows_per_user: int = 20,
    clipping_norm: float = 1.0,
    max_rows: int | None = None,
    validation_share: float = 0.05,
    params: dict[str, Any] | None = None,
    ledger_url: str | None = None,
    seed: int = 0,
    progress: Callable[[FitProgress], None] | None = None,
) -> DPSGDClickResult:
    """The steps of the module docstring.

    Raises:
        ConfigError: A ranker that cannot train privately, bad sizes, or δ > 1/n.
        PrivacyBudgetExceeded: Before training, when the budget does not cover (ε, δ).
    """
    started = time.perf_counter()
    cls = CTR_RANKERS.get(model)
    if cls is None or not issubclass(cls, NeuralCTRRanker):
        raise ConfigError(
            f"--mechanism dp-sgd trains privrank's neural CTR models; {model!r} is not one"
        )
    ranker = create_ranker(model, params or {})
    assert isinstance(ranker, NeuralCTRRanker)
    frame, _ = ad_log_frame(log, rows=max_rows)
    users = frame.table.column(USER_FIELD).to_numpy(zero_copy_only=False)
    panel = split_validation_panel(users, validation_share, seed)
    train, validation = frame.take(np.flatnonzero(~panel)), frame.take(np.flatnonzero(panel))
    del frame
    n_users = len(pc.unique(train.table.column(USER_FIELD)))
    spec = PrivacySpec(
        epsilon=epsilon,
        delta=delta,
        max_interactions_per_user=max_rows_per_user,
        clipping_norm=clipping_norm,
    ).resolve(n_users)
    resolved_delta = spec.require_delta()
    description = (
        f"DP-SGD {model} click model (user-level, ≤{max_rows_per_user} rows a user, "
        f"C={clipping_norm:g}) on {Path(log).name}"
    )
    with spend_release(
        budget_key, float(epsilon), resolved_delta, description, ledger_url=ledger_url
    ) as spend:
        ranker.fit(train, validation, FitOptions(seed=seed, privacy=spec, progress=progress))
        guarantee = ranker.privacy_guarantee_
        assert guarantee is not None and ranker.privacy_facts_ is not None
        facts = {
            **ranker.privacy_facts_,
            "validation_panel_users_share": validation_share,
            "validation_rows": len(validation),
            "log": str(log),
        }
        ranker.privacy_facts_ = facts
        ranker.save(out)
    return DPSGDClickResult(ranker, guarantee, facts, spend, time.perf_counter() - started)
