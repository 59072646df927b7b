"""The CTR data sets on hand, by name, and the seeded splits of their rows.

:data:`CTR_DATASETS` names each data set's folder under ``PRIVRANK_DATA_DIR``, its files (one per
shipped part) and format (:mod:`privrank.data.readers.ctr`), and the verified row and click
counts of its README. :func:`load_ctr_parts` reads the parts strictly (or quarantining).

:class:`CTRSplit` is a seeded split of those parts into train / validation / test:

- ``pool`` parts are concatenated (in the order given) and their rows permuted with
  ``numpy.random.default_rng(seed)``; the first ``train`` fraction of the permutation is train,
  the next ``validation`` fraction validation, the rest test (``round`` of the fraction times
  the rows);
- ``test_part``: a part kept whole as the test set (a later day, as iPinYou's); the pooled rows
  are then split into train and validation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from privrank.data._config import FrozenConfig
from privrank.data.features import CTRFrame
from privrank.data.readers.ctr import CTRFormat, read_ctr
from privrank.errors import ConfigError, DatasetUnavailableError
from privrank.settings import data_dir

__all__ = [
    "CTR_DATASETS",
    "CTRDataset",
    "CTRSplit",
    "CTRSplitParts",
    "ctr_dataset_dir",
    "load_ctr_parts",
    "split_ctr",
]


@dataclass(frozen=True)
class CTRDataset:
    """A CTR data set as shipped under ``PRIVRANK_DATA_DIR``.

    Attributes:
        folder: Folder name under ``PRIVRANK_DATA_DIR``.
        format: Reader format.
        parts: Part name → file name.
        counts: Part name → ``(rows, clicks)`` from the data set's README.
        description: One line.
    """

    folder: str
    format: CTRFormat
    parts: dict[str, str]
    counts: dict[str, tuple[int, int]]
    description: str


CTR_DATASETS: dict[str, CTRDataset] = {
    "frappe": CTRDataset(
        "frappe-nfm",
        "frappe",
        {"validation": "frappe.validation.libfm", "test": "frappe.test.libfm"},
        {"validation": (57_722, 19_063), "test": (28_860, 9_536)},
        "frappe (NFM libFM): the validation and test parts of frappe_x1 only (86,582 rows)",
    ),
    "ipinyou": CTRDataset(
        "ipinyou-ctr-sample",
        "ipinyou",
        {"train": "train.fm.txt", "test": "test.fm.txt"},
        {"train": (26_773, 255), "test": (21_150, 50)},
        "iPinYou sample, advertiser 2997: weekday 2 train, weekday 5 test",
    ),
    "criteo-sample": CTRDataset(
        "ctr-raw-samples-deepctr",
        "criteo",
        {"all": "criteo_sample.txt"},
        {"all": (200, 49)},
        "Criteo raw layout, 200 rows (DeepCTR's schema fixture)",
    ),
    "avazu-sample": CTRDataset(
        "ctr-raw-samples-deepctr",
        "avazu",
        {"all": "avazu_sample.txt"},
        {"all": (100, 20)},
        "Avazu raw layout, 100 rows (DeepCTR's schema fixture)",
    ),
}


def ctr_dataset_dir(name: str) -> Path:
    """The folder of a CTR data set under ``PRIVRANK_DATA_DIR``.

    Raises:
        ConfigError: Unknown name.
        DatasetUnavailableError: ``PRIVRANK_DATA_DIR`` unset or the folder missing.
    """
    try:
        spec = CTR_DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown CTR data set {name!r}; known: {', '.join(CTR_DATASETS)}"
        ) from None
    root = data_dir()
    folder = None if root is None else root / spec.folder
    if folder is None or not folder.is_dir():
        raise DatasetUnavailableError(
            f"CTR data set {name!r} not found: put its files ({', '.join(spec.parts.values())}) "
            f"in $PRIVRANK_DATA_DIR/{spec.folder}/ (PRIVRANK_DATA_DIR is "
            f"{'unset' if root is None else root})",
            path=folder,
        )
    return folder


def load_ctr_parts(
    name: str, on_error: Literal["strict", "quarantine"] = "strict"
) -> dict[str, CTRFrame]:
    """Read every part of a CTR data set (strict validation by default)."""
    spec = CTR_DATASETS.get(name)
    folder = ctr_dataset_dir(name)
    assert spec is not None
    return {
        part: read_ctr(folder / file, spec.format, on_error=on_error, name=name).frame
        for part, file in spec.parts.items()
    }


class CTRSplit(FrozenConfig):
    """A seeded row split of a CTR data set's parts (see the module docstring).

    Attributes:
        pool: Parts whose rows are pooled and permuted.
        train: Fraction of the pooled rows for training.
        validation: Fraction for validation (early stopping, calibration, tuning).
        test_part: A part kept whole as the test set; then ``train + validation`` must be 1.
        seed: Seed of the permutation.
    """

    pool: tuple[str, ...] = Field(min_length=1)
    train: float = Field(gt=0, lt=1)
    validation: float = Field(gt=0, lt=1)
    test_part: str | None = None
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fractions(self) -> CTRSplit:
        total = self.train + self.validation
        if self.test_part is None and total >= 1:
            raise ValueError(f"train + validation must leave rows for test; got {total}")
        if self.test_part is not None and abs(total - 1) > 1e-9:
            raise ValueError(f"with a test part, train + validation must be 1; got {total}")
        return self


@dataclass(frozen=True)
class CTRSplitParts:
    """The three parts of a :class:`CTRSplit`."""

    train: CTRFrame
    validation: CTRFrame
    test: CTRFrame

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows and clicks of each part."""
        return {
            name: {"rows": len(part), "clicks": int(part.labels.sum())}
            for name, part in (("train", self.train), ("validation", self.validation),
                               ("test", self.test))
        }  # fmt: skip


def split_ctr(parts: dict[str, CTRFrame], spec: CTRSplit) -> CTRSplitParts:
    """Split a data set's parts by ``spec``.

    Raises:
        ConfigError: A part the spec names is not there.
    """
    missing = [p for p in (*spec.pool, spec.test_part) if p is not None and p not in parts]
    if missing:
        raise ConfigError(f"split names parts {missing}; the data set has {sorted(parts)}")
    pooled = CTRFrame.concat([parts[p] for p in spec.pool])
    n = len(pooled)
    order = np.random.default_rng(spec.seed).permutation(n)
    n_train = round(spec.train * n)
    n_valid = n - n_train if spec.test_part else round(spec.validation * n)
    train = pooled.take(order[:n_train])
    valid = pooled.take(order[n_train : n_train + n_valid])
    test = parts[spec.test_part] if spec.test_part else pooled.take(order[n_train + n_valid :])
    return CTRSplitParts(train, valid, test)
