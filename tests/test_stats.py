"""dpsync_bench.stats: the one quantile, summaries, the cross-rank reductions and block
means (numpy, no torch)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsync_bench.stats import (
    STAT_KEYS,
    argmax_counts,
    block_means,
    per_pass,
    quantile,
    relative_spread,
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
    assert tuple(s) == ("n", "min", "p5", "p50", "p90", "p99", "max", "mean", "stdev")
    assert set(s) == set(STAT_KEYS)
    assert s["n"] == len(values) and isinstance(s["n"], int)
    assert s["min"] == min(values) and s["max"] == max(values)
    for name, q in (("p5", 5), ("p50", 50), ("p90", 90), ("p99", 99)):
        assert _close(s[name], float(np.percentile(arr, q)))
    assert math.isclose(s["mean"], float(arr.mean()), rel_tol=1e-9, abs_tol=1e-6)
    want_sd = float(arr.std(ddof=1)) if len(values) > 1 else 0.0
    assert math.isclose(s["stdev"], want_sd, rel_tol=1e-6, abs_tol=1e-6)
    assert s["min"] <= s["p5"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]


def test_summarize_scales_ns_to_us_and_flattens():
    s = summarize(np.array([[1_000, 3_000], [2_000, 4_000]]), 1e-3)
    assert (s["n"], s["min"], s["max"], s["mean"]) == (4, 1.0, 4.0, 2.5)
    assert s["p50"] == pytest.approx(2.5) and s["p5"] == pytest.approx(1.15)


def test_summarize_does_not_modify_input_and_ignores_order():
    values = [3.0, 1.0, 2.0, 10.0]
    copy = list(values)
    assert summarize(values) == summarize(sorted(values))
    assert values == copy


def test_summarize_single_sample():
    s = summarize([7.5])
    assert s == {k: 7.5 for k in STAT_KEYS} | {"n": 1, "stdev": 0.0}


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
PER_RANK = [[1.0, 5.0, 3.0, 9.0], [2.0, 4.0, 3.0, 1.0], [0.5, 6.0, 1.0, 2.0]]


@pytest.mark.parametrize(
    "how, want",
    [
        ("max", [2.0, 6.0, 3.0, 9.0]),
        ("min", [0.5, 4.0, 1.0, 1.0]),
        ("spread", [1.5, 2.0, 2.0, 8.0]),
    ],
)
def test_per_pass_reductions(how, want):
    assert per_pass(PER_RANK, how).tolist() == want


def test_per_pass_defaults_to_the_max_and_refuses_unknown_reductions():
    assert per_pass(PER_RANK).tolist() == per_pass(PER_RANK, "max").tolist()
    with pytest.raises(ValueError, match="mean"):
        per_pass(PER_RANK, "mean")


def test_argmax_counts_ties_go_to_the_lowest_rank():
    # pass 2 ties ranks 0 and 1: the first one counts
    assert argmax_counts(PER_RANK) == [2, 1, 1]
    assert argmax_counts([[1, 1, 1]]) == [3]
    assert argmax_counts([[0, 0], [0, 0], [0, 0]]) == [2, 0, 0]  # every rank listed


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
    mx, mn, spread = (per_pass(per_rank, how) for how in ("max", "min", "spread"))
    counts = argmax_counts(per_rank)
    assert len(mx) == len(mn) == len(spread) == iters
    assert len(counts) == len(per_rank) and sum(counts) == iters
    for i in range(iters):
        column = [r[i] for r in per_rank]
        assert mx[i] == max(column) and mn[i] == min(column)
        assert spread[i] == max(column) - min(column) >= 0
    if len(per_rank) == 1:
        assert mx.tolist() == per_rank[0] and not spread.any() and counts == [iters]


BAD = {
    "no-ranks": [],
    "one-empty": [[]],
    "two-empty": [[], []],
    "ragged-2": [[1.0, 2.0], [1.0]],
    "ragged-3": [[1.0], [1.0, 2.0], [3.0]],
    "flat": [1.0, 2.0],
}


@pytest.mark.parametrize("name", list(BAD))
def test_per_pass_rejects_what_is_not_ranks_by_passes(name):
    with pytest.raises(ValueError):
        per_pass(BAD[name])


@pytest.mark.parametrize("name", ["no-ranks", "ragged-2", "ragged-3"])
def test_argmax_counts_rejects_no_ranks_and_ragged_ranks(name):
    with pytest.raises(ValueError):
        argmax_counts(BAD[name])


def test_argmax_counts_of_no_passes_is_zero_for_every_rank():
    assert argmax_counts([[], []]) == [0, 0]


# ---- spread and blocks ---------------------------------------------------------------------
def test_relative_spread():
    assert relative_spread([0.0, 0.0]) == 0.0
    assert relative_spread([10.0, 10.0, 10.0]) == 0.0
    assert relative_spread([9.0, 11.0]) == pytest.approx(0.2)
    assert relative_spread([11.0, 9.0, 10.0]) == pytest.approx(0.2)


def test_block_means_drop_a_trailing_partial_block():
    assert block_means(range(25), 10).tolist() == [4.5, 14.5]
    assert block_means([1, 2, 3], 3).tolist() == [2.0]
    assert block_means([1, 2], 10).size == 0
