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

import numpy as np
import torch

from delayer_core.decision import DelayerConfig
from delayer_core.paths import path_class, path_info
from delayer_core.shape import GatherShape

from .. import stats
from ..cases import GRANULARITIES, Case
from .checks import check, local_row
from .device_time import collective_device_time
from .faults import slowed
from .forward import next_rows
from .group import RankGroup, now_ns
from .loop import CaseLoop, Samples, Schedule, bare_loop, phases, to_arrays
from .machine import gpu_snapshot
from .summary import MAX_LATE_FRACTION, MIN_IDLE_GAP_NS

MIN_WARMUP_S = 0.2  # warm up for at least this long too: clocks and drivers settle slowly
PILOT_PASSES = 40
TUNE_PASSES = 12  # forwards per tuning round
TUNE_ROUNDS = 5
TUNE_TOLERANCE = 0.02
MAX_ATTEMPTS = 4  # of the isolated loop, each with a longer period than the last
RAW_CHUNK = 100  # measured and bare passes alternate in chunks this long (drift hits both)


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

    def __init__(self, device, drains: bool, forward=None, barrier: bool = True):
        self.sched = torch.cuda.Stream(device)
        self.sched.wait_stream(torch.cuda.default_stream(device))
        self.drains, self.forward, self.barrier = drains, forward, barrier
        self.hold_ms = None  # while measuring: keep the forwards at this length

    def launch(self) -> int:
        handle = self.forward.launch(after=self.sched)
        if self.barrier:  # upstream's write-after-read barrier: the schedule stream waits
            self.sched.wait_stream(self.forward.stream)
        return handle

    def wait(self, handle: int) -> None:
        self.forward.wait(handle)
        if self.hold_ms is not None:
            fwd = self.forward
            fwd.rows = next_rows(fwd.rows, fwd.duration_ms(handle), self.hold_ms)

    def drain(self) -> None:
        if self.drains:
            self.sched.synchronize()


class Harness:
    """Per-job state: the rank group and the calibrated forwards."""

    def __init__(self, group: RankGroup) -> None:
        self.group = group
        self._forwards: dict[str, object] = {}
        self._tuned: dict[tuple, int] = {}  # product counts, by (granularity, ms, cadence)
        # Waiting for a slot: spin where each rank has two cores or more (a busy scheduler
        # thread never sleeps); sleep, then spin the last 200 us, where ranks share cores
        # (spinning ranks would starve gloo's threads and each other).
        self.spins = (os.cpu_count() or 1) >= 2 * group.local_world_size

    def build_path(self, case: Case, **options):
        cls = path_class(case.path)
        with self.group.guard(f"building path {case.path}"):
            return cls.build(self.group, GatherShape.parse(case.shape), **options)

    def forward(self, case: Case):
        """The granularity's forward (made once per job), with the product count last tuned
        for this duration and cadence, or a first guess."""
        from .forward import SimulatedForward

        g = self.group
        fwd = self._forwards.get(case.granularity)
        if fwd is None:
            # With one GPU per rank, forwards start with an all-reduce (as EP's all-to-all).
            own_gpu = g.world_size > 1 and g.local_world_size <= torch.cuda.device_count()
            ep = g.group("nccl", tag="ep") if own_gpu else None
            fwd = SimulatedForward(g.device, GRANULARITIES[case.granularity], 1234 + g.rank, ep)
            self._forwards[case.granularity] = fwd
        fwd.rows = self._tuned.get(_tuning_key(case)) or fwd.rows_for(case.forward_ms)
        return fwd

    # ---- one case ---------------------------------------------------------------------
    def run_case(self, case: Case, corrupt: bool = False, slow: bool = False) -> dict:
        """This rank's record of the case. `corrupt` (tests only) damages one gathered
        element of every snapshot, as a stale-buffer bug would; `slow` (tests only) delays
        every exchange (faults.slowed)."""
        g = self.group
        g.current_case = case.case_id
        info = path_info(case.path)
        options = {"priority": case.priority} if case.priority != "default" else {}
        path = self.build_path(case, **options)
        if slow:
            path = slowed(path)
        fwd = self.forward(case) if case.forward_ms > 0 else None
        gpu = None
        if g.device is not None and (info.cuda or fwd is not None):
            gpu = GpuSide(g.device, path.leaves_work_queued, fwd, case.barrier)
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
                phase_ns=phases(case.forward_ms, case.phase, case.group_key),
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
        allowance = self._allowance() if case.cadence == "isolated" else 0
        if driver is not None:
            first = self._tune(case, loop, driver, first, allowance, rec)
            driver.forward.forget()  # host instants of the forwards from here: two anchors
            anchor = driver.forward.anchor(now_ns)
            driver.hold_ms = case.forward_ms
        out = Samples()
        if case.cadence == "isolated":
            out = self._isolated(case, loop, driver, first, allowance, rec)
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
            rec["forward"].update(
                rows=fwd.rows,
                matrix_size=fwd.size,
                kernel_ms=fwd.kernel_ms,
                durations_ns=[round(fwd.duration_ms(h) * 1e6) for h in out.forwards],
            )
            fwd.forget()
        return to_arrays(out, self.group.clock_offset_ns, instants)

    def _tune(
        self, case: Case, loop: CaseLoop, driver, first: int, allowance: int, rec, period=None
    ) -> int:
        """Rounds of the case's own cadence with forwards, each rank scaling its forward's
        rows until every rank's median forward is within TUNE_TOLERANCE of the request
        (agreed: every rank runs the same passes). A GPU's clocks depend on how busy it
        is, so the isolated cadence tunes again at the period it will measure at."""
        fwd, target, rounds = driver.forward, case.forward_ms, []
        for _ in range(TUNE_ROUNDS):
            pilot = Samples()
            if case.cadence == "busy":
                loop.busy(first, TUNE_PASSES, driver, pilot)
            else:
                schedule = self._schedule(period or self._guess(case, allowance), allowance)
                loop.isolated(first, TUNE_PASSES, schedule, pilot, driver)
            first += TUNE_PASSES
            median = float(np.median([fwd.duration_ms(h) for h in pilot.forwards]))
            rounds.append({"rows": fwd.rows, "median_ms": median})
            if not self.group.agree_max(int(abs(median / target - 1) > TUNE_TOLERANCE)):
                break
            fwd.rows = max(1, round(fwd.rows * target / median))
        self._tuned[_tuning_key(case)] = fwd.rows
        rec.setdefault("forward", {"tuning": []})["tuning"] += rounds
        return first

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

    def _allowance(self) -> int:
        """Time left for agreeing on each slot: twice every rank's p99 agreement."""
        g = self.group
        agree = [_timed(g.agree_max, 0) for _ in range(30)]
        return g.agree_max(int(stats.quantile(agree, 0.99) * 2) + 30_000)

    @staticmethod
    def _guess(case: Case, allowance: int) -> int:
        """A period long enough for a pilot: the forward and then some."""
        return 3_000_000 + int(case.forward_ms * 1.5e6) + allowance + MIN_IDLE_GAP_NS

    def _isolated(self, case: Case, loop: CaseLoop, fwd, first: int, allowance: int, rec):
        """A pilot in this cadence sizes the period: every rank's p99 busy time, plus the
        agreement, plus the idle gap. Slots skipped past MAX_LATE_FRACTION, or agreements
        overrunning: again with more of both; the record keeps every attempt."""
        g = self.group
        pilot = Samples()
        schedule = self._schedule(self._guess(case, allowance), allowance)
        busy = loop.isolated(first, PILOT_PASSES, schedule, pilot, fwd)
        first += PILOT_PASSES
        period = g.agree_max(int(stats.quantile(busy, 0.99) * 1.2) + allowance + MIN_IDLE_GAP_NS)
        if fwd is not None:
            first = self._tune(case, loop, fwd, first, allowance, rec, period)
        attempts = []
        for attempt in range(MAX_ATTEMPTS):
            out = Samples()
            loop.isolated(first, case.iters, self._schedule(period, allowance), out, fwd)
            first += case.iters
            skipped = g.agree_max(out.skipped_slots)  # the same everywhere: one agreed grid
            late = skipped / (case.iters + skipped)
            # judged as the checks judge it: p5 of the per-pass minimum over ranks
            gaps = np.min(g.all_gather_object(np.asarray(out.idle_gap_ns)), axis=0)
            short = stats.quantile(gaps, 0.05) < MIN_IDLE_GAP_NS
            attempts.append({"period_ns": period, "allowance_ns": allowance,
                             "late_fraction": late, "short_gaps": bool(short)})  # fmt: skip
            if (late <= MAX_LATE_FRACTION and not short) or attempt == MAX_ATTEMPTS - 1:
                break
            # Slots missed, or agreements overran their allowance: more of both, again.
            period, allowance = period * 2 + allowance, allowance * 2
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


def _tuning_key(case: Case) -> tuple:
    return (case.granularity, case.forward_ms, case.cadence)


def _timed(fn, *args) -> int:
    t0 = now_ns()
    fn(*args)
    return now_ns() - t0
