"""The evaluation runner: models × protocols × cutoffs, with CIs, paired tests and result files.

A run is described by a :class:`RunConfig` (built in code, read from a JSON or TOML file with
:meth:`RunConfig.from_file`, or assembled by ``privrank evaluate``). For each protocol
(:mod:`privrank.workflow.protocols`) the dataset is split once; every model is fitted on the
protocol's ``train`` part with the run's seed and thread count and evaluated by full ranking
(:func:`privrank.metrics.evaluate`) on the same test users. Peers (``implicit-als``,
``implicit-bpr``) are models like any other, so they run on the same split in the same run and
are scored by the same metric code.

**Test-time history.** When the protocol's test-time history is ``train`` (holdout), models
score users by code. When it also holds the validation items (leave-one-out), the runner's
``test_history`` decides: ``"fold-in"`` (default) scores each test user's full history as an
ad-hoc :class:`~privrank.models.Query` with the model fitted on ``train``; models that cannot
fold in, and models that take the validation part as training data
(``trains_on_validation_part``: the two-stage), are fitted on ``train + validation`` instead.
``"refit"`` refits every model on ``train + validation``. Each result records which mode it
used (``model.history_mode``).

**Validation.** With ``validation=True``, each model fitted on ``train`` also ranks the
validation items (history ``train``); the means are recorded under ``validation``, the number
to tune on, so that the test part is never used for choices.

**Statistics.** Every per-user metric gets a percentile-bootstrap CI (shared resamples, see
:mod:`privrank.metrics.stats`). Every model is compared with the baseline (``baseline``, or the
first model) on the same users, metric by metric: paired t-test, Wilcoxon signed-rank test,
Cohen's d_z and a bootstrap CI of the mean difference.

**Files** (all written atomically, :mod:`privrank.atomic`)::

    OUT/results.md                        markdown tables: metrics with CIs, paired comparisons
    OUT/summary.json                      the run config and the list of result files
    OUT/<protocol>/<model>.json           one result per model and protocol (see below)
    OUT/<protocol>/<model>.per_user.parquet   per-user metrics (user id, user code, metrics)

A result JSON holds the dataset fingerprint and size, the split spec, seed and counts, the
model name and full config, the fit seed and threads, library versions, the metrics with their
CIs, catalogue-level metrics, user counts, timing and the comparisons with the baseline.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from privrank.atomic import atomic_file
from privrank.errors import ConfigError
from privrank.metrics.evaluate import (
    EvaluationConfig,
    EvaluationResult,
    Scorer,
    SharedScores,
    evaluate,
)
from privrank.metrics.stats import (
    ConfidenceInterval,
    PairedComparison,
    bootstrap_cis,
    compare_results,
)
from privrank.models import FitOptions, Query, create_model
from privrank.models.capabilities import SharedRanking, StagedModel
from privrank.ranking import two_stage as _two_stage  # noqa: F401  (registers "two-stage")
from privrank.workflow.ctr_protocols import CTRProtocolSpec, prepare_ctr
from privrank.workflow.ctr_report import ctr_markdown
from privrank.workflow.ctr_runner import (
    CTRRun,
    compare_ctr_runs,
    ctr_record,
    fit_and_evaluate_ctr,
    write_ctr_files,
)
from privrank.workflow.protocols import PreparedProtocol, prepare
from privrank.workflow.records import library_versions, safe_name, write_json
from privrank.workflow.report import markdown_summary
from privrank.workflow.run_config import ModelSpec, RunConfig
from privrank.workflow.spend import fit_and_spend

__all__ = [
    "RESULT_FORMAT",
    "ModelRun",
    "ModelSpec",
    "RunConfig",
    "RunSummary",
    "compare_with_baseline",
    "evaluate_model",
    "fit_and_evaluate",
    "model_scorer",
    "result_record",
    "run",
    "split_test_shape",
    "validation_metrics",
    "write_results",
]

RESULT_FORMAT = "privrank.result"
RESULT_VERSION = 1


@dataclass
class ModelRun:
    """One model evaluated on one protocol.

    Attributes:
        prepared: The protocol's parts.
        spec: The model's spec.
        model: The fitted model.
        result: The per-user evaluation.
        intervals: Bootstrap CI of every per-user metric.
        history_mode: ``users`` (scored by code on the fitted history), ``fold-in`` or ``refit``.
        fit_seconds: Wall time of the fit (``None`` for a model trained elsewhere).
        evaluate_seconds: Wall time of the evaluation (scoring included).
        comparisons: Metric → paired comparison with the baseline (empty for the baseline).
        baseline: The baseline's label.
        extra: More JSON facts to record (e.g. where a trained model came from).
    """

    prepared: PreparedProtocol
    spec: ModelSpec
    model: Any
    result: EvaluationResult
    intervals: dict[str, ConfidenceInterval]
    history_mode: str
    fit_seconds: float | None
    evaluate_seconds: float
    comparisons: dict[str, PairedComparison] = field(default_factory=dict)
    baseline: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """What a run produced.

    Attributes:
        runs: Every model run, protocol by protocol.
        records: The JSON result of each run (same order).
        files: Result JSON path of each run (same order; empty when nothing was written).
        markdown: The markdown tables.
        out: The output directory, if any.
    """

    runs: list[ModelRun]
    records: list[dict[str, Any]]
    files: list[Path]
    markdown: str
    out: Path | None


#: Called with a model label and a status line ("fitting", "evaluating", ...).
StatusCallback = Callable[[str, str], None]


def _history_query(prepared: PreparedProtocol) -> Any:
    indptr, items = prepared.history.sequences()
    return Query(indptr=indptr.astype(np.int64), items=items.astype(np.int64))


def model_scorer(model: Any, fold_in: PreparedProtocol | None = None) -> Scorer | SharedScores:
    """What the evaluator scores a fitted model by: its shared score vector when it declares
    :class:`~privrank.models.capabilities.SharedRanking` (the same for every user and history,
    so no score matrix is built), else ``model.score`` of the batch's user codes, or, given
    ``fold_in``, of those users' test-time histories in that protocol (ad-hoc queries)."""
    if isinstance(model, SharedRanking):
        return SharedScores(model.shared_scores())
    if fold_in is None:
        return model.score  # type: ignore[no-any-return]
    query = _history_query(fold_in)

    def score(users: np.ndarray) -> np.ndarray:
        return model.score(query.take(users))  # type: ignore[no-any-return]

    return score


def evaluate_model(
    model: Any,
    prepared: PreparedProtocol,
    config: RunConfig,
    spec: ModelSpec,
    *,
    history_mode: str,
    fit_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    evaluator: Callable[[Any, Any, Any, Any], Any] | None = None,
) -> ModelRun:
    """Evaluate a fitted model on a prepared protocol, with bootstrap CIs.

    Args:
        model: A fitted :class:`~privrank.models.Recommender` whose vocabulary is the
            protocol's.
        prepared: The protocol's parts.
        config: The run's options (cutoffs, bootstrap, batch size).
        spec: The model's spec (for its label).
        history_mode: ``users`` (score by code: the model was fitted on the test-time history)
            or ``fold-in`` (score each user's test-time history as an ad-hoc query).
        fit_seconds: Fit time, to record.
        progress: Called as ``progress(users_done, users_total)``.
        evaluator: Runs the evaluation elsewhere: called as ``evaluator(model, history, test,
            evaluation_config)`` and returns what :func:`~privrank.metrics.evaluate.evaluate`
            does, for the same protocol (e.g. ``privrank.distributed.ray_batch``'s, over Ray
            tasks). Only with ``history_mode="users"`` (users scored by code).

    Raises:
        ConfigError: The model's vocabulary is not the protocol's, or it cannot fold in, or an
            ``evaluator`` with the fold-in mode.
    """
    history = prepared.history
    if not (model.user_ids_.equals(history.user_ids) and model.item_ids_.equals(history.item_ids)):
        raise ConfigError(
            f"{spec.display} was trained on another vocabulary ({model.n_users_} users, "
            f"{model.n_items_} items) than protocol {prepared.spec.name!r} "
            f"({history.n_users} users, {history.n_items} items)"
        )
    if history_mode == "fold-in":
        if not model.supports_fold_in:
            raise ConfigError(
                f"{spec.display} cannot fold in histories, and protocol {prepared.spec.name!r} "
                "scores test users on train + validation; refit it on both instead"
            )
        score = model_scorer(model, fold_in=prepared)
    elif history_mode == "users":
        score = model_scorer(model)
    else:
        raise ConfigError(f"unknown history mode {history_mode!r}")
    evaluation = _evaluation_config(prepared, config)
    started = time.perf_counter()
    if evaluator is None:
        pairs = prepared.evaluation_pairs(graded=evaluation.graded)
        result = evaluate(score, history, prepared.test, evaluation, progress=progress, pairs=pairs)
    elif history_mode != "users":
        raise ConfigError(
            f"{spec.display}: this evaluation engine scores users by code, but protocol "
            f"{prepared.spec.name!r} folds in their test-time histories; evaluate it locally"
        )
    else:
        result = evaluator(model, history, prepared.test, evaluation)
    elapsed = time.perf_counter() - started
    intervals = bootstrap_cis(
        result.per_user,
        confidence=config.confidence,
        n_resamples=config.n_resamples,
        seed=config.bootstrap_seed,
    )
    return ModelRun(
        prepared=prepared,
        spec=spec,
        model=model,
        result=result,
        intervals=intervals,
        history_mode=history_mode,
        fit_seconds=fit_seconds,
        evaluate_seconds=elapsed,
    )


def _evaluation_config(prepared: PreparedProtocol, config: RunConfig) -> EvaluationConfig:
    cutoffs = prepared.spec.cutoffs
    if config.cutoffs is not None:
        headline_ks = {int(name.rsplit("@", 1)[1]) for name in prepared.spec.headline}
        cutoffs = tuple(sorted(set(config.cutoffs) | headline_ks))
    return prepared.spec.evaluation_config(
        cutoffs=cutoffs,
        beyond_accuracy=config.beyond_accuracy,
        batch_size=config.batch_size,
    )


def validation_metrics(model: Any, prepared: PreparedProtocol, config: RunConfig) -> dict:
    """Mean metrics of a model fitted on ``train`` when ranking the validation items.

    The history is ``train`` (its items excluded); the relevant items are the validation part.
    This is the number to tune on; the test part stays untouched.

    Raises:
        ConfigError: The protocol has no validation part.
    """
    if prepared.validation is None or len(prepared.validation) == 0:
        raise ConfigError(f"protocol {prepared.spec.name!r} has no validation part")
    evaluation = _evaluation_config(prepared, config).model_copy(update={"beyond_accuracy": False})
    pairs = prepared.evaluation_pairs(graded=evaluation.graded, part="validation")
    result = evaluate(
        model_scorer(model), prepared.train, prepared.validation, evaluation, pairs=pairs
    )
    return {"means": dict(result.means), "counts": dict(result.counts)}


def split_test_shape(split_spec: Any) -> Literal["next", "random"]:
    """What a split tests, for a model that carves its own validation part
    (:attr:`~privrank.models.FitOptions.test_shape`): ``random`` for a per-user random holdout
    or held-out users' random test rows (``holdout``, ``strong``), ``next`` for the items after
    a user's history (``leave-last-out``, ``temporal``)."""
    return "random" if split_spec.protocol in ("holdout", "strong") else "next"


def fit_and_evaluate(
    prepared: PreparedProtocol,
    spec: ModelSpec,
    config: RunConfig,
    *,
    fit_progress: Callable[[Any], None] | None = None,
    status: StatusCallback | None = None,
    ledger_url: str | None = None,
    evaluate_progress: Callable[[int, int], None] | None = None,
) -> ModelRun:
    """Fit one model on a prepared protocol and evaluate it (see the module docstring).

    The fit goes through :func:`~privrank.workflow.spend.fit_and_spend`: a private model
    (``spec.privacy``) reserves its (ε, δ) in the privacy budget ledger before the fit, keyed by
    the protocol's source dataset (the key ``privrank train`` spends from); the spend is
    committed once the model is evaluated, released if the fit or the evaluation fails, and
    refused with :class:`~privrank.errors.PrivacyBudgetExceeded` before any training when the
    budget does not cover it.

    Args:
        prepared: The protocol's parts.
        spec: The model.
        config: The run's options (seed, threads, test-time history, bootstrap).
        fit_progress: Receives the fit's :class:`~privrank.models.FitProgress` reports.
        status: Receives ``(label, message)`` status lines.
        ledger_url: Ledger database URL for private models (default:
            :func:`~privrank.privacy.ledger.default_ledger_url`).
        evaluate_progress: Called as ``(users_done, users_total)`` while the test users are
            scored.
    """
    model = create_model(spec.name, spec.params)
    train, mode = prepared.training_rows(model, config.test_history)
    options = FitOptions(
        seed=config.seed,
        threads=config.threads,
        progress=fit_progress,
        privacy=spec.privacy,
        test_shape=split_test_shape(prepared.split.spec),
    )

    def fitting() -> None:
        if status is not None:
            status(spec.display, f"fitting on {len(train):,} interactions ({mode})")

    with fit_and_spend(
        model,
        train,
        options,
        budget_key=prepared.split.source.name,
        description=f"evaluate {spec.display} on {prepared.spec.name}",
        validation=None if mode == "refit" else prepared.validation,
        ledger_url=ledger_url,
        before_fit=fitting,
    ) as fitted:
        if status is not None:
            status(spec.display, f"fitted in {fitted.seconds:.1f} s; evaluating")
        run_ = evaluate_model(
            model,
            prepared,
            config,
            spec,
            history_mode="fold-in" if mode == "fold-in" else "users",
            fit_seconds=fitted.seconds,
            progress=evaluate_progress,
        )
    run_.history_mode = mode
    if isinstance(model, StagedModel):
        run_.extra["stages"] = {k: round(v, 4) for k, v in model.stage_seconds().items()}
    if fitted.spend is not None:
        run_.extra["privacy"] = fitted.privacy_record()
    if config.validation and prepared.validation is not None and len(prepared.validation):
        run_.extra["validation"] = (
            validation_metrics(model, prepared, config)
            if mode != "refit"
            else {"skipped": "the model was refitted on train + validation"}
        )
    return run_


def compare_with_baseline(runs: list[ModelRun], baseline: str, config: RunConfig) -> None:
    """Fill every run's ``comparisons`` with paired tests against the baseline, metric by metric.

    Only the ranking metrics (``metric@k`` of the protocol's metrics) are compared.
    """
    base = next((r for r in runs if r.spec.display == baseline), None)
    if base is None:
        raise ConfigError(f"baseline {baseline!r} is not among the runs")
    metrics = [
        name for name in base.result.per_user if name.split("@", 1)[0] in base.prepared.spec.metrics
    ]
    for run_ in runs:
        run_.baseline = baseline
        if run_ is base:
            continue
        out = {}
        for metric in metrics:
            try:
                out[metric] = compare_results(
                    run_.result,
                    base.result,
                    metric,
                    confidence=config.confidence,
                    n_resamples=config.n_resamples,
                    seed=config.bootstrap_seed,
                )
            except ConfigError:
                continue  # fewer than two users with values: nothing to test
        run_.comparisons = out


def run(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    data: dict[str, Any] | None = None,
    fit_progress: Callable[[str, Any], None] | None = None,
    status: StatusCallback | None = None,
    ledger_url: str | None = None,
    evaluate_progress: Callable[[str, int, int], None] | None = None,
) -> RunSummary:
    """Run every model on every protocol, compare with the baseline and write the results.

    Args:
        config: The run.
        out: Output directory (see the module docstring); ``None`` writes nothing.
        data: Protocol name → :class:`~privrank.data.Interactions` to use instead of reading
            the protocol's dataset.
        fit_progress: Called as ``fit_progress(label, FitProgress)`` during fits.
        status: Called as ``status(label, message)`` as the run proceeds.
        ledger_url: Ledger database URL that private models spend from (see
            :func:`fit_and_evaluate`; default: the default ledger).
        evaluate_progress: Called as ``evaluate_progress(label, users_done, users_total)``
            while each model scores the test users.

    Returns:
        The runs, their JSON records, the files written and the markdown.

    Raises:
        ConfigError: Unknown models or invalid parameters (all listed, before anything runs).
    """
    config.check_models()
    data = data or {}
    runs: list[ModelRun] = []
    ctr_runs: list[CTRRun] = []
    for protocol in config.protocol_specs():
        if isinstance(protocol, CTRProtocolSpec):  # the CTR protocol kind: ctr_runner
            ctr_runs.extend(_run_ctr(protocol, config, data, fit_progress, status))
            continue
        if status is not None:
            status(protocol.name, f"preparing {protocol.dataset} ({protocol.split.protocol})")
        prepared = prepare(protocol, data.get(protocol.name))
        protocol_runs = []
        for spec in config.models:
            progress = scored = None
            if fit_progress is not None:

                def progress(report: Any, label: str = spec.display) -> None:
                    fit_progress(label, report)

            if evaluate_progress is not None:

                def scored(done: int, total: int, label: str = spec.display) -> None:
                    evaluate_progress(label, done, total)

            protocol_runs.append(
                fit_and_evaluate(
                    prepared,
                    spec,
                    config,
                    fit_progress=progress,
                    status=status,
                    ledger_url=ledger_url,
                    evaluate_progress=scored,
                )
            )
        compare_with_baseline(protocol_runs, config.baseline_label, config)
        runs.extend(protocol_runs)
    return write_results(runs, config, out, ctr_runs)


def _run_ctr(
    protocol: CTRProtocolSpec,
    config: RunConfig,
    data: dict[str, Any],
    fit_progress: Callable[[str, Any], None] | None,
    status: StatusCallback | None,
) -> list[CTRRun]:
    """Every model of the run on one CTR protocol, compared with the baseline."""
    if status is not None:
        status(protocol.name, f"preparing {protocol.dataset} (CTR, seeded row split)")
    prepared = prepare_ctr(protocol, data.get(protocol.name))
    protocol_runs = []
    for spec in config.models:
        progress = None
        if fit_progress is not None:

            def progress(report: Any, label: str = spec.display) -> None:
                fit_progress(label, report)

        protocol_runs.append(
            fit_and_evaluate_ctr(prepared, spec, config, fit_progress=progress, status=status)
        )
    compare_ctr_runs(protocol_runs, config.baseline_label, config)
    return protocol_runs


def write_results(
    runs: list[ModelRun],
    config: RunConfig,
    out: str | Path | None,
    ctr_runs: list[CTRRun] | None = None,
) -> RunSummary:
    """Build the JSON records and markdown of ``runs`` (and of CTR runs) and write them under
    ``out`` (if given)."""
    ctr_runs = ctr_runs or []
    records = [result_record(r, config) for r in runs]
    ctr_records = [ctr_record(r, config) for r in ctr_runs]
    markdown = markdown_summary(records) if records else ""
    if ctr_records:
        markdown += ctr_markdown(ctr_records)
    records += ctr_records
    files: list[Path] = []
    if out is not None:
        out = Path(out)
        for run_, record in zip(runs, records, strict=False):
            folder = out / safe_name(run_.prepared.spec.name)
            stem = safe_name(run_.spec.display)
            _write_per_user(run_, folder / f"{stem}.per_user.parquet")
            path = folder / f"{stem}.json"
            write_json(path, record)
            files.append(path)
        for ctr_run, record in zip(ctr_runs, ctr_records, strict=True):
            files.append(write_ctr_files(ctr_run, record, out))
        with atomic_file(out / "results.md", encoding="utf-8") as handle:
            handle.write(markdown)
        write_json(
            out / "summary.json",
            {
                "format": "privrank.run",
                "version": RESULT_VERSION,
                "config": config.model_dump(mode="json"),
                "results": [str(p.relative_to(out)) for p in files],
            },
        )
    return RunSummary(runs=runs, records=records, files=files, markdown=markdown, out=out)


def result_record(run_: ModelRun, config: RunConfig) -> dict[str, Any]:
    """The JSON result of one model run (see the module docstring)."""
    prepared, result = run_.prepared, run_.result
    described = prepared.describe()
    summary = result.to_dict()
    record: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **described,
        "model": {
            "name": run_.spec.name,
            "label": run_.spec.display,
            "config": run_.model.config.model_dump(mode="json"),
            "fit_seed": config.seed,
            "threads": config.threads,
            "history_mode": run_.history_mode,
        },
        "headline": list(prepared.spec.headline),
        "evaluation": {
            "protocol": summary["protocol"],
            "config": summary["config"],
            "counts": summary["counts"],
        },
        "metrics": {name: ci.to_dict() for name, ci in run_.intervals.items()},
        "aggregate": dict(result.aggregate),
        "timing": {
            "fit_s": run_.fit_seconds,
            "evaluate_s": run_.evaluate_seconds,
            **summary["timing"],
        },
        "baseline": run_.baseline,
        "comparisons": {name: c.to_dict() for name, c in run_.comparisons.items()},
        "per_user_file": f"{safe_name(run_.spec.display)}.per_user.parquet",
        "bootstrap": {
            "confidence": config.confidence,
            "n_resamples": config.n_resamples,
            "seed": config.bootstrap_seed,
        },
        "versions": library_versions(),
        "environment": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    record.update(run_.extra)
    return record


def _write_per_user(run_: ModelRun, path: Path) -> None:
    result = run_.result
    user_ids = run_.prepared.test.user_ids.take(pa.array(result.users))
    columns: dict[str, Any] = {"user": user_ids, "user_code": pa.array(result.users)}
    columns.update({name: pa.array(values) for name, values in result.per_user.items()})
    table = pa.table(columns)
    with atomic_file(path, mode="wb") as handle:
        pq.write_table(table, handle)
