"""The bench's statistics: percentiles as numpy's default defines them, and empty inputs."""

from __future__ import annotations

import pytest

from dsbridge_local.bench.stats import median_max, per_minute, percentile, spread


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.5
    assert percentile(values, 95) == 19.05
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 20.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order does not matter


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([4.25], 95) == 4.25
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_spread_and_median_max() -> None:
    assert spread([1.0, 2.0, 3.0, 10.0]) == {"p50": 2.5, "p95": 8.95, "max": 10.0}
    assert spread([]) == {"p50": None, "p95": None, "max": None}
    assert median_max([3, 5, 4, 4]) == {"median": 4.0, "max": 5}
    assert median_max([]) == {"median": None, "max": None}


def test_figures_are_rounded_to_milliseconds() -> None:
    assert percentile([10.4891, 10.5827], 95) == 10.578
    assert per_minute(2, 10.5827) == 11.34


def test_per_minute() -> None:
    assert per_minute(20, 60.0) == 20.0
    assert per_minute(5, 30.0) == 10.0
    assert per_minute(3, None) is None
    assert per_minute(3, 0.0) is None
