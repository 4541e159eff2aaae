"""The isolated and busy cadences with a fake clock and fake peers (no torch): slots, measured
idle gaps, skipped slots, late passes, forwards launched at the slot, phases, the busy order."""

from __future__ import annotations

import numpy as np
import pytest
from loop_fakes import (
    TICK,
    WINDOW_NS,
    FakeAgree,
    FakeClock,
    FakeForward,
    FakeGpu,
    FakePath,
    events,
    make_loop,
    parts,
    timed_decide,
)

from dpsync_bench.measure.loop import (
    Samples,
    Schedule,
    to_arrays,
)


# ---- the isolated cadence --------------------------------------------------------------------
class Recording(Schedule):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.slots: list[tuple[int, int, int]] = []  # (ready, slot, skipped)

    def next(self, ready_ns):
        slot, skipped = super().next(ready_ns)
        self.slots.append((ready_ns, slot, skipped))
        return slot, skipped


def _isolated(mp, clock=None, path=None, forward=None, *, count=6, offset=0, agree_ns=40_000,
              lead=10_000_000, period=2_000_000, **loop_kw):  # fmt: skip
    """`count` isolated passes (min gap 300 us, allowance 100 us); what they left behind."""
    clock, log = clock or FakeClock(tick=TICK), []
    timed_decide(mp, clock)
    path = path or FakePath(clock)
    path.log = log
    agree = FakeAgree(clock, log, agree_ns)
    loop = make_loop(clock, path, gpu=FakeGpu(clock, log), agree_max=agree, offset_ns=offset,
                     sleep=clock.sleep, **loop_kw)  # fmt: skip
    sched = Recording(clock.now - offset + lead, period, 300_000, 100_000)
    s = Samples()
    busy = loop.isolated(0, count, sched, s, forward)
    agreed = [t for _, _, t in events(log, "agreed")]
    return clock, log, agree, agreed, sched.slots, s, busy


@pytest.mark.parametrize("offset", [0, 7_000_000, -3_000_000])
def test_isolated_passes_start_at_their_slot_after_a_measured_idle_gap(monkeypatch, offset):
    clock, _, agree, agreed, slots, s, busy = _isolated(monkeypatch, offset=offset)
    assert [r for r, _, _ in slots] == agree.asked  # readiness on rank 0's clock
    for i, (_, slot, _) in enumerate(slots):
        assert s.start_ns[i] == slot + offset + TICK  # the slot, on this rank's clock
        assert s.idle_gap_ns[i] == slot + offset - agreed[i]  # agreement's end to the slot
        assert s.pass_ns[i] == WINDOW_NS + 4 * TICK  # no slot wait inside the window
        assert sum(parts(s, i)) == s.pass_ns[i]
    # busy time: from the slot to the end of the iteration's work (the next readiness)
    assert busy[:-1] == [
        a - slot for a, (_, slot, _) in zip(agree.asked[1:], slots[:-1], strict=True)
    ]
    assert s.skipped_slots == 0 and len(s.idle_gap_ns) == 6
    assert to_arrays(s, offset)["start"].tolist() == [slot + TICK for _, slot, _ in slots]
    assert len(clock.slept) == 6  # each wait slept, then spun the last 200 us


def test_isolated_skips_the_slots_a_long_pass_ran_past(monkeypatch):
    class SlowOnce(FakePath):
        def exchange(self, local):
            super().exchange(local)
            if self.iteration == 2:
                self.clock.advance(5_500_000)  # past two and a half periods

    clock = FakeClock(tick=TICK)
    *_, slots, s, _ = _isolated(monkeypatch, clock, SlowOnce(clock), count=5)
    assert [k for _, _, k in slots] == [0, 0, 0, 3, 0]
    assert np.diff([slot for _, slot, _ in slots]).tolist() == [
        2_000_000,
        2_000_000,
        8_000_000,
        2_000_000,
    ]
    assert s.skipped_slots == 3
    assert min(s.idle_gap_ns) >= 300_000 + 100_000 - 40_000  # the allowance covered agreeing


def test_isolated_agreement_overrunning_its_allowance_runs_the_pass_late(monkeypatch):
    """The grid knows only when the ranks were ready: an agreement longer than allowance +
    min gap leaves the slot in the past and the pass runs late, not skipped. What shows it
    is that pass's idle gap, about one clock read (the summary's p5 rule and the harness's
    retry with a larger allowance act on it)."""
    _, _, _, agreed, slots, s, _ = _isolated(monkeypatch, count=3, agree_ns=1_000_000, lead=500_000)
    assert s.skipped_slots == 0
    assert agreed[0] > slots[0][1]  # the first slot passed while the ranks agreed on it
    assert s.start_ns[0] > slots[0][1] + TICK and s.idle_gap_ns[0] <= TICK
    for i in (1, 2):  # the later slots had room for the agreement
        assert s.start_ns[i] == slots[i][1] + TICK and s.idle_gap_ns[i] >= 300_000


def test_isolated_with_a_forward_launches_at_the_slot_and_passes_at_the_phase(monkeypatch):
    clock = FakeClock(tick=TICK)
    fwd = FakeForward(clock, [], 1_500_000)
    phase = lambda i: 100_000 * (i + 1)  # noqa: E731
    _, log, _, _, slots, s, busy = _isolated(monkeypatch, clock, forward=fwd, count=4,
                                             phase_ns=phase)  # fmt: skip
    launches = [t for n, _, t in fwd.log if n == "launch"]
    waits = [t for n, _, t in fwd.log if n == "wait"]
    for i, (_, slot, _) in enumerate(slots):
        assert launches[i] == slot + TICK
        assert s.phase_ns[i] == phase(i)
        assert s.start_ns[i] == slot + phase(i) + TICK
        assert s.start_ns[i] < fwd.ends[i]  # the pass ran while its forward did
    assert s.forwards == [0, 1, 2, 3]
    assert [e[0] for e in log if e[0] != "snapshot"] == [
        "agreed", "prepare", "exchange", "read", "drain",
    ] * 4  # fmt: skip
    drains = [t for _, _, t in events(log, "drain")]
    assert all(w >= d for w, d in zip(waits, drains, strict=True))  # waited after the pass
    assert waits == fwd.ends  # and until the forward ended
    assert busy == [w - slot for w, (_, slot, _) in zip(waits, slots, strict=True)]


# ---- the busy cadence ------------------------------------------------------------------------
def test_busy_launches_n_waits_n_minus_1_then_passes_at_the_phase(monkeypatch):
    clock, log = FakeClock(tick=TICK), []
    timed_decide(monkeypatch, clock)
    fwd = FakeForward(clock, log, 1_000_000)
    phase = lambda i: 50_000 * (i + 2)  # noqa: E731
    loop = make_loop(clock, FakePath(clock, log=log), gpu=FakeGpu(clock, log), phase_ns=phase)
    s = Samples()
    loop.busy(0, 3, fwd, s)
    seq = [(n, h) for n, h, _ in log if n in ("launch", "wait", "prepare")]
    assert seq == [("launch", 0),
                   ("launch", 1), ("wait", 0), ("prepare", 0),
                   ("launch", 2), ("wait", 1), ("prepare", 1),
                   ("launch", 3), ("wait", 2), ("prepare", 2),
                   ("wait", 3)]  # fmt: skip
    waits = {h: t for n, h, t in log if n == "wait"}
    assert s.forwards == [1, 2, 3]
    for i in range(3):
        assert s.phase_ns[i] == phase(i)
        assert s.start_ns[i] == waits[i] + phase(i) + TICK
        began = fwd.ends[i + 1] - fwd.duration_ns  # forward i+1 started as i ended
        assert began == waits[i] and s.start_ns[i] < fwd.ends[i + 1]  # the pass rides on it
        assert s.pass_ns[i] == WINDOW_NS + 4 * TICK


def test_busy_warm_up_records_nothing(monkeypatch):
    clock = FakeClock(tick=TICK)
    timed_decide(monkeypatch, clock)
    loop = make_loop(clock, phase_ns=lambda i: 3 * TICK)
    fwd = FakeForward(clock, [])
    loop.busy(0, 4, fwd, None)
    assert len(fwd.ends) == 5 and len(loop.checks) == 4
