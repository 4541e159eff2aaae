"""The measured loop's timing rules, pinned with a fake clock and fake peers (no torch).

What is inside the timed window (prepare, exchange, read, decide; not the snapshot, the
drain or any wait for a slot or a forward); row + collective + stall + decide == pass on
every pass; the GPU-wait split; the isolated cadence's slot grid (`Schedule`); sleep-then-spin
waits; phases; `to_arrays`; `bare_loop`. The cadences themselves: test_loop_cadences.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_fakes import (
    COSTS,
    DECIDE_NS,
    DRAIN_NS,
    GPU,
    HOST,
    SNAPSHOT_NS,
    TICK,
    WINDOW_NS,
    FakeClock,
    FakeGpu,
    FakePath,
    events,
    make_loop,
    parts,
    timed_decide,
)

from delayer_core.decision import DelayerState
from dpsync_bench.measure.loop import (
    OVERHEAD_BLOCK,
    PHASE_SPAN,
    SPIN_NS,
    Samples,
    Schedule,
    bare_loop,
    phases,
    to_arrays,
    wait_until,
)


# ---- the timed window ----------------------------------------------------------------------
def test_window_holds_the_three_steps_and_decide_split_by_gpu_wait(monkeypatch):
    clock = FakeClock()
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock)
    s = Samples()
    loop.streaming(0, 5, s)
    for i in range(5):
        assert s.pass_ns[i] == WINDOW_NS
        assert s.row_ns[i] == HOST["prepare"]  # its GPU wait goes to stall
        assert s.collective_ns[i] == HOST["exchange"]
        assert s.stall_ns[i] == sum(GPU.values())
        assert s.decide_ns[i] == HOST["read"] + DECIDE_NS  # reading back, then deciding
        assert sum(parts(s, i)) == s.pass_ns[i]
        assert s.arrive_ns[i] - s.start_ns[i] == sum(COSTS["prepare"])
        assert s.end_ns[i] - s.start_ns[i] == s.pass_ns[i]
    assert len(loop.checks) == 5 and [c[0] for c in loop.checks] == list(range(5))


def test_snapshot_and_drain_are_outside_the_window(monkeypatch):
    clock, log = FakeClock(), []
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock, FakePath(clock, log=log), gpu=FakeGpu(clock, log))
    s = Samples()
    walls = loop.streaming(3, 4, s)
    assert s.pass_ns == [WINDOW_NS] * 4  # as without a snapshot or a drain
    assert walls == [WINDOW_NS + SNAPSHOT_NS + DRAIN_NS] * 4
    gaps = np.diff(s.start_ns)
    assert (gaps == WINDOW_NS + SNAPSHOT_NS + DRAIN_NS).all()
    names = [e[0] for e in log]
    assert names == ["prepare", "exchange", "read", "snapshot", "drain"] * 4
    for end, (_, _, snap_done) in zip(s.end_ns, events(log, "snapshot"), strict=True):
        assert snap_done == end + SNAPSHOT_NS  # the snapshot begins once the window closed


def test_without_snapshots_nothing_is_copied(monkeypatch):
    clock, log = FakeClock(), []
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock, FakePath(clock, log=log), snapshot=False)
    loop.streaming(0, 3, Samples())
    assert not events(log, "snapshot")
    assert [c[5] for c in loop.checks] == [None] * 3


def test_warm_up_records_no_samples_but_keeps_checks_and_state(monkeypatch):
    clock = FakeClock()
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock)
    assert loop.streaming(0, 4) and len(loop.checks) == 4
    assert loop.state is loop.checks[-1][4].state  # the decision's state carries on
    assert loop.checks[1][1] is loop.checks[0][4].state


step_cost = st.tuples(st.integers(0, 10**7), st.integers(0, 10**7))


@settings(max_examples=200, deadline=None)
@given(prepare=step_cost, exchange=step_cost, read=step_cost, tick=st.integers(0, 5_000),
       decide_ns=st.integers(0, 10**6))  # fmt: skip
def test_parts_add_up_to_the_pass_whatever_the_costs(prepare, exchange, read, tick, decide_ns):
    clock = FakeClock(tick=tick)
    path = FakePath(clock, costs={"prepare": prepare, "exchange": exchange, "read": read})
    loop = make_loop(clock, path)
    with pytest.MonkeyPatch.context() as mp:
        timed_decide(mp, clock, decide_ns)
        s = Samples()
        loop.streaming(0, 3, s)
    for i in range(3):
        assert sum(parts(s, i)) == s.pass_ns[i]
        assert s.stall_ns[i] == prepare[1] + exchange[1] + read[1]
        assert s.row_ns[i] == prepare[0] + tick
        assert s.collective_ns[i] == exchange[0] + tick
        assert s.decide_ns[i] == read[0] + decide_ns + 2 * tick
        assert min(parts(s, i)) >= 0


# ---- the slot grid ---------------------------------------------------------------------------
def test_schedule_slots_on_the_grid_after_allowance_and_min_gap():
    sched = Schedule(start_ns=1_000, period_ns=100, min_gap_ns=30, allowance_ns=20)
    assert sched.next(900) == (1_000, 0)  # earliest 950: the first slot
    assert sched.next(950) == (1_100, 0)  # earliest 1000: slot 0 is taken, the next one
    assert sched.next(1_051) == (1_200, 0)  # earliest 1101: 1100 is too close
    assert sched.next(1_050) == (1_300, 0)  # never a slot twice, never one backwards
    assert sched.next(1_560) == (1_700, 3)  # earliest 1610: 1400, 1500, 1600 skipped
    assert sched.next(1_750) == (1_800, 0)  # earliest exactly on a slot: that slot


def test_schedule_counts_slots_skipped_before_the_first():
    assert Schedule(1_000, 100, 30, 20).next(1_250) == (1_300, 3)


@pytest.mark.parametrize("period", [0, -5])
def test_schedule_rejects_a_period_that_is_not_positive(period):
    with pytest.raises(ValueError, match="period"):
        Schedule(0, period, 10, 10)


ns = st.integers(0, 10**7)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 10**9), period=st.integers(1, 10**7), gap=ns, allowance=ns,
       readies=st.lists(st.integers(0, 2 * 10**9), max_size=30))  # fmt: skip
def test_schedule_rules_hold_for_any_readiness(start, period, gap, allowance, readies):
    a, b = Schedule(start, period, gap, allowance), Schedule(start, period, gap, allowance)
    last = -1
    for ready in readies:
        slot, skipped = a.next(ready)
        assert b.next(ready) == (slot, skipped)  # every rank gets the same slot
        k, off_grid = divmod(slot - start, period)
        assert off_grid == 0 and k > last  # on the grid, each slot used once, in order
        assert slot >= ready + allowance + gap  # never in the past, never too close
        assert skipped == k - last - 1
        if k - 1 > last:  # a free slot was passed over: it was too close
            assert slot - period < ready + allowance + gap
        last = k


# ---- waiting ---------------------------------------------------------------------------------
def test_wait_until_sleeps_then_spins_the_last_stretch():
    clock = FakeClock(tick=TICK)
    deadline = clock.now + 5_000_000
    assert wait_until(clock, deadline, clock.sleep) == deadline
    assert clock.slept == [pytest.approx((5_000_000 - SPIN_NS) * 1e-9)]
    assert clock.reads == 1 + SPIN_NS // TICK  # one read, the sleep, then the last 200 us spun


@pytest.mark.parametrize("ahead", [-10_000, 0, SPIN_NS])
def test_wait_until_never_sleeps_when_the_deadline_is_close_or_past(ahead):
    clock = FakeClock(tick=TICK)
    deadline = clock.now + ahead
    assert wait_until(clock, deadline, clock.sleep) >= deadline
    assert clock.slept == []


def test_wait_until_without_sleep_spins_all_the_way():
    clock = FakeClock(tick=TICK)
    deadline = clock.now + 3_000_000
    assert wait_until(clock, deadline) == deadline and clock.slept == []


# ---- phases ----------------------------------------------------------------------------------
def test_random_phases_are_the_same_on_every_rank_and_within_the_span():
    a, b = phases(5.0, "random", "case-a"), phases(5.0, "random", "case-a")
    draws = [a(i) for i in range(4000)]
    assert draws == [b(i) for i in range(4000)]
    assert draws != [phases(5.0, "random", "case-b")(i) for i in range(4000)]
    assert all(isinstance(d, int) and 0 <= d < PHASE_SPAN * 5e6 for d in draws)
    assert np.mean(draws) == pytest.approx(PHASE_SPAN * 5e6 / 2, rel=0.05)  # uniform
    assert max(draws) > 0.95 * PHASE_SPAN * 5e6 and min(draws) < 0.05 * PHASE_SPAN * 5e6


@pytest.mark.parametrize("phase, want", [("0", 0), ("0.25", 500_000), ("0.5", 1_000_000)])
def test_fixed_phase_is_that_fraction_of_the_forward(phase, want):
    of = phases(2.0, phase, "any")
    assert {of(i) for i in range(100)} == {want}


# ---- arrays ----------------------------------------------------------------------------------
def test_to_arrays_moves_instants_to_rank0_and_derives_forward_figures():
    s = Samples(pass_ns=[10, 20], row_ns=[1, 2], collective_ns=[5, 6], stall_ns=[3, 4],
                decide_ns=[1, 8], start_ns=[1_000, 2_000], arrive_ns=[1_001, 2_002],
                end_ns=[1_010, 2_020], phase_ns=[7, 9], skipped_slots=2)  # fmt: skip
    out = to_arrays(s, 300, [(900, 1_005), (1_950, 2_100)])
    assert out["start"].tolist() == [700, 1_700] and out["arrive"].tolist() == [701, 1_702]
    assert out["remaining"].tolist() == [5, 100]  # forward end - pass start, own clock
    assert out["exposed"].tolist() == [5, 0]  # pass end past the forward's end, else 0
    assert out["pass"].tolist() == [10, 20] and out["phase"].tolist() == [7, 9]
    assert out["skipped_slots"].tolist() == [2] and out["idle_gap"].size == 0
    assert all(a.dtype == np.int64 for a in out.values())
    assert "remaining" not in to_arrays(s, 0) and "exposed" not in to_arrays(s, 0)


# ---- the bare loop ---------------------------------------------------------------------------
def test_bare_loop_times_blocks_with_no_snapshot_check_or_state(monkeypatch):
    clock, log = FakeClock(), []
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock, FakePath(clock, log=log), gpu=FakeGpu(clock, log))
    means = bare_loop(loop, 40, 25)
    assert means == [WINDOW_NS] * (25 // OVERHEAD_BLOCK)  # per pass, the gather and decide
    assert loop.checks == [] and loop.state == DelayerState()
    assert [e[1] for e in events(log, "prepare")] == list(range(40, 40 + 20))  # whole blocks
    assert not events(log, "snapshot") and [e[0] for e in log[-1:]] == ["drain"]
    assert bare_loop(loop, 0, OVERHEAD_BLOCK - 1) == []
