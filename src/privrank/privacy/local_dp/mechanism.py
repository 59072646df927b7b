"""The local-DP sketch as a :class:`~privrank.privacy.mechanism.Mechanism`, and its guarantee.

**The guarantee** (:class:`LocalGuarantee`). Every report a device sends is ε-LDP
(:mod:`privrank.privacy.local_dp.sketch`): for any two items ``d, d'`` a device could hold and any
report ``r``, ``P[r | d] ≤ e^ε P[r | d']``. The unit of privacy is **one user's one report**; a
device that sends ``R`` reports a day (each a fresh randomisation, of the same or of different
items) is ``R·ε``-LDP per user per day by the composition of pure DP, which Google's
``dp_accounting`` confirms (:func:`collection_epsilon`: the privacy loss distribution of the
report's randomised responses, composed, at δ = 0). A collection over ``D`` days is
``D·R·ε``.

**Trust.** Nobody is trusted with a device's data: the report leaves the device randomised. The
server, the network and anyone who later sees the reports or the decoded sketch learn only
post-processing of ε-LDP reports. The guarantee does not need the hash family to be secret. It
does need the *device* to draw its randomness honestly (a compromised device can report
anything; that harms accuracy, never other users' privacy).

**Spending.** A local-DP guarantee is stronger than a central one: a collection that is ε-LDP
per user is also ε-DP (user-level, add/remove one user) for everything the server computes from
the reports, central releases included. So a collection spends from the same per-dataset
ledger as central fits: each collection reserves ``ε_total = days · R · ε`` and ``δ = 0``
(:func:`privrank.workflow.spend.fit_and_spend`, for a model that declares
:class:`~privrank.models.capabilities.LocalDPCollection`) before any report is simulated or
decoded, and commits once the decoded model is written; the ledger's basic composition then
bounds the dataset's total privacy loss across local and central releases alike.

**Mechanism interface.** :class:`LocalSketchMechanism` answers the interface's questions with
the randomised-response reading of the randomiser: ``calibrate`` returns the keep probability
``P[b = +1]`` of each randomised coordinate for a target ε per report (exact, δ = 0, no
accountant needed), ``add_noise`` randomises a batch of devices' items, ``sensitivity`` is the
number of report coordinates two items' encodings differ in (2 for CMS, each randomised at ε/2;
1 for HCMS, at ε), and ``noise_multiplier`` holds the flip probability ``1 − P[b = +1]``. It
makes no Gaussian release, so :meth:`~LocalSketchMechanism.releases` is empty: its accounting
is :meth:`~LocalSketchMechanism.guarantee`, never the Gaussian composition service.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from privrank.errors import ConfigError
from privrank.privacy.accounting import discrete_pair_epsilon, randomized_response_epsilon
from privrank.privacy.calibration import Release
from privrank.privacy.local_dp.sketch import CMSReports, HCMSReports, LocalSketch, SketchConfig
from privrank.privacy.mechanism import Mechanism, register_mechanism
from privrank.privacy.spec import AccountantKind

__all__ = ["LocalGuarantee", "LocalSketchMechanism", "collection_epsilon"]


def collection_epsilon(config: SketchConfig, reports_per_day: int, days: int = 1) -> float:
    """ε (δ = 0) per user of ``days`` days of ``reports_per_day`` reports, by dp_accounting.

    One report is ε-LDP: for CMS, two items' encodings differ in two coordinates, each a binary
    randomised response at ε/2 (every other coordinate has the same distribution under both),
    so its privacy loss is at most that of two composed responses at ε/2; HCMS sends one
    response at ε. A day is the composition of all its responses: ``bits · R · (ε/bits)`` by
    the composition theorem of pure DP, checked against dp_accounting's privacy loss
    distribution of the composed responses at δ = 0
    (:func:`~privrank.privacy.accounting.randomized_response_epsilon`, neighbouring relation
    *replace one*); days add up by basic composition, as the ledger adds them.

    Raises:
        ConfigError: ``reports_per_day`` or ``days`` < 1.
        ArithmeticError: The accountant disagrees with the composition theorem (by more than
            its discretisation).
    """
    for name, value in (("reports_per_day", reports_per_day), ("days", days)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"collection_epsilon: {name} must be an integer ≥ 1. Got {value!r}")
    per_day = reports_per_day * config.epsilon
    if config.kind == "ocms":
        accountant = discrete_pair_epsilon(*_ocms_laws(config), reports_per_day)
    else:
        bits = 2 if config.kind == "cms" else 1
        accountant = randomized_response_epsilon(config.epsilon / bits, bits * reports_per_day)
    if not math.isclose(accountant, per_day, rel_tol=1e-3):
        raise ArithmeticError(
            f"collection_epsilon: the PLD accountant gives ε={accountant} per day, the "
            f"composition of pure DP {per_day}"
        )
    return days * per_day


def _ocms_laws(config: SketchConfig) -> tuple[dict[int, float], dict[int, float]]:
    """The laws of the two coordinates ``(h(d), h(d'))`` in which two items' OCMS reports
    differ, under ``d`` and under ``d'`` (outcome ``2·b₁ + b₂``, ``b = 1`` for +1); every other
    coordinate has the same law under both."""
    p, q = config.unary_probabilities

    def law(first: float, second: float) -> dict[int, float]:
        return {
            2 * b1 + b2: (first if b1 else 1 - first) * (second if b2 else 1 - second)
            for b1 in (0, 1)
            for b2 in (0, 1)
        }

    return law(p, q), law(q, p)


@dataclass(frozen=True)
class LocalGuarantee:
    """What a local-DP collection guarantees (see the module docstring).

    Attributes:
        sketch: ``cms`` or ``hcms``.
        epsilon_per_report: ε of one report (the unit: one user's one report).
        reports_per_user_per_day: R, reports a device sends per day.
        days: D, days the collection ran.
        epsilon_per_user_per_day: ``R · ε`` (pure DP composition, by the PLD accountant).
        epsilon_total: ``D · R · ε`` per user over the collection (what the ledger spends).
        m: Sketch width.
        k: Sketch depth.
        n_reports: Reports decoded.
        trust: Who is trusted for what, in words.
    """

    sketch: str
    epsilon_per_report: float
    reports_per_user_per_day: int
    days: int
    epsilon_per_user_per_day: float
    epsilon_total: float
    m: int
    k: int
    n_reports: int
    trust: str = (
        "nobody: each report leaves the device already randomised; the server and anyone who "
        "sees the reports or the decoded model learn only post-processing of ε-LDP reports"
    )
    unit: str = "one user's one report (ε per report; R reports a day compose to R·ε)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def describe(self) -> str:
        """The guarantee in plain words."""
        name = {
            "cms": "Count Mean Sketch",
            "ocms": "Count Mean Sketch with the optimised unary encoding randomiser",
        }.get(self.sketch, "Hadamard Count Mean Sketch")
        return (
            f"local differential privacy ({name}, m={self.m}, k={self.k}): every report is "
            f"{self.epsilon_per_report:g}-LDP; {self.reports_per_user_per_day} report(s) per user "
            f"per day give ε={self.epsilon_per_user_per_day:g} per user per day and "
            f"ε={self.epsilon_total:g} (δ=0) per user over {self.days} day(s) "
            f"({self.n_reports:,} reports decoded). Trusted: {self.trust}."
        )


@register_mechanism("ldp-sketch")
class LocalSketchMechanism(Mechanism[np.ndarray, np.random.Generator]):
    """The client-side randomiser of a CMS/HCMS collection (see the module docstring).

    Args:
        sketch: The collection (public parameters, hash table, and the server's sketch).
        reports_per_user_per_day: R (≥ 1).
        days: D (≥ 1).
    """

    def __init__(self, sketch: LocalSketch, reports_per_user_per_day: int = 1, days: int = 1):
        for name, value in (("reports_per_user_per_day", reports_per_user_per_day), ("days", days)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"LocalSketchMechanism: {name} must be an integer ≥ 1")
        self.sketch = sketch
        self.config: SketchConfig = sketch.config
        self.reports_per_user_per_day = reports_per_user_per_day
        self.days = days
        self.sensitivity = 1.0 if self.config.kind == "hcms" else 2.0
        self.noise_multiplier = 1.0 - self.calibrate(self.config.epsilon, 0.0, "pld")
        self.noise_scale = 1.0

    def calibrate(self, epsilon: float, delta: float, accountant: AccountantKind) -> float:
        """The keep probability ``P[b = +1]`` making one report ε-LDP (exact; δ and the
        accountant are not used: randomised response is pure DP). For ``ocms``: the
        probability ``1 − q = e^ε/(e^ε + 1)`` that a coordinate off the item stays −1."""
        if self.config.kind == "ocms":
            return 1.0 / (1.0 + math.exp(-epsilon))
        per_coordinate = epsilon / self.sensitivity
        return 1.0 / (1.0 + math.exp(-per_coordinate))

    def add_noise(self, statistic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Randomise a batch of devices' items (``statistic``: dictionary indices) and add the
        reports to the server's sketch; returns the decoded frequency estimates so far."""
        self.sketch.add(self.randomise(statistic, rng))
        return self.sketch.estimate()

    def randomise(self, items: np.ndarray, rng: np.random.Generator) -> CMSReports | HCMSReports:
        """The devices' side only: one ε-LDP report per device."""
        return self.sketch.randomise(items, rng)

    def releases(self) -> tuple[Release, ...]:
        """No Gaussian release: the accounting is :meth:`guarantee`."""
        return ()

    def guarantee(self) -> LocalGuarantee:
        """The collection's guarantee, with ε per user per day and in total."""
        per_day = collection_epsilon(self.config, self.reports_per_user_per_day)
        total = collection_epsilon(self.config, self.reports_per_user_per_day, self.days)
        return LocalGuarantee(
            sketch=self.config.kind,
            epsilon_per_report=self.config.epsilon,
            reports_per_user_per_day=self.reports_per_user_per_day,
            days=self.days,
            epsilon_per_user_per_day=per_day,
            epsilon_total=total,
            m=self.config.m,
            k=self.config.k,
            n_reports=self.sketch.n_reports,
        )

    def describe(self) -> str:
        """The mechanism in plain words."""
        return self.guarantee().describe()
