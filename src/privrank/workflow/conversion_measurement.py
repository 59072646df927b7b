"""Private conversion measurement on an ad log, spent from the ledger, written atomically.

:func:`measure_conversions` is what ``privrank ads measure`` runs: it reads the conversions of a
synthetic ad log (user, campaign, conversion type, value; in time order), reserves the report's
user-level ε (δ = 0) in the ledger (:func:`privrank.workflow.spend.spend_release`), computes the
noisy report (:func:`privrank.privacy.conversion_reports.private_report`), writes it as CSV
(``campaign_id,conversion_type,count,value``: only the noisy estimates) and commits the spend.
The key domain (every campaign × type) comes from the log's public configuration, not from the
conversions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from privrank.atomic import atomic_file
from privrank.data.synthetic_ads import iter_ad_log, load_config
from privrank.privacy.conversion_reports import (
    ConversionReport,
    ConversionReportConfig,
    Conversions,
    private_report,
)
from privrank.workflow.spend import Spend, spend_release

__all__ = ["load_conversions", "measure_conversions", "write_report_csv"]

_COLUMNS = ["user_id", "campaign_id", "conversion_type", "conversion_value", "conversion"]


def load_conversions(log: str | Path, max_rows: int | None = None) -> Conversions:
    """The conversions of a synthetic ad log (streamed: only converted rows are kept)."""
    config = load_config(log)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS[:4]}
    rows = 0
    for batch in iter_ad_log(log, _COLUMNS):
        if max_rows is not None and rows + batch.num_rows > max_rows:
            batch = batch.slice(0, max_rows - rows)
        rows += batch.num_rows
        mask = pc.equal(batch.column("conversion"), 1)
        kept = batch.filter(mask)
        for name in parts:
            parts[name].append(kept.column(name).to_numpy())
        if max_rows is not None and rows >= max_rows:
            break
    return Conversions(
        user=np.concatenate(parts["user_id"]),
        campaign=np.concatenate(parts["campaign_id"]).astype(np.int64),
        kind=np.concatenate(parts["conversion_type"]).astype(np.int64),
        value=np.concatenate(parts["conversion_value"]),
        n_campaigns=config.n_campaigns,
        n_types=config.n_conversion_types,
    )


def write_report_csv(report: ConversionReport, out: str | Path) -> None:
    """``campaign_id,conversion_type,count,value``: one line per key of the domain."""
    n_campaigns, n_types = report.count.shape
    with atomic_file(out, "w", encoding="utf-8", newline="") as handle:
        handle.write("campaign_id,conversion_type,count,value\n")
        for campaign in range(n_campaigns):
            for kind in range(n_types):
                handle.write(
                    f"{campaign},{kind},{report.count[campaign, kind]:.3f},"
                    f"{report.value[campaign, kind]:.2f}\n"
                )


def measure_conversions(
    log: str | Path,
    out: str | Path,
    config: ConversionReportConfig,
    *,
    budget_key: str,
    ledger_url: str | None = None,
    max_rows: int | None = None,
) -> tuple[ConversionReport, Spend]:
    """Read, spend, report, write (see the module docstring).

    Raises:
        PrivacyBudgetExceeded: Before the report is computed, when the budget does not cover
            ``config.user_epsilon``.
    """
    conversions = load_conversions(log, max_rows)
    description = (
        f"conversion report ({config.unit}: ε={config.epsilon:g}, L1={config.l1_budget:g}, "
        f"≤{config.max_conversions_per_user} conversions a user) on {Path(log).name}"
    )
    with spend_release(
        budget_key, config.user_epsilon, 0.0, description, ledger_url=ledger_url
    ) as spend:
        report = private_report(conversions, config, np.random.default_rng())
        write_report_csv(report, out)
    return report, spend
