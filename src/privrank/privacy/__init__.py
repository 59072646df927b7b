"""User-level differential privacy: the spec, the mechanisms, accounting and the budget ledger.

The unit of privacy throughout is one user's entire history. :class:`PrivacySpec` states the
target (ε, δ) and the contribution bound. Every mechanism implements one interface
(:class:`~privrank.privacy.mechanism.Mechanism`: sensitivity, calibration under a named
accountant, release, words) and is found by name in one registry
(:func:`~privrank.privacy.mechanism.mechanism_class`). One service composes releases and
calibrates noise (:mod:`~privrank.privacy.calibration`, on Google's ``dp_accounting`` through
:mod:`~privrank.privacy.accounting`); a :class:`~privrank.privacy.mechanism.PrivacyGuarantee`
is the list of releases a fit composed with its total (ε, δ).
:class:`~privrank.privacy.ledger.Ledger` keeps each dataset's budget and refuses runs that would
overspend it.

This package imports only ``data`` (the spec's contribution bound) and the base modules.

Names are imported on first use, so that ``privrank.privacy.ledger`` (used by the CLI) does not
pay for importing ``dp_accounting`` and scipy.

Layer: below models; may import metrics, data and the base modules (errors, settings,
database); never models or anything above. The empirical audit trains models, so it lives in
:mod:`privrank.workflow.audit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privrank._lazy import lazy_exports

if TYPE_CHECKING:
    from privrank.privacy.accounting import (
        Accountant,
        calibrate_dpsgd_noise,
        calibrate_gaussian_noise,
        calibrate_noise,
        dpsgd_epsilon,
        dpsgd_event,
        gaussian_epsilon,
        gaussian_event,
    )
    from privrank.privacy.calibration import (
        Release,
        calibrate_multiplier,
        composed_epsilon,
        epsilons,
        gaussian_multiplier,
    )
    from privrank.privacy.ledger import (
        Budget,
        Ledger,
        LedgerError,
        Reservation,
        SpendRecord,
        SpendStatus,
        default_ledger_url,
    )
    from privrank.privacy.mechanism import (
        Mechanism,
        PrivacyGuarantee,
        mechanism_class,
        mechanism_names,
        register_mechanism,
    )
    from privrank.privacy.spec import AccountantKind, PrivacySpec, SelectionStrategy

_WHERE = {
    "accounting": [
        "Accountant",
        "calibrate_dpsgd_noise",
        "calibrate_gaussian_noise",
        "calibrate_noise",
        "dpsgd_epsilon",
        "dpsgd_event",
        "gaussian_epsilon",
        "gaussian_event",
    ],
    "calibration": [
        "Release",
        "calibrate_multiplier",
        "composed_epsilon",
        "epsilons",
        "gaussian_multiplier",
    ],
    "mechanism": [
        "Mechanism",
        "PrivacyGuarantee",
        "mechanism_class",
        "mechanism_names",
        "register_mechanism",
    ],
    "ledger": [
        "Budget",
        "Ledger",
        "LedgerError",
        "Reservation",
        "SpendRecord",
        "SpendStatus",
        "default_ledger_url",
    ],
    "spec": ["AccountantKind", "PrivacySpec", "SelectionStrategy"],
}
__all__ = [
    "Accountant",
    "AccountantKind",
    "Budget",
    "Ledger",
    "LedgerError",
    "Mechanism",
    "PrivacyGuarantee",
    "PrivacySpec",
    "Release",
    "Reservation",
    "SelectionStrategy",
    "SpendRecord",
    "SpendStatus",
    "calibrate_dpsgd_noise",
    "calibrate_gaussian_noise",
    "calibrate_multiplier",
    "calibrate_noise",
    "composed_epsilon",
    "default_ledger_url",
    "dpsgd_epsilon",
    "dpsgd_event",
    "epsilons",
    "gaussian_epsilon",
    "gaussian_event",
    "gaussian_multiplier",
    "mechanism_class",
    "mechanism_names",
    "register_mechanism",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, exported=__all__)
