r"""Label differential privacy: randomized response with a prior, and multi-stage training.

Ghazi, Golowich, Kumar, Manurangsi and Zhang, *Deep Learning with Label Differential Privacy*,
NeurIPS 2021.

**The guarantee and its unit.** The unit of privacy is **one example's label** (here: whether
an impression was clicked, or converted). A training procedure is ε-label-DP when changing the
label of any one example (features unchanged) changes the probability of any trained model by
at most a factor :math:`e^\varepsilon`; δ = 0. It does **not** protect the features (which
user saw which ad where and when: they are used as they are), nor participation (whether an
impression is in the data at all), nor anything beyond the labels of rows that are in the data.

**Users with several rows.** A user with :math:`r` labelled rows is protected at
:math:`r\varepsilon` for all their labels together (group privacy of pure DP, tight for
randomised response). privrank spends the user-level figure: the caller caps the rows per user at
:math:`C` (rows beyond the cap are left out of training, counted and reported) and the ledger is
charged :math:`C\varepsilon` (:func:`user_level_epsilon`).

**Trust.** The party that randomises the labels (the trainer, who holds the true labels) is
trusted with them; everything it releases afterwards (noisy labels, models, scores) is
post-processing of ε-label-DP responses. The prior may depend on anything but the example's
own label: its features, public data, and models trained on *other* examples' noisy labels.

**RRWithPrior** (Ghazi et al., Alg. 1). Given a prior :math:`p` over :math:`K` classes for an
example with true label :math:`y`, let :math:`Y_k` be the :math:`k` classes of highest prior and

.. math::

    k^* = \arg\max_k\ \frac{e^\varepsilon}{e^\varepsilon + k - 1} \sum_{y' \in Y_k} p_{y'}.

If :math:`y \in Y_{k^*}`, output :math:`y` with probability
:math:`e^\varepsilon / (e^\varepsilon + k^* - 1)` and each other class of :math:`Y_{k^*}` with
probability :math:`1 / (e^\varepsilon + k^* - 1)`; otherwise output a class of
:math:`Y_{k^*}` uniformly. For any two labels and any output the probability ratio is at most
:math:`e^\varepsilon` (ε-DP), and :math:`k^*` maximises the probability, under the prior, that
the output equals the true label among all such top-k randomisations (Ghazi et al., Thm. 3;
checked against brute force over every subset in the tests). With a uniform prior it is
:math:`K`-ary randomised response.

**Multi-stage training (LP-MST)** (Ghazi et al., Alg. 2): the examples are split into
:math:`T` disjoint parts; stage 1 randomises part 1 with a uniform prior and trains a model;
stage :math:`t` randomises part :math:`t` with the prior given by the model of stage
:math:`t-1` and trains on the noisy labels of parts :math:`1..t`. Every label is randomised
once, and each prior depends only on other examples' noisy labels, so the whole procedure is
ε-label-DP (parallel composition over disjoint examples).

**RR with a cross-fitted posterior (RR-posterior)** (binary labels; the denoising step of
ALIBI, Malek et al., NeurIPS 2021, with randomised response instead of Laplace noise and the
prior of Ghazi et al. from models trained on other examples). Every label is randomised once by
binary randomised response (keep probability :math:`q = e^\varepsilon/(e^\varepsilon+1)`,
uniform prior: RRWithPrior with :math:`k^* = 2`). The rows are cut into :math:`F` folds; a model
trained on the noisy labels of the other folds gives each row a prior
:math:`p = \hat P(y = 1 \mid x)`, and the row's training target is the posterior

.. math::

    P(y = 1 \mid \tilde y = 1, p) = \frac{q p}{q p + (1-q)(1-p)}, \qquad
    P(y = 1 \mid \tilde y = 0, p) = \frac{(1-q) p}{(1-q) p + q (1-p)}.

When :math:`p` is the true :math:`P(y = 1 \mid x)`, the posterior's mean given :math:`x` is
exactly :math:`P(y=1 \mid x)` (total expectation) with less variance than the debiased noisy
label; the final model is trained on all rows' posteriors (soft labels). For binary clicks the
prior-restricted response of LP-MST answers the prior's top class (:math:`k^* = 1`) whenever
the prior is more confident than :math:`q`, which carries no signal about the row's own click;
RR-posterior keeps every response informative and moves the prior into the training targets.
The randomisation depends on nothing but the label, so the guarantee is that of one binary
randomised response per label (ε, δ = 0); priors, posteriors and models are post-processing.

**Label sums** (another release under the same unit, ε and δ = 0): a model whose fit reads the
labels only through per-column label sums (logistic regression on one-hot fields) can instead
release those sums once with Laplace noise of scale (columns a row touches)/ε:
:mod:`privrank.ranking.label_sums_logistic`. Its noise does not grow with a column's rows, where
randomised response's does, so it wins on large cells.

**Accounting.** The ε of one response is confirmed by Google's ``dp_accounting``: the privacy
loss distribution of :math:`K`-ary randomised response with keep probability
:math:`e^\varepsilon / (e^\varepsilon + K - 1)` (``from_randomized_response``) at δ = 0
(:func:`response_epsilon`). A response with :math:`k^* < K` is randomised response on
:math:`Y_{k^*}` (and a constant outside it), whose loss is at most that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.calibration import Release
from privrank.privacy.mechanism import Mechanism, register_mechanism
from privrank.privacy.spec import AccountantKind

__all__ = [
    "LabelBatch",
    "LabelDPGuarantee",
    "RRWithPriorMechanism",
    "StageReport",
    "multi_stage_train",
    "optimal_k",
    "posterior_train",
    "response_epsilon",
    "rr_posterior",
    "rr_with_prior",
    "rr_with_prior_distribution",
    "user_level_epsilon",
]

Predictor = Callable[[np.ndarray], np.ndarray]
#: Trains on (row indices, noisy labels) and returns a predictor: row indices → (n, K) priors.
Trainer = Callable[[np.ndarray, np.ndarray], Predictor]
#: Trains on (row indices, targets in [0, 1]) and returns a predictor: row indices → (n,)
#: estimates of P(y = 1). ``debias`` is the keep probability q when the targets are binary
#: randomised responses (the predictor must then invert the response), ``None`` when they are
#: posteriors.
SoftTrainer = Callable[[np.ndarray, np.ndarray, "float | None"], Callable[[np.ndarray], np.ndarray]]


def _check_epsilon(epsilon: float, owner: str) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise ConfigError(f"{owner}: epsilon must be a number > 0 (inf: no privacy)")
    if math.isnan(epsilon) or epsilon <= 0:
        raise ConfigError(f"{owner}: epsilon must be > 0 (inf: no privacy). Got {epsilon!r}")
    return float(epsilon)


def _keep(epsilon: float, k: np.ndarray | int) -> np.ndarray:
    """``e^ε / (e^ε + k − 1)``, computed stably (ε may be large)."""
    k = np.asarray(k, dtype=np.float64)
    if math.isinf(epsilon):
        return np.ones_like(k)
    return 1.0 / (1.0 + (k - 1.0) * math.exp(-epsilon))


def optimal_k(prior: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """:math:`k^*` of every row of ``prior`` (n, K), and the classes ordered by prior.

    Ties between values of k are broken towards the smallest k (the paper's argmax); classes
    of equal prior are ordered by class index (a stable sort).

    Returns:
        ``(k_star, order)``: ``k_star`` (n,) in 1..K and ``order`` (n, K), the classes by
        decreasing prior.
    """
    epsilon = _check_epsilon(epsilon, "optimal_k")
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 2 or prior.shape[1] < 2:
        raise ConfigError(f"optimal_k: prior must be (n, K) with K >= 2. Got {prior.shape}")
    order = np.argsort(-prior, axis=1, kind="stable")
    mass = np.cumsum(np.take_along_axis(prior, order, axis=1), axis=1)
    k = np.arange(1, prior.shape[1] + 1)
    if math.isinf(epsilon):
        return np.full(prior.shape[0], prior.shape[1]), order
    objective = _keep(epsilon, k)[None, :] * mass
    return np.argmax(objective, axis=1) + 1, order


def rr_with_prior_distribution(prior: np.ndarray, label: int, epsilon: float) -> np.ndarray:
    """The exact output distribution (K,) of RRWithPrior for one example (the formula above)."""
    prior = np.asarray(prior, dtype=np.float64)[None, :]
    k_star, order = optimal_k(prior, epsilon)
    k, top = int(k_star[0]), order[0, : int(k_star[0])]
    out = np.zeros(prior.shape[1])
    if label in top:
        keep = float(_keep(epsilon, k))
        out[top] = (1.0 - keep) / (k - 1) if k > 1 else 0.0
        out[label] = keep
    else:
        out[top] = 1.0 / k
    return out


def rr_with_prior(
    labels: np.ndarray, prior: np.ndarray, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """Randomise ``labels`` (n,) in 0..K−1 with RRWithPrior under ``prior`` (n, K); ε = inf
    returns the labels unchanged."""
    epsilon = _check_epsilon(epsilon, "rr_with_prior")
    labels = np.asarray(labels)
    prior = np.asarray(prior, dtype=np.float64)
    if labels.ndim != 1 or prior.shape != (labels.size, prior.shape[-1]):
        raise ConfigError(
            f"rr_with_prior: labels (n,) and prior (n, K) expected. Got {labels.shape}, "
            f"{prior.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= prior.shape[1]):
        raise ConfigError(f"rr_with_prior: labels must be in 0..{prior.shape[1] - 1}")
    if math.isinf(epsilon):
        return labels.astype(np.int64, copy=True)
    k_star, order = optimal_k(prior, epsilon)
    n = labels.size
    rank = np.argmax(order == labels[:, None], axis=1)  # position of the true label
    inside = rank < k_star
    keep = rng.random(n) < _keep(epsilon, k_star)
    # An index among the other k*−1 classes of the set (inside), or among all k* (outside).
    span = np.where(inside, k_star - 1, k_star)
    draw = np.floor(rng.random(n) * np.maximum(span, 1)).astype(np.int64)
    other = np.where(inside & (draw >= rank), draw + 1, draw)
    position = np.where(inside & keep, rank, other)
    position = np.where(inside & (k_star == 1), rank, position)
    return order[np.arange(n), position].astype(np.int64)


def response_epsilon(epsilon: float, n_classes: int) -> float:
    """ε (δ = 0) of one :math:`K`-ary randomised response, by dp_accounting's PLD.

    :math:`K`-ary randomised response keeps the label with probability
    :math:`e^\\varepsilon/(e^\\varepsilon+K-1)`: dp_accounting's noise parameter (the
    probability of answering uniformly) is :math:`K/(e^\\varepsilon+K-1)`.
    """
    from dp_accounting.pld import privacy_loss_distribution

    epsilon = _check_epsilon(epsilon, "response_epsilon")
    pld = privacy_loss_distribution.from_randomized_response(
        noise_parameter=n_classes / (math.exp(epsilon) + n_classes - 1),
        num_buckets=n_classes,
        value_discretization_interval=1e-4,
    )
    return float(pld.get_epsilon_for_delta(0.0))


def user_level_epsilon(epsilon: float, max_rows_per_user: int) -> float:
    """The user-level ε of ε-label-DP with at most ``max_rows_per_user`` rows a user: C·ε."""
    if isinstance(max_rows_per_user, bool) or max_rows_per_user < 1:
        raise ConfigError(
            f"user_level_epsilon: max_rows_per_user must be >= 1. Got {max_rows_per_user!r}"
        )
    return float(epsilon) * int(max_rows_per_user)


@dataclass(frozen=True)
class LabelBatch:
    """The statistic RRWithPrior randomises: labels and each example's prior.

    Attributes:
        labels: (n,) class indices.
        prior: (n, K) prior probabilities (any non-negative scores; only their order and
            relative mass matter).
    """

    labels: np.ndarray
    prior: np.ndarray


@dataclass(frozen=True)
class LabelDPGuarantee:
    """What a label-DP training run guarantees (see the module docstring).

    Attributes:
        epsilon: ε per example's label (δ = 0).
        n_classes: K.
        stages: T of LP-MST (1: plain randomised response).
        max_rows_per_user: The cap C on rows per user (``None``: no cap, no user-level claim).
        user_epsilon: C·ε, what the ledger is charged (``None`` without a cap).
        accountant_epsilon: ε of one response by dp_accounting's PLD (the cross-check).
    """

    epsilon: float
    n_classes: int
    stages: int
    max_rows_per_user: int | None
    user_epsilon: float | None
    accountant_epsilon: float
    unit: str = "one example's label (features and participation are not protected)"
    trust: str = (
        "the trainer holds the true labels and randomises them; everything released after "
        "(noisy labels, models, scores) is post-processing"
    )

    def to_dict(self) -> dict[str, object]:
        """A JSON-able dict."""
        from dataclasses import asdict

        return asdict(self)

    def describe(self) -> str:
        """The guarantee in plain words."""
        user = (
            f" A user has at most {self.max_rows_per_user} training rows, so all of a user's "
            f"labels together are protected at ε={self.user_epsilon:g} (group privacy)."
            if self.max_rows_per_user is not None
            else " Rows per user are not capped: a user with r rows is protected at r·ε."
        )
        return (
            f"label differential privacy (ε={self.epsilon:g} per example's label, δ=0): "
            f"randomized response with a prior, {self.stages} stage(s) (Ghazi et al. 2021). "
            f"Features and participation are not protected.{user}"
        )


@register_mechanism("label-rr-prior")
class RRWithPriorMechanism(Mechanism[LabelBatch, np.random.Generator]):
    """RRWithPrior at ε per label, through the one mechanism interface.

    ``sensitivity`` is 1 (one label changes); ``noise_multiplier`` holds the probability that a
    uniform-prior response is *not* the true label, ``1 − e^ε/(e^ε + K − 1)``. There is no
    Gaussian release (:meth:`releases` is empty): the accounting is pure DP,
    :meth:`guarantee`.

    Args:
        epsilon: ε per label (``math.inf``: labels pass unchanged, for the non-private run).
        n_classes: K (2 for clicks).
    """

    def __init__(self, epsilon: float, n_classes: int = 2) -> None:
        self.epsilon = _check_epsilon(epsilon, "RRWithPriorMechanism")
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ConfigError(f"RRWithPriorMechanism: n_classes must be >= 2. Got {n_classes!r}")
        self.n_classes = n_classes
        self.sensitivity = 1.0
        self.noise_multiplier = 1.0 - self.calibrate(self.epsilon, 0.0, "pld")
        self.noise_scale = 1.0

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The keep probability of K-ary randomised response at ε (exact; δ and the
        accountant are not used: the mechanism is pure DP)."""
        return float(_keep(float(epsilon), self.n_classes))

    def add_noise(self, statistic: LabelBatch, rng: np.random.Generator) -> LabelBatch:
        """Randomise the batch's labels under its priors."""
        noisy = rr_with_prior(statistic.labels, statistic.prior, self.epsilon, rng)
        return LabelBatch(noisy, statistic.prior)

    def releases(self) -> tuple[Release, ...]:
        """No Gaussian release: the accounting is :meth:`guarantee`."""
        return ()

    def guarantee(self, stages: int = 1, max_rows_per_user: int | None = None) -> LabelDPGuarantee:
        """The guarantee of a run of ``stages`` stages with at most ``max_rows_per_user``."""
        finite = math.isfinite(self.epsilon)
        return LabelDPGuarantee(
            epsilon=self.epsilon,
            n_classes=self.n_classes,
            stages=stages,
            max_rows_per_user=max_rows_per_user,
            user_epsilon=None
            if max_rows_per_user is None
            else user_level_epsilon(self.epsilon, max_rows_per_user),
            accountant_epsilon=response_epsilon(self.epsilon, self.n_classes)
            if finite
            else math.inf,
        )

    def describe(self) -> str:
        """The mechanism in plain words."""
        return self.guarantee().describe()


@dataclass
class StageReport:
    """One stage of LP-MST: its rows and how often the noisy label equals the true one."""

    stage: int
    rows: int
    agreement: float
    mean_k: float
    extra: dict[str, float] = field(default_factory=dict)


def multi_stage_train(
    labels: np.ndarray,
    trainer: Trainer,
    mechanism: RRWithPriorMechanism,
    rng: np.random.Generator,
    *,
    stage_fractions: Sequence[float] = (0.5, 0.5),
    on_stage: Callable[[StageReport], None] | None = None,
) -> tuple[Predictor, np.ndarray]:
    """LP-MST (Ghazi et al., Alg. 2) over rows ``0..n−1`` in the order given.

    The rows are cut into consecutive parts of the given fractions (the caller shuffles first
    when the order matters). Stage 1 uses a uniform prior; stage t the predictor of stage
    t − 1; the predictor of stage t is trained on the noisy labels of parts 1..t.

    Args:
        labels: (n,) true labels in 0..K−1.
        trainer: ``trainer(rows, noisy_labels) -> predictor``; the predictor maps row indices
            to (len, K) priors.
        mechanism: The randomiser (ε, K).
        rng: The noise generator (used for nothing else).
        stage_fractions: Fractions of the rows per stage (positive, summing to 1).
        on_stage: Called after every stage with its :class:`StageReport`.

    Returns:
        The last stage's predictor and the (n,) noisy labels (each row randomised once).
    """
    fractions = np.asarray(stage_fractions, dtype=np.float64)
    if fractions.size < 1 or np.any(fractions <= 0) or not math.isclose(fractions.sum(), 1.0):
        raise ConfigError(
            f"multi_stage_train: stage_fractions must be positive and sum to 1. Got "
            f"{list(stage_fractions)!r}"
        )
    labels = np.asarray(labels, dtype=np.int64)
    n, k = labels.size, mechanism.n_classes
    bounds = np.round(np.concatenate([[0.0], np.cumsum(fractions)]) * n).astype(np.int64)
    noisy = np.full(n, -1, dtype=np.int64)
    predictor: Predictor | None = None
    for stage in range(fractions.size):
        rows = np.arange(bounds[stage], bounds[stage + 1])
        prior = np.full((rows.size, k), 1.0 / k) if predictor is None else predictor(rows)
        batch = mechanism.add_noise(LabelBatch(labels[rows], prior), rng)
        noisy[rows] = batch.labels
        k_star, _ = optimal_k(prior, mechanism.epsilon)
        seen = np.arange(0, bounds[stage + 1])
        predictor = trainer(seen, noisy[seen])
        if on_stage is not None:
            on_stage(
                StageReport(
                    stage=stage + 1,
                    rows=int(rows.size),
                    agreement=float(np.mean(batch.labels == labels[rows])) if rows.size else 1.0,
                    mean_k=float(k_star.mean()) if rows.size else float(k),
                )
            )
    assert predictor is not None
    return predictor, noisy


def rr_posterior(noisy: np.ndarray, prior: np.ndarray, epsilon: float) -> np.ndarray:
    """:math:`P(y = 1 \\mid \\tilde y, p)` of binary randomised response at ε (module docstring).

    Args:
        noisy: (n,) responses in {0, 1}.
        prior: (n,) prior probabilities :math:`p` of label 1 (clipped to [1e-6, 1 − 1e-6]).
        epsilon: ε of the response (``inf``: the response is the label).

    Returns:
        (n,) posteriors in (0, 1).
    """
    epsilon = _check_epsilon(epsilon, "rr_posterior")
    noisy = np.asarray(noisy)
    p = np.clip(np.asarray(prior, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    if noisy.shape != p.shape or noisy.ndim != 1:
        raise ConfigError(
            f"rr_posterior: noisy and prior must be (n,). Got {noisy.shape}, {p.shape}"
        )
    if noisy.size and not np.isin(noisy, (0, 1)).all():
        raise ConfigError("rr_posterior: responses must be 0 or 1")
    q = float(_keep(epsilon, 2))
    like_one = np.where(noisy == 1, q, 1.0 - q)  # P(ỹ | y = 1)
    like_zero = 1.0 - like_one  # P(ỹ | y = 0)
    return like_one * p / (like_one * p + like_zero * (1.0 - p))


def posterior_train(
    labels: np.ndarray,
    trainer: SoftTrainer,
    mechanism: RRWithPriorMechanism,
    rng: np.random.Generator,
    *,
    folds: int = 2,
    rounds: int = 1,
    on_stage: Callable[[StageReport], None] | None = None,
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray]:
    """RR-posterior (module docstring) over rows ``0..n−1``, binary labels.

    1. every label is randomised once by binary randomised response at the mechanism's ε;
    2. for ``rounds`` rounds, every fold's rows get a prior from a model trained on the other
       folds (round 1: on their debiased noisy labels; later rounds: on their posteriors), and
       their posterior from :func:`rr_posterior`;
    3. the final model is trained on every row's posterior.

    Args:
        labels: (n,) true labels in {0, 1}.
        trainer: ``trainer(rows, targets, debias) -> predictor`` (:data:`SoftTrainer`).
        mechanism: The randomiser (ε; ``n_classes`` must be 2).
        rng: The noise generator (used for nothing else).
        folds: F ≥ 2, consecutive parts of the rows (the caller shuffles first).
        rounds: Rounds of prior refinement (≥ 1).
        on_stage: Called after every round with its :class:`StageReport` (``agreement``: of
            the noisy labels with the true ones; ``extra``: the posteriors' mean squared error
            against the true labels, ``posterior_brier``).

    Returns:
        The final predictor, the (n,) noisy labels, the (n,) posteriors.
    """
    if mechanism.n_classes != 2:
        raise ConfigError("posterior_train: binary labels only (n_classes = 2)")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"posterior_train: folds must be an integer >= 2. Got {folds!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"posterior_train: rounds must be an integer >= 1. Got {rounds!r}")
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.size
    if n < folds:
        raise ConfigError(f"posterior_train: {n} rows cannot make {folds} folds")
    uniform = np.full((n, 2), 0.5)
    noisy = mechanism.add_noise(LabelBatch(labels, uniform), rng).labels
    keep = float(_keep(mechanism.epsilon, 2))
    bounds = np.round(np.linspace(0, n, folds + 1)).astype(np.int64)
    targets: np.ndarray = noisy.astype(np.float64)
    debias: float | None = keep if math.isfinite(mechanism.epsilon) else None
    for round_ in range(rounds):
        posterior = np.empty(n)
        for fold in range(folds):
            inside = np.arange(bounds[fold], bounds[fold + 1])
            outside = np.concatenate([np.arange(0, bounds[fold]), np.arange(bounds[fold + 1], n)])
            prior = trainer(outside, targets[outside], debias)(inside)
            posterior[inside] = rr_posterior(noisy[inside], prior, mechanism.epsilon)
        targets, debias = posterior, None
        if on_stage is not None:
            on_stage(
                StageReport(
                    stage=round_ + 1,
                    rows=n,
                    agreement=float(np.mean(noisy == labels)),
                    mean_k=2.0,
                    extra={"posterior_brier": float(np.mean((posterior - labels) ** 2))},
                )
            )
    return trainer(np.arange(n), targets, None), noisy, targets
