"""dpsync_bench.stats: quantiles, summaries and the cross-rank reductions (pure Python)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsync_bench.stats import (
    quantile,
    reduce_max,
    reduce_spread,
    relative_spread,
    slowest_rank_counts,
    summarize,
)

finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)
latency = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


# ---- quantile -------------------------------------------------------------------------
@given(st.lists(finite, min_size=1, max_size=200), st.floats(min_value=0.0, max_value=1.0))
@settings(max_examples=300, deadline=None)
def test_quantile_matches_numpy_linear(values, q):
    ordered = sorted(values)
    want = float(np.percentile(np.array(ordered), q * 100, method="linear"))
    assert _close(quantile(ordered, q), want)


@pytest.mark.parametrize(
    "values, q, want",
    [
        ([5.0], 0.0, 5.0),
        ([5.0], 1.0, 5.0),
        ([1.0, 2.0], 0.5, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([0.0, 10.0], 0.9, 9.0),
        ([1.0, 2.0, 3.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0], 1.0, 3.0),
    ],
)
def test_quantile_known_values(values, q, want):
    assert quantile(values, q) == pytest.approx(want)


def test_quantile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError):
        quantile([], 0.5)
    for q in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError):
            quantile([1.0, 2.0], q)


# ---- summarize ------------------------------------------------------------------------
@given(st.lists(latency, min_size=1, max_size=300))
@settings(max_examples=200, deadline=None)
def test_summarize_matches_numpy(values):
    s = summarize(values)
    arr = np.array(values, dtype=float)
    assert set(s) == {"p50", "p90", "p99", "max", "min", "mean", "stdev", "n"}
    assert s["n"] == len(values)
    assert s["min"] == min(values) and s["max"] == max(values)
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert _close(s[name], float(np.percentile(arr, q)))
    assert math.isclose(s["mean"], float(arr.mean()), rel_tol=1e-9, abs_tol=1e-6)
    want_sd = float(arr.std(ddof=1)) if len(values) > 1 else 0.0
    assert math.isclose(s["stdev"], want_sd, rel_tol=1e-6, abs_tol=1e-6)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_summarize_does_not_modify_input_and_ignores_order():
    values = [3.0, 1.0, 2.0, 10.0]
    copy = list(values)
    assert summarize(values) == summarize(sorted(values))
    assert values == copy


def test_summarize_single_sample():
    s = summarize([7.5])
    assert s == {
        "p50": 7.5,
        "p90": 7.5,
        "p99": 7.5,
        "max": 7.5,
        "min": 7.5,
        "mean": 7.5,
        "stdev": 0.0,
        "n": 1,
    }


def test_summarize_stdev_is_sample_stdev():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert summarize(values)["stdev"] == pytest.approx(statistics.stdev(values))


def test_summarize_rejects_empty():
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_summarize_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, bad, 2.0])


# ---- cross-rank reductions ----------------------------------------------------------------
def test_reduce_max_is_per_iteration_max():
    per_rank = [[1.0, 5.0, 3.0], [2.0, 4.0, 3.0], [0.5, 6.0, 1.0]]
    assert reduce_max(per_rank) == [2.0, 6.0, 3.0]


def test_reduce_spread_is_per_iteration_range():
    per_rank = [[1.0, 5.0, 3.0], [2.0, 4.0, 3.0], [0.5, 6.0, 1.0]]
    assert reduce_spread(per_rank) == [1.5, 2.0, 2.0]


def test_slowest_rank_counts():
    per_rank = [[1.0, 5.0, 3.0, 9.0], [2.0, 4.0, 3.0, 1.0], [0.5, 6.0, 1.0, 2.0]]
    # iteration 2 ties ranks 0 and 1: the first one counts
    assert slowest_rank_counts(per_rank) == [2, 1, 1]


@given(
    st.integers(min_value=1, max_value=6).flatmap(
        lambda ranks: st.integers(min_value=1, max_value=50).flatmap(
            lambda iters: st.lists(
                st.lists(latency, min_size=iters, max_size=iters),
                min_size=ranks,
                max_size=ranks,
            )
        )
    )
)
@settings(max_examples=150, deadline=None)
def test_reductions_properties(per_rank):
    iters = len(per_rank[0])
    mx = reduce_max(per_rank)
    spread = reduce_spread(per_rank)
    counts = slowest_rank_counts(per_rank)
    assert len(mx) == len(spread) == iters
    assert len(counts) == len(per_rank) and sum(counts) == iters
    for i in range(iters):
        column = [r[i] for r in per_rank]
        assert mx[i] == max(column)
        assert spread[i] == max(column) - min(column) >= 0
    if len(per_rank) == 1:
        assert mx == per_rank[0] and all(v == 0 for v in spread) and counts == [iters]


@pytest.mark.parametrize("fn", [reduce_max, reduce_spread, slowest_rank_counts])
@pytest.mark.parametrize(
    "per_rank",
    [
        [],  # no ranks
        [[]],  # one rank, no iterations
        [[], []],
        [[1.0, 2.0], [1.0]],  # ragged
        [[1.0], [1.0, 2.0], [3.0]],
    ],
    ids=["no-ranks", "one-empty", "two-empty", "ragged-2", "ragged-3"],
)
def test_reductions_reject_ragged_or_empty(fn, per_rank):
    with pytest.raises(ValueError):
        fn(per_rank)


def test_relative_spread():
    assert relative_spread(0.0, 0.0) == 0.0
    assert relative_spread(10.0, 10.0) == 0.0
    assert relative_spread(9.0, 11.0) == pytest.approx(0.2)
    assert relative_spread(11.0, 9.0) == relative_spread(9.0, 11.0)
