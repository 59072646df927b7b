"""Item text: the ML-100K reader, the TSV reader, alignment and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrank.data.item_text import (
    ML100K_GENRES,
    load_item_text,
    read_item_text_tsv,
    read_ml100k_items,
)
from privrank.errors import DataError

FLAGS = "|".join(["0"] * len(ML100K_GENRES))


def _uitem(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def test_ml100k_titles_and_genres(tmp_path):
    comedy = ["0"] * len(ML100K_GENRES)
    comedy[ML100K_GENRES.index("Comedy")] = "1"
    comedy[ML100K_GENRES.index("Romance")] = "1"
    unknown = ["1"] + ["0"] * (len(ML100K_GENRES) - 1)
    text = read_ml100k_items(
        _uitem(
            tmp_path / "u.item",
            f"7|Café (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}",
            f"3|Nothing (1996)|01-Jan-1996||http://y|{'|'.join(unknown)}",
        )
    )
    assert text.item_ids.tolist() == [7, 3]
    assert text.titles == ("Café (1995)", "Nothing (1996)")
    assert text.genres == (("Comedy", "Romance"), ())  # "unknown" is no genre word
    assert text.texts == ["Café (1995). Comedy, Romance", "Nothing (1996)"]
    assert text.align([3, 9, 7]).tolist() == [1, -1, 0]
    assert text.align(np.array(["7"], dtype=object)).tolist() == [0]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (
            "x|T|d||u|" + FLAGS,
            r"u\.item, line 2, column 1 \(item\): bad item id: got 'x', expected an integer",
        ),
        (
            "2|T|d||u|" + FLAGS.replace("0", "2", 1),
            r"column 6 \(genre unknown\): bad genre flag: got '2'",
        ),
        ("2|T|d||u", r"line 2: 5 fields"),
        ("1|T|d||u|" + FLAGS, r"item 1 is listed twice \(first on line 1\)"),
        ("2| |d||u|" + FLAGS, r"column 2 \(title\)"),
    ],
)
def test_ml100k_bad_lines_are_named(tmp_path, line, match):
    path = _uitem(tmp_path / "u.item", "1|Ok (1995)|d||u|" + FLAGS, line)
    with pytest.raises(DataError, match=match):
        read_ml100k_items(path)


def test_tsv_reader_and_its_refusals(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_text("item\ttitle\tgenres\na1\tFirst\tX|Y\nb2\tSecond\t\n", encoding="utf-8")
    text = load_item_text(str(path))
    assert text.item_ids.tolist() == ["a1", "b2"] and text.genres == (("X", "Y"), ())
    path.write_text("id\ttitle\tgenres\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: bad header: got 'id.*expected the header"):
        read_item_text_tsv(path)
    path.write_text("item\ttitle\tgenres\na1\t\tX\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2, column 2 \(title\)"):
        read_item_text_tsv(path)


@pytest.mark.parametrize("name", ["beauty", "video", "nonsense"])
def test_data_sets_without_text_are_refused_with_the_reason(name):
    with pytest.raises(DataError, match="has no item text"):
        load_item_text(name)


@pytest.mark.realdata
def test_ml100k_item_text_on_real_data(real_data_dir):
    text = load_item_text("ml-100k")
    assert len(text) == 1682 and text.item_ids.min() == 1 and text.item_ids.max() == 1682
    assert text.titles[0] == "Toy Story (1995)"
    assert text.genres[0] == ("Animation", "Children's", "Comedy")
    assert sum(1 for g in text.genres if not g) == 2  # the two movies flagged only "unknown"
