r"""Train the label-sums logistic click model on a synthetic ad log, spending from the ledger.

:func:`train_label_sums_model` is what ``privrank ads train --mechanism label-sums`` runs:

1. read the log's feature columns, clicks and user ids (the first ``max_rows`` rows, in time
   order);
2. cap every user at ``max_rows_per_user`` = C rows (their first; the others are left out and
   counted);
3. reserve ``C·ε`` (δ = 0) in the ledger (:func:`privrank.workflow.spend.spend_release`), before
   any label is used;
4. release the per-column label sums once with Laplace noise of scale Δ/ε and fit the logistic
   regression on them (:class:`~privrank.ranking.label_sums_logistic.LabelSumsLogistic`);
5. save the model with its guarantee and training record, then commit the spend (a failure
   releases the reservation: nothing is charged, nothing is written).

**Guarantee.** The release is ε-label-DP per example (Δ = fields + crosses, the L1 norm of one
row's one-hot vector; Laplace mechanism). One user has at most C rows in training, so changing
all of one user's labels moves the sums by at most C·Δ in L1: the release is C·ε-label-DP per
user (group privacy, exact for pure DP), and C·ε is what the ledger is charged. Features and
participation are not protected (label DP); the trainer holding the true labels is trusted.
ε = inf fits on the exact sums and spends nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privrank.data.synthetic_ads import FEATURE_COLUMNS, read_ad_log
from privrank.errors import ConfigError
from privrank.privacy._contribution import first_rows_per_user
from privrank.ranking.label_sums_logistic import (
    LabelSumsConfig,
    LabelSumsGuarantee,
    LabelSumsLogistic,
)
from privrank.workflow.spend import Spend, spend_release

__all__ = ["DEFAULT_SUMS_FIELDS", "LabelSumsResult", "describe_guarantee", "train_label_sums_model"]

#: Fields chosen on a validation carve of the synthetic log at ε = 1 (rows 0–240k train,
#: 240k–300k validation; BENCHMARKS.md, "ctr5"): ad_id and context_id have too few clicks per
#: value for Laplace(Δ/ε) at that size, and every extra field adds 1 to Δ.
DEFAULT_SUMS_FIELDS = ("user_segment", "ad_category", "campaign_id", "device", "hour", "position")


@dataclass
class LabelSumsResult:
    """A label-sums fit: the model and what happened.

    Attributes:
        model: The fitted model (its ``guarantee_`` is ``None`` for ε = inf).
        rows: Rows trained on (after the per-user cap).
        dropped: Rows left out by the per-user cap.
        user_epsilon: C·ε charged (``None`` for ε = inf).
        seconds: Wall time.
        spend: The ledger spend (``None`` when nothing was spent).
    """

    model: LabelSumsLogistic
    rows: int
    dropped: int
    user_epsilon: float | None
    seconds: float
    spend: Spend | None


def describe_guarantee(guarantee: LabelSumsGuarantee, max_rows_per_user: int) -> str:
    """The guarantee in plain words (per example and per user)."""
    return (
        f"label differential privacy (ε={guarantee.epsilon:g} per example's label, δ=0): the "
        f"per-column label sums released once with Laplace noise of scale "
        f"{guarantee.laplace_scale:g} (Δ={guarantee.l1_sensitivity}), logistic regression fitted "
        f"on them. Features and participation are not protected. A user has at most "
        f"{max_rows_per_user} training rows, so all of a user's labels together are protected "
        f"at ε={guarantee.epsilon * max_rows_per_user:g} (group privacy)."
    )


def train_label_sums_model(
    log: str | Path,
    out: str | Path,
    *,
    epsilon: float,
    config: LabelSumsConfig,
    fields: Sequence[str] = DEFAULT_SUMS_FIELDS,
    max_rows_per_user: int = 20,
    max_rows: int | None = None,
    budget_key: str | None = None,
    ledger_url: str | None = None,
    noise_rng: np.random.Generator | None = None,
) -> LabelSumsResult:
    """The steps of the module docstring; returns what was trained and spent.

    ``noise_rng`` draws the Laplace noise and nothing else (default: fresh OS entropy).

    Raises:
        ConfigError: A private fit (finite ε) without ``budget_key``; a field that is not a
            feature column of the log; a cross naming a field not in ``fields``.
        PrivacyBudgetExceeded: Before any label is used, when the budget does not cover C·ε.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
        raise ConfigError(f"label-sums: epsilon must be > 0 or inf. Got {epsilon!r}")
    if math.isfinite(epsilon) and not budget_key:
        raise ConfigError("a label-DP fit spends from the ledger: pass a budget key")
    unknown = [f for f in fields if f not in FEATURE_COLUMNS]
    if unknown or not fields or len(set(fields)) != len(fields):
        raise ConfigError(
            f"label-sums fields: got {list(fields)}; expected distinct names among the log's "
            f"feature columns {list(FEATURE_COLUMNS)}"
        )
    outside = sorted({f for pair in config.crosses for f in pair} - set(fields))
    if outside:
        raise ConfigError(
            f"label-sums crosses: {outside} are not among the fields {list(fields)}; a cross "
            "combines two of the model's fields"
        )
    started = time.perf_counter()
    table = read_ad_log(log, [*fields, "user_id", "click"], max_rows=max_rows)
    keep = first_rows_per_user(table.column("user_id").to_numpy(), max_rows_per_user)
    columns = {name: table.column(name).to_numpy()[keep] for name in fields}
    labels = table.column("click").to_numpy()[keep].astype(np.float64)
    del table
    dropped = int((~keep).sum())
    user_epsilon = epsilon * max_rows_per_user if math.isfinite(epsilon) else None
    description = (
        f"label-sums click model (ε={epsilon:g} per label, ≤{max_rows_per_user} rows a user) "
        f"on {Path(log).name}"
    )

    def fit(spend: Spend | None) -> LabelSumsResult:
        rng = noise_rng if noise_rng is not None else np.random.default_rng()
        model = LabelSumsLogistic(tuple(fields), config).fit(columns, labels, epsilon, rng)
        label_dp: dict[str, Any] | None = None
        if model.guarantee_ is not None:
            label_dp = {
                **asdict(model.guarantee_),
                "mechanism": "label-sums",
                "max_rows_per_user": max_rows_per_user,
                "user_epsilon": user_epsilon,
                "delta": 0.0,
            }
        extra = {
            "label_dp": label_dp,
            "training": {
                "log": str(log),
                "rows": int(labels.size),
                "dropped_by_user_cap": dropped,
                "max_rows_per_user": max_rows_per_user,
                "method": "label-sums",
            },
            "spend": None if spend is None else spend.to_dict(),
        }
        model.save(out, extra)
        return LabelSumsResult(
            model=model,
            rows=int(labels.size),
            dropped=dropped,
            user_epsilon=user_epsilon,
            seconds=time.perf_counter() - started,
            spend=spend,
        )

    if user_epsilon is None:
        return fit(None)
    assert budget_key is not None
    with spend_release(budget_key, user_epsilon, 0.0, description, ledger_url=ledger_url) as spend:
        return fit(spend)
