"""The options of the Ray Data engine (where Ray runs, how big a task is, where staging goes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privrank.config_errors import config_error

__all__ = ["RayDataOptions"]


class RayDataOptions(BaseModel):
    """How the Ray Data engine runs.

    Attributes:
        address: The Ray cluster (``auto``, ``host:6379``, ``ray://host:10001``); ``None``:
            ``RAY_ADDRESS`` when set, else a local Ray instance started for the command.
        num_cpus: CPUs of a local instance (``None``: all); ignored with ``address``.
        object_store_bytes: Object store of a local instance (``None``: Ray's default).
        part_rows: Rows per task when Parquet input is cut along its row groups; a task's
            memory is a few times the size of its rows.
        staging_dir: Where tasks exchange intermediate files; every node must see it (a shared
            volume on a cluster). ``None``: a temporary directory next to the output.
        max_parallel: At most this many tasks at once (``None``: one per cluster CPU).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    object_store_bytes: int | None = Field(default=None, ge=78_643_200)
    part_rows: int = Field(default=2_000_000, ge=1)
    staging_dir: Path | None = None
    max_parallel: int | None = Field(default=None, ge=1)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__, model=type(self)) from exc
