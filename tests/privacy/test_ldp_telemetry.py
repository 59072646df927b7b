"""Local-DP telemetry: the device side, the wire format, the server's decoding.

Oracles: the hand-computed estimand ``E[f(d)] = Σ_{user-days} (events of d)/(events)`` of a
small event table, against the mean of many independent collections (fresh device randomness
and hash family each); exact equality of reports before and after the wire format.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from privrank.errors import ConfigError, DataError
from privrank.privacy.local_dp import CMSReports, SketchConfig, collection_epsilon
from privrank.privacy.local_dp.telemetry import DeviceTelemetry, decode_reports, randomise_days
from privrank.privacy.local_dp.wire import read_reports, write_reports

ITEMS = [f"i{i}" for i in range(10)]


def _events(rng: np.random.Generator, users: int = 1500) -> tuple[list[str], list[str], list[str]]:
    """Users with 1–4 events on each of two days, items Zipf-like."""
    weights = 1.0 / np.arange(1, len(ITEMS) + 1)
    weights /= weights.sum()
    u, it, d = [], [], []
    for user in range(users):
        for day in ("2026-12-01", "2026-12-02"):
            for _ in range(int(rng.integers(1, 5))):
                u.append(f"u{user}")
                it.append(ITEMS[int(rng.choice(len(ITEMS), p=weights))])
                d.append(day)
    return u, it, d


def _estimand(users: list[str], items: list[str], days: list[str]) -> np.ndarray:
    """E[f(d)]: each user-day's weight 1 spread evenly over its events (by hand)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for user, item, day in zip(users, items, days, strict=True):
        groups.setdefault((user, day), []).append(item)
    truth = np.zeros(len(ITEMS))
    for events in groups.values():
        for item in events:
            truth[ITEMS.index(item)] += 1 / len(events)
    return truth


@pytest.mark.parametrize("kind", ["cms", "hcms"])
def test_decoded_estimate_is_unbiased_for_the_user_day_estimand(kind):
    rng = np.random.default_rng(11)
    users, items, days = _events(rng)
    truth = _estimand(users, items, days)
    draws = 100
    estimates = np.empty((draws, len(ITEMS)))
    for r in range(draws):
        config = SketchConfig(kind=kind, epsilon=2.0, m=16, k=8, hash_seed=r)
        batches = randomise_days(config, users, items, days, rng, batch_size=700)
        decoded = decode_reports(config, ITEMS, batches)
        assert decoded.reports_per_day == {"2026-12-01": 1500, "2026-12-02": 1500}
        estimates[r] = decoded.estimate
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(draws)
    # The mean of 100 collections is within 4.5 standard errors of the hand-computed estimand.
    assert np.all(np.abs(estimates.mean(axis=0) - truth) < 4.5 * standard_error)
    # The stated standard deviation (plug-in of the variance formula) matches the spread.
    ratio = decoded.std / estimates.std(axis=0, ddof=1)
    assert np.all((ratio > 0.75) & (ratio < 1.35)), ratio


def test_one_report_per_user_day_and_the_guarantee_is_per_user_day():
    rng = np.random.default_rng(0)
    users = ["a", "a", "a", "b", "b", "c"]
    items = ["i1", "i2", "i1", "i3", "i3", "i4"]
    days = ["2026-12-01", "2026-12-01", "2026-12-02", "2026-12-01", "2026-12-01", "2026-12-02"]
    config = SketchConfig(kind="cms", epsilon=3.0, m=8, k=4)
    batches = list(randomise_days(config, users, items, days, rng))
    per_day = {day: len(reports) for day, reports in batches}
    assert per_day == {"2026-12-01": 2, "2026-12-02": 2}  # (a, b) on day 1, (a, c) on day 2
    decoded = decode_reports(config, ITEMS, iter(batches))
    guarantee = decoded.guarantee()
    assert guarantee.epsilon_per_user_per_day == pytest.approx(3.0, rel=1e-3)
    assert guarantee.epsilon_total == pytest.approx(collection_epsilon(config, 1, 2), rel=1e-9)
    assert guarantee.epsilon_total == pytest.approx(6.0, rel=1e-3)
    assert "user-day" in guarantee.unit and "untrusted" in guarantee.trust


def test_a_device_refuses_a_second_report_for_the_same_day():
    device = DeviceTelemetry(SketchConfig(kind="hcms", epsilon=1.0, m=8, k=2))
    rng = np.random.default_rng(1)
    assert device.report_day("2026-12-01", [], rng) is None  # no events: nothing sent
    assert len(device.report_day("2026-12-01", ["i1", "i2"], rng)) == 1
    with pytest.raises(ConfigError, match="one report per user-day"):
        device.report_day("2026-12-01", ["i3"], rng)
    assert len(device.report_day("2026-12-02", ["i3"], rng)) == 1


@pytest.mark.parametrize("kind,m", [("cms", 13), ("cms", 16), ("hcms", 16)])
def test_reports_survive_the_wire_format_exactly(tmp_path: Path, kind: str, m: int):
    config = SketchConfig(kind=kind, epsilon=1.5, m=m, k=5, hash_seed=3)
    rng = np.random.default_rng(2)
    users = [f"u{i % 40}" for i in range(100)]
    days = ["2026-12-01" if i < 70 else "2026-12-03" for i in range(100)]
    sent = list(randomise_days(config, users, [ITEMS[i % 10] for i in range(100)], days, rng))
    path = tmp_path / "r.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        assert write_reports(handle, config, sent) == 70  # 40 + 30 user-days
    received = list(read_reports(path, config, batch_size=7))
    for name in ("rows", "vectors", "columns", "bits"):
        if hasattr(sent[0][1], name):
            a = np.concatenate([getattr(r, name) for _, r in sent])
            b = np.concatenate([getattr(r, name) for _, r in received])
            np.testing.assert_array_equal(a, b)
    assert [d for d, _ in sent] == sorted({d for d, _ in received})
    text = path.read_text()
    assert "u1" not in text and "i1" not in text  # no user id, no item id on the wire


def _file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good(config: SketchConfig) -> list[str]:
    handle = io.StringIO()
    reports = CMSReports(np.array([1, 2], dtype=np.int32), np.ones((2, config.m), dtype=np.int8))
    write_reports(handle, config, [("2026-12-01", reports)])
    return handle.getvalue().splitlines()


@pytest.mark.parametrize(
    "line,field,fragment",
    [
        ('{"day": "2026-12-01", "row": 1', None, "not valid JSON"),
        ('{"day": "2026-12-01", "row": 1, "bits": "AQ==", "user": "u1"}', "user", "unexpected"),
        ('{"day": "2026-12-01", "row": 9, "bits": "//8="}', "row", "[0, 4)"),
        ('{"day": "2026-13-01", "row": 1, "bits": "//8="}', "day", "ISO date"),
        ('{"day": "2026-12-01", "row": 1, "bits": "//8"}', "bits", "not base64"),
        ('{"day": "2026-12-01", "row": 1, "bits": "/w=="}', "bits", "wrong length"),
        ('{"day": "2026-12-01", "row": 1}', "bits", "missing field"),
        ('{"day": "2026-12-01", "row": true, "bits": "//8="}', "row", "integer"),
    ],
)
def test_a_bad_report_names_file_line_field_and_value(tmp_path, line, field, fragment):
    config = SketchConfig(kind="cms", epsilon=1.0, m=16, k=4)
    lines = _good(config)
    path = _file(tmp_path, [*lines, line])
    with pytest.raises(DataError) as info:
        list(read_reports(path, config))
    error = info.value
    assert error.path == str(path) and error.line == 4
    assert error.field == field
    assert fragment in str(error)


def test_padding_bits_and_foreign_headers_are_refused(tmp_path):
    config = SketchConfig(kind="cms", epsilon=1.0, m=12, k=4)
    lines = _good(config)
    path = _file(tmp_path, [*lines, '{"day": "2026-12-01", "row": 1, "bits": "//8="}'])
    with pytest.raises(DataError, match="padding bits set"):
        list(read_reports(path, config))
    other = config.model_copy(update={"epsilon": 2.0})
    with pytest.raises(DataError, match="another collection") as info:
        list(read_reports(_file(tmp_path, lines), other))
    assert info.value.line == 1
    header = json.loads(lines[0]) | {"m": 0}
    with pytest.raises(DataError, match="invalid collection parameter") as info:
        list(read_reports(_file(tmp_path, [json.dumps(header)]), None))
    assert info.value.field == "m"
