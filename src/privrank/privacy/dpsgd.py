"""User-level DP-SGD: one user is one example, per-user clipping, Poisson sampling, Gaussian noise.

The guarantee of every fit trained here is **user-level (ε, δ)-DP**: neighbouring datasets differ
by adding or removing one user's entire history.

**One step** (Abadi et al. 2016, with the user as the example, McMahan et al. 2018):

1. *Sample* a batch ``B_t`` by Poisson sampling: every one of the ``n`` users is in it
   independently with probability ``q = b / n`` (``b``: the expected batch size). Sampling
   draws from the DP noise stream (secret), never from the model's seed: amplification by
   subsampling needs the batch to be unknown to an adversary.
2. *Per-user gradient.* User ``u``'s loss ``ℓ_u(θ)`` is the model's loss on **all** of that
   user's (bounded) data in the step: the whole multi-hot history (Mult-VAE), the whole bounded
   sequence (SASRec), or every (positive, negative) pair of the user (BPR). Its gradient ``g_u``
   is clipped to norm ``C``: ``ḡ_u = g_u · min(1, C / ‖g_u‖₂)``.
3. *Noise.* ``g̃ = (Σ_{u ∈ B_t} ḡ_u + N(0, σ² I)) / b`` with ``σ = m · C``. Adding or removing
   one user moves the sum by at most ``C``: each step is a Poisson-subsampled Gaussian
   mechanism with noise multiplier ``m``.
4. *Update* the parameters with any optimizer (Adam) on ``g̃``: post-processing.

**Accounting** (:mod:`privrank.privacy.accounting`, Google's ``dp_accounting``; Opacus's own
accountant is not used; PLD with pessimistic discretisation :data:`PLD_DISCRETIZATION`, an
upper bound on ε): the ``T = epochs · round(n / b)`` steps compose to
``dpsgd_event(q, m, T)``; a fit that also releases noisy item counts for cold start
(:func:`~privrank.privacy.mechanisms.private_item_counts`, sensitivity ``√c`` under the
contribution bound ``c``) composes that Gaussian release with it. The multiplier of the counts
is fixed first (the one that would make the counts alone ``(POPULARITY_SHARE · ε, δ)``-DP);
then ``m`` is the smallest multiplier for which the **composition of both** is (ε, δ)-DP under
the PLD accountant (tight; RDP when the spec asks for it). The other accountant's ε is recorded
as a cross-check.

**Per-user gradients without the memory trap.** Two engines compute ``Σ_u ḡ_u``:

- :class:`GhostClipping` (Opacus ``GradSampleModuleFastGradientClipping``, ghost clipping; Li
  et al. 2022): the norms ``‖g_u‖`` come from layer activations and output gradients without
  materialising per-user gradients (for a linear layer with input ``a_u`` and output gradient
  ``δ_u``, ``‖g_u‖² = ‖δ_u‖²‖a_u‖²``), then a second backward pass of ``Σ_u c_u ℓ_u`` with the
  clipping factors ``c_u`` gives the clipped sum. Memory stays that of ordinary training:
  the right engine for Mult-VAE's ``n_items × hidden`` layers. Needs every parameter to be used
  through one supported module call (no weight tying).
- :class:`VmapClipping` (``torch.func``): exact per-user gradients by ``vmap(grad(ℓ))``, in
  chunks whose per-user gradients fit a memory budget (default 256 MiB), for models whose
  parameters are used outside module calls (SASRec's tied input/output item embeddings) or
  whose examples carry user-local parameters (BPR's user factors). It can also return the
  gradient of user-local inputs, which are not released and therefore neither clipped nor
  noised. A large table of which one user's loss touches few rows (SASRec's item embedding
  under sampled softmax or BCE) can be *gathered*: each user gets only its rows, so the
  per-user gradients cost ``rows × d`` instead of ``n_items × d``, with the same norms and
  the same clipped sum (the scatter of each user's rows).

**Data-parallel steps** (:class:`GradientReducer`, e.g. workers on Ray Train): the workers
draw the same Poisson batch from the same secret stream, each computes the clipped sum of its
share of the batch's users, rank 0 alone adds the noise to its partial sum, and the partial
sums are all-reduced (as Opacus's ``DistributedDPOptimizer`` does): every worker then holds
``(Σ_{u ∈ B_t} ḡ_u + N(0, σ² I)) / b``, the single-process step's release, so the sampling
rate, the steps, the multiplier and the accountant's ε are the single-process fit's. The
workers are trusted with the training rows and the noise stream, as the process of a
single-process fit is.

Every iterate is covered (the accounting composes all T steps), so releasing intermediate
weights costs nothing more. ``q = b / n`` uses ``n``, the users of the training vocabulary,
taken as public as usual for DP-SGD (Opacus's ``sample_rate = 1 / len(loader)`` does the
same). Dropout, negatives and initialisation come from the fit's seed: they are independent of
the data, and the guarantee holds for any value of them.

The test switch :func:`~privrank.privacy.mechanisms._noise_scale_for_testing` multiplies the
noise multiplier of every step (and of the counts) and is recorded in the guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from privrank.errors import ConfigError
from privrank.privacy._clipping import (
    GhostClipping,
    VmapClipping,
    local_vocabulary,
)
from privrank.privacy.accounting import DEFAULT_RTOL
from privrank.privacy.calibration import (
    PLD_DISCRETIZATION,
    POPULARITY_SHARE,
    Release,
    calibrate_multiplier,
    epsilons,
    gaussian_multiplier,
)
from privrank.privacy.mechanism import (
    Mechanism,
    PrivacyGuarantee,
    compose_guarantee,
    current_noise_scale,
    register_mechanism,
)
from privrank.privacy.spec import AccountantKind, PrivacySpec

__all__ = [
    "POPULARITY_SHARE",
    "DPSGDPlan",
    "DPSGDTrainer",
    "GhostClipping",
    "GradientReducer",
    "PoissonSampler",
    "PrivateRun",
    "SampledGaussianMechanism",
    "VmapClipping",
    "dpsgd_guarantee",
    "local_vocabulary",
    "plan_dpsgd",
    "start_private_run",
    "torch_noise_generator",
]


# -------------------------------------------------------------------- the plan (accounting)
@dataclass(frozen=True)
class DPSGDPlan:
    """The sampling, length and noise of a DP-SGD run, calibrated to a spec.

    Attributes:
        n_users: ``n``, the users Poisson sampling draws from.
        expected_batch_size: ``b = q · n`` (the divisor of each noisy gradient sum).
        sampling_rate: ``q = min(1, b / n)``.
        steps_per_epoch: ``max(1, round(n / b))``.
        epochs: Passes over the users.
        steps: ``T = epochs · steps_per_epoch``.
        noise_multiplier: ``m = σ / C`` of every step (calibrated, before any test scaling).
        clipping_norm: ``C``.
        popularity_noise_multiplier: ``σ / Δ`` of the cold-start item counts composed with the
            run, or ``None`` when the run releases no counts.
        epsilon: The target ε (of the composition of everything released).
        delta: δ.
        accountant: The accountant that calibrated ``m`` (the spec's).
        pld_epsilon: ε of the composition by PLD.
        rdp_epsilon: ε of the composition by RDP.
    """

    n_users: int
    expected_batch_size: float
    sampling_rate: float
    steps_per_epoch: int
    epochs: int
    steps: int
    noise_multiplier: float
    clipping_norm: float
    popularity_noise_multiplier: float | None
    epsilon: float
    delta: float
    accountant: str
    pld_epsilon: float
    rdp_epsilon: float

    @property
    def noise_std(self) -> float:
        """σ = m · C, the noise on each step's summed clipped gradient."""
        return self.noise_multiplier * self.clipping_norm

    @property
    def accountant_epsilon(self) -> float:
        """ε of the composition by the accountant that calibrated it."""
        return self.pld_epsilon if self.accountant == "pld" else self.rdp_epsilon

    def releases(self) -> tuple[Release, ...]:
        """What a run trained by this plan releases, for the composition service: the
        cold-start item counts (when the plan has them), then the ``steps`` subsampled
        Gaussian steps. The accountants see exactly what :func:`dpsgd_guarantee` records
        (multipliers, step count, sampling rate); only the words differ."""
        steps = Release(
            "dp-sgd",
            "the summed clipped per-user gradients",
            self.clipping_norm,
            self.noise_multiplier,
            count=self.steps,
            sampling_rate=self.sampling_rate,
            epochs=self.epochs,
        )
        if self.popularity_noise_multiplier is None:
            return (steps,)
        return (_popularity(self.popularity_noise_multiplier), steps)


def _steps(rate: float, multiplier: float, steps: int, epochs: int | None = None) -> Release:
    return Release(
        "dp-sgd",
        "the summed clipped per-user gradients",
        1.0,
        float(multiplier),
        count=steps,
        sampling_rate=rate,
        epochs=epochs,
    )


def _popularity(multiplier: float) -> Release:
    return Release("gaussian", "the item counts", 1.0, float(multiplier))


def plan_dpsgd(
    spec: PrivacySpec,
    n_users: int,
    expected_batch_size: int,
    epochs: int,
    *,
    with_popularity: bool = True,
    rtol: float = DEFAULT_RTOL,
) -> DPSGDPlan:
    """Calibrate a DP-SGD run (and the cold-start counts released with it) to a spec.

    Args:
        spec: A resolved spec (δ set); its ``clipping_norm`` is ``C`` and its ``accountant``
            calibrates ``m``.
        n_users: Users to sample from (≥ 1).
        expected_batch_size: ``b`` (≥ 1; capped at ``n_users``).
        epochs: Passes over the users (≥ 1).
        with_popularity: Whether a Gaussian release of the item counts is composed in (its
            multiplier: the one making it alone ``(POPULARITY_SHARE · ε, δ)``-DP).
        rtol: Relative tolerance of ``m`` (the returned ``m`` meets the target and is at most
            ``1 + rtol`` times the smallest that does).

    Returns:
        The plan; the composition's ε by the spec's accountant is ≤ ``spec.epsilon``.

    Raises:
        ConfigError: Invalid sizes, an unresolved spec, or a target no multiplier ≤ 1e6 meets.
    """
    if not isinstance(spec, PrivacySpec):
        raise ConfigError(f"DP-SGD needs a PrivacySpec. Got {type(spec).__name__}")
    delta = spec.require_delta()
    for name, value in (
        ("n_users", n_users),
        ("expected_batch_size", expected_batch_size),
        ("epochs", epochs),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(
                f"The {name!r} of a DP-SGD plan must be an integer ≥ 1. Got {value!r}"
            )
    n_users, epochs = int(n_users), int(epochs)
    batch = min(int(expected_batch_size), n_users)
    rate = batch / n_users
    steps_per_epoch = max(1, round(n_users / batch))
    steps = epochs * steps_per_epoch
    epsilon = float(spec.epsilon)
    popularity = (
        gaussian_multiplier(POPULARITY_SHARE * epsilon, float(delta)) if with_popularity else None
    )
    fixed = () if popularity is None else (_popularity(popularity),)
    multiplier = calibrate_multiplier(
        epsilon,
        float(delta),
        (*fixed, _steps(rate, 1.0, steps)),
        accountant_name=spec.accountant,
        pld_discretization=PLD_DISCRETIZATION,
        rtol=float(rtol),
    )
    by = epsilons((*fixed, _steps(rate, multiplier, steps)), float(delta), PLD_DISCRETIZATION)
    pld_epsilon, rdp_epsilon = by["pld"], by["rdp"]
    return DPSGDPlan(
        n_users=n_users,
        expected_batch_size=float(batch),
        sampling_rate=rate,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        steps=steps,
        noise_multiplier=float(multiplier),
        clipping_norm=float(spec.clipping_norm),
        popularity_noise_multiplier=popularity,
        epsilon=epsilon,
        delta=float(delta),
        accountant=spec.accountant,
        pld_epsilon=pld_epsilon,
        rdp_epsilon=rdp_epsilon,
    )


def dpsgd_guarantee(
    plan: DPSGDPlan,
    spec: PrivacySpec,
    *,
    statistic: str,
    released: str,
    popularity: PrivacyGuarantee | None,
    noise_scale: float,
) -> PrivacyGuarantee:
    """The :class:`PrivacyGuarantee` of a run trained by ``plan``.

    Args:
        plan: The calibrated plan.
        spec: The resolved spec of the fit.
        statistic: What each step's noise is added to, in words.
        released: What the fit releases, in words (and what stays with each user).
        popularity: The guarantee of the cold-start counts released with the run, if any (its
            multiplier must be the plan's).
        noise_scale: The test scale applied to the noise (1 for a real fit).
    """
    planned = plan.popularity_noise_multiplier
    if (popularity is None) != (planned is None) or (
        popularity is not None
        and planned is not None
        and not math.isclose(popularity.noise_multiplier, planned)
    ):
        raise ConfigError("the cold-start counts were not released with the plan's multiplier")
    composed = f"{plan.steps} subsampled Gaussian steps (q = {plan.sampling_rate:.4g})"
    if popularity is not None:
        composed = f"one Gaussian release of the item counts and {composed}"
    accounting = (
        f"ε of the composition of {composed} by the {plan.accountant.upper()} accountant "
        f"(dp_accounting): PLD ε = {plan.pld_epsilon:.4g}, RDP ε = {plan.rdp_epsilon:.4g}, "
        f"at δ = {plan.delta:.3g}"
    )
    steps = Release(
        "dp-sgd",
        statistic,
        plan.clipping_norm,
        plan.noise_multiplier,
        count=plan.steps,
        sampling_rate=plan.sampling_rate,
        epochs=plan.epochs,
    )
    composition = (steps,) if popularity is None else (*popularity.composition, steps)
    return compose_guarantee(
        composition,
        spec,
        mechanism="dp-sgd" if popularity is None else "dp-sgd+gaussian-item-counts",
        calibration=plan.accountant,
        accounting=accounting,
        n_users=plan.n_users,
        released=released,
        pld_discretization=PLD_DISCRETIZATION,
        noise_scale=float(noise_scale),
    )


# -------------------------------------------------------------------- sampling and noise streams
def torch_noise_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from ``rng`` (the spec's noise stream), for Gaussian noise."""
    return torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))


class PoissonSampler:
    """Batches of user codes by Poisson sampling: each user independently with probability q.

    Args:
        n_users: Users to sample from.
        sampling_rate: q in (0, 1].
        rng: The generator the batches are drawn from (a secret one for real fits).
    """

    def __init__(self, n_users: int, sampling_rate: float, rng: np.random.Generator) -> None:
        if not 0 < sampling_rate <= 1:
            raise ConfigError(f"sampling rate must be in (0, 1]. Got {sampling_rate!r}")
        self.n_users = int(n_users)
        self.sampling_rate = float(sampling_rate)
        self.rng = rng

    def sample(self) -> np.ndarray:
        """One batch: the sorted codes of the users drawn (possibly none)."""
        if self.sampling_rate == 1.0:
            return np.arange(self.n_users)
        return np.flatnonzero(self.rng.random(self.n_users) < self.sampling_rate)

    def epoch(self, steps: int) -> Iterator[np.ndarray]:
        """``steps`` independent batches."""
        for _ in range(steps):
            yield self.sample()


# -------------------------------------------------------------------- the mechanism
@register_mechanism("dp-sgd")
class SampledGaussianMechanism(Mechanism[torch.Tensor, torch.Generator]):
    """One DP-SGD step's release: the Poisson-subsampled Gaussian mechanism, T times.

    Each step adds ``N(0, σ² I)`` with ``σ = m · C`` to the sum of the sampled users' gradients,
    each clipped to L2 norm ``C`` (the sensitivity to one user); every user is in a step with
    probability ``q``. The ``T`` steps compose adaptively (:meth:`releases`).

    Args:
        clipping_norm: C (> 0).
        noise_multiplier: m (calibrated by :func:`plan_dpsgd`; a test's scale applies on top).
        sampling_rate: q, or ``None`` when not known (accounting needs it).
        steps: T.
    """

    def __init__(
        self,
        clipping_norm: float,
        noise_multiplier: float,
        *,
        sampling_rate: float | None = None,
        steps: int = 1,
    ) -> None:
        if not (math.isfinite(clipping_norm) and clipping_norm > 0):
            raise ConfigError(f"DP-SGD: the clipping norm must be > 0. Got {clipping_norm!r}")
        self.sensitivity = float(clipping_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.sampling_rate = sampling_rate
        self.steps = int(steps)
        self.noise_scale = current_noise_scale()

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The smallest multiplier for which the ``T`` subsampled steps meet (ε, δ) by
        ``accountant`` (the steps alone; :func:`plan_dpsgd` composes the cold-start counts)."""
        if self.sampling_rate is None:
            raise ConfigError("DP-SGD calibration needs the sampling rate")
        return calibrate_multiplier(
            float(epsilon),
            float(delta),
            (_steps(self.sampling_rate, 1.0, self.steps),),
            accountant_name=accountant,
            pld_discretization=PLD_DISCRETIZATION,
        )

    @property
    def applied_std(self) -> float:
        """σ actually drawn on the summed gradient: ``s · m · C``."""
        return self.noise_scale * self.noise_multiplier * self.sensitivity

    def add_noise(self, statistic: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Add ``N(0, (s·m·C)²)`` to a summed clipped gradient, in place (``s``: the test
        scale); returns it."""
        std = self.applied_std
        if std > 0:
            statistic.add_(
                torch.normal(0.0, std, size=statistic.shape, generator=rng, dtype=statistic.dtype)
            )
        return statistic

    def releases(self) -> tuple[Release, ...]:
        """The ``T`` subsampled Gaussian steps."""
        if self.sampling_rate is None:
            raise ConfigError("DP-SGD accounting needs the sampling rate")
        return (_steps(self.sampling_rate, self.noise_multiplier, self.steps),)

    def describe(self) -> str:
        """The mechanism in plain words."""
        rate = (
            ""
            if self.sampling_rate is None
            else f", each user sampled with q = {self.sampling_rate:.4g}"
        )
        return (
            f"DP-SGD: {self.steps} steps{rate}; each user's gradient clipped to L2 norm "
            f"{self.sensitivity:g}, Gaussian noise with multiplier {self.noise_multiplier:.4g} on "
            "the summed gradient"
        )


# -------------------------------------------------------------------- the trainer
class GradientReducer(Protocol):
    """The workers of a data-parallel DP-SGD step (``privrank.models.parallel.DataParallel``).

    Attributes:
        rank: This worker's rank (rank 0 adds the noise).
        world_size: Workers sharing each logical batch.
    """

    rank: int
    world_size: int

    def all_reduce(self, tensors: Any) -> None:
        """Replace each tensor in place by its sum over the workers."""
        ...


class DPSGDTrainer:
    """One DP-SGD step: per-user clipped sum (an engine), Gaussian noise, divide, update.

    After :meth:`privatise`, every released parameter holds
    ``p.grad = (Σ_u ḡ_u + N(0, (s·m·C)² I)) / b`` (``s``: the test noise scale, 1 for real
    fits); the caller may then set the gradients of user-local parameters and call
    ``optimizer.step()`` (:meth:`step` does both for models without local parameters).

    Args:
        engine: :class:`GhostClipping` or :class:`VmapClipping`; its ``clipping_norm`` is C.
        optimizer: Updates the parameters from their ``.grad`` (post-processing).
        noise_multiplier: m (calibrated; the test scale is applied on top).
        expected_batch_size: b.
        noise: The torch generator of the Gaussian noise (from the spec's noise stream).
        reducer: The workers sharing each logical batch (``None``: this process computes the
            whole batch); the engine's clipped sums are then this worker's share's, summed over
            the workers after rank 0 added the noise (the noise is drawn once per step).
    """

    def __init__(
        self,
        engine: GhostClipping | VmapClipping,
        optimizer: torch.optim.Optimizer | None,
        *,
        noise_multiplier: float,
        expected_batch_size: float,
        noise: torch.Generator,
        reducer: GradientReducer | None = None,
    ) -> None:
        self.reducer = reducer
        self.engine = engine
        self.optimizer = optimizer
        self.mechanism = SampledGaussianMechanism(engine.clipping_norm, noise_multiplier)
        self.noise_scale = self.mechanism.noise_scale
        self.noise_multiplier = float(noise_multiplier)
        self.clipping_norm = engine.clipping_norm
        self.expected_batch_size = float(expected_batch_size)
        self.noise = noise

    @property
    def applied_noise_std(self) -> float:
        """σ actually drawn on the summed gradient: ``s · m · C``."""
        return self.noise_scale * self.noise_multiplier * self.clipping_norm

    def privatise(self, *args: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Compute the noisy mean clipped gradient of a batch into the released parameters'
        ``.grad``; return the per-user losses and the local gradients (divided by ``b``).

        ``args`` are the engine's: the inputs of the loss (:class:`GhostClipping`) or
        ``(local, data)`` (:class:`VmapClipping`).
        """
        losses, local_grads = self.engine.clipped_sum(*args)
        reducer = self.reducer
        shared = reducer is not None and reducer.world_size > 1
        with torch.no_grad():
            grads = []
            for p in self.engine.parameters:
                if p.grad is None:
                    raise ConfigError("DP-SGD: a released parameter got no clipped gradient")
                if reducer is None or reducer.rank == 0:  # once per logical step
                    self.mechanism.add_noise(p.grad, self.noise)
                grads.append(p.grad)
            if shared and reducer is not None:
                reducer.all_reduce(grads)
            for grad in grads:
                grad.div_(self.expected_batch_size)
        return losses, tuple(g / self.expected_batch_size for g in local_grads)

    def step(self, *args: Any) -> torch.Tensor:
        """:meth:`privatise` then ``optimizer.step()``; returns the per-user losses."""
        if self.optimizer is None:
            raise ConfigError("DPSGDTrainer.step needs an optimizer")
        losses, _ = self.privatise(*args)
        self.optimizer.step()
        return losses


# -------------------------------------------------------------------- one private fit
@dataclass(frozen=True)
class PrivateRun:
    """What a model's ``_fit_private`` needs: the plan, the sampler, the noise, the counts.

    Attributes:
        plan: The calibrated :class:`DPSGDPlan`.
        sampler: Poisson batches of user codes (drawn from the secret noise stream).
        noise: Torch generator of the steps' Gaussian noise (an independent secret stream).
        item_counts: The noisy cold-start item counts (float64, may be negative).
        popularity: Their guarantee (composed into the run's by :meth:`guarantee`).
        noise_scale: The test scale of the noise (1 for real fits).
    """

    plan: DPSGDPlan
    sampler: PoissonSampler
    noise: torch.Generator
    item_counts: np.ndarray
    popularity: PrivacyGuarantee
    noise_scale: float

    def trainer(
        self,
        engine: GhostClipping | VmapClipping,
        optimizer: torch.optim.Optimizer | None,
        reducer: GradientReducer | None = None,
    ) -> DPSGDTrainer:
        """A :class:`DPSGDTrainer` with the plan's multiplier, batch size and noise stream
        (``reducer``: the workers sharing each logical batch, if any)."""
        return DPSGDTrainer(
            engine,
            optimizer,
            noise_multiplier=self.plan.noise_multiplier,
            expected_batch_size=self.plan.expected_batch_size,
            noise=self.noise,
            reducer=reducer,
        )

    def guarantee(self, spec: PrivacySpec, *, statistic: str, released: str) -> PrivacyGuarantee:
        """The guarantee of the whole fit (the steps and the counts composed)."""
        return dpsgd_guarantee(
            self.plan,
            spec,
            statistic=statistic,
            released=released,
            popularity=self.popularity,
            noise_scale=self.noise_scale,
        )


def start_private_run(
    spec: PrivacySpec, matrix: Any, expected_batch_size: int, epochs: int
) -> PrivateRun:
    """Plan a DP-SGD fit over the rows of ``matrix`` and release its cold-start item counts.

    The spec's noise stream (:meth:`PrivacySpec.noise_generator`) is split into independent
    children: one seeds the counts' noise, one the Poisson sampling, one the steps' noise.

    Args:
        spec: A resolved spec with a contribution bound (the counts' sensitivity is ``√c``).
        matrix: The binary, contribution-bounded ``n_users × n_items`` CSR matrix.
        expected_batch_size: ``b``, expected users per step.
        epochs: Passes over the users.
    """
    from privrank.privacy.mechanisms import private_item_counts

    spec.require_contribution_bound("DP-SGD's cold-start item counts")
    plan = plan_dpsgd(spec, int(matrix.shape[0]), expected_batch_size, epochs)
    counts_stream, sampling_stream, noise_stream = spec.noise_generator().spawn(3)
    counts_spec = spec.model_copy(
        update={
            "epsilon": POPULARITY_SHARE * float(spec.epsilon),
            "noise_seed": int(counts_stream.integers(2**63 - 1)),
        }
    )
    counts, popularity = private_item_counts(matrix, counts_spec)
    return PrivateRun(
        plan=plan,
        sampler=PoissonSampler(plan.n_users, plan.sampling_rate, sampling_stream),
        noise=torch_noise_generator(noise_stream),
        item_counts=counts,
        popularity=popularity,
        noise_scale=current_noise_scale(),
    )
