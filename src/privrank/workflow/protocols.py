"""Named evaluation protocols: a dataset, a split and the metrics to report, fixed by name.

A protocol turns a dataset into four parts that share one vocabulary (the dataset's id maps,
nothing compacted):

- ``train``: what a model is fitted on;
- ``validation``: held out for early stopping and tuning (``None`` when the split has none);
- ``history``: what the model knows of each user *at test time*. Its items are excluded from
  the user's ranking, and it is the history a model scores;
- ``test``: the relevant items.

The protocols of the design (``ml100k-holdout``, ``beauty-loo`` and ``video-loo``) are in
:data:`PROTOCOLS`:

``ml100k-holdout``
    MovieLens 100K, every rating an interaction (no threshold, no k-core); a per-user random
    80/20 holdout with seed 0 (:class:`~privrank.data.splits.HoldoutSplit`); full ranking over
    every item with the user's training items excluded; NDCG@10 and Recall@20 as headline
    metrics (also computed at 5, 20/10 and 50, for the curves). No validation part, so the test
    history is ``train``.

``beauty-loo``
    Amazon Beauty of S3-Rec (``Beauty.txt``): each user's last item is test, the second to last
    validation, the rest train (:class:`~privrank.data.splits.LeaveLastOut` ``k=1``). At test
    time the history **includes the validation item** (``history = train + validation``): its
    items are masked, and the model scores that history. Rank all items; HR@10 and NDCG@10.

``video-loo``
    Amazon Video Games of SASRec (``Video.txt``, 5-core, chronological per user), split and
    scored exactly as ``beauty-loo``: a second Amazon category, sparser, for checking that
    models and defaults hold up beyond Beauty.

**How the validation item enters a model's history** (protocols whose test history is more
than ``train``) is decided by the evaluation runner (:mod:`privrank.workflow.runner`), and the
default is *fold-in*: the model is fitted on ``train`` only and each test user is scored as an
ad-hoc history query (:class:`~privrank.models.Query`) holding their train items followed by the
validation item, in time order. This is the SASRec protocol (the network is trained on the
train sequences and fed the sequence up to the validation item at test time); for EASE, ItemKNN
and MostPopular fold-in is exactly what scoring a trained user does. A model that cannot fold
in (implicit's BPR) is instead refitted on ``train + validation`` and the result records it.

Custom protocols are :class:`ProtocolSpec` objects (or their dict/JSON form) naming any catalog
dataset, workspace dataset or saved dataset directory and any split spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from privrank.data._config import FrozenConfig, validate_as
from privrank.data.fingerprint import fingerprint
from privrank.data.interactions import Interactions
from privrank.data.splits import HoldoutSplit, LeaveLastOut, Split, SplitSpec, split
from privrank.errors import ConfigError
from privrank.metrics.evaluate import (
    Cutoffs,
    EvaluationConfig,
    EvaluationPairs,
    RankingMetric,
    prepare_pairs,
)
from privrank.workflow.ctr_protocols import CTR_PROTOCOLS, CTRProtocolSpec

__all__ = [
    "PROTOCOLS",
    "PreparedProtocol",
    "ProtocolSpec",
    "concatenate",
    "from_split",
    "load_dataset",
    "prepare",
    "protocol_for_split",
    "protocol_names",
    "resolve_protocol",
]


class ProtocolSpec(FrozenConfig):
    """A dataset, a split, and what to report.

    Attributes:
        name: Name of the protocol (used in result files and tables).
        dataset: A catalog name (``ml-100k``), a workspace dataset name, or a directory written
            by :meth:`Interactions.save`.
        split: The split spec (``{"protocol": "holdout", "fraction": 0.2, "seed": 0}``, ...).
        metrics: Ranking metrics computed at every cutoff.
        cutoffs: List lengths ``k`` evaluated (the curves of a report use them all).
        headline: The ``metric@k`` names a table shows (each must be computed).
        validation_in_history: At test time the history is ``train + validation`` (when the
            split has a validation part); otherwise only ``train``.
        description: One line saying what the protocol is.
    """

    name: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    split: SplitSpec
    metrics: tuple[RankingMetric, ...] = ("ndcg", "recall")
    cutoffs: Cutoffs = (5, 10, 20, 50)
    headline: tuple[str, ...] = ("ndcg@10", "recall@20")
    validation_in_history: bool = True
    description: str = ""

    @model_validator(mode="after")
    def _headline_computed(self) -> ProtocolSpec:
        computed = {f"{m}@{k}" for m in self.metrics for k in self.cutoffs}
        missing = [name for name in self.headline if name not in computed]
        if missing or not self.headline:
            raise ValueError(
                f"headline metrics {missing or '(none)'} are not computed; "
                f"with these metrics and cutoffs the choices are {sorted(computed)}"
            )
        return self

    def evaluation_config(self, **overrides: Any) -> EvaluationConfig:
        """The :class:`EvaluationConfig` of this protocol (full ranking, training items out)."""
        params: dict[str, Any] = {"cutoffs": self.cutoffs, "metrics": self.metrics}
        return EvaluationConfig(**(params | overrides))


PROTOCOLS: dict[str, ProtocolSpec] = {
    "ml100k-holdout": ProtocolSpec(
        name="ml100k-holdout",
        dataset="ml-100k",
        split=HoldoutSplit(fraction=0.2, seed=0),
        metrics=("ndcg", "recall"),
        cutoffs=(5, 10, 20, 50),
        headline=("ndcg@10", "recall@20"),
        description="ML-100K, every rating an interaction, per-user random 80/20 holdout "
        "(seed 0), full ranking with training items excluded",
    ),
    "beauty-loo": ProtocolSpec(
        name="beauty-loo",
        dataset="beauty",
        split=LeaveLastOut(k=1, validation=True),
        metrics=("hit_rate", "ndcg"),
        cutoffs=(5, 10, 20, 50),
        headline=("hit_rate@10", "ndcg@10"),
        validation_in_history=True,
        description="Amazon Beauty (S3-Rec), leave-one-out: last item test, second to last "
        "validation and part of the test-time history; all items ranked, history masked",
    ),
    "video-loo": ProtocolSpec(
        name="video-loo",
        dataset="video",
        split=LeaveLastOut(k=1, validation=True),
        metrics=("hit_rate", "ndcg"),
        cutoffs=(5, 10, 20, 50),
        headline=("hit_rate@10", "ndcg@10"),
        validation_in_history=True,
        description="Amazon Video Games (SASRec), leave-one-out as beauty-loo: last item test, "
        "second to last validation and part of the test-time history; all items ranked",
    ),
}
"""The named protocols of the design."""


def protocol_names() -> list[str]:
    """Names of the built-in protocols (recommender and CTR protocols), sorted."""
    return sorted([*PROTOCOLS, *CTR_PROTOCOLS])


#: A recommender protocol or a CTR protocol (:mod:`privrank.workflow.ctr_protocols`).
AnyProtocol = ProtocolSpec | CTRProtocolSpec


def resolve_protocol(protocol: str | AnyProtocol | dict[str, Any]) -> Any:
    """A protocol spec from a built-in name, a spec, or the dict form of one.

    CTR protocols (``frappe``, ``ipinyou``, or a dict with ``kind: "ctr"``) resolve to a
    :class:`~privrank.workflow.ctr_protocols.CTRProtocolSpec`, the others to a
    :class:`ProtocolSpec`.

    Raises:
        ConfigError: An unknown name (the message lists the known ones) or an invalid spec.
    """
    if isinstance(protocol, ProtocolSpec | CTRProtocolSpec):
        return protocol
    if isinstance(protocol, dict) and protocol.get("kind") == "ctr":
        return validate_as(CTRProtocolSpec, protocol, "CTRProtocolSpec")
    if isinstance(protocol, str):
        if protocol in CTR_PROTOCOLS:
            return CTR_PROTOCOLS[protocol]
        try:
            return PROTOCOLS[protocol]
        except KeyError:
            raise ConfigError(
                f"unknown protocol {protocol!r}; the named protocols are "
                f"{', '.join(protocol_names())} (or give a ProtocolSpec with dataset and split)"
            ) from None
    return validate_as(ProtocolSpec, protocol, "ProtocolSpec")


@dataclass(frozen=True)
class PreparedProtocol:
    """A protocol applied to its dataset: the parts a run needs, in one vocabulary.

    Attributes:
        spec: The protocol.
        split: The underlying split (spec, counts, source fingerprint).
        train: What models are fitted on.
        validation: The validation part, or ``None``.
        history: The test-time history (``train``, or ``train + validation``), in time order
            within each user.
        test: The relevant items.
    """

    spec: ProtocolSpec
    split: Split
    train: Interactions
    validation: Interactions | None
    history: Interactions
    test: Interactions
    _pairs: dict[tuple[str, bool], EvaluationPairs] = field(
        default_factory=dict, repr=False, compare=False
    )

    def evaluation_pairs(self, *, graded: bool = False, part: str = "test") -> EvaluationPairs:
        """The pair sets and counts of the protocol's evaluation, built on first use and kept:
        every model evaluated on this protocol ranks against the same pairs.

        Args:
            graded: Relevance grades from the test values.
            part: ``test`` (history against test, the protocol's evaluation) or
                ``validation`` (train against validation, the tuning number).

        Raises:
            ConfigError: ``part`` is unknown, or ``validation`` without a validation part.
        """
        if part not in ("test", "validation"):
            raise ConfigError(f"part must be 'test' or 'validation', got {part!r}")
        key = (part, graded)
        if key not in self._pairs:
            if part == "test":
                self._pairs[key] = prepare_pairs(self.history, self.test, graded=graded)
            else:
                if self.validation is None:
                    raise ConfigError(f"protocol {self.spec.name!r} has no validation part")
                self._pairs[key] = prepare_pairs(self.train, self.validation, graded=graded)
        return self._pairs[key]

    @property
    def history_extends_train(self) -> bool:
        """Whether the test-time history holds more than ``train`` (the validation items)."""
        return self.history is not self.train

    def training_rows(self, model: Any, test_history: str = "fold-in") -> tuple[Interactions, str]:
        """The rows ``model`` is fitted on and its test-time history mode.

        ``users`` (no validation part: fitted on ``train``, test users scored by code),
        ``fold-in`` (fitted on ``train``, each test user's ``train + validation`` history folded
        in) or ``refit`` (fitted on ``train + validation``): when ``test_history`` asks for it,
        when the model cannot fold in, or when it takes the validation part as training data
        (``trains_on_validation_part``).

        Args:
            model: A :class:`~privrank.models.base.Recommender` (its class attributes are read).
            test_history: ``fold-in`` or ``refit`` (``RunConfig.test_history``).
        """
        if not self.history_extends_train:
            return self.train, "users"
        if test_history == "refit" or not model.supports_fold_in or model.trains_on_validation_part:
            return self.history, "refit"
        return self.train, "fold-in"

    def train_fingerprint(self) -> str:
        """:func:`~privrank.data.fingerprint.fingerprint` of the training part."""
        return fingerprint(self.train)

    def describe(self) -> dict[str, Any]:
        """JSON facts: protocol, dataset fingerprint and size, split spec, seed and counts."""
        source = self.split.source
        return {
            "protocol": self.spec.model_dump(mode="json"),
            "dataset": {
                "name": source.name,
                "fingerprint": source.fingerprint,
                "rows": source.rows,
                "users": source.users,
                "items": source.items,
            },
            "split": {
                "spec": self.split.spec.model_dump(mode="json"),
                "seed": self.split.seed,
                "counts": {name: vars(c) for name, c in self.split.counts.items()},
                "details": dict(self.split.details),
                "train_fingerprint": self.train_fingerprint(),
            },
            "test_history": "train + validation" if self.history_extends_train else "train",
        }


def load_dataset(name_or_path: str) -> Interactions:
    """Read a catalog dataset by name, or a saved dataset by workspace name or directory.

    Raises:
        ArtifactError: Not a catalog name and no saved dataset there.
        DatasetUnavailableError: A catalog dataset that is neither on disk nor downloadable.
    """
    from privrank.data import catalog
    from privrank.data.workspace import dataset_path

    if name_or_path in catalog.CATALOG and not Path(name_or_path).exists():
        return catalog.load(name_or_path).interactions
    return Interactions.load(dataset_path(name_or_path))


def prepare(
    protocol: str | ProtocolSpec | dict[str, Any], data: Interactions | None = None
) -> PreparedProtocol:
    """Split a protocol's dataset into train, validation, test-time history and test.

    Args:
        protocol: A built-in name, a spec, or its dict form.
        data: The dataset to use instead of reading ``spec.dataset`` (tests, or a dataset
            already in memory); it must be that dataset for the results to mean the protocol.

    Returns:
        The prepared parts (see :class:`PreparedProtocol`).
    """
    spec = resolve_protocol(protocol)
    data = load_dataset(spec.dataset) if data is None else data
    return from_split(spec, split(data, spec.split))


def from_split(spec: ProtocolSpec, parts: Split) -> PreparedProtocol:
    """The parts of a protocol from a split already made (e.g. one loaded from disk).

    Raises:
        ConfigError: The split was not made with the protocol's split spec.
    """
    if parts.spec != spec.split:
        raise ConfigError(
            f"protocol {spec.name!r} splits by {spec.split.model_dump()}, the split was made "
            f"by {parts.spec.model_dump()}"
        )
    history = parts.train
    if spec.validation_in_history and parts.validation is not None and len(parts.validation):
        history = concatenate(parts.train, parts.validation)
    return PreparedProtocol(
        spec=spec,
        split=parts,
        train=parts.train,
        validation=parts.validation,
        history=history,
        test=parts.test,
    )


def concatenate(first: Interactions, second: Interactions) -> Interactions:
    """The rows of ``first`` then those of ``second`` (same vocabulary), as one dataset.

    Within a user, :meth:`Interactions.sequences` orders rows by timestamp and then by position,
    so rows of ``second`` come after the user's rows of ``first`` unless they are older.

    Raises:
        ConfigError: The two do not share id maps or columns.
    """
    if not (first.user_ids.equals(second.user_ids) and first.item_ids.equals(second.item_ids)):
        raise ConfigError("cannot concatenate interactions with different vocabularies")
    if first.table.column_names != second.table.column_names:
        raise ConfigError(
            f"cannot concatenate interactions with columns {first.table.column_names} and "
            f"{second.table.column_names}"
        )
    table = pa.concat_tables([first.table, second.table.cast(first.table.schema)])
    return Interactions(table, first.user_ids, first.item_ids, first.metadata)


def protocol_for_split(parts: Split, name: str, dataset: str) -> ProtocolSpec:
    """A protocol for a split made outside the named protocols (e.g. ``privrank data split``).

    Leave-last-out splits report HR and NDCG (headline HR@10, NDCG@10), the others NDCG and
    Recall (headline NDCG@10, Recall@20), at cutoffs 5, 10, 20 and 50.
    """
    loo = parts.spec.protocol == "leave-last-out"
    return ProtocolSpec(
        name=name,
        dataset=dataset,
        split=parts.spec,
        metrics=("hit_rate", "ndcg") if loo else ("ndcg", "recall"),
        headline=("hit_rate@10", "ndcg@10") if loo else ("ndcg@10", "recall@20"),
        description=f"saved {parts.spec.protocol} split of {parts.source.name}",
    )
