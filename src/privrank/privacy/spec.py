"""The privacy specification a private ``fit`` receives.

A :class:`PrivacySpec` states the guarantee a run must meet and how it is met:

- **Guarantee.** The trained model is (ε, δ)-differentially private with respect to adding or
  removing *one user's entire history* (user-level DP): for any two datasets that differ in all
  rows of one user, and any set S of outputs, ``P[M(D) ∈ S] ≤ e^ε · P[M(D') ∈ S] + δ``.
- **Contribution bound.** Before any statistic is computed, each user keeps at most
  ``max_interactions_per_user`` rows (:func:`privrank.data.curation.max_per_user`), chosen
  reproducibly (``most_recent`` or a seeded ``uniform`` subset). The per-user sensitivity of every
  mechanism is derived from this cap and from ``clipping_norm``.
- **Accounting.** ``accountant`` names how composition over a run is computed (``pld``: privacy
  loss distributions, tight; ``rdp``: Rényi DP, a looser upper bound used as a cross-check). Both
  are Google's ``dp_accounting`` (:mod:`privrank.privacy.accounting`).

δ defaults to ``1 / (10 · n_users)``, resolved when the number of users is known
(:meth:`PrivacySpec.resolve`); a δ above ``1 / n_users`` is refused, since a mechanism could then
publish one user's full history with probability δ and still meet the definition.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from privrank.data._config import FrozenConfig
from privrank.errors import ConfigError

if TYPE_CHECKING:
    from privrank.data.interactions import Interactions

__all__ = ["AccountantKind", "PrivacySpec", "SelectionStrategy"]

AccountantKind = Literal["pld", "rdp"]
SelectionStrategy = Literal["most_recent", "uniform"]


class PrivacySpec(FrozenConfig):
    """A user-level (ε, δ) differential-privacy target and how to meet it.

    The unit of privacy is one user's whole history: neighbouring datasets differ by adding or
    removing every row of one user. A model trained under this spec satisfies
    ``P[M(D) ∈ S] ≤ exp(epsilon) · P[M(D') ∈ S] + delta`` for all such neighbours D, D' and
    all output sets S, as computed by the chosen accountant.

    Attributes:
        epsilon: Target ε (finite, > 0) of the whole run, all of its releases composed.
        delta: Target δ in (0, 1); ``None`` means ``1 / (10 · n_users)``, filled in by
            :meth:`resolve` at fit time. A δ above ``1 / n_users`` is refused by :meth:`resolve`.
        max_interactions_per_user: The contribution bound: at most this many rows per user are
            used (``None``: no cap; mechanisms whose sensitivity depends on the cap refuse such a
            spec, see :meth:`require_contribution_bound`; DP-SGD bounds a user's gradient by
            clipping, but its fits also release noisy item counts for cold start, whose
            sensitivity √c needs the cap, so they require it too).
        selection: Which rows a capped user keeps: ``most_recent`` (latest by timestamp) or
            ``uniform`` (a uniform subset chosen by ``selection_seed``). Either choice depends
            only on that user's own rows, so the cap is a per-user operation.
        selection_seed: Seed of the ``uniform`` selection.
        clipping_norm: L2 bound C on one user's contribution to a released statistic or
            gradient (finite, > 0); noise is calibrated to it.
        accountant: ``pld`` (default, tight) or ``rdp``.
        noise_seed: Seed of the DP noise generator. ``None`` (the default, for real releases)
            draws a fresh 128-bit seed from the OS's secure source on every call of
            :meth:`noise_generator`; fix it only for reproducible tests. Noise is sampled in
            floating point (numpy's PCG64), which is not hardened against the floating-point
            attacks of Mironov 2012.
    """

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    max_interactions_per_user: int | None = Field(default=None, ge=1)
    selection: SelectionStrategy = "most_recent"
    selection_seed: int = Field(default=0, ge=0, lt=2**64)
    clipping_norm: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    accountant: AccountantKind = "pld"
    noise_seed: int | None = Field(default=None, ge=0, lt=2**128)

    @field_validator("epsilon", "delta", "clipping_norm", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @property
    def is_resolved(self) -> bool:
        """Whether δ is set (explicitly or by :meth:`resolve`)."""
        return self.delta is not None

    def resolve(self, n_users: int) -> PrivacySpec:
        """Fill in the default δ and check δ against the number of users.

        Args:
            n_users: Number of users in the training data (≥ 1).

        Returns:
            A spec with ``delta`` set: the given δ, or ``1 / (10 · n_users)`` when it was
            ``None``.

        Raises:
            ConfigError: ``n_users`` is not a positive integer, or δ > ``1 / n_users``.
        """
        if isinstance(n_users, bool) or not isinstance(n_users, int | np.integer) or n_users < 1:
            raise ConfigError(
                f"PrivacySpec.resolve: n_users must be an integer ≥ 1. Got {n_users!r} instead."
            )
        n_users = int(n_users)
        if self.delta is None:
            return self.model_copy(update={"delta": 1.0 / (10.0 * n_users)})
        if self.delta > 1.0 / n_users:
            raise ConfigError(
                f"PrivacySpec.delta: got {self.delta!r}; must be ≤ 1/n_users = "
                f"{1.0 / n_users:.3g} for {n_users:,} users (a larger δ allows publishing one "
                f"user's whole history); the default is 1/(10·n_users) = "
                f"{1.0 / (10.0 * n_users):.3g}"
            )
        return self

    def require_delta(self) -> float:
        """δ of a resolved spec.

        Raises:
            ConfigError: δ is still ``None`` (call :meth:`resolve` first).
        """
        if self.delta is None:
            raise ConfigError(
                "PrivacySpec.delta is not resolved; call spec.resolve(n_users) before use"
            )
        return self.delta

    def require_contribution_bound(self, owner: str) -> int:
        """The contribution bound, for mechanisms whose sensitivity depends on it.

        Args:
            owner: Who needs it (named in the error), e.g. ``"DP-EASE"``.

        Raises:
            ConfigError: ``max_interactions_per_user`` is ``None``.
        """
        if self.max_interactions_per_user is None:
            raise ConfigError(
                f"{owner} needs a contribution bound: set PrivacySpec.max_interactions_per_user "
                "(its user-level sensitivity is derived from the cap on rows per user)"
            )
        return self.max_interactions_per_user

    def bound_contributions(self, data: Interactions) -> Interactions:
        """Apply the contribution bound to a dataset (a no-op when there is no cap).

        Args:
            data: The training interactions.

        Returns:
            ``max_per_user(data, max_interactions_per_user, strategy=selection,
            seed=selection_seed)``, or ``data`` unchanged when the cap is ``None``.
        """
        if self.max_interactions_per_user is None:
            return data
        from privrank.data.curation import max_per_user

        return max_per_user(
            data,
            self.max_interactions_per_user,
            strategy=self.selection,
            seed=self.selection_seed,
        )

    def noise_generator(self) -> np.random.Generator:
        """The generator DP noise must be drawn from (never shared with other randomness).

        Returns:
            ``np.random.default_rng(noise_seed)`` when a seed is set; otherwise a generator
            seeded from 128 bits of :mod:`secrets` (fresh on every call).
        """
        seed = self.noise_seed if self.noise_seed is not None else secrets.randbits(128)
        return np.random.default_rng(seed)

    def describe(self) -> str:
        """The guarantee in one sentence, e.g. for logs and reports."""
        delta = "1/(10·n_users)" if self.delta is None else f"{self.delta:.3g}"
        bound = (
            "no cap on rows per user"
            if self.max_interactions_per_user is None
            else f"at most {self.max_interactions_per_user} rows per user ({self.selection})"
        )
        return (
            f"user-level (ε={_fmt(self.epsilon)}, δ={delta})-differential privacy: adding or "
            f"removing one user's entire history; {bound}; clipping norm "
            f"{_fmt(self.clipping_norm)}; {self.accountant.upper()} accounting"
        )


def _fmt(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else str(value)
