"""Fit engines: where the data-parallel part of a fit runs (this process, or a cluster).

A model's fit runs in the calling process. Some fits have a part that is a sum over users of a
function of each user's own row; that part may run elsewhere, on user partitions, and be summed.
:class:`FitEngine` is the small interface such a fit asks for; ``FitOptions(engine=...)`` passes
one, and a model that declares ``supports_engine`` uses it (others refuse it rather than
silently run in-process). ``privrank.distributed.RayEngine`` is the Ray implementation; without
an engine everything runs here.

What an engine computes:

- :meth:`FitEngine.gram_statistics`: the sums of the Gram-based models (EASE, ItemKNN and their
  DP variants): weighted item counts and the weighted Gram block
  (:class:`~privrank.privacy.gram_release.GramStatistics`). The private release adds its noise
  once, here, to the summed statistics: the guarantee does not depend on the engine.

An engine that can also train a torch model's network data-parallel (SASRec, Mult-VAE: the
whole fit on several workers, each a replica, gradients summed over them,
:mod:`privrank.models.parallel`) implements
:class:`~privrank.models._torch_training.NetworkFitEngine` as well.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import scipy.sparse as sp

from privrank.privacy.gram_release import GramStatistics

__all__ = ["FitEngine"]


@runtime_checkable
class FitEngine(Protocol):
    """Where the data-parallel part of a fit runs.

    Attributes:
        name: Short name recorded with the fit (``ray``).
    """

    name: str

    def gram_statistics(self, matrix: sp.csr_matrix) -> GramStatistics:
        """The :class:`~privrank.privacy.gram_release.GramStatistics` of the binary training
        ``matrix``, computed over user partitions by this engine."""
        ...

    def describe(self) -> dict[str, object]:
        """What the engine ran on, as JSON (engine name, workers, partitions, ...)."""
        ...
