"""``privrank train --model deepfm --data frappe``: fit a CTR ranker on a CTR protocol.

``privrank train`` hands a CTR ranker (``logistic``, ``fm``, ``deepfm``, ``dcn-v2``,
``finalmlp``, ``lightgbm``, ``deepctr-deepfm``, ``deepctr-dcn``) here. The ranker is fitted on the
protocol's ``train`` part with early stopping on the validation log loss and calibrated on the
validation part (:mod:`privrank.ranking.ctr`); the output directory holds

- ``ranker/``: the saved ranker (JSON + safetensors, checksummed; :func:`load_ranker` reads it);
- ``training.json``: the ranker and its config, seed, threads, fit time, the protocol, split and
  row counts, the per-epoch history and the validation AUC and log loss.

Tuning and private fits are refused for CTR rankers (exit code 2): no CTR ranker trains with
differential privacy yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privrank.cli._console import ProgressTask, make_console, progress, status
from privrank.errors import ConfigError

__all__ = ["RANKER_DIR", "train_ctr"]

RANKER_DIR = "ranker"


def train_ctr(
    data: str,
    model: str,
    params: dict[str, Any],
    out: Path,
    *,
    seed: int,
    threads: int,
    private: bool,
    tune: str | None,
) -> None:
    """Fit a CTR ranker on a CTR protocol and write ``out/ranker`` and ``out/training.json``.

    Raises:
        ConfigError: Not a CTR protocol, tuning or privacy asked for, ``out`` occupied, or
            invalid parameters (all before any data is read).
    """
    from privrank.metrics.ctr import auc, log_loss
    from privrank.models import FitOptions
    from privrank.ranking.ctr import create_ranker
    from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, prepare_ctr
    from privrank.workflow.records import library_versions, write_json

    if private:
        raise ConfigError(f"{model} is a CTR ranker: none trains with differential privacy yet")
    if tune is not None:
        raise ConfigError(f"--tune is not available for the CTR ranker {model} yet")
    if data not in CTR_PROTOCOLS:
        raise ConfigError(
            f"--data {data!r}: {model} is a CTR ranker and trains on a CTR protocol "
            f"({', '.join(CTR_PROTOCOLS)})"
        )
    ranker = create_ranker(model, params)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not empty; refusing to replace it")
    console = make_console()
    with status(f"loading {data}"):
        prepared = prepare_ctr(CTR_PROTOCOLS[data])
    bar: list[ProgressTask] = []

    def report(update: Any) -> None:
        info = ({} if update.loss is None else {"loss": update.loss}) | dict(update.metrics)
        bar[0].update(update.epoch, update.epochs, **info)

    with progress("epoch", f"fitting {model}", unit="epochs") as task:
        bar.append(task)
        ranker.fit(
            prepared.train,
            prepared.validation,
            FitOptions(seed=seed, threads=threads, progress=report),
        )
    p = ranker.predict_proba(prepared.validation)
    y = prepared.validation.labels
    ranker.save(out / RANKER_DIR)
    record = {
        "format": "privrank.ctr-training",
        "version": 1,
        "ranker": model,
        "config": ranker.config.model_dump(mode="json"),
        "seed": seed,
        "threads": threads,
        "fit_seconds": ranker.fit_seconds_,
        **prepared.describe(),
        "history": ranker.history_,
        "validation": {"auc": auc(y, p), "log_loss": log_loss(y, p), "calibrated": True},
        "versions": library_versions(),
    }
    write_json(out / "training.json", record)
    console.print(
        f"{model} fitted on {len(prepared.train):,} rows of {data} in "
        f"{ranker.fit_seconds_:.1f} s; validation AUC {record['validation']['auc']:.4f}, "
        f"log loss {record['validation']['log_loss']:.4f}; saved to {out / RANKER_DIR}",
        highlight=False,
        soft_wrap=True,
    )
