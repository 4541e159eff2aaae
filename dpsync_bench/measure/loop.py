"""The measured loop of one case on one rank: what is timed, and when each pass starts.

The timed window of a pass runs from "the scheduler has its row" to "the decision is on the
CPU": the path's prepare, exchange and read, then ``decide``. Four parts add up to it:
``row`` (making the local row ready), ``collective`` (inside the collective call: waiting
for the peers), ``stall`` (blocked on the GPU: the path counts that host time itself) and
``decide`` (reading the gathered rows and deciding). Everything else (snapshots for the
checks, draining the GPU, waiting for slots and forwards) happens outside it.

Cadences:
- ``streaming``: passes back to back.
- ``isolated``: each pass in a slot of an agreed grid, at least ``min_gap`` after the last
  activity of every rank; a slot already passed, or too close, is skipped. The agreement
  itself is given an allowance: if it overruns that, the pass runs with a short idle gap
  (no rank can skip alone), which the recorded gaps show and the harness retries.
  With a forward, the forward is launched at the slot and the pass starts at a phase of it.
- ``busy``: forwards back to back, as a busy server runs them: iteration N launches forward
  N, waits for forward N-1 (its results), then runs the pass at a phase of forward N.

Everything outside is injected (clock, path, the control plane's ``agree_max``, the GPU
side), so fake-clock tests pin these rules without torch or peers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from delayer_core.decision import DelayerState, decide

PHASE_SPAN = 0.9  # "random" phase: uniform over the first 90 % of the forward
OVERHEAD_BLOCK = 10  # bare loop: passes per block, each block's mean is kept


@dataclass
class Samples:
    """One rank's per-pass figures (ns; instants on this rank's own clock)."""

    pass_ns: list[int] = field(default_factory=list)
    row_ns: list[int] = field(default_factory=list)
    collective_ns: list[int] = field(default_factory=list)
    stall_ns: list[int] = field(default_factory=list)
    decide_ns: list[int] = field(default_factory=list)
    start_ns: list[int] = field(default_factory=list)  # the pass began
    arrive_ns: list[int] = field(default_factory=list)  # the row was ready: into the collective
    end_ns: list[int] = field(default_factory=list)  # the decision was on the CPU
    idle_gap_ns: list[int] = field(default_factory=list)  # isolated: idle before the pass
    phase_ns: list[int] = field(default_factory=list)  # with a forward: its start to the pass
    forwards: list = field(default_factory=list)  # with a forward: the one the pass ran behind
    skipped_slots: int = 0


class Schedule:
    """The isolated cadence's slot grid. `ready_ns` is the latest instant any rank was busy
    (agreed); a slot qualifies when it leaves `allowance_ns` (for that agreement) plus
    `min_gap_ns` of idle time after it. Pure: the same inputs give the same slot on every
    rank."""

    def __init__(self, start_ns: int, period_ns: int, min_gap_ns: int, allowance_ns: int):
        if period_ns <= 0:
            raise ValueError(f"period must be > 0, got {period_ns}")
        self.start_ns, self.period_ns = start_ns, period_ns
        self.min_gap_ns, self.allowance_ns = min_gap_ns, allowance_ns
        self.last = -1

    def next(self, ready_ns: int) -> tuple[int, int]:
        """(the next slot's instant, slots skipped to reach it)."""
        earliest = ready_ns + self.allowance_ns + self.min_gap_ns
        k = max(self.last + 1, math.ceil((earliest - self.start_ns) / self.period_ns))
        skipped, self.last = k - self.last - 1, k
        return self.start_ns + k * self.period_ns, skipped


SPIN_NS = 200_000  # a wait ends spinning (no sleep jitter); before that the host sleeps


def wait_until(clock: Callable[[], int], deadline_ns: int, sleep=None) -> int:
    """Sleep until SPIN_NS before the deadline, then busy-wait to it; returns now. Sleeping
    leaves the cores to the other ranks' threads (a 2-core host has none to spare)."""
    t = clock()
    if sleep is not None and deadline_ns - t > SPIN_NS:
        sleep((deadline_ns - t - SPIN_NS) * 1e-9)
        t = clock()
    while t < deadline_ns:
        t = clock()
    return t


class CaseLoop:
    """Runs passes of one case on this rank and keeps what the checks need."""

    def __init__(
        self,
        path,
        config,
        row_of: Callable[[int], list[int]],
        clock: Callable[[], int],
        *,
        gpu=None,  # forwards and drains; None: no GPU in this case
        agree_max: Callable[[int], int] | None = None,
        offset_ns: int = 0,  # this rank's clock minus rank 0's
        phase_ns: Callable[[int], int] = lambda i: 0,  # pass i's delay into its forward
        snapshot: bool = True,
        sleep: Callable[[float], None] | None = None,  # seconds; None: spin all the way
    ) -> None:
        self.path, self.config, self.row_of, self.clock = path, config, row_of, clock
        self.gpu, self.agree_max, self.offset_ns = gpu, agree_max, offset_ns
        self.phase_of, self.snapshot, self.sleep = phase_ns, snapshot, sleep
        self.state = DelayerState()
        self.checks: list[tuple] = []  # (pass index, state before, now, summary, outcome, snap)

    # ---- the timed window -------------------------------------------------------------
    def one_pass(self, i: int, into: Samples | None) -> None:
        path, clock, row = self.path, self.clock, self.row_of(i)
        before = self.state
        g0 = path.gpu_ns
        t0 = clock()
        local = path.prepare(row)
        t1 = clock()
        g1 = path.gpu_ns
        path.exchange(local)
        t2 = clock()
        g2 = path.gpu_ns
        summary = path.read()
        t3 = clock()
        g3 = path.gpu_ns
        outcome = decide(before, summary, self.config, t3 * 1e-9)
        t4 = clock()
        # ---- untimed from here ----
        self.state = outcome.state
        if into is not None:
            into.pass_ns.append(t4 - t0)
            into.row_ns.append(t1 - t0 - (g1 - g0))
            into.collective_ns.append(t2 - t1 - (g2 - g1))
            into.stall_ns.append(g3 - g0)
            into.decide_ns.append(t4 - t2 - (g3 - g2))
            into.start_ns.append(t0)
            into.arrive_ns.append(t1)
            into.end_ns.append(t4)
        snap = path.snapshot() if self.snapshot else None
        self.checks.append((i, before, t3 * 1e-9, summary, outcome, snap))

    def _after(self) -> None:
        if self.gpu is not None:
            self.gpu.drain()  # nothing of this pass still queued when the next one starts

    # ---- cadences ---------------------------------------------------------------------
    def streaming(self, first: int, count: int, into: Samples | None = None) -> list[int]:
        """Back to back; returns each iteration's whole wall time (for pilots)."""
        walls = []
        for i in range(first, first + count):
            t = self.clock()
            self.one_pass(i, into)
            self._after()
            walls.append(self.clock() - t)
        return walls

    def isolated(
        self, first: int, count: int, schedule: Schedule, into: Samples, forward=None
    ) -> list[int]:
        """One pass per qualifying slot. Returns each iteration's busy time, from its slot
        to the end of its work, and the agreement's duration, for sizing the period."""
        clock, off = self.clock, self.offset_ns
        busy = []
        ready = clock()
        for i in range(first, first + count):
            slot, skipped = schedule.next(self.agree_max(ready - off))
            into.skipped_slots += skipped
            quiet = clock()  # this rank's last activity: the agreement just ended
            at = wait_until(clock, slot + off, self.sleep)
            into.idle_gap_ns.append(at - quiet)
            if forward is not None:
                into.forwards.append(forward.launch())
                start = wait_until(clock, at + self.phase_of(i), self.sleep)
                into.phase_ns.append(start - at)
            self.one_pass(i, into)
            self._after()
            if forward is not None:
                forward.wait(into.forwards[-1])  # the GPU idles again before the next slot
            ready = clock()
            busy.append(ready - at)
        return busy

    def busy(self, first: int, count: int, forward, into: Samples | None) -> None:
        """Forwards back to back; the pass for iteration N runs while forward N runs."""
        clock = self.clock
        previous = forward.launch()
        for i in range(first, first + count):
            current = forward.launch()  # queued behind the previous one on the GPU
            forward.wait(previous)  # its results: the current forward is starting now
            began = clock()
            start = wait_until(clock, began + self.phase_of(i), self.sleep)
            if into is not None:
                into.forwards.append(current)
                into.phase_ns.append(start - began)
            self.one_pass(i, into)
            self._after()
            previous = current
        forward.wait(previous)


def phases(forward_ms: float, phase: str, seed_key: str):
    """Pass i's delay into its forward: "random" is uniform over PHASE_SPAN of it, the same
    on every rank (seeded by the case's key); a number is that fraction."""
    span = forward_ms * 1e6
    if phase == "random":
        seed = zlib.crc32(seed_key.encode())
        draws = np.random.default_rng(seed).random(1 << 16) * PHASE_SPAN * span
        return lambda i: int(draws[i % draws.size])
    fixed = int(float(phase) * span)
    return lambda i: fixed


def bare_loop(loop: CaseLoop, first: int, count: int) -> list[float]:
    """The same gather + decide with no per-pass timers, snapshots or checks; one clock
    read per block. Each block's mean (ns per pass)."""
    path, config = loop.path, loop.config
    rows = [loop.row_of(i) for i in range(first, first + count)]
    state, marks = loop.state, []
    for b in range(0, len(rows) - OVERHEAD_BLOCK + 1, OVERHEAD_BLOCK):
        marks.append(loop.clock())
        for row in rows[b : b + OVERHEAD_BLOCK]:
            state = decide(state, path.gather(row), config, 0.0).state
    marks.append(loop.clock())
    loop._after()
    return [(b - a) / OVERHEAD_BLOCK for a, b in zip(marks[:-1], marks[1:], strict=True)]


def to_arrays(s: Samples, offset_ns: int, forward_instants=None) -> dict:
    """The per-pass figures as int64 arrays; instants moved onto rank 0's clock."""
    out = {
        name: np.asarray(getattr(s, f"{name}_ns"), dtype=np.int64)
        for name in ("pass", "row", "collective", "stall", "decide", "idle_gap", "phase")
    }
    starts = np.asarray(s.start_ns, dtype=np.int64)
    ends = np.asarray(s.end_ns, dtype=np.int64)
    out["start"] = starts - offset_ns
    out["arrive"] = np.asarray(s.arrive_ns, dtype=np.int64) - offset_ns
    if forward_instants:
        f_end = np.array([e for _, e in forward_instants], dtype=np.int64)
        out["remaining"] = f_end - starts
        out["exposed"] = np.maximum(0, ends - f_end)
    out["skipped_slots"] = np.asarray([s.skipped_slots], dtype=np.int64)
    return out
