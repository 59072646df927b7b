"""Experiment tracking in MLflow: what ``--track mlflow`` records for evaluate, train and tune.

The CLI passes a flag; everything MLflow-specific lives here. The tracking URI is MLflow's own
``MLFLOW_TRACKING_URI`` when set, else :data:`DEFAULT_TRACKING_URI` (a SQLite store in the
working directory; artifacts go to MLflow's default ``./mlruns``). Runs go to the experiment
named by ``MLFLOW_EXPERIMENT_NAME``, else :data:`DEFAULT_EXPERIMENT`.

What a run holds (read it back with :class:`mlflow.tracking.MlflowClient`, or in the MLflow UI
started on the same store):

- **parameters**: the model's full config (``model.*``), the seed and threads, the protocol and
  its split (``split.*``), the evaluation's cutoffs and bootstrap settings;
- **metrics**: every per-user metric's estimate with its bootstrap CI (``ndcg_at_10``,
  ``ndcg_at_10.ci_low``, ``ndcg_at_10.ci_high``; MLflow refuses ``@`` in names), the paired
  difference with the baseline, catalogue metrics and timings; a fit's epoch losses and
  validation metrics by step; a tuning run's trial values by step;
- **tags**: the data fingerprints (``privrank.data.fingerprint``, the exact training rows'
  ``privrank.data.train_fingerprint``), the split in words, and the privacy guarantee
  (``privrank.privacy.*``: whether the fit was private, ε, δ, the unit of privacy, the
  contribution bound, the accountant, the ledger spend, and the guarantee in one sentence);
- **artifacts**: the result JSON and markdown, the PNG charts (``plots/``), and the model
  (``model/``). A private model is logged as its *release* artifact only (the noisy item-side
  model its guarantee covers, :meth:`~privrank.models.Recommender.save` with ``release=True``):
  its training directory holds user ids and raw histories the guarantee does not cover, and
  an experiment store is no place for them. Per-user result files (user ids) are not logged.

An evaluation with several models or protocols is one parent run with a nested run per model
and protocol (MLflow's ``mlflow.parentRunId`` tag). Runs are logged once the command's work is
done, then marked ``FINISHED``; a failure while logging marks the run ``FAILED``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from privrank.errors import ConfigError
from privrank.workflow.records import safe_name

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from privrank.models import FitProgress, Recommender
    from privrank.privacy.mechanism import PrivacyGuarantee
    from privrank.workflow.runner import ModelRun, RunSummary

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "TRACKERS",
    "MlflowTracker",
    "guarantee_tags",
    "metric_key",
    "open_tracker",
    "tracking_uri",
]

#: Where runs go when ``MLFLOW_TRACKING_URI`` is unset: a SQLite store in the working directory.
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
#: The experiment runs go to when ``MLFLOW_EXPERIMENT_NAME`` is unset.
DEFAULT_EXPERIMENT = "privrank"
#: The values of ``--track``.
TRACKERS = ("mlflow",)

_PARAM_LIMIT = 6000  # MLflow's longest parameter value


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else :data:`DEFAULT_TRACKING_URI`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def metric_key(name: str) -> str:
    """An MLflow metric name for a privrank metric: ``ndcg@10`` → ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def open_tracker(kind: str | None) -> MlflowTracker | None:
    """The tracker ``--track`` names, or ``None`` without one.

    Raises:
        ConfigError: An unknown tracker, or MLflow is not installed.
    """
    if kind is None:
        return None
    if kind not in TRACKERS:
        raise ConfigError(f"--track: expected one of {', '.join(TRACKERS)}. Got {kind!r}")
    return MlflowTracker()


def _redacted(uri: str) -> str:
    """The URI with any password replaced by ``***`` (it is printed)."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    yield prefix, text[:_PARAM_LIMIT]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def guarantee_tags(guarantee: PrivacyGuarantee | None, spend: Mapping[str, Any] | None) -> dict:
    """The ``privrank.privacy.*`` tags of a fit's guarantee.

    Args:
        guarantee: The fitted model's ``privacy_guarantee_`` (``None``: not private).
        spend: The ledger spend (``ledger_key``, ``spend_id``), if the fit spent.

    Returns:
        ``private`` (``true`` only for a genuine release: real noise from a fresh seed),
        ``statement`` (the guarantee in one sentence, or why there is none), and for a private
        fit ``unit``, ``epsilon``, ``delta``, ``mechanism``, ``accountant``,
        ``contribution_bound``, ``selection``, ``releases`` and the ledger's ``ledger_key`` and
        ``spend_id``.
    """
    if guarantee is None:
        return {
            "privrank.privacy.private": "false",
            "privrank.privacy.statement": "trained without differential privacy: no guarantee",
        }
    tags = {
        "privrank.privacy.private": str(guarantee.is_private).lower(),
        "privrank.privacy.statement": guarantee.describe(),
        "privrank.privacy.unit": guarantee.unit,
        "privrank.privacy.epsilon": repr(guarantee.epsilon),
        "privrank.privacy.delta": repr(guarantee.delta),
        "privrank.privacy.mechanism": guarantee.mechanism,
        "privrank.privacy.accountant": guarantee.accountant,
        "privrank.privacy.contribution_bound": str(guarantee.contribution_bound),
        "privrank.privacy.selection": guarantee.selection,
        "privrank.privacy.releases": str(guarantee.releases),
    }
    for key in ("ledger_key", "spend_id"):
        if spend is not None and spend.get(key) is not None:
            tags[f"privrank.privacy.{key}"] = str(spend[key])
    return tags


class MlflowTracker:
    """Logs privrank runs to an MLflow tracking store (see the module docstring).

    Args:
        uri: Tracking URI (default :func:`tracking_uri`).
        experiment: Experiment name (default ``MLFLOW_EXPERIMENT_NAME``, else
            :data:`DEFAULT_EXPERIMENT`); created when missing.

    Raises:
        ConfigError: MLflow is not installed.
    """

    def __init__(self, uri: str | None = None, experiment: str | None = None):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(
                f"--track mlflow needs MLflow ({exc.name} is not installed): "
                "pip install 'privrank[track]'"
            ) from exc
        self.uri = uri or tracking_uri()
        self.client: MlflowClient = MlflowClient(tracking_uri=self.uri)
        name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        self.experiment = name
        self.experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(name)
        )

    def describe(self, run_id: str) -> str:
        """Where a run went: ``run ID in experiment NAME (ID) at URI``."""
        where = _redacted(self.uri)
        return f"run {run_id} in experiment {self.experiment} ({self.experiment_id}) at {where}"

    # ------------------------------------------------------------------ evaluate
    def log_evaluation(
        self, summary: RunSummary, out: Path, *, images: Sequence[Path] = (), name: str = ""
    ) -> str:
        """Log an evaluation: a parent run, and a nested run per model and protocol.

        Args:
            summary: What :func:`privrank.workflow.runner.run` (or ``write_results``) returned.
            out: The run's output directory (its ``results.md``, ``summary.json`` and
                ``report.md`` are logged when present).
            images: The PNG charts, logged under ``plots/``.
            name: The parent run's name (default ``evaluate <models> on <protocols>``).

        Returns:
            The parent run's id.
        """
        runs = summary.runs
        labels = sorted({r.spec.display for r in runs})
        protocols = sorted({r.prepared.spec.name for r in runs})
        name = name or f"evaluate {', '.join(labels)} on {', '.join(protocols)}"
        tags = {"privrank.command": "evaluate", "privrank.output": str(Path(out).resolve())}
        with self._run(name, tags) as parent:
            first = summary.records[0] if summary.records else {}
            params = {
                "protocols": ",".join(protocols),
                "models": ",".join(labels),
                "baseline": str(first.get("baseline")),
                **dict(_flatten("bootstrap", first.get("bootstrap", {}))),
            }
            self._log(parent, params=params)
            for file in ("results.md", "summary.json", "report.md"):
                if (Path(out) / file).is_file():
                    self.client.log_artifact(parent, str(Path(out) / file))
            for image in images:
                self.client.log_artifact(parent, str(image), "plots")
            for run_, record in zip(runs, summary.records, strict=True):
                child = f"{run_.spec.display} on {run_.prepared.spec.name}"
                with self._run(child, {"mlflow.parentRunId": parent, **tags}) as run_id:
                    self._log_model_run(run_id, run_, record)
        return parent

    def _log_model_run(self, run_id: str, run_: ModelRun, record: dict[str, Any]) -> None:
        model = record["model"]
        params = {
            "model.name": model["name"],
            "model.label": model["label"],
            "seed": str(model["fit_seed"]),
            "threads": str(model["threads"]),
            "history_mode": model["history_mode"],
            "protocol": run_.prepared.spec.name,
            "dataset": record["dataset"]["name"],
            "cutoffs": json.dumps(record["evaluation"]["config"].get("cutoffs")),
            **dict(_flatten("model", {"config": model["config"]})),
            **dict(_flatten("split", record["split"]["spec"])),
        }
        metrics: dict[str, float] = {}
        for name, ci in record["metrics"].items():
            key = metric_key(name)
            metrics |= {
                key: ci["estimate"],
                f"{key}.ci_low": ci["low"],
                f"{key}.ci_high": ci["high"],
            }
        for name, c in record.get("comparisons", {}).items():
            key = f"vs_baseline.{metric_key(name)}"
            metrics |= {
                key: c["mean_difference"],
                f"{key}.ci_low": c["difference_ci"]["low"],
                f"{key}.ci_high": c["difference_ci"]["high"],
                f"{key}.t_pvalue": c["t_pvalue"],
                f"{key}.wilcoxon_pvalue": c["wilcoxon_pvalue"],
            }
        for name, value in record.get("aggregate", {}).items():
            metrics[f"catalog.{metric_key(name)}"] = value
        for name, value in record["evaluation"]["counts"].items():
            metrics[f"count.{name}"] = value
        for name, value in record.get("timing", {}).items():
            metrics[f"time.{name}"] = value
        privacy = record.get("privacy") or {}
        tags = {
            **self._data_tags(record["dataset"], record["split"]),
            **guarantee_tags(run_.model.privacy_guarantee_, privacy),
        }
        self._log(run_id, params=params, metrics=metrics, tags=tags)
        self._log_json(run_id, record, "result.json")
        self._log_model(run_id, run_.model)

    # ------------------------------------------------------------------ train
    def log_training(
        self,
        model: Recommender,
        record: dict[str, Any],
        directory: Path,
        progress: Sequence[FitProgress] = (),
    ) -> str:
        """Log a ``privrank train`` run: its config, data, fit curve, guarantee and model.

        Args:
            model: The fitted model.
            record: Its training record (``training.json``).
            directory: The trained-model directory written by ``privrank train``.
            progress: The fit's progress reports: each epoch's loss and validation metrics
                are logged as metrics with ``step`` = epoch.

        Returns:
            The run's id.
        """
        data, fit = record["data"], record["fit"]
        name = f"train {model.name} on {data['argument']}"
        tags = {"privrank.command": "train", "privrank.output": str(Path(directory).resolve())}
        with self._run(name, tags) as run_id:
            params = {
                "model.name": model.name,
                "seed": str(fit["seed"]),
                "threads": str(fit["threads"]),
                "history_mode": fit["history_mode"],
                "data": data["argument"],
                "data.kind": data["kind"],
                "fitted_on": data["fitted_on"],
                **dict(_flatten("model", {"config": model.config.model_dump(mode="json")})),
            }
            if data.get("protocol"):
                params["protocol"] = data["protocol"]
            if data.get("split"):
                params |= dict(_flatten("split", data["split"]))
            metrics = {"time.fit_s": fit["seconds"], "count.train_rows": data["train_rows"]}
            steps = []
            for report in progress:
                values = dict(report.metrics)
                if report.loss is not None:
                    values["loss"] = report.loss
                steps += [(metric_key(k), float(v), report.epoch) for k, v in values.items()]
            tags = {
                "privrank.data.train_fingerprint": data["train_fingerprint"],
                **self._data_tags(data.get("dataset", {}), None),
                **guarantee_tags(model.privacy_guarantee_, record.get("privacy")),
            }
            self._log(run_id, params=params, metrics=metrics, tags=tags, steps=steps)
            self._log_json(run_id, record, "training.json")
            self._log_model(run_id, model, trained_dir=Path(directory))
        return run_id

    # ------------------------------------------------------------------ tune
    def log_tuning(self, record: dict[str, Any], path: Path) -> str:
        """Log a ``privrank tune`` run: the best config and value, every trial's value by step.

        Args:
            record: The tuning record (:meth:`privrank.tuning.TuneResult.to_dict`).
            path: Where the record was saved (logged as an artifact).

        Returns:
            The run's id.
        """
        model, metric = record["model"]["name"], record["metric"]
        data = record.get("data", {})
        name = f"tune {model} ({metric} on validation)"
        tags = {"privrank.command": "tune", "privrank.output": str(Path(path).resolve())}
        with self._run(name, tags) as run_id:
            params = {
                "model.name": model,
                "metric": metric,
                **dict(_flatten("best", {"config": record["model"]["config"]})),
                **dict(_flatten("tuning", record.get("tune_config", {}))),
                **dict(_flatten("search_space", record.get("search_space", {}))),
            }
            if data.get("protocol"):
                params["protocol"] = data["protocol"]
            if data.get("split"):
                params |= dict(_flatten("split", data["split"]))
            if data.get("validation_split"):
                params |= dict(_flatten("validation_split", data["validation_split"]))
            key = f"validation.{metric_key(metric)}"
            best = record.get("best", {})
            metrics = {
                f"best.{key}": best.get("value"),
                "best.trial": best.get("trial"),
                "time.elapsed_s": record.get("elapsed_s"),
                "count.trials": len(record.get("trials", [])),
            }
            steps = [
                (key, float(trial["value"]), int(trial["number"]))
                for trial in record.get("trials", [])
                if _finite(trial.get("value"))
            ]
            tags = {
                **self._data_tags(data.get("dataset", {}), data.get("split")),
                **{
                    f"privrank.data.{part}_fingerprint": str(data[part]["fingerprint"])
                    for part in ("train", "validation")
                    if isinstance(data.get(part), Mapping) and "fingerprint" in data[part]
                },
                # Trials fit without a privacy spec (tuning on private data is not covered).
                **guarantee_tags(None, None),
            }
            self._log(run_id, params=params, metrics=metrics, tags=tags, steps=steps)
            self.client.log_artifact(run_id, str(path))
        return run_id

    # ------------------------------------------------------------------ helpers
    @contextmanager
    def _run(self, name: str, tags: Mapping[str, str]) -> Iterator[str]:
        run = self.client.create_run(self.experiment_id, tags=dict(tags), run_name=name)
        run_id: str = run.info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def _log(
        self,
        run_id: str,
        *,
        params: Mapping[str, str] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        steps: Sequence[tuple[str, float, int]] = (),
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        values = [
            Metric(key, float(value), now, 0)
            for key, value in (metrics or {}).items()
            if _finite(value)
        ] + [Metric(key, value, now, step) for key, value, step in steps if math.isfinite(value)]
        # MLflow's batch limits: 1000 metrics, 100 parameters and 100 tags per request.
        params_ = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in (params or {}).items()]
        tags_ = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        batches = max(-(-len(values) // 1000), -(-len(params_) // 100), -(-len(tags_) // 100), 1)
        for i in range(batches):
            self.client.log_batch(
                run_id,
                metrics=values[i * 1000 : (i + 1) * 1000],
                params=params_[i * 100 : (i + 1) * 100],
                tags=tags_[i * 100 : (i + 1) * 100],
            )

    @staticmethod
    def _data_tags(dataset: Mapping[str, Any], split: Mapping[str, Any] | None) -> dict:
        tags = {}
        if dataset.get("name") is not None:
            tags["privrank.data.name"] = str(dataset["name"])
        if dataset.get("fingerprint") is not None:
            tags["privrank.data.fingerprint"] = str(dataset["fingerprint"])
        if split is not None:
            spec = split.get("spec", split)
            tags["privrank.data.split"] = json.dumps(spec, sort_keys=True)
            if split.get("train_fingerprint") is not None:
                tags["privrank.data.train_fingerprint"] = str(split["train_fingerprint"])
        return tags

    def _log_json(self, run_id: str, record: Mapping[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="privrank-mlflow-") as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def _log_model(self, run_id: str, model: Recommender, trained_dir: Path | None = None) -> None:
        """Log the model under ``model/``: a private model's release artifact only."""
        guarantee = model.privacy_guarantee_
        if guarantee is None and trained_dir is not None:
            self.client.log_artifacts(run_id, str(trained_dir), "model")
            self.client.set_tag(run_id, "privrank.model_artifact", "training directory")
            return
        with tempfile.TemporaryDirectory(prefix="privrank-mlflow-") as tmp:
            target = Path(tmp) / safe_name(model.name)
            if guarantee is None:
                kind = "model (non-private: holds training users' ids and histories)"
                model.save(target)
            elif guarantee.is_private:
                kind = "release artifact (what the differential privacy guarantee covers)"
                model.save(target, release=True)
            else:
                self.client.set_tag(
                    run_id,
                    "privrank.model_artifact",
                    "not logged: a private fit with test noise (fixed seed or scaled) cannot be "
                    "released, and its full model holds raw training histories",
                )
                return
            self.client.log_artifacts(run_id, str(target), "model")
            self.client.set_tag(run_id, "privrank.model_artifact", kind)
