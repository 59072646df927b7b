"""Local differential privacy: Apple's Count Mean Sketch and Hadamard Count Mean Sketch.

Reports are randomised on the device (:mod:`~privrank.privacy.local_dp.sketch`), so nobody who
receives them is trusted with a user's data; :mod:`~privrank.privacy.local_dp.mechanism` states
and accounts the guarantee (ε per report, ``R·ε`` per user per day) and wraps the randomiser in
the :class:`~privrank.privacy.mechanism.Mechanism` interface.
"""

from privrank.privacy.local_dp.mechanism import (
    LocalGuarantee,
    LocalSketchMechanism,
    collection_epsilon,
)
from privrank.privacy.local_dp.sketch import (
    CMSReports,
    HCMSReports,
    LocalSketch,
    SketchConfig,
    SketchKind,
    device_reports,
    estimator_variance,
)

__all__ = [
    "CMSReports",
    "HCMSReports",
    "LocalGuarantee",
    "LocalSketch",
    "LocalSketchMechanism",
    "SketchConfig",
    "SketchKind",
    "collection_epsilon",
    "device_reports",
    "estimator_variance",
]
