r"""Private conversion measurement: noisy aggregate reports per campaign × conversion type.

The report is a histogram over a **public key domain** (every campaign × conversion type the
advertiser declared, whether or not it converted: keys that appear only when someone converted
would leak), with two buckets per key: the conversion count and the conversion value. It
follows the *summary reports* of the Attribution Reporting API (ARA) and the
*Privacy-Preserving Attribution* (PPA) draft of the W3C:

**Contribution bound (ARA).** Every conversion carries a contribution budget :math:`B`; it puts
:math:`sB` on its key's count bucket and :math:`(1-s)B\,\min(v, V)/V` on its value bucket
(``count_share`` :math:`=s`, ``value_cap`` :math:`=V`), so its contribution vector has L1 norm
at most :math:`B`. A user keeps at most :math:`C` conversions (``max_conversions_per_user``, the
first :math:`C` in time; the others are dropped and counted). Two units:

- ``unit="conversion"`` (PPA: ε per conversion): :math:`B = L_1` = ``l1_budget`` (65,536, ARA's
  contribution budget) for each conversion; adding or removing one conversion moves the
  histogram by at most :math:`L_1` in L1 norm. Each bucket gets Laplace noise of scale
  :math:`L_1/\varepsilon`: the report is ε-DP **per conversion**; a user's :math:`\le C`
  conversions together are :math:`C\varepsilon`-DP (group privacy, pure DP).
- ``unit="user"`` (ARA: one budget per source): the :math:`C` conversions of a user share
  :math:`L_1` (:math:`B = L_1/C`); the noise is the same :math:`L_1/\varepsilon`, and the report
  is ε-DP **per user**.

The ledger is charged the user-level ε (:attr:`ConversionReportConfig.user_epsilon`): C·ε for
``conversion``, ε for ``user``; δ = 0. Laplace noise on an L1-bounded histogram is pure
ε-DP (Dwork et al. 2006); :func:`laplace_epsilon` confirms ε with dp_accounting's privacy loss
distribution of the Laplace mechanism.

**Estimates.** A bucket's noisy sum is divided by the per-conversion scale: count
:math:`\hat n = \tilde h_{\mathrm{count}} / (sB)`, value
:math:`\hat v = \tilde h_{\mathrm{value}}\,V / ((1-s)B)`; their noise is Laplace with scale
:math:`L_1/(\varepsilon s B)` conversions (2/ε for the defaults and unit ``conversion``).
Values above :math:`V` are clipped (a bias, reported).

**Trust.** The party that holds the raw conversion records and adds the noise is trusted with
them: in ARA, the aggregation service in a trusted execution environment; in PPA, the
aggregation service (MPC); here, the privrank process that runs :func:`private_report`. Only
the noisy histogram is released. The ad tech, the advertiser and anyone who reads the report
learn only post-processing of it. The key domain, ε, :math:`L_1`, :math:`C`, :math:`V` and
:math:`s` are public.

**Not protected.** Which campaigns and types exist (the public domain); anything released
elsewhere about the same users (the ledger composes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from privrank.errors import ConfigError, DataError
from privrank.privacy._contribution import first_rows_per_user
from privrank.privacy.calibration import Release
from privrank.privacy.mechanism import Mechanism, current_noise_scale, register_mechanism
from privrank.privacy.spec import AccountantKind

__all__ = [
    "ARA_L1_BUDGET",
    "ConversionReport",
    "ConversionReportConfig",
    "Conversions",
    "LaplaceHistogramMechanism",
    "cap_per_user",
    "contributions",
    "exact_report",
    "laplace_epsilon",
    "private_report",
]

#: The Attribution Reporting API's contribution budget per source (L1).
ARA_L1_BUDGET = 65_536.0


class ConversionReportConfig(BaseModel):
    """Parameters of a private conversion report (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    unit: Literal["conversion", "user"] = "conversion"
    max_conversions_per_user: int = Field(default=4, ge=1)
    l1_budget: float = Field(default=ARA_L1_BUDGET, gt=0, allow_inf_nan=False)
    value_cap: float = Field(default=500.0, gt=0, allow_inf_nan=False)
    count_share: float = Field(default=0.5, gt=0, lt=1)

    @property
    def budget_per_conversion(self) -> float:
        """B: L1 for unit ``conversion``, L1 / C for unit ``user``."""
        if self.unit == "conversion":
            return self.l1_budget
        return self.l1_budget / self.max_conversions_per_user

    @property
    def noise_scale(self) -> float:
        """Laplace scale b = L1 / ε on every bucket."""
        return self.l1_budget / self.epsilon

    @property
    def user_epsilon(self) -> float:
        """The user-level ε the ledger is charged: C·ε (unit ``conversion``) or ε (``user``)."""
        if self.unit == "conversion":
            return self.epsilon * self.max_conversions_per_user
        return self.epsilon


@dataclass(frozen=True)
class Conversions:
    """Conversion records, one per conversion, in time order.

    Attributes:
        user: (n,) user ids (only used to bound contributions; never released).
        campaign: (n,) campaign codes in ``0..n_campaigns-1``.
        kind: (n,) conversion-type codes in ``0..n_types-1``.
        value: (n,) non-negative values.
        n_campaigns: Size of the public campaign domain.
        n_types: Size of the public type domain.
    """

    user: np.ndarray
    campaign: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    n_campaigns: int
    n_types: int

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("campaign", "kind", "value"):
            if len(getattr(self, name)) != n:
                raise DataError(
                    "conversion columns differ in length",
                    field=name,
                    value=len(getattr(self, name)),
                    expected=f"{n} rows like user",
                )
        _in_domain(self.campaign, self.n_campaigns, "campaign")
        _in_domain(self.kind, self.n_types, "conversion_type")
        value = np.asarray(self.value, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(value) | (value < 0))
        if bad.size:
            raise DataError(
                "invalid conversion value",
                line=int(bad[0]) + 1,
                field="conversion_value",
                value=float(value[bad[0]]),
                expected="a finite number >= 0",
            )


def _in_domain(codes: np.ndarray, size: int, name: str) -> None:
    codes = np.asarray(codes)
    bad = np.flatnonzero((codes < 0) | (codes >= size))
    if bad.size:
        raise DataError(
            f"{name} outside the declared domain",
            line=int(bad[0]) + 1,
            field=name,
            value=int(codes[bad[0]]),
            expected=f"a code in 0..{size - 1}",
        )


@dataclass(frozen=True)
class ConversionReport:
    """A report: per key (campaign, type), the count and value estimates.

    Attributes:
        count: (n_campaigns, n_types) conversion counts (noisy for a private report).
        value: (n_campaigns, n_types) conversion values (noisy for a private report).
        dropped: Conversions left out by the per-user cap.
        clipped: Conversions whose value was clipped at the cap.
        config: The parameters (``None`` for an exact report).
    """

    count: np.ndarray
    value: np.ndarray
    dropped: int
    clipped: int
    config: ConversionReportConfig | None = None


def cap_per_user(conversions: Conversions, cap: int) -> np.ndarray:
    """Boolean mask keeping the first ``cap`` conversions of every user (in record order)."""
    return first_rows_per_user(np.asarray(conversions.user), cap)


def contributions(
    conversions: Conversions, config: ConversionReportConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each kept conversion's contribution to its count and value buckets.

    Returns:
        ``(keep, count_part, value_part)``: the mask of kept conversions (per-user cap) and,
        for every conversion, its count and value contributions (0 when dropped). A kept
        conversion's ``count_part + value_part`` is at most B.
    """
    keep = cap_per_user(conversions, config.max_conversions_per_user)
    budget = config.budget_per_conversion
    value = np.minimum(np.asarray(conversions.value, dtype=np.float64), config.value_cap)
    count_part = np.where(keep, budget * config.count_share, 0.0)
    value_part = np.where(keep, budget * (1 - config.count_share) * value / config.value_cap, 0.0)
    return keep, count_part, value_part


def _histogram(conversions: Conversions, weights: np.ndarray) -> np.ndarray:
    index = np.asarray(conversions.campaign, dtype=np.int64) * conversions.n_types + np.asarray(
        conversions.kind, dtype=np.int64
    )
    flat = np.bincount(
        index, weights=weights, minlength=conversions.n_campaigns * conversions.n_types
    )
    return flat.reshape(conversions.n_campaigns, conversions.n_types)


def exact_report(conversions: Conversions) -> ConversionReport:
    """The exact aggregates (no cap, no clipping, no noise): what a private report estimates."""
    n = len(conversions.user)
    return ConversionReport(
        count=_histogram(conversions, np.ones(n)),
        value=_histogram(conversions, np.asarray(conversions.value, dtype=np.float64)),
        dropped=0,
        clipped=0,
    )


@register_mechanism("laplace-summary-report")
class LaplaceHistogramMechanism(Mechanism[np.ndarray, np.random.Generator]):
    """Laplace noise of scale L1/ε on every bucket of an L1-bounded histogram (pure ε-DP).

    ``sensitivity`` is the **L1** bound of one unit's contribution (this mechanism is the
    Laplace one, not a Gaussian one); ``noise_multiplier`` is b / L1 = 1/ε. There is no
    Gaussian release (:meth:`releases` is empty): ε is exact and confirmed by
    :func:`laplace_epsilon`.

    Args:
        epsilon: ε per unit.
        l1_sensitivity: The L1 bound of one unit's contribution.
    """

    def __init__(self, epsilon: float, l1_sensitivity: float) -> None:
        for name, value in (("epsilon", epsilon), ("l1_sensitivity", l1_sensitivity)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"LaplaceHistogramMechanism: {name} must be finite and > 0")
        self.epsilon = float(epsilon)
        self.sensitivity = float(l1_sensitivity)
        self.noise_multiplier = self.calibrate(self.epsilon, 0.0, "pld")
        self.noise_scale = current_noise_scale()

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """b / L1 = 1/ε (exact; δ and the accountant are not used: Laplace is pure DP)."""
        return 1.0 / float(epsilon)

    @property
    def scale(self) -> float:
        """b = L1 / ε, the calibrated Laplace scale."""
        return self.noise_multiplier * self.sensitivity

    def add_noise(self, statistic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``statistic`` plus independent Laplace(b) noise on every bucket."""
        statistic = np.asarray(statistic, dtype=np.float64)
        b = self.scale * self.noise_scale
        if b == 0:
            return statistic.copy()
        return statistic + rng.laplace(0.0, b, statistic.shape)

    def releases(self) -> tuple[Release, ...]:
        """No Gaussian release."""
        return ()

    def describe(self) -> str:
        """The mechanism in plain words."""
        return (
            f"Laplace noise of scale {self.scale:g} on every bucket of a histogram to which one "
            f"unit contributes at most {self.sensitivity:g} in L1 norm: pure "
            f"{self.epsilon:g}-DP per unit"
        )


def laplace_epsilon(scale: float, l1_sensitivity: float) -> float:
    """ε (δ = 0) of the Laplace mechanism by dp_accounting's PLD (the cross-check of L1/b).

    The PLD is built without "connect the dots" (whose tail bound reads as an infinite loss at
    δ = 0); the pessimistic discretisation overstates ε by at most its interval (1e-4)."""
    from dp_accounting.pld import privacy_loss_distribution

    pld = privacy_loss_distribution.from_laplace_mechanism(
        parameter=scale / l1_sensitivity,
        sensitivity=1.0,
        value_discretization_interval=1e-4,
        use_connect_dots=False,
    )
    return float(pld.get_epsilon_for_delta(0.0))


def private_report(
    conversions: Conversions, config: ConversionReportConfig, rng: np.random.Generator
) -> ConversionReport:
    """The noisy report (see the module docstring); ``rng`` is the noise generator only.

    The caller spends ``config.user_epsilon`` (δ = 0) from the ledger before calling
    (:func:`privrank.workflow.spend.spend_release`).
    """
    keep, count_part, value_part = contributions(conversions, config)
    mechanism = LaplaceHistogramMechanism(config.epsilon, config.l1_budget)
    budget = config.budget_per_conversion
    noisy_count = mechanism.add_noise(_histogram(conversions, count_part), rng)
    noisy_value = mechanism.add_noise(_histogram(conversions, value_part), rng)
    clipped = int(np.sum(keep & (np.asarray(conversions.value) > config.value_cap)))
    return ConversionReport(
        count=noisy_count / (budget * config.count_share),
        value=noisy_value * config.value_cap / (budget * (1 - config.count_share)),
        dropped=int(np.sum(~keep)),
        clipped=clipped,
        config=config,
    )
