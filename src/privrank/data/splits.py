"""Splits: train, test and (per protocol) validation or fold-in parts of a dataset.

Four protocols, each a frozen pydantic spec; :data:`SplitSpec` is their discriminated union
(``protocol`` field):

- :class:`HoldoutSplit` — per-user random holdout of a fraction of each user's rows.
- :class:`LeaveLastOut` — each user's last ``k`` rows (by time, or by position without
  timestamps) are test, the row before them validation.
- :class:`TemporalSplit` — one global cut in time: rows before it train, rows at or after test.
- :class:`StrongGeneralization` — a random subset of users is held out entirely; each held-out
  user's history is split into a fold-in part (given to the model at query time) and a test part.

Guarantees of :func:`split`:

- Every input row lands in exactly one part (train, validation, test, fold-in, or ``dropped``;
  see below), so the parts are disjoint and together equal the input; nothing of test ever
  leaks into train.
- All parts share the input's id maps (the same vocabulary and codes); nothing is compacted.
- Random protocols are deterministic by seed and use per-row keys that depend only on the seed,
  the user's code and the row's rank within that user (``privrank.data._ordering``): one user's
  split never depends on other users' rows or on the order of rows in the file.
- Users and items of an evaluation part (validation, test, fold-in) that have no row in train are
  counted per part. With ``unseen="keep"`` (default) those rows stay; with ``unseen="drop"`` they
  move to the ``dropped`` part, which is kept and saved, never discarded. In strong
  generalization the held-out users are unseen by design, so only items are checked there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from privrank.atomic import atomic_directory
from privrank.data._config import FrozenConfig, validate_as
from privrank.data._ordering import (
    PURPOSE_HOLDOUT,
    PURPOSE_STRONG_ROWS,
    PURPOSE_STRONG_USERS,
    random_keys,
    rank_within_user,
)
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.errors import ArtifactError, ConfigError, DataError

__all__ = [
    "PART_NAMES",
    "HoldoutSplit",
    "LeaveLastOut",
    "PartCounts",
    "SourceInfo",
    "Split",
    "SplitSpec",
    "StrongGeneralization",
    "TemporalSplit",
    "assign_labels",
    "fingerprint",
    "parse_split_spec",
    "split",
]

SPLIT_FORMAT = "privrank-split"
SPLIT_VERSION = 1
_SPLIT_FILE = "split.json"

TRAIN, VALIDATION, TEST, FOLD_IN, DROPPED = 0, 1, 2, 3, 4
PART_NAMES: tuple[str, ...] = ("train", "validation", "fold_in", "test", "dropped")
_LABELS = {
    "train": TRAIN,
    "validation": VALIDATION,
    "fold_in": FOLD_IN,
    "test": TEST,
    "dropped": DROPPED,
}
_EVALUATION_PARTS = (VALIDATION, TEST, FOLD_IN)

Seed = Annotated[int, Field(ge=0, lt=2**64)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


# ------------------------------------------------------------------------ specs
class _SpecBase(FrozenConfig):
    unseen: Literal["keep", "drop"] = "keep"


class HoldoutSplit(_SpecBase):
    """Per-user random holdout.

    User ``u`` with ``n_u`` rows puts ``min(floor(fraction * n_u + 0.5), n_u - 1)`` rows in test
    (round half up, in float64), chosen uniformly at random without replacement by ``seed``;
    so a user with ≥ 2 rows always keeps at least one train row and a single-row user is train
    only.

    Attributes:
        fraction: Share of each user's rows that goes to test, in (0, 1).
        seed: Seed of the random choice.
        unseen: ``keep`` or ``drop`` test rows whose item has no train row.
    """

    protocol: Literal["holdout"] = "holdout"
    fraction: Fraction = 0.2
    seed: Seed = 0


class LeaveLastOut(_SpecBase):
    """Leave the last ``k`` rows of each user out (and the one before them, for validation).

    Rows are ordered per user by timestamp, ties (and data without timestamps) by row position.
    A user needs at least ``k + 2`` rows (``k + 1`` without validation) to contribute test rows;
    shorter users stay entirely in train and are counted in ``details["users_train_only"]``.

    Attributes:
        k: Test rows per user (≥ 1).
        validation: Put the row just before the test rows in validation.
        unseen: ``keep`` or ``drop`` evaluation rows whose item has no train row.
    """

    protocol: Literal["leave-last-out"] = "leave-last-out"
    k: int = Field(default=1, ge=1)
    validation: bool = True


class TemporalSplit(_SpecBase):
    """A global cut in time: rows with ``timestamp < cut`` train, the others test.

    Give either ``cut`` (a timestamp) or ``quantile`` q: the cut is then the timestamp of the
    row at 0-based position ``floor(q * n)`` in time order, so train holds at most
    ``floor(q * n)`` rows (fewer when rows tie at the cut: all tied rows go to test).

    Attributes:
        cut: Cut timestamp (seconds since the epoch).
        quantile: Share of rows, in (0, 1), before the cut.
        unseen: ``keep`` or ``drop`` test rows whose user or item has no train row.
    """

    protocol: Literal["temporal"] = "temporal"
    cut: int | None = None
    quantile: Fraction | None = None

    @model_validator(mode="after")
    def _one_cut(self) -> TemporalSplit:
        if (self.cut is None) == (self.quantile is None):
            raise ValueError("give exactly one of cut (a timestamp) and quantile")
        return self


class StrongGeneralization(_SpecBase):
    """Held-out users: train on the others, fold in part of each held-out history, test the rest.

    Users with at least 2 rows are eligible. ``round(test_fraction * eligible)`` of them (round
    half up; at least 1, and at most all active users but one) are held out, chosen uniformly at
    random by ``seed``. A held-out user with ``n`` rows puts ``min(max(floor(fold_in_fraction * n
    + 0.5), 1), n - 1)`` randomly chosen rows in fold-in and the others (at least one) in test.

    Attributes:
        test_fraction: Share of eligible users held out, in (0, 1).
        fold_in_fraction: Share of a held-out user's rows in fold-in, in (0, 1).
        seed: Seed of both random choices.
        unseen: ``keep`` or ``drop`` fold-in and test rows whose item has no train row.
    """

    protocol: Literal["strong"] = "strong"
    test_fraction: Fraction = 0.2
    fold_in_fraction: Fraction = 0.8
    seed: Seed = 0


SplitSpec = Annotated[
    HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization,
    Field(discriminator="protocol"),
]


def parse_split_spec(
    data: Any,
) -> HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization:
    """Validate a spec given as a dict (``{"protocol": "holdout", ...}``) or a spec object.

    Raises:
        ConfigError: Unknown protocol or invalid parameters (names each one, e.g.
            ``HoldoutSplit.fraction: got 1.5; Input should be less than 1``).
    """
    if isinstance(data, HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization):
        return data
    if isinstance(data, dict) and data.get("protocol") in _SPEC_TYPES:
        return _SPEC_TYPES[data["protocol"]](**data)
    return validate_as(SplitSpec, data, "SplitSpec")


_SPEC_TYPES: dict[str, type[HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization]] = {
    "holdout": HoldoutSplit,
    "leave-last-out": LeaveLastOut,
    "temporal": TemporalSplit,
    "strong": StrongGeneralization,
}


# ------------------------------------------------------------------------ results
@dataclass(frozen=True)
class PartCounts:
    """Sizes of one part and what it held that train has not seen.

    Attributes:
        rows: Rows in the part (after any dropping).
        users: Distinct users with rows in the part.
        items: Distinct items with rows in the part.
        unseen_users: Distinct users of the part with no train row (found before dropping).
        unseen_items: Distinct items of the part with no train row (found before dropping).
        unseen_rows: Rows whose user or item had no train row (found before dropping).
        dropped_rows: Of those, rows moved to the ``dropped`` part (``unseen="drop"``).
        pairs_in_train: Rows of the part (after dropping) whose (user, item) pair also has a
            train row. Only repeated pairs in the input cause this; it is counted, not
            changed (apply ``deduplicate`` before splitting to rule it out).
    """

    rows: int
    users: int
    items: int
    unseen_users: int = 0
    unseen_items: int = 0
    unseen_rows: int = 0
    dropped_rows: int = 0
    pairs_in_train: int = 0


@dataclass(frozen=True)
class SourceInfo:
    """The dataset a split was made from.

    Attributes:
        name: Its metadata name.
        fingerprint: :func:`fingerprint` of it (SHA-256 over columns and id maps).
        rows: Its number of rows.
        users: Size of its user vocabulary.
        items: Size of its item vocabulary.
    """

    name: str
    fingerprint: str
    rows: int
    users: int
    items: int


@dataclass(frozen=True)
class Split:
    """The parts of a split, its spec and its counts.

    Attributes:
        spec: The protocol and its parameters.
        train: Training rows.
        test: Test rows.
        validation: Validation rows (leave-last-out with validation), else ``None``.
        fold_in: Fold-in rows of held-out users (strong generalization), else ``None``.
        dropped: Evaluation rows with unseen users/items when ``spec.unseen == "drop"``
            (possibly empty), else ``None``.
        counts: :class:`PartCounts` per present part, keyed by part name.
        details: Protocol-specific facts (users left train-only, the cut, held-out users).
        source: The dataset the split was made from.
    """

    spec: HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization
    train: Interactions
    test: Interactions
    validation: Interactions | None
    fold_in: Interactions | None
    dropped: Interactions | None
    counts: dict[str, PartCounts]
    source: SourceInfo
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The spec's seed, or ``None`` for deterministic protocols."""
        return getattr(self.spec, "seed", None)

    def parts(self) -> dict[str, Interactions]:
        """The present parts, in the order train, validation, fold_in, test, dropped."""
        found = {name: getattr(self, name) for name in PART_NAMES}
        return {name: part for name, part in found.items() if part is not None}

    @classmethod
    def _from_parts(
        cls,
        spec: HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization,
        parts: dict[str, Interactions],
        counts: dict[str, PartCounts],
        source: SourceInfo,
        details: dict[str, Any],
    ) -> Split:
        """The split holding ``parts`` keyed by part name (the inverse of :meth:`parts`)."""
        return cls(
            spec=spec,
            train=parts["train"],
            test=parts["test"],
            validation=parts.get("validation"),
            fold_in=parts.get("fold_in"),
            dropped=parts.get("dropped"),
            counts=counts,
            source=source,
            details=details,
        )

    def check_source(self, data: Interactions) -> None:
        """Raise :class:`ArtifactError` unless ``data`` is the dataset this split came from."""
        actual = fingerprint(data)
        if actual != self.source.fingerprint:
            raise ArtifactError(
                f"split of dataset {self.source.name!r} was made from fingerprint "
                f"{self.source.fingerprint[:16]}…, this dataset has {actual[:16]}…"
            )

    # -------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write every part (as :meth:`Interactions.save`) and ``split.json``, atomically.

        ``split.json`` holds the spec, the seed, the counts, the details and the source
        dataset's name, size and fingerprint. The directory is assembled under a temporary name
        and renamed into place, so a crash never leaves a half-written split.
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            for name, part in self.parts().items():
                part.save(tmp / name)
            manifest = {
                "format": SPLIT_FORMAT,
                "version": SPLIT_VERSION,
                "protocol": self.spec.protocol,
                "seed": self.seed,
                "spec": self.spec.model_dump(mode="json"),
                "source": asdict(self.source),
                "parts": {name: asdict(c) for name, c in self.counts.items()},
                "details": self.details,
            }
            (tmp / _SPLIT_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        """Read a split written by :meth:`save`.

        Checks the format and version, that every listed part is there with the recorded row
        count, that all parts share one vocabulary (they are re-linked to the same id map
        objects), and that the parts add up to the source's row count.

        Raises:
            ArtifactError: Anything missing, inconsistent or of another version.
        """
        directory = Path(directory)
        path = directory / _SPLIT_FILE
        if not path.is_file():
            raise ArtifactError(f"{directory} is not a privrank split: {_SPLIT_FILE} is missing")
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != SPLIT_FORMAT:
                raise ArtifactError(f"{path}: format {manifest.get('format')!r} is not a split")
            if manifest.get("version") != SPLIT_VERSION:
                raise ArtifactError(
                    f"{path}: split version {manifest.get('version')}, "
                    f"this privrank reads version {SPLIT_VERSION}"
                )
            spec = parse_split_spec(manifest["spec"])
            source = SourceInfo(**manifest["source"])
            counts = {name: PartCounts(**c) for name, c in manifest["parts"].items()}
            details = manifest.get("details", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot read {path}: {exc}") from exc
        unknown = set(counts) - set(PART_NAMES)
        if unknown or not {"train", "test"} <= set(counts):
            raise ArtifactError(f"{path}: bad part list {sorted(counts)}")
        parts: dict[str, Interactions] = {}
        for name in PART_NAMES:
            if name not in counts:
                continue
            part = Interactions.load(directory / name)
            if len(part) != counts[name].rows:
                raise ArtifactError(
                    f"{path}: part {name} should hold {counts[name].rows} rows, holds {len(part)}"
                )
            parts[name] = part
        train = parts["train"]
        for name, part in parts.items():
            if not (part.user_ids.equals(train.user_ids) and part.item_ids.equals(train.item_ids)):
                raise ArtifactError(f"{directory}: part {name} has other id maps than train")
            parts[name] = Interactions(part.table, train.user_ids, train.item_ids, part.metadata)
        total = sum(len(part) for part in parts.values())
        if total != source.rows:
            raise ArtifactError(
                f"{path}: parts hold {total} rows, the source dataset had {source.rows}"
            )
        return cls._from_parts(spec, parts, counts, source, details)


# ------------------------------------------------------------------------ splitting
def split(
    data: Interactions,
    spec: HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization | dict[str, Any],
) -> Split:
    """Split a dataset by a protocol.

    Args:
        data: The dataset (typically curated and compacted).
        spec: A spec object or its dict form.

    Returns:
        The :class:`Split`; see the module docstring for its guarantees.

    Raises:
        ConfigError: Invalid spec, or a protocol that needs timestamps on data without them.
        DataError: The data cannot be split this way (empty, or train or test would be empty).
    """
    spec = parse_split_spec(spec)
    if len(data) == 0:
        raise DataError(f"cannot split dataset {data.metadata.name!r}: it has no rows")
    labels, details = assign_labels(data, spec)
    for label, name in ((TRAIN, "train"), (TEST, "test")):
        if not np.any(labels == label):
            raise DataError(
                f"{spec.protocol} split of dataset {data.metadata.name!r} leaves {name} empty",
                value=spec.model_dump(),
                expected=f"parameters that put rows in {name}",
            )
    unseen = _handle_unseen(data, labels, spec)

    present = {TRAIN, TEST}
    if isinstance(spec, LeaveLastOut) and spec.validation:
        present.add(VALIDATION)
    if isinstance(spec, StrongGeneralization):
        present.add(FOLD_IN)
    if spec.unseen == "drop":
        present.add(DROPPED)
    parts: dict[str, Interactions] = {}
    counts: dict[str, PartCounts] = {}
    for name in PART_NAMES:
        label = _LABELS[name]
        if label not in present:
            continue
        part = data.take(labels == label)
        parts[name] = part
        counts[name] = PartCounts(
            rows=len(part),
            users=part.n_active_users(),
            items=part.n_active_items(),
            **unseen.get(label, {}),
        )
    source = SourceInfo(
        name=data.metadata.name,
        fingerprint=fingerprint(data),
        rows=len(data),
        users=data.n_users,
        items=data.n_items,
    )
    return Split._from_parts(spec, parts, counts, source, details)


def assign_labels(
    data: Interactions, spec: HoldoutSplit | LeaveLastOut | TemporalSplit | StrongGeneralization
) -> tuple[np.ndarray, dict[str, Any]]:
    """The part label of every row (``TRAIN``, ``VALIDATION``, ``TEST``, ``FOLD_IN``) and details.

    The first step of :func:`split`, before unseen rows are handled. For ``holdout`` and
    ``leave_last_out`` a user's labels depend only on that user's rows, its code and the seed,
    and the details are sums over users: running this on disjoint groups of whole users (with
    the full vocabulary) gives the same labels and summable details (the Ray Data engine relies
    on it).
    """
    match spec:
        case HoldoutSplit():
            return _assign_holdout(data, spec)
        case LeaveLastOut():
            return _assign_leave_last_out(data, spec)
        case TemporalSplit():
            return _assign_temporal(data, spec)
        case StrongGeneralization():
            return _assign_strong(data, spec)
    raise ConfigError(f"unknown split spec {spec!r}")


def _assign_holdout(data: Interactions, spec: HoldoutSplit) -> tuple[np.ndarray, dict]:
    counts = data.user_counts()
    n_test = np.minimum(np.floor(spec.fraction * counts + 0.5), np.maximum(counts - 1, 0))
    labels = _random_prefix(data, counts, n_test.astype(np.int64), spec.seed, PURPOSE_HOLDOUT)
    labels = np.where(labels, TEST, TRAIN).astype(np.int8)
    users_train_only = int(np.count_nonzero((counts > 0) & (n_test == 0)))
    return labels, {"users_train_only": users_train_only}


def _assign_leave_last_out(data: Interactions, spec: LeaveLastOut) -> tuple[np.ndarray, dict]:
    counts = data.user_counts()
    order = data.sorted_order()
    users_sorted = data.users()[order]
    from_end = counts[users_sorted] - 1 - rank_within_user(users_sorted, counts)
    needed = spec.k + (2 if spec.validation else 1)
    eligible = counts[users_sorted] >= needed
    labels = np.full(len(data), TRAIN, dtype=np.int8)
    labels[order[eligible & (from_end < spec.k)]] = TEST
    if spec.validation:
        labels[order[eligible & (from_end == spec.k)]] = VALIDATION
    users_train_only = int(np.count_nonzero((counts > 0) & (counts < needed)))
    return labels, {"users_train_only": users_train_only}


def _assign_temporal(data: Interactions, spec: TemporalSplit) -> tuple[np.ndarray, dict]:
    timestamps = data.timestamps()
    if timestamps is None:
        raise ConfigError(
            f"temporal split: dataset {data.metadata.name!r} has no timestamp column; "
            "use leave-last-out or holdout"
        )
    if spec.cut is not None:
        cut = int(spec.cut)
    elif spec.quantile is not None:
        position = min(int(np.floor(spec.quantile * len(data))), len(data) - 1)
        cut = int(np.partition(timestamps, position)[position])
    else:  # TemporalSplit's validator requires one of them
        raise ConfigError("temporal split: give exactly one of cut (a timestamp) and quantile")
    labels = np.where(timestamps >= cut, TEST, TRAIN).astype(np.int8)
    details = {
        "cut": cut,
        "first_timestamp": int(timestamps.min()),
        "last_timestamp": int(timestamps.max()),
    }
    return labels, details


def _assign_strong(data: Interactions, spec: StrongGeneralization) -> tuple[np.ndarray, dict]:
    counts = data.user_counts()
    eligible = np.flatnonzero(counts >= 2)
    active = int(np.count_nonzero(counts))
    if len(eligible) == 0 or active < 2:
        raise DataError(
            f"strong generalization of dataset {data.metadata.name!r}: no user can be held out",
            value={"active_users": active, "users_with_2_rows": len(eligible)},
            expected="at least 2 active users, one of them with 2 or more rows",
        )
    wanted = int(np.floor(spec.test_fraction * len(eligible) + 0.5))
    n_held = min(max(wanted, 1), len(eligible), active - 1)
    user_keys = random_keys(
        spec.seed, PURPOSE_STRONG_USERS, eligible, np.zeros(len(eligible), dtype=np.int64)
    )
    held = eligible[np.argsort(user_keys, kind="stable")[:n_held]]
    held_mask = np.zeros(data.n_users, dtype=bool)
    held_mask[held] = True

    n_fold = np.clip(np.floor(spec.fold_in_fraction * counts + 0.5), 1, np.maximum(counts - 1, 1))
    n_fold = np.where(held_mask, n_fold, 0).astype(np.int64)
    in_fold = _random_prefix(data, counts, n_fold, spec.seed, PURPOSE_STRONG_ROWS)
    labels = np.full(len(data), TRAIN, dtype=np.int8)
    row_held = held_mask[data.users()]
    labels[row_held] = TEST
    labels[row_held & in_fold] = FOLD_IN
    return labels, {"eligible_users": len(eligible), "held_out_users": n_held}


def _random_prefix(
    data: Interactions, counts: np.ndarray, per_user: np.ndarray, seed: int, purpose: int
) -> np.ndarray:
    """Mask of ``per_user[u]`` rows of each user ``u``, chosen uniformly at random by seed.

    Each row's key is a function of (seed, purpose, user, rank of the row in the user's
    time-then-position order); the rows with the smallest keys are chosen.
    """
    order = data.sorted_order()
    users_sorted = data.users()[order]
    keys = random_keys(seed, purpose, users_sorted, rank_within_user(users_sorted, counts))
    by_key = np.lexsort((keys, users_sorted))
    chosen_sorted = np.zeros(len(data), dtype=bool)
    chosen_sorted[by_key] = (
        rank_within_user(users_sorted[by_key], counts) < per_user[users_sorted[by_key]]
    )
    mask = np.zeros(len(data), dtype=bool)
    mask[order] = chosen_sorted
    return mask


def _handle_unseen(data: Interactions, labels: np.ndarray, spec: Any) -> dict[int, dict[str, int]]:
    """Count (and with ``unseen="drop"`` relabel as dropped) evaluation rows unseen in train.

    Also counts evaluation rows whose (user, item) pair has a train row. ``labels`` is changed
    in place.
    """
    users, items = data.users(), data.items()
    train = labels == TRAIN
    seen_users = np.bincount(users[train], minlength=data.n_users) > 0
    seen_items = np.bincount(items[train], minlength=data.n_items) > 0
    check_users = not isinstance(spec, StrongGeneralization)
    row_unseen_user = ~seen_users[users] if check_users else np.zeros(len(data), dtype=bool)
    row_unseen_item = ~seen_items[items]
    out: dict[int, dict[str, int]] = {}
    for label in _EVALUATION_PARTS:
        in_part = labels == label
        if not in_part.any():
            continue
        bad_user = in_part & row_unseen_user
        bad_item = in_part & row_unseen_item
        bad = bad_user | bad_item
        out[label] = {
            "unseen_users": int(np.unique(users[bad_user]).size),
            "unseen_items": int(np.unique(items[bad_item]).size),
            "unseen_rows": int(np.count_nonzero(bad)),
            "dropped_rows": int(np.count_nonzero(bad)) if spec.unseen == "drop" else 0,
        }
        if spec.unseen == "drop":
            labels[bad] = DROPPED
            in_part &= ~bad
        out[label]["pairs_in_train"] = _pairs_in_train(data, train, in_part)
    return out


def _pairs_in_train(data: Interactions, train: np.ndarray, in_part: np.ndarray) -> int:
    """Rows selected by ``in_part`` whose (user, item) pair occurs among the train rows."""
    users, items = data.users(), data.items()
    width = max(data.n_items, 1)
    train_pairs = np.unique(users[train].astype(np.int64) * width + items[train])
    part_pairs = users[in_part].astype(np.int64) * width + items[in_part]
    if len(train_pairs) == 0 or len(part_pairs) == 0:
        return 0
    position = np.minimum(np.searchsorted(train_pairs, part_pairs), len(train_pairs) - 1)
    return int(np.count_nonzero(train_pairs[position] == part_pairs))
