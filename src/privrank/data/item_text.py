"""Item text: the words a data set says about each item (titles, genres), one table.

Content features and catalogue search read items through :class:`ItemText`: one row per item
with its external id, its title, its genres and the text that is embedded and indexed
(``"<title>. <genre>, <genre>"``).

Any data set can bring its own text as a TSV file (:func:`read_item_text_tsv`: a header
``item<TAB>title<TAB>genres``, genres separated by ``|``). Which catalog data sets have text:

``ml-100k``
    ``u.item`` next to ``u.data``: ``id|title|release date|video release date|IMDb URL|``
    followed by 19 genre flags (0/1) in the order of ``u.genre`` (``unknown``, ``Action``, ...,
    ``Western``). The file is Latin-1 (a few titles carry accents). The genre ``unknown`` is
    not written into the text.
``beauty``, ``video``
    **None.** The S3-Rec ``Beauty.txt`` and SASRec ``Video.txt`` hold consecutive integer ids
    only; the mapping to Amazon product ids (and so to titles or categories) is not shipped with
    them (see their READMEs), so content features and search are not available for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from privrank.errors import DataError, DatasetUnavailableError

__all__ = [
    "ML100K_GENRES",
    "TEXT_SOURCES",
    "ItemText",
    "load_item_text",
    "read_item_text_tsv",
    "read_ml100k_items",
]

#: The 19 genres of ``u.genre``, in the order of the flags in ``u.item``.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

#: Data sets with item text, and the file that holds it (next to the interaction file).
TEXT_SOURCES = {"ml-100k": "u.item"}

_NO_TEXT = {
    "beauty": "Beauty.txt (S3-Rec) holds consecutive integer ids only; no titles or categories",
    "video": "Video.txt (SASRec) holds consecutive integer ids only; no titles or categories",
}


@dataclass(frozen=True)
class ItemText:
    """The text of a catalogue's items.

    Attributes:
        item_ids: External item ids (int64 or strings), one per row, unique.
        titles: Each item's title.
        genres: Each item's genres (a tuple of names, possibly empty).
        source: Where the text came from (a file path, or a name).
    """

    item_ids: np.ndarray
    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]
    source: str

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if len(self.titles) != n or len(self.genres) != n:
            raise DataError(
                f"item text of {self.source}: {n} ids, {len(self.titles)} titles and "
                f"{len(self.genres)} genre lists",
                expected="one title and one genre list per id",
            )
        if len({str(i) for i in self.item_ids.tolist()}) != n:
            raise DataError(f"item text of {self.source}: duplicate item ids", expected="unique")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def texts(self) -> list[str]:
        """The text each item is embedded and indexed by: ``"<title>. <genre>, <genre>"``."""
        return [
            f"{title}. {', '.join(genres)}" if genres else title
            for title, genres in zip(self.titles, self.genres, strict=True)
        ]

    def fingerprint(self) -> str:
        """SHA-256 of the ids and texts (keys caches of what is computed from the text)."""
        digest = hashlib.sha256()
        for item, text in zip(self.item_ids.tolist(), self.texts, strict=True):
            digest.update(f"{item}\t{text}\n".encode())
        return digest.hexdigest()

    def align(self, vocabulary: pa.Array | Sequence[object]) -> np.ndarray:
        """For each id of ``vocabulary`` (a model's item ids), its row here, or ``-1``.

        Ids are matched by their text form (an interaction file's ``242`` is ``u.item``'s
        ``242``; ``"i012"`` is a TSV file's ``i012``).
        """
        ids = vocabulary.to_pylist() if isinstance(vocabulary, pa.Array) else list(vocabulary)
        rows = {str(item): row for row, item in enumerate(self.item_ids.tolist())}
        return np.asarray([rows.get(str(item), -1) for item in ids], dtype=np.int64)

    def take(self, rows: np.ndarray) -> ItemText:
        """The items at ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return ItemText(
            item_ids=self.item_ids[rows],
            titles=tuple(self.titles[r] for r in rows),
            genres=tuple(self.genres[r] for r in rows),
            source=self.source,
        )


def read_ml100k_items(path: str | Path) -> ItemText:
    """Read MovieLens 100K's ``u.item``.

    Args:
        path: The file.

    Returns:
        Titles and genres of every movie (the flag ``unknown`` gives no genre word).

    Raises:
        DataError: A line that is not 24 ``|``-separated fields with an integer id and 0/1
            genre flags (the message names file, line, field, value and what was expected), or
            a duplicate id.
    """
    path = Path(path)
    ids: list[int] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    seen: dict[int, int] = {}
    n_fields = 5 + len(ML100K_GENRES)
    with path.open(encoding="latin-1", newline="") as lines:
        for number, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("|")
            if len(fields) != n_fields:
                raise DataError(
                    f"{len(fields)} fields",
                    path=path,
                    line=number,
                    value=line[:80],
                    expected=f"{n_fields} '|'-separated fields (id|title|dates|url|19 flags)",
                )
            try:
                item = int(fields[0])
            except ValueError:
                raise DataError(
                    "bad item id",
                    path=path,
                    line=number,
                    column=1,
                    field="item",
                    value=fields[0],
                    expected="an integer",
                ) from None
            if item in seen:
                raise DataError(
                    f"item {item} is listed twice (first on line {seen[item]})",
                    path=path,
                    line=number,
                    column=1,
                    field="item",
                    value=item,
                    expected="one line per item",
                )
            seen[item] = number
            flags = fields[5:]
            for offset, flag in enumerate(flags):
                if flag not in ("0", "1"):
                    raise DataError(
                        "bad genre flag",
                        path=path,
                        line=number,
                        column=6 + offset,
                        field=f"genre {ML100K_GENRES[offset]}",
                        value=flag,
                        expected="0 or 1",
                    )
            title = fields[1].strip()
            if not title:
                raise DataError(
                    "empty title",
                    path=path,
                    line=number,
                    column=2,
                    field="title",
                    value=fields[1],
                    expected="a non-empty title",
                )
            ids.append(item)
            titles.append(title)
            genres.append(tuple(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"))
    if not ids:
        raise DataError("no items", path=path, expected="at least one item line")
    cleaned = tuple(tuple(g for g in gs if g != "unknown") for gs in genres)
    return ItemText(np.asarray(ids, dtype=np.int64), tuple(titles), cleaned, str(path))


def read_item_text_tsv(path: str | Path) -> ItemText:
    """Read an item-text TSV file: header ``item<TAB>title<TAB>genres``, then one item a line
    (``genres`` separated by ``|``, possibly empty). Ids are kept as strings.

    Raises:
        DataError: A missing or wrong header, a line without 3 fields, an empty id or title, or
            a duplicate id (the message names file, line, field, value and what was expected).
    """
    path = Path(path)
    ids: list[str] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as lines:
        header = lines.readline().rstrip("\r\n")
        if header != "item\ttitle\tgenres":
            raise DataError(
                "bad header",
                path=path,
                line=1,
                value=header[:80],
                expected="the header 'item<TAB>title<TAB>genres'",
            )
        for number, raw in enumerate(lines, start=2):
            line = raw.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataError(
                    f"{len(fields)} fields",
                    path=path,
                    line=number,
                    value=line[:80],
                    expected="3 tab-separated fields (item, title, genres)",
                )
            item, title, genre_field = (f.strip() for f in fields)
            for column, (name, value) in enumerate((("item", item), ("title", title)), start=1):
                if not value:
                    raise DataError(
                        f"empty {name}",
                        path=path,
                        line=number,
                        column=column,
                        field=name,
                        value=fields[column - 1],
                        expected=f"a non-empty {name}",
                    )
            if item in seen:
                raise DataError(
                    f"item {item!r} is listed twice (first on line {seen[item]})",
                    path=path,
                    line=number,
                    column=1,
                    field="item",
                    value=item,
                    expected="one line per item",
                )
            seen[item] = number
            ids.append(item)
            titles.append(title)
            genres.append(tuple(g.strip() for g in genre_field.split("|") if g.strip()))
    if not ids:
        raise DataError("no items", path=path, expected="at least one item line")
    return ItemText(np.asarray(ids, dtype=object), tuple(titles), tuple(genres), str(path))


def load_item_text(source: str) -> ItemText:
    """The item text of a catalog data set, or of an item-text TSV file.

    Args:
        source: A catalog name (``ml-100k``; see the module docstring for which have text), or
            the path of a TSV file (:func:`read_item_text_tsv`).

    Raises:
        DataError: The data set has no item text (the message says why), or the file is
            invalid.
        DatasetUnavailableError: The text file is not where the data set's files are.
    """
    from privrank.data import catalog

    if source not in catalog.CATALOG and Path(source).is_file():
        return read_item_text_tsv(source)
    if source not in TEXT_SOURCES:
        why = _NO_TEXT.get(source, "not a catalog data set with item text, nor a file")
        raise DataError(
            f"{source!r} has no item text ({why})",
            field="item_text",
            value=source,
            expected=f"one of {sorted(TEXT_SOURCES)} or an item-text TSV file",
        )
    interactions = catalog.resolve(source, download=False)
    path = interactions.parent / TEXT_SOURCES[source]
    if not path.is_file():
        raise DatasetUnavailableError(
            f"data set {source!r}: its item text {TEXT_SOURCES[source]} is not at {path} "
            f"(place it next to {interactions.name}; it is in the official archive)"
        )
    return read_ml100k_items(path)
