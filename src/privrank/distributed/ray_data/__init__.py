"""Data preparation on Ray Data: import, validation, curation and splits over partitions.

``privrank data import --engine ray`` and ``privrank data split --engine ray`` run here. The
results are those of the single-process path (:mod:`privrank.data`) on the same input — the
same rows in the same order, codes, id maps, fingerprint, curation record and split — while no
process holds the whole data set: partitions stream through Ray Data tasks, the driver keeps
per-user and per-item arrays only, and order-dependent steps run the single-process functions
on buckets of whole users (see :mod:`._import`, :mod:`._split` and :mod:`._buckets`).

Ray is an optional dependency (``pip install 'privrank[ray]'``), imported when a pass runs.
"""

from privrank.distributed.ray_data._import import RAY_FORMATS, RayImportResult, import_on_ray
from privrank.distributed.ray_data._options import RayDataOptions
from privrank.distributed.ray_data._split import RaySplitResult, split_on_ray

__all__ = [
    "RAY_FORMATS",
    "RayDataOptions",
    "RayImportResult",
    "RaySplitResult",
    "import_on_ray",
    "split_on_ray",
]
