"""Conformance suites and test data shipped with privrank, for its own models and for yours.

- :func:`check_recommender` / :data:`RECOMMENDER_CHECKS`: the contract every recommender passes
  (config and save/load round trips, tampering, unknown users and items, cold start, fold-in,
  determinism, recommend semantics, a known-answer data set).
- :class:`PeakTreeMemory`: peak RSS of a process tree, for benchmarks with subprocesses.
- :func:`synthetic_interactions` and :func:`checkerboard`: small data with known structure;
  :func:`write_group_item_text`: item text that follows their structure.
- :mod:`privrank.testing.workers` (imported on its own: it needs torch): the workers of a
  data-parallel fit over a real gloo group, as threads or processes, without Ray.

Layer: above models; may import models, privacy, metrics, data and the base modules; the
library's own packages do not import it (tests do).
"""

from privrank.testing._data import checkerboard, synthetic_interactions, write_group_item_text
from privrank.testing._memory import PeakTreeMemory
from privrank.testing._recommender import RECOMMENDER_CHECKS, ModelFactory, check_recommender

__all__ = [
    "RECOMMENDER_CHECKS",
    "ModelFactory",
    "PeakTreeMemory",
    "check_recommender",
    "checkerboard",
    "synthetic_interactions",
    "write_group_item_text",
]
