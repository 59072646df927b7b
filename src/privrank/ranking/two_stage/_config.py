"""The typed config of the two-stage recommender."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from privrank.errors import ConfigError
from privrank.models.base import ModelConfig
from privrank.models.ease import EASEConfig, check_dense_memory

__all__ = [
    "ANY_DEFAULT_RETRIEVERS",
    "BLEND_WEIGHTS",
    "RetrieverSpec",
    "TwoStageConfig",
    "TwoStagePrivateConfig",
    "default_retrievers",
]


class RetrieverSpec(ModelConfig):
    """One first-stage retriever: a registered privrank model and its config.

    Attributes:
        name: Registry name (``ease``, ``itemknn``, ``ials``, ``sasrec``, ``most-popular``, or a
            content-similarity model registered by another package).
        params: Its config, as a mapping.
        propose: Whether its top items join the candidate set (``False``: it only contributes
            features, e.g. a content-similarity score of every candidate).
        recent: Score only the last ``recent`` items of each history (time order; an ad-hoc
            history's order as sent) instead of the whole history: a session signal (e.g. the
            items most like the user's last one). ``None``: the whole history. A retriever
            with the same ``name``, ``params`` and ``seed`` as an earlier one shares its fitted
            model.
        seed: Added to the fit's seed for this retriever's fit. A model that draws random
            numbers (Mult-VAE, iALS, BPR, SASRec) listed with seeds 0, 1, 2 is a seed ensemble
            of three fits, each with its own ``relative_score`` and ``log_rank`` features and
            its own column in a blended base (``ranker_base_blend``). Specs that differ only in
            ``seed`` are distinct fits, so in a private fit distinct releases, each charged.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    propose: bool = True
    recent: int | None = Field(default=None, ge=1)
    seed: int = Field(default=0, ge=0)


def default_retrievers(
    test_shape: Literal["next", "random"] | None, n_items: int | None = None
) -> tuple[RetrieverSpec, ...]:
    """The retrievers of a two-stage fit whose config names none, by what it will be tested on.

    - ``next`` (each user's next item: leave-last-out, temporal): SASRec, the sparse EASE,
      ItemKNN on the whole history, ItemKNN on the last item (a session signal) and
      popularity. Chosen on validation carves of both next-item data sets at hand (each
      user's last training item held out): NDCG@10 +23 % over the best single model on
      Beauty's carve and +34 % on Video's, against +21 % and +32 % without the sparse EASE;
      the random-holdout set below was 5.5 % below SASRec on Beauty's carve (BENCHMARKS.md,
      sessions 14 and 16).
    - ``random`` or not known: EASE, ItemKNN, iALS and popularity (chosen on ML-100K's
      random-holdout carves). On a catalogue of ``n_items`` whose dense EASE solve would not
      fit in the memory available (:func:`~privrank.models.ease.check_dense_memory`, which
      would refuse it) the sparse EASE takes its place: a fallback that keeps the default
      fit possible, not a choice on quality.
    """
    if test_shape == "next":
        return (
            RetrieverSpec(name="sasrec"),
            RetrieverSpec(name="ease-sparse"),
            RetrieverSpec(name="itemknn"),
            RetrieverSpec(name="itemknn", recent=1),
            RetrieverSpec(name="most-popular"),
        )
    return (
        RetrieverSpec(name="ease" if _dense_ease_fits(n_items) else "ease-sparse"),
        RetrieverSpec(name="itemknn"),
        RetrieverSpec(name="ials"),
        RetrieverSpec(name="most-popular"),
    )


def _dense_ease_fits(n_items: int | None) -> bool:
    """Whether EASE's dense solve on ``n_items`` fits in the memory available (an unknown
    catalogue counts as fitting)."""
    if n_items is None:
        return True
    try:
        check_dense_memory(n_items, EASEConfig.model_fields["dtype"].default)
    except ConfigError:
        return False
    return True


#: Every retriever some default set uses (what a config that names none may fit).
ANY_DEFAULT_RETRIEVERS = tuple(
    {spec.name: spec for shape in ("next", "random") for spec in default_retrievers(shape)}.values()
)


#: The LambdaMART settings of a two-stage fit, chosen on a validation protocol carved from the
#: ML-100K training ratings (bench/bench_two_stage.py select; never the test part): LightGBM's
#: example settings overfit the candidate groups within a few trees.
DEFAULT_LAMBDAMART = {
    "num_iterations": 300,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "lambda_l2": 10.0,
    "early_stopping_rounds": 20,
    "eval_at": [10],
}


#: The weights a blended base order tries for each retriever's relative score
#: (``ranker_base_blend``); the best retriever's is fixed at 1.
BLEND_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)


class TwoStagePrivateConfig(ModelConfig):
    """How a private two-stage fit splits its (ε, δ) (the ``private`` block of its config).

    A private fit makes ``k + 1`` user-level releases: one per distinct retriever fit (``k`` is
    the number of distinct retriever specs, doubled when ``refit`` fits them again on the whole
    training data) and the ranker's DP-SGD. The ranker gets ``ranker_share · (ε, δ)``; every
    retriever fit gets ``(1 − ranker_share) · (ε, δ) / k``. By basic composition the fit is then
    (ε, δ)-DP; the guarantee also records the tighter ε of the same releases composed by the
    PLD and RDP accountants.

    With ``split = "calibrated"`` (the default) every part's ε is then widened by one common
    factor ``s ≥ 1``, chosen from the data's shape alone, until the PLD accountant's ε of all
    the releases composed reaches the requested ε
    (:func:`~privrank.ranking.two_stage._private.calibrate_split`): each part gets more budget
    than basic composition gives it, and the fit is still (ε, δ)-DP, by the PLD accountant.
    It needs every retriever to state its releases in advance
    (:class:`~privrank.models.capabilities.PlannedPrivateFit`: most-popular, EASE,
    EASE-sparse, ItemKNN, BPR, SASRec, Mult-VAE); with another retriever (DP-iALS, so the
    random-holdout default set) the basic split is used, and the training record says so.

    Attributes:
        ranker_share: Share of ε and of δ spent by the ranker's DP-SGD, in (0, 1).
        split: ``calibrated`` (the shares scaled to the PLD-composed ε) or ``basic`` (the
            shares as they are, composed by basic composition).
    """

    ranker_share: float = Field(0.5, gt=0, lt=1)
    split: Literal["calibrated", "basic"] = "calibrated"


class TwoStageConfig(ModelConfig):
    r"""Hyper-parameters of :class:`~privrank.ranking.two_stage.TwoStage`.

    A config may leave two settings to the data: ``retrievers = None`` and ``carve = "auto"``
    (the defaults). A fit resolves them from what it will be tested on
    (:attr:`~privrank.models.FitOptions.test_shape`, set by the evaluation runner and by
    ``privrank train`` from the protocol's split) with :meth:`resolved`, and the fitted
    model's config holds the resolved values (what is saved and recorded).

    Attributes:
        retrievers: The first stage (at least one proposes candidates); ``None``:
            :func:`default_retrievers` of the test shape.
        candidates: ``N``, candidates per user passed to the ranker.
        ranker: ``lambdamart`` (LightGBM) or ``listwise`` (PyTorch).
        ranker_params: The ranker's config, as a mapping (``None``: :data:`DEFAULT_LAMBDAMART`
            for ``lambdamart``, the listwise ranker's defaults with early stopping at NDCG@10).
        carve: How the ranker's labels are carved from each training history: ``random``
            (a random ``label_fraction`` of the user's items; matches a random holdout),
            ``last`` (the user's last ``max(1, round(label_fraction · n))`` items in time order;
            matches leave-one-out) or ``auto``: ``last`` when the fit will be tested on each
            user's next items (``test_shape = "next"``), else ``random``.
        label_fraction: Share of each user's training items that become labels.
        carves: Independent random carves of the training data (``carve = random`` only; a
            non-private fit only). Carve ``k`` draws its labels with seed ``seed + k``, fits its
            own retrievers on its fit part and adds one group per label user, so the ranker
            sees ``carves`` groups a user. A user's groups of every carve go to the same side
            of the ranker's fit/validation draw (no user early-stops a ranker fitted on them).
        ranker_validation_users: Share of the label users whose groups early-stop the ranker.
        ranker_base: Start a LambdaMART ranker from the order of the proposing retriever whose
            ranks have the best NDCG@10 on the ranker's training groups (its ``log_rank``
            column, weight −1; LightGBM's ``init_score``), so the trees learn corrections to
            that order and the ranker falls back to it when no tree helps on its validation
            groups. Ignored by the ``listwise`` ranker and when ``ranker_params`` names a
            ``base_feature`` itself.
        ranker_base_blend: With ``ranker_base``, start instead from a linear blend of the
            retrievers' scores: the best retriever's ``relative_score`` column (weight 1; the
            same order as its ranks within the candidates it ranked) plus
            :math:`\sum_r w_r` ``relative_score``:sub:`r` of the others, each
            :math:`w_r \in` :data:`BLEND_WEIGHTS`, chosen by coordinate ascent (two sweeps, a
            change kept only when it raises NDCG@10) on the ranker's training groups. All
            :math:`w_r = 0` is the single best retriever, so the blend is never worse than it on
            those groups. The trees then correct the blend, and their number (zero included)
            is chosen on the validation groups as before.
        refit: Refit the retrievers on the whole training data after the ranker is trained
            (``False``: keep the retrievers fitted without the carved labels, folding in full
            histories at scoring time).
        seed: Seed of the carving and of the users' validation draw.
        private: How a private fit splits its budget (:class:`TwoStagePrivateConfig`;
            ``None``: its defaults). Only with a privacy spec.
    """

    retrievers: tuple[RetrieverSpec, ...] | None = None
    candidates: int = Field(300, ge=1)
    ranker: Literal["lambdamart", "listwise"] = "lambdamart"
    ranker_params: dict[str, Any] | None = None
    carve: Literal["auto", "random", "last"] = "auto"
    label_fraction: float = Field(0.2, gt=0, lt=1)
    carves: int = Field(1, ge=1)
    ranker_validation_users: float = Field(0.2, ge=0, lt=1)
    ranker_base: bool = True
    ranker_base_blend: bool = False
    refit: bool = True
    seed: int = Field(0, ge=0)
    private: TwoStagePrivateConfig | None = None

    @model_validator(mode="after")
    def _one_proposes(self) -> TwoStageConfig:
        if self.retrievers is None:
            return self
        if not any(r.propose for r in self.retrievers):
            raise ValueError("at least one retriever must propose candidates (propose=true)")
        if any(r.name == "two-stage" for r in self.retrievers):
            raise ValueError("a two-stage model cannot be its own retriever")
        return self

    def resolved(
        self, test_shape: Literal["next", "random"] | None, n_items: int | None = None
    ) -> TwoStageConfig:
        """This config with ``retrievers`` and ``carve`` set for a fit tested on ``test_shape``
        (``next``, ``random`` or ``None``: not known, treated as ``random``) on a catalogue of
        ``n_items`` (:func:`default_retrievers`); explicit values are kept."""
        retrievers = self.retrievers or default_retrievers(test_shape, n_items)
        carve = self.carve if self.carve != "auto" else "last" if test_shape == "next" else "random"
        return self.model_copy(update={"retrievers": retrievers, "carve": carve})

    def resolved_ranker_params(self) -> dict[str, Any]:
        """The ranker's config: ``ranker_params``, or the defaults of the chosen ranker."""
        if self.ranker_params is not None:
            return dict(self.ranker_params)
        return dict(DEFAULT_LAMBDAMART) if self.ranker == "lambdamart" else {"eval_at": 10}
