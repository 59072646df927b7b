"""The workspace: where imported data sets live and how commands find them by name.

``privrank data import`` writes ``$PRIVRANK_HOME/datasets/<name>/`` (see :mod:`privrank.settings`)
and remembers it as the most recent import, so ``privrank data stats`` with no argument reports
on it. Any command taking a data set accepts a workspace name or a path to a saved data set.
"""

from __future__ import annotations

from pathlib import Path

from privrank.atomic import atomic_file
from privrank.errors import ArtifactError
from privrank.settings import datasets_dir

__all__ = ["dataset_path", "last_imported", "remember_import"]

_LAST = ".last-import"


def dataset_path(name_or_path: str | Path | None) -> Path:
    """Resolve a data set argument to a saved data set directory.

    Args:
        name_or_path: A workspace name (``ml-100k``), a path to a directory written by
            ``Interactions.save``, or ``None`` for the most recent import.

    Raises:
        ArtifactError: Nothing matches; the message lists the workspace's data sets.
    """
    if name_or_path is None:
        return last_imported()
    candidate = Path(name_or_path).expanduser()
    if (candidate / "metadata.json").is_file():
        return candidate
    in_workspace = datasets_dir() / str(name_or_path)
    if (in_workspace / "metadata.json").is_file():
        return in_workspace
    raise ArtifactError(
        f"no data set {str(name_or_path)!r}: neither a saved data set directory nor a name in "
        f"{datasets_dir()} (known: {', '.join(_known()) or 'none'}); "
        "import one with `privrank data import`"
    )


def remember_import(path: Path) -> None:
    """Record ``path`` as the most recent import."""
    with atomic_file(datasets_dir() / _LAST) as handle:
        handle.write(str(Path(path).resolve()) + "\n")


def last_imported() -> Path:
    """The most recently imported data set."""
    marker = datasets_dir() / _LAST
    if marker.is_file():
        path = Path(marker.read_text().strip())
        if (path / "metadata.json").is_file():
            return path
    raise ArtifactError(
        "no data set given and none imported yet: run `privrank data import NAME_OR_FILE` first"
    )


def _known() -> list[str]:
    root = datasets_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "metadata.json").is_file())
