"""Smoke test of ``benchmarks/colorize_throughput.py``: the five runs colorize every photo
(results redirected to the test); no timing asserted."""

from __future__ import annotations

from tests.training import benchmark_module


def test_each_run_colorizes_every_photo(monkeypatch):
    written = {}
    with benchmark_module("colorize_throughput") as bench:
        record = lambda name, rows, md: written.update(rows=rows, md=md) or ("", "")  # noqa: E731
        monkeypatch.setattr(bench, "write_results", record)
        monkeypatch.setattr(bench, "SIZES", ((60, 40), (40, 60)))
        bench.main(["--photos", "5", "--batch-size", "2", "--width", "0.125", "--size", "32"])
    rows = written["rows"]
    assert [r["precision"] for r in rows] == ["fp32", "fp32", "fp32", "fp32", "bf16"]
    assert all(r["images"] == 5 and r["images/s"] > 0 for r in rows)
    assert rows[0]["vs one at a time"] == 1
