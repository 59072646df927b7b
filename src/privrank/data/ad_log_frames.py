"""The synthetic ad log as CTR rows: a :class:`~privrank.data.features.CTRFrame` for the rankers.

:func:`ad_log_frame` reads a window of impressions (``start`` … ``start + rows``, in impression
order, streamed part by part so only the window is held) and turns every feature column of
:data:`~privrank.data.synthetic_ads.FEATURE_COLUMNS` plus ``user_id`` into a categorical string
field; ``click`` is the label. ``user_id`` is the frame's user field: the unit of privacy of a
user-level DP fit and the grouping of its contribution bound. ``p_click`` (the truth) is
returned beside the frame, never as a feature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from privrank.data.features import LABEL, CTRFrame
from privrank.data.synthetic_ads import FEATURE_COLUMNS, iter_ad_log
from privrank.errors import DataError

__all__ = ["AD_LOG_FIELDS", "USER_FIELD", "ad_log_frame"]

#: The user column (the unit of privacy).
USER_FIELD = "user_id"
#: Categorical fields of the frame, in order.
AD_LOG_FIELDS = (USER_FIELD, *FEATURE_COLUMNS)


def ad_log_frame(
    path: str | Path, *, start: int = 0, rows: int | None = None, with_user: bool = True
) -> tuple[CTRFrame, np.ndarray]:
    """Impressions ``start`` … ``start + rows`` of the log as CTR rows, and their ``p_click``.

    Args:
        path: A log written by ``privrank data synth-ads``.
        start: First impression (0-based, impression order).
        rows: How many (``None``: to the end).
        with_user: Keep ``user_id`` as a field (and as the user field).

    Raises:
        DataError: Not a log, or the window is empty.
    """
    columns = [*AD_LOG_FIELDS, "click", "p_click"]
    batches: list[pa.RecordBatch] = []
    seen = 0
    end = None if rows is None else start + rows
    for batch in iter_ad_log(path, columns):
        lo, hi = seen, seen + batch.num_rows
        seen = hi
        if hi <= start:
            continue
        take_from = max(start - lo, 0)
        take_to = batch.num_rows if end is None else min(end - lo, batch.num_rows)
        if take_to > take_from:
            batches.append(batch.slice(take_from, take_to - take_from))
        if end is not None and hi >= end:
            break
    if not batches:
        raise DataError(
            "the ad log has no rows in the window",
            path=Path(path),
            expected=f"impressions from {start} ({seen} in the log)",
        )
    table = pa.Table.from_batches(batches)
    fields = AD_LOG_FIELDS if with_user else FEATURE_COLUMNS
    arrays = [table.column("click").cast(pa.int8())]
    arrays += [table.column(name).cast(pa.string()) for name in fields]
    frame = CTRFrame(
        pa.Table.from_arrays(arrays, names=[LABEL, *fields]),
        categorical=tuple(fields),
        user_field=USER_FIELD if with_user else None,
        name=f"adlog:{Path(path).name}[{start}:{start + table.num_rows}]",
        source={"log": str(path), "start": start, "rows": table.num_rows},
    )
    return frame, table.column("p_click").to_numpy()
