"""summary.build_result from hand-made rank records (torch-free, no ranks): the reductions
over ranks (max per pass, min for idle gaps, spread for start), the per-rank counts, every
failure rule, the raw-loop overhead, and what it hands back as raw samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fault_helpers import isolated_detail, make_case_result, make_record

from dpsync_bench import results, stats
from dpsync_bench.cases import Case
from dpsync_bench.measure import summary as summary_mod
from dpsync_bench.measure.summary import build_result

T0 = 1_700_000_000.0
STREAMING = Case("gloo_cpu", "2x1", cadence="streaming", iters=6, warmup=0)
ISOLATED = Case("gloo_cpu", "2x1", cadence="isolated", iters=6, warmup=0)
GAPS = [1_000_000] * 6  # idle gaps well above the 300 us floor


def _build(case, records):
    summary, samples = build_result(case, records, "test-box", T0)
    results.validate_case(summary, "built")
    json.dumps(summary, allow_nan=False)  # what atomic_write_json needs
    return summary, samples


def _isolated(gaps=(GAPS, GAPS), late=0.0, **kw):
    return [
        make_record([100_000] * 6, idle_gap_ns=g, cadence=isolated_detail(late_fraction=late), **kw)
        for g in gaps
    ]


def test_per_pass_figures_are_the_max_over_ranks():
    a = make_record(
        [100_000, 300_000, 200_000, 100_000, 500_000, 100_000], stall_ns=[0, 9, 0, 0, 0, 1]
    )
    b = make_record(
        [200_000, 100_000, 200_000, 400_000, 100_000, 100_000], stall_ns=[5, 0, 0, 0, 0, 0]
    )
    summary, samples = _build(STREAMING, [a, b])
    for figure in ("pass", "row", "collective", "stall", "decide"):
        both = np.stack([a["samples"][figure], b["samples"][figure]])
        assert samples[figure].shape == (2, 6) and samples[figure].dtype == np.int64
        assert (samples[figure] == both).all()
        want = stats.summarize(both.max(axis=0), 1e-3)
        assert summary["stats"][f"{figure}_us"] == pytest.approx(want)
    assert summary["stats"]["pass_us"]["max"] == 500.0 and summary["stats"]["pass_us"]["n"] == 6
    assert summary["stats"]["stall_us"]["max"] == pytest.approx(0.009)
    assert [s["max"] for s in summary["per_rank"]["pass_us"]] == [500.0, 400.0]
    assert summary["world_size"] == 2 and summary["case_id"] == STREAMING.case_id
    assert summary["check"]["failures"] == [] and results.case_passed(summary)
    assert Case.from_dict(summary["case"]) == STREAMING


def test_start_is_reduced_to_its_spread_on_rank0s_clock():
    starts = [10_000_000 * i for i in range(6)]
    a = make_record([100_000] * 6, start_ns=starts)
    # rank 1's clock is 5 ms ahead and it began each pass 0..5 us after rank 0
    late = [t + 5_000_000 + 1_000 * i for i, t in enumerate(starts)]
    b = make_record([100_000] * 6, start_ns=late, offset_ns=5_000_000)
    summary, _ = _build(STREAMING, [a, b])
    skew = summary["stats"]["start_skew_us"]
    assert (skew["min"], skew["max"]) == (0.0, 5.0)


def test_idle_gap_is_the_shortest_any_rank_had():
    summary, samples = _build(ISOLATED, _isolated(([900_000] * 6, [800_000, 950_000] * 3)))
    assert samples["idle_gap"].tolist()[1] == [800_000, 950_000] * 3
    gap = summary["stats"]["idle_gap_us"]
    assert (gap["min"], gap["max"]) == (800.0, 900.0)
    assert summary["cadence_detail"]["idle_gap_us"]["p50"] == gap["p50"]
    assert summary["check"]["failures"] == []


def test_rank_counts_break_ties_with_the_lowest_rank():
    a = make_record([5, 1, 3, 3], arrive_ns=[10, 30, 20, 20])
    b = make_record([4, 2, 3, 9], arrive_ns=[11, 29, 20, 25])
    summary, _ = _build(Case("gloo_cpu", "2x1", cadence="streaming", iters=4), [a, b])
    assert summary["per_rank"]["slowest_pass_counts"] == [2, 2]
    assert summary["per_rank"]["last_arrival_counts"] == [2, 2]


def test_check_counts_are_summed_and_each_named_in_the_failures():
    a = make_record([100_000] * 6, checks={"wrong_elements": 3, "passes_checked": 9})
    b = make_record([100_000] * 6, checks={"wrong_elements": 4, "wrong_reads": 2,
                                           "wrong_decisions": 1, "passes_checked": 8})  # fmt: skip
    summary, _ = _build(STREAMING, [a, b])
    check = summary["check"]
    assert (check["wrong_elements"], check["wrong_reads"], check["wrong_decisions"]) == (7, 2, 1)
    assert check["passes_checked"] == 8
    assert check["failures"] == ["7 wrong elements", "2 wrong reads", "1 wrong decisions"]
    assert not results.case_passed(summary)


@pytest.mark.parametrize("late, fails", [(0.05, False), (0.0501, True), (0.5, True)])
def test_isolated_fails_past_five_percent_skipped_slots(late, fails):
    summary, _ = _build(ISOLATED, _isolated(late=late))
    failures = summary["check"]["failures"]
    assert summary["cadence_detail"]["late_fraction"] == late
    assert bool(failures) == fails
    assert all("slots skipped" in f for f in failures)


@pytest.mark.parametrize("gap_us, fails", [(300, False), (299, True), (5, True)])
def test_isolated_fails_when_the_idle_gap_p5_is_under_300_us(gap_us, fails):
    summary, _ = _build(ISOLATED, _isolated(([gap_us * 1000] * 6, GAPS)))
    assert summary["cadence_detail"]["idle_gap_us"]["p5"] == gap_us
    assert [f.startswith("idle gap p5") for f in summary["check"]["failures"]] == (
        [True] if fails else []
    )


def test_short_gaps_on_different_ranks_add_up_in_the_per_pass_min():
    """Each rank's own p5 clears 300 us (what the harness's retry looks at), yet the
    per-pass min over ranks (what the summary judges) does not."""
    n, short = 100, 10_000
    gaps = [[1_000_000] * n, [1_000_000] * n]
    for i in range(4):
        gaps[0][i], gaps[1][50 + i] = short, short
    assert all(np.quantile(g, 0.05) >= 300_000 for g in gaps)
    records = [make_record([100_000] * n, idle_gap_ns=g, cadence=isolated_detail()) for g in gaps]
    summary, _ = _build(Case("gloo_cpu", "2x1", cadence="isolated", iters=n), records)
    assert summary["check"]["failures"] == [
        f"idle gap p5 {summary['stats']['idle_gap_us']['p5']:.0f} us < 300 us"
    ]


def _forward_records(measured_ms: float):
    def forward(r):
        return {"durations_ns": [round(measured_ms * 1e6)] * 6, "tuning": [{"rows": 20480}],
                "rows": 20480, "matrix_size": 4096, "kernel_ms": 1.0}  # fmt: skip

    starts = [10_000_000 * i for i in range(6)]
    instants = [(t - 2_000_000, t + 300_000) for t in starts]  # the pass ends 200 us early
    return [
        make_record([100_000] * 6, start_ns=starts, phase_ns=[700_000] * 6, idle_gap_ns=GAPS,
                    forward_instants=instants, forward=forward(r), cadence=isolated_detail())
        for r in range(2)
    ]  # fmt: skip


@pytest.mark.parametrize("measured, fails", [(5.24, False), (4.76, False), (5.3, True)])
def test_forward_fails_when_more_than_five_percent_off_its_label(measured, fails):
    case = Case("gloo_cpu", "2x1", 5.0, "isolated", iters=6)  # a CPU path: shape only
    summary, samples = _build(case, _forward_records(measured))
    fwd = summary["forward"]
    assert fwd["measured_ms"]["p50"] == pytest.approx(measured)
    assert fwd["within_tolerance"] is not fails
    assert any("forward measured" in f for f in summary["check"]["failures"]) == fails
    assert samples["forward"].shape == (2, 6)
    assert summary["stats"]["remaining_us"]["p50"] == 300.0
    assert summary["stats"]["exposed_us"]["max"] == 0.0
    assert summary["stats"]["phase_us"]["p50"] == 700.0


def test_device_time_is_the_slowest_rank_per_round():
    device = [{"ns": [10_000, 30_000, 20_000], "method": "m", "discarded_rounds": r,
               "sleep_cycles": 7} for r in range(2)]  # fmt: skip
    device[1]["ns"] = [20_000, 10_000, 20_000]
    records = [make_record([100_000] * 6, device=d) for d in device]
    summary, samples = _build(STREAMING, records)
    assert summary["stats"]["device_us"]["mean"] == pytest.approx(70 / 3)
    assert summary["device_time"] == {"method": "m", "discarded_rounds": 0, "sleep_cycles": 7}
    assert samples["device"].tolist() == [d["ns"] for d in device]


def test_raw_loop_overhead_against_the_slowest_rank():
    passes = [[110_000] * 10 + [130_000] * 10, [100_000] * 20]
    bare = [[100_000.0, 90_000.0], [95_000.0, 105_000.0]]
    records = [make_record(p, raw_block_means_ns=b) for p, b in zip(passes, bare, strict=True)]
    summary, _ = _build(Case("gloo_cpu", "2x1", cadence="streaming", iters=20), records)
    raw = summary["raw_loop"]
    assert raw["harness_mean_us"] == 120.0  # median of rank 0's block means (110, 130)
    assert raw["mean_us"] == 100.0  # the larger median of the bare loop's blocks
    assert raw["overhead"] == pytest.approx(0.2) and raw["within_limit"] is False
    # two blocks each side: the medians' errors (13.1 and 6.6 us) hide a 20 % gap
    assert raw["error"] == pytest.approx(0.1469, abs=1e-4) and raw["verdict"] == "cannot tell"
    assert "raw_loop" not in _build(STREAMING, [make_record([1] * 6)] * 2)[0]


@pytest.mark.parametrize(
    ("harness_ns", "spread_ns", "verdict"),
    [
        (102_000, 0, "within"),
        (112_000, 0, "over"),
        (108_000, 0, "over"),
        (104_000, 40_000, "cannot tell"),
    ],
)
def test_raw_loop_verdict_needs_twice_the_error_either_way(harness_ns, spread_ns, verdict):
    """Bare blocks of 100 us; measured blocks at `harness_ns`, alternately +- the spread."""
    blocks = [harness_ns + (spread_ns if b % 2 else -spread_ns) for b in range(40)]
    passes = [x for x in blocks for _ in range(10)]
    records = [make_record(passes, raw_block_means_ns=[100_000.0] * 40)] * 2
    raw = _build(Case("gloo_cpu", "2x1", cadence="streaming", iters=400), records)[0]["raw_loop"]
    assert raw["verdict"] == verdict
    assert raw["error"] == pytest.approx(1.2533 * 1.4826 * spread_ns / np.sqrt(40) / 100_000)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_raw_loop_with_fewer_passes_than_a_block_is_still_writable():
    records = [make_record([100_000] * 9, raw_block_means_ns=[])] * 2
    summary, _ = build_result(
        Case("gloo_cpu", "2x1", cadence="streaming", iters=9), records, "b", T0
    )
    json.dumps(summary, allow_nan=False)


def test_cadence_detail_says_how_passes_were_spaced():
    assert (
        _build(STREAMING, [make_record([1] * 6)] * 2)[0]["cadence_detail"]["cadence"] == "streaming"
    )
    detail = _build(ISOLATED, _isolated())[0]["cadence_detail"]
    assert detail["period_us"] == 2_000.0 and detail["allowance_us"] == 100.0
    assert detail["late_fraction"] == 0.0 and detail["idle_wait"] == "spin"
    assert detail["phase"] is None and len(detail["attempts"]) == 1


def test_ragged_ranks_are_refused():
    with pytest.raises(ValueError, match="pass counts"):
        build_result(STREAMING, [make_record([1] * 6), make_record([1] * 5)], "b", T0)


def test_a_figure_missing_on_one_rank_is_left_out():
    records = [make_record([100] * 6, idle_gap_ns=GAPS), make_record([100] * 6)]
    summary, samples = build_result(STREAMING, records, "b", T0)
    assert "idle_gap" not in samples and "idle_gap_us" not in summary["stats"]


def test_make_case_result_builds_a_passing_valid_case():
    for case in (None, Case("gloo_cpu", "1x2", cadence="streaming", iters=30)):
        summary, samples = make_case_result(case, iters=30)
        assert results.validate_case(summary, "helper") is summary and results.case_passed(summary)
        assert samples["pass"].shape == (2, 30)


def test_the_harness_and_the_summary_apply_the_same_limits():
    """The rules live twice (the harness retries on them, the summary judges by them)."""
    from dpsync_bench.measure import harness, loop

    assert harness.MIN_IDLE_GAP_NS == summary_mod.MIN_IDLE_GAP_US * 1000 == 300_000
    assert harness.MAX_LATE_FRACTION == summary_mod.MAX_LATE_FRACTION == 0.05
    assert loop.OVERHEAD_BLOCK == summary_mod.OVERHEAD_BLOCK
