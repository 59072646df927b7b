"""Reports: loading results, markdown tables and PNG charts, from hand-made records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from privrank.errors import ArtifactError, ConfigError
from privrank.workflow.report import (
    group_by_protocol,
    load_results,
    markdown_summary,
    metric_label,
    plot_comparison,
    plot_curves,
    write_report,
)


def _ci(estimate: float, half: float = 0.02) -> dict:
    return {
        "estimate": estimate,
        "low": estimate - half,
        "high": estimate + half,
        "confidence": 0.95,
        "n": 100,
        "n_resamples": 1000,
        "seed": 0,
        "method": "percentile bootstrap",
    }


def _record(label: str, scale: float, protocol: str = "toy", comparisons=None) -> dict:
    metrics = {}
    for k in (5, 10, 20):
        metrics[f"ndcg@{k}"] = _ci(scale * (0.3 + k / 100))
        metrics[f"recall@{k}"] = _ci(scale * (0.1 + k / 50))
        metrics[f"novelty@{k}"] = _ci(2.0 + k / 10)
    return {
        "format": "privrank.result",
        "version": 1,
        "protocol": {"name": protocol, "metrics": ["ndcg", "recall"], "description": "A toy"},
        "dataset": {"name": "toy", "fingerprint": "ab" * 32, "rows": 1234, "users": 10, "items": 7},
        "split": {"spec": {"protocol": "holdout", "fraction": 0.2, "seed": 0}, "seed": 0},
        "test_history": "train",
        "model": {"name": label, "label": label, "history_mode": "users"},
        "headline": ["ndcg@10", "recall@20"],
        "evaluation": {"counts": {"users_evaluated": 100, "test_pairs": 250}},
        "metrics": metrics,
        "aggregate": {"coverage@10": 0.5},
        "timing": {"fit_s": 1.5, "evaluate_s": 0.25},
        "bootstrap": {"confidence": 0.95},
        "baseline": "pop",
        "comparisons": comparisons or {},
    }


COMPARISON = {
    "n": 100,
    "mean_a": 0.5,
    "mean_b": 0.4,
    "mean_difference": 0.1,
    "difference_ci": _ci(0.1, 0.03),
    "t_interval": [0.07, 0.13],
    "t_statistic": 5.0,
    "t_pvalue": 2.5e-6,
    "wilcoxon_statistic": 100.0,
    "wilcoxon_pvalue": 0.0123,
    "cohens_d": 0.5,
}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_metric_labels() -> None:
    assert metric_label("ndcg@10") == "NDCG@10"
    assert metric_label("hit_rate@10") == "HR@10"
    assert metric_label("custom") == "custom"


def test_markdown_lists_cis_comparisons_and_setting() -> None:
    records = [_record("pop", 0.5), _record("ease", 1.0, comparisons={"ndcg@10": COMPARISON})]
    text = markdown_summary(records, {"toy": ["toy.comparison.png"]})
    assert "## toy" in text and "A toy." in text
    assert "| model | NDCG@10 (95% CI) | Recall@20 (95% CI) | fit s | eval s | history |" in text
    # pop: ndcg@10 = 0.5 * 0.4 = 0.2 ± 0.02; recall@20 = 0.5 * 0.5 = 0.25 ± 0.02
    assert (
        "| pop | 0.2000 [0.1800, 0.2200] | 0.2500 [0.2300, 0.2700] | 1.50 | 0.25 | users |" in text
    )
    assert "| ease | NDCG@10 | +0.1000 [0.0700, 0.1300] | 2.50e-06 | 0.012 | 0.500 |" in text
    assert "baseline `pop` on the same 100 users" in text
    assert "1,234 interactions" in text and "fingerprint `abababababababab…`" in text
    assert "![toy](toy.comparison.png)" in text
    assert "| Novelty@5 |" in text and "| Coverage@10 |" in text


def test_repeated_labels_are_told_apart_without_changing_records() -> None:
    records = [_record("ease", 1.0), _record("ease", 0.9), _record("pop", 0.5, protocol="other")]
    groups = group_by_protocol(records)
    assert [r["_label"] for r in groups["toy"]] == ["ease", "ease #2"]
    assert "_label" not in records[0]


def test_charts_are_pngs(tmp_path: Path) -> None:
    group = [_record("pop", 0.5), _record("ease", 1.0), _record("ials", 0.9)]
    width, height = _png_size(plot_curves(group, tmp_path / "curves.png"))
    assert width > 400 and height > 200
    width, height = _png_size(plot_comparison(group, tmp_path / "bars.png"))
    assert width > 400 and height > 200
    with pytest.raises(ConfigError, match="no ranking metrics"):
        plot_curves([{**group[0], "protocol": {"name": "x", "metrics": []}}], tmp_path / "x.png")


def test_write_report_from_files_and_run_summaries(tmp_path: Path) -> None:
    results = tmp_path / "run"
    (results / "toy").mkdir(parents=True)
    for record in (_record("pop", 0.5), _record("ease", 1.0)):
        (results / "toy" / f"{record['model']['label']}.json").write_text(json.dumps(record))
    (results / "summary.json").write_text(
        json.dumps({"format": "privrank.run", "results": ["toy/pop.json", "toy/ease.json"]})
    )
    loaded = load_results([results / "summary.json"])
    assert [r["model"]["label"] for r in loaded] == ["pop", "ease"]
    written = write_report([results / "summary.json"], tmp_path / "report")
    assert sorted(p.name for p in written.images) == ["toy.comparison.png", "toy.curves.png"]
    assert all(_png_size(p)[0] > 0 for p in written.images)
    text = written.markdown.read_text()
    assert "![toy](toy.comparison.png)" in text and "![toy](toy.curves.png)" in text
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]


def test_write_report_from_loaded_records(tmp_path: Path) -> None:
    records = [_record("pop", 0.5), _record("ease", 1.0)]
    written = write_report(records, tmp_path / "report")
    assert sorted(p.name for p in written.images) == ["toy.comparison.png", "toy.curves.png"]
    assert "![toy](toy.comparison.png)" in written.markdown.read_text()
    with pytest.raises(ConfigError, match="no results given"):
        write_report([], tmp_path / "empty")


def test_load_results_refuses_what_is_not_a_result(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such result file"):
        load_results([tmp_path / "missing.json"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArtifactError, match="cannot read a JSON result"):
        load_results([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(ArtifactError, match="is not a privrank result"):
        load_results([tmp_path / "other.json"])
    (tmp_path / "v2.json").write_text(json.dumps({**_record("a", 1), "version": 2}))
    with pytest.raises(ArtifactError, match="result version 2"):
        load_results([tmp_path / "v2.json"])
    with pytest.raises(ConfigError, match="no results"):
        load_results([])
