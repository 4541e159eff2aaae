"""Fakes for the measured loop's tests (torch-free): a clock that moves only when told (or
by a fixed tick per read), a path whose three steps cost known host and GPU-wait time and
gather what the checks expect, a GPU side, a forward and an agreement that log when things
happen. `timed_decide` gives the decision a known cost too.
"""

from __future__ import annotations

import numpy as np

from delayer_core.decision import DelayerConfig
from delayer_core.decision import decide as real_decide
from delayer_core.shape import GatherShape
from dpsync_bench.measure import loop as loop_mod
from dpsync_bench.measure.checks import expected_buffer, expected_summary, local_row
from dpsync_bench.measure.loop import CaseLoop

START = 10_000_000_000  # the fake clock's first reading (ns)
# (host time, GPU wait) of each step, ns; multiples of 1 us so a 1 us tick lands exactly
COSTS = {"prepare": (3_000, 1_000), "exchange": (20_000, 0), "read": (5_000, 7_000)}
DECIDE_NS = 2_000
HOST = {k: v[0] for k, v in COSTS.items()}
GPU = {k: v[1] for k, v in COSTS.items()}
WINDOW_NS = sum(HOST.values()) + sum(GPU.values()) + DECIDE_NS  # one pass, clock reads free
TICK = 1_000  # a clock read, in the cadence tests (a spin needs the clock to move)
SNAPSHOT_NS = 50_000
DRAIN_NS = 30_000


class FakeClock:
    """ns; every read returns the time, then moves it on by `tick` (the cost of a read)."""

    def __init__(self, start: int = START, tick: int = 0) -> None:
        self.now, self.tick = start, tick
        self.slept: list[float] = []
        self.reads = 0

    def __call__(self) -> int:
        t = self.now
        self.now += self.tick
        self.reads += 1
        return t

    def advance(self, ns: int) -> None:
        self.now += ns

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += round(seconds * 1e9)


class FakePath:
    """Each step advances the clock by its host time plus its GPU wait and adds the GPU wait
    to `gpu_ns`, as `SyncPath._blocking` does; reads give what the rows of pass i give."""

    upstream_reads = False

    def __init__(self, clock, shape=None, costs=None, log=None) -> None:
        self.clock, self.shape = clock, shape or GatherShape(2, 1)
        self.costs = dict(COSTS if costs is None else costs)
        self.log = [] if log is None else log
        self.gpu_ns = 0
        self.iteration = -1
        self.snapshot_ns = SNAPSHOT_NS
        self.damage: dict[int, str] = {}  # pass -> "element" or "read"

    def _step(self, name: str) -> None:
        host, gpu = self.costs[name]
        self.clock.advance(host + gpu)
        self.gpu_ns += gpu
        self.log.append((name, self.iteration, self.clock.now))

    def prepare(self, row):
        self.iteration = row[2]  # local_row's field 2 is the pass index
        self._step("prepare")
        return row

    def exchange(self, local) -> None:
        self._step("exchange")

    def read(self):
        self._step("read")
        buf = self._buffer()
        if self.damage.get(self.iteration) == "read":
            buf = expected_buffer(self.shape, self.iteration + 1)
        return expected_summary(buf[:, 0, :], self.upstream_reads)

    def gather(self, row):
        self.exchange(self.prepare(row))
        return self.read()

    def _buffer(self) -> np.ndarray:
        buf = expected_buffer(self.shape, self.iteration)
        if self.damage.get(self.iteration) == "element":
            buf[-1, -1, 3] += 1
        return buf

    def snapshot(self):
        self.clock.advance(self.snapshot_ns)
        self.log.append(("snapshot", self.iteration, self.clock.now))
        return self._buffer()

    @staticmethod
    def host_rows(snapshots):
        return np.stack(snapshots)


class FakeGpu:
    def __init__(self, clock, log) -> None:
        self.clock, self.log = clock, log

    def drain(self) -> None:
        self.clock.advance(DRAIN_NS)
        self.log.append(("drain", None, self.clock.now))


class FakeForward:
    """Forwards of `duration_ns` queued back to back; `wait` blocks until one has ended."""

    def __init__(self, clock, log, duration_ns: int = 1_000_000) -> None:
        self.clock, self.log, self.duration_ns = clock, log, duration_ns
        self.ends: list[int] = []

    def launch(self) -> int:
        begin = max(self.clock.now, self.ends[-1] if self.ends else 0)
        self.ends.append(begin + self.duration_ns)
        self.log.append(("launch", len(self.ends) - 1, self.clock.now))
        return len(self.ends) - 1

    def wait(self, handle: int) -> None:
        self.clock.now = max(self.clock.now, self.ends[handle])
        self.log.append(("wait", handle, self.clock.now))


class FakeAgree:
    """The control plane's agree_max: takes `cost_ns`; the peers' value is `peers(value)`."""

    def __init__(self, clock, log, cost_ns: int = 40_000, peers=lambda v: v) -> None:
        self.clock, self.log, self.cost_ns, self.peers = clock, log, cost_ns, peers
        self.asked: list[int] = []

    def __call__(self, value: int) -> int:
        self.asked.append(value)
        self.clock.advance(self.cost_ns)
        self.log.append(("agreed", None, self.clock.now))
        return max(value, self.peers(value))


def timed_decide(monkeypatch, clock, ns: int = DECIDE_NS) -> None:
    """The loop's `decide`, costing `ns` on the fake clock (the real decision otherwise)."""

    def decide(*args):
        clock.advance(ns)
        return real_decide(*args)

    monkeypatch.setattr(loop_mod, "decide", decide)


def config(shape: GatherShape) -> DelayerConfig:
    return DelayerConfig(max_delay_passes=30, dp_size=shape.dp_rows, enable_dp_attention=True)


def make_loop(clock, path=None, rank: int = 0, **kw) -> CaseLoop:
    path = path or FakePath(clock)
    return CaseLoop(path, config(path.shape), lambda i: local_row(rank, i), clock, **kw)


def events(log, *names) -> list[tuple]:
    return [e for e in log if e[0] in names]


def parts(s, i: int) -> list[int]:
    """Pass i's four parts: row, collective, stall, decide."""
    return [s.row_ns[i], s.collective_ns[i], s.stall_ns[i], s.decide_ns[i]]
