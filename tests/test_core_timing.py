"""PeriodStats and LatencyStats figures on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from visuomotor_core.timing import LatencyStats, PeriodStats


def test_period_stats_report_jitter_percentiles_and_deadline_misses():
    stats = PeriodStats(nominal_period=1e-3, capacity=1000, tolerance=0.5)
    periods = np.full(1000, 1e-3)
    periods[::100] = 2e-3  # 10 periods twice as long: deadline misses
    periods[1::100] = 1.2e-3  # 10 periods late but within tolerance
    for period in periods:
        stats.record_period(period)
    summary = stats.summary()
    assert summary.count == 1000
    assert summary.deadline_misses == 10 and summary.total_deadline_misses == 10
    assert summary.jitter_p50 == pytest.approx(0.0, abs=1e-12)
    assert summary.jitter_p99 == pytest.approx(np.percentile(np.abs(periods - 1e-3), 99))
    assert summary.jitter_max == pytest.approx(1e-3)
    assert summary.mean_period == pytest.approx(periods.mean())
    assert summary.rate_hz == pytest.approx(1.0 / periods.mean())


def test_period_stats_window_keeps_the_latest_samples_and_total_keeps_counting():
    stats = PeriodStats(nominal_period=0.01, capacity=10)
    for _ in range(10):
        stats.record_period(0.1)  # misses
    for _ in range(10):
        stats.record_period(0.01)
    summary = stats.summary()
    assert summary.count == 10 and summary.deadline_misses == 0
    assert summary.total_deadline_misses == 10


def test_period_stats_from_timestamps_ignores_clock_resets_and_bad_values():
    stats = PeriodStats(nominal_period=0.05)
    for now in (0.0, 0.05, 0.10, 0.0, 0.05):  # a clock reset between 0.10 and 0.0
        stats.record_time(now)
    stats.record_period(float("nan"))
    stats.record_period(-1.0)
    assert len(stats) == 3
    assert stats.summary().mean_period == pytest.approx(0.05)


def test_empty_stats_report_zeros():
    assert PeriodStats(1e-3).summary().count == 0
    assert LatencyStats(["a"]).summary("a").p99 == 0.0


def test_period_stats_validation():
    with pytest.raises(ValueError, match="nominal_period"):
        PeriodStats(0.0)
    with pytest.raises(ValueError, match="capacity"):
        PeriodStats(1e-3, capacity=0)


def test_latency_stats_percentiles_per_stage():
    stats = LatencyStats(["encoder", "policy"], capacity=200)
    for value in np.linspace(0.001, 0.100, 100):
        stats.record("encoder", value)
    stats.record("policy", 0.002)
    encoder = stats.summary("encoder")
    assert encoder.count == 100
    assert encoder.p50 == pytest.approx(0.0505)
    assert encoder.p99 == pytest.approx(np.percentile(np.linspace(0.001, 0.1, 100), 99))
    assert encoder.max == pytest.approx(0.1)
    flat = stats.as_dict()
    assert flat["policy_p50_ms"] == pytest.approx(2.0)
    assert flat["encoder_count"] == 100
    with pytest.raises(KeyError):
        stats.record("unknown", 0.1)


def test_latency_stats_refuse_duplicate_stage_names():
    with pytest.raises(ValueError, match="duplicate"):
        LatencyStats(["a", "a"])
