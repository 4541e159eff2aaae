"""The one harness every benchmark shares: one case on every rank, its record per rank.

Per case: build the path; warm up (at least `warmup` passes and MIN_WARMUP_S, agreed); for
the isolated cadence a pilot in that cadence sizes the slot period; then the measured loop
(``loop.CaseLoop``), the bare loop beside it in streaming idle cases (harness overhead),
and, for device paths, the collective's device time. Checks run after the loop, over every
pass. `summary.build_result` turns the ranks' records into the case result.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
import zlib

import numpy as np
import torch

from delayer_core.decision import DelayerConfig, decide
from delayer_core.paths import path_class, path_info
from delayer_core.shape import GatherShape

from ..cases import GRANULARITIES, Case
from .checks import check, local_row
from .device_time import collective_device_time
from .group import RankGroup, now_ns
from .loop import CaseLoop, Samples, Schedule
from .machine import gpu_snapshot

MIN_IDLE_GAP_NS = 300_000  # isolated cadence: idle time every rank has before each pass
MIN_WARMUP_S = 0.3  # warm up for at least this long too: clocks and drivers settle slowly
PILOT_PASSES = 40
MAX_LATE_FRACTION = 0.05
MAX_ATTEMPTS = 3  # of the isolated loop, each with a longer period than the last
RAW_CHUNK = 100  # measured and bare passes alternate in chunks this long (drift hits both)
OVERHEAD_BLOCK = 10  # passes per block: both sides are compared by their median block mean
PHASE_SPAN = 0.9  # "random" phase: uniform over the first 90 % of the forward


def config_for(shape: GatherShape) -> DelayerConfig:
    return DelayerConfig(max_delay_passes=30, dp_size=shape.dp_rows, enable_dp_attention=True)


@contextlib.contextmanager
def gc_paused():
    """No garbage collection inside measured loops (as timeit does): a collection walking
    the loop's records would land in some pass's figure."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class GpuSide:
    """The case's GPU: the schedule stream the passes run on and the forward, if any."""

    def __init__(self, device, path_on_cuda: bool, forward=None, barrier: bool = True):
        self.sched = torch.cuda.Stream(device)
        self.sched.wait_stream(torch.cuda.default_stream(device))
        self.path_on_cuda, self.forward, self.barrier = path_on_cuda, forward, barrier

    def launch(self) -> int:
        handle = self.forward.launch(after=self.sched)
        if self.barrier:  # upstream's write-after-read barrier: the schedule stream waits
            self.sched.wait_stream(self.forward.stream)
        return handle

    def wait(self, handle: int) -> None:
        self.forward.wait(handle)

    def drain(self) -> None:
        if self.path_on_cuda:
            self.sched.synchronize()


class Harness:
    """Per-job state: the rank group and the calibrated forwards."""

    def __init__(self, group: RankGroup) -> None:
        self.group = group
        self._forwards: dict[str, object] = {}
        self._calibrated: dict[tuple, tuple[int, float]] = {}
        # Waiting for a slot: spin where each rank has two cores or more (a busy scheduler
        # thread never sleeps); sleep, then spin the last 200 us, where ranks share cores
        # (spinning ranks would starve gloo's threads and each other).
        self.spins = (os.cpu_count() or 1) >= 2 * group.local_world_size

    def build_path(self, case: Case, **options):
        cls = path_class(case.path)
        with self.group.guard(f"building path {case.path}"):
            return cls.build(self.group, GatherShape.parse(case.shape), **options)

    def forward(self, case: Case):
        from .forward import SimulatedForward

        fwd = self._forwards.get(case.granularity)
        if fwd is None:
            seed = 1234 + self.group.rank
            fwd = SimulatedForward(self.group.device, GRANULARITIES[case.granularity], seed)
            self._forwards[case.granularity] = fwd
        key = _calibration_key(case)
        if key not in self._calibrated:
            median = fwd.calibrate(case.forward_ms, back_to_back=case.cadence == "busy")
            self._calibrated[key] = (fwd.kernels, median)
        fwd.kernels = self._calibrated[key][0]
        return fwd

    # ---- one case ---------------------------------------------------------------------
    def run_case(self, case: Case, corrupt: bool = False) -> dict:
        """This rank's record of the case. `corrupt` (tests only) damages one gathered
        element of every snapshot, as a stale-buffer bug would."""
        g = self.group
        g.current_case = case.case_id
        info = path_info(case.path)
        options = {"priority": case.priority} if case.priority != "default" else {}
        path = self.build_path(case, **options)
        fwd = self.forward(case) if case.forward_ms > 0 else None
        gpu = None
        if g.device is not None and (info.cuda or fwd is not None):
            gpu = GpuSide(g.device, info.cuda, fwd, case.barrier)
        gpu_before = gpu_snapshot(g.device.index) if g.device is not None else None
        rec: dict = {"path": path.describe()}
        stream = torch.cuda.stream(gpu.sched) if gpu else contextlib.nullcontext()
        with stream, g.guard("running the case"), gc_paused():
            loop = CaseLoop(
                path,
                config_for(path.shape),
                lambda i: local_row(g.rank, i),
                now_ns,
                gpu=gpu,
                agree_max=g.agree_max,
                offset_ns=g.clock_offset_ns,
                phase_ns=_phases(case),
                sleep=None if self.spins else time.sleep,
            )
            samples = self._measure(case, loop, gpu, rec)
            rec["checks"] = check(loop, path, corrupt)
            if info.gpu_per_rank:
                rec["device"] = collective_device_time(path, g)
        rec["gpu_state"] = [gpu_before, gpu_snapshot(g.device.index) if g.device else None]
        rec["samples"] = samples
        with g.guard("closing the path"):
            path.close()
        return rec

    def _measure(self, case: Case, loop: CaseLoop, gpu, rec: dict) -> dict:
        driver = gpu if gpu is not None and gpu.forward is not None else None
        first = self._warm_up(case, loop, driver)
        if driver is not None:  # host instants of the forwards from here: two anchors
            driver.forward.forget()
            anchor = driver.forward.anchor(now_ns)
        out = Samples()
        if case.cadence == "isolated":
            out = self._isolated(case, loop, driver, first, rec)
        elif case.cadence == "busy":
            loop.busy(first, case.iters, driver, out)
        else:  # streaming idle: the bare loop beside it
            rec["raw_block_means_ns"] = []
            for done in range(0, case.iters, RAW_CHUNK):
                count = min(RAW_CHUNK, case.iters - done)
                loop.streaming(first + done, count, out)
                rec["raw_block_means_ns"] += bare_loop(loop, first + done, count)
        instants = None
        if driver is not None:
            fwd = driver.forward
            instants = fwd.host_instants(out.forwards, anchor, fwd.anchor(now_ns))
            rec["forward"] = {
                "kernels": fwd.kernels,
                "matrix_size": fwd.size,
                "kernel_ms": fwd.kernel_ms,
                "calibrated_ms": self._calibrated[_calibration_key(case)][1],
                "durations_ns": [round(fwd.duration_ms(h) * 1e6) for h in out.forwards],
            }
            fwd.forget()
        return to_arrays(out, self.group.clock_offset_ns, instants)

    def _warm_up(self, case: Case, loop: CaseLoop, gpu) -> int:
        """`case.warmup` passes in the case's own cadence, then more until MIN_WARMUP_S has
        passed on the slowest rank (the extra count is agreed)."""
        t0 = now_ns()
        if case.cadence == "busy":
            loop.busy(0, case.warmup, gpu, None)
        else:
            loop.streaming(0, case.warmup)
        elapsed = now_ns() - t0
        per_pass = max(elapsed / max(case.warmup, 1), 1.0)
        need = max(0, math.ceil((MIN_WARMUP_S * 1e9 - elapsed) / per_pass))
        extra = self.group.agree_max(min(need, 100_000))
        if extra:
            if case.cadence == "busy":
                loop.busy(case.warmup, extra, gpu, None)
            else:
                loop.streaming(case.warmup, extra)
        return case.warmup + extra

    def _isolated(self, case: Case, loop: CaseLoop, gpu, first: int, rec: dict) -> Samples:
        """A pilot in this cadence sizes the period: every rank's p95 busy time, plus the
        agreement, plus the idle gap. More than MAX_LATE_FRACTION of slots skipped: once
        more with a period 1.5x longer; the record keeps what it saw."""
        g = self.group
        agree = [_timed(g.agree_max, 0) for _ in range(30)]
        allowance = g.agree_max(int(np.quantile(agree, 0.90) * 2) + 30_000)
        fwd_ns = int(case.forward_ms * 1e6)
        fwd = gpu  # the forward's driver, or None
        guess = 3_000_000 + 2 * fwd_ns + allowance + MIN_IDLE_GAP_NS
        pilot = Samples()
        busy = loop.isolated(first, PILOT_PASSES, self._schedule(guess, allowance), pilot, fwd)
        first += PILOT_PASSES
        period = g.agree_max(int(np.quantile(busy, 0.95) * 1.1) + allowance + MIN_IDLE_GAP_NS)
        attempts = []
        for attempt in range(MAX_ATTEMPTS):
            out = Samples()
            loop.isolated(first, case.iters, self._schedule(period, allowance), out, fwd)
            first += case.iters
            skipped = g.agree_max(out.skipped_slots)  # the same everywhere: one agreed grid
            late = skipped / (case.iters + skipped)
            short = g.agree_max(int(np.quantile(out.idle_gap_ns, 0.05) < MIN_IDLE_GAP_NS))
            attempts.append({"period_ns": period, "allowance_ns": allowance,
                             "late_fraction": late, "short_gaps": bool(short)})  # fmt: skip
            if (late <= MAX_LATE_FRACTION and not short) or attempt == MAX_ATTEMPTS - 1:
                break
            # Slots missed, or agreements overran their allowance: more of both, again.
            period, allowance = int(period * 1.5) + allowance, allowance * 2
        rec["cadence"] = {
            "allowance_ns": allowance,
            "attempts": attempts,
            "idle_wait": "spin" if self.spins else "sleep, then spin the last 200 us",
        }
        return out

    def _schedule(self, period: int, allowance: int) -> Schedule:
        lead = 20_000_000  # the first slot: 20 ms after rank 0 proposes it
        start = self.group.broadcast_object(now_ns() - self.group.clock_offset_ns + lead)
        return Schedule(start, period, MIN_IDLE_GAP_NS, allowance)


def _calibration_key(case: Case) -> tuple:
    return (case.granularity, case.forward_ms, case.cadence == "busy")


def _timed(fn, *args) -> int:
    t0 = now_ns()
    fn(*args)
    return now_ns() - t0


def _phases(case: Case):
    """Pass i's delay into its forward: "random" is uniform over PHASE_SPAN of it, the same
    on every rank (seeded by the case); a number is that fraction."""
    span = case.forward_ms * 1e6
    if case.phase == "random":
        seed = zlib.crc32(case.group_key.encode())
        draws = np.random.default_rng(seed).random(1 << 16) * PHASE_SPAN * span
        return lambda i: int(draws[i % draws.size])
    fixed = int(float(case.phase) * span)
    return lambda i: fixed


def bare_loop(loop: CaseLoop, first: int, count: int) -> list[float]:
    """The same gather + decide with no per-pass timers, snapshots or checks; one clock
    read per block. Each block's mean (ns per pass)."""
    path, config = loop.path, loop.config
    rows = [loop.row_of(i) for i in range(first, first + count)]
    state, marks = loop.state, []
    for b in range(0, len(rows) - OVERHEAD_BLOCK + 1, OVERHEAD_BLOCK):
        marks.append(now_ns())
        for row in rows[b : b + OVERHEAD_BLOCK]:
            state = decide(state, path.gather(row), config, 0.0).state
    marks.append(now_ns())
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
