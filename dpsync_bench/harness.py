"""The one harness every benchmark shares: run a case on all ranks, return its result.

Per iteration, on every rank: wait for the agreed start instant (isolated cadence) or go at
once (streaming); launch the simulated forward if any; then time, on the host, the pass the
scheduler loses: gather + read-back + decide, from "local row ready" to "decision on the
CPU". The path counts its GPU<->CPU sync time (stall) separately. Outside the timed window:
snapshot what the gather left (checked, with every decision, after the case) and let a
forward end. After the loop: the collective's device time, nccl-tests style. Per-rank
arrays are collected after the case; figures are reduced with the per-iteration max across
ranks (every rank waits for the slowest).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from dataclasses import dataclass

import numpy
import torch

from delayer_core.decision import DelayerConfig, DelayerState, GatherSummary, decide
from delayer_core.paths import GatherShape, SyncPath, path_class

from . import stats
from .cases import GRANULARITIES, NCCL_PATHS, Case
from .dist import DistContext, now_ns, spin_until
from .machine import gpu_snapshot
from .results import CASE_SCHEMA, utc_stamp

ALIGN_LEAD_NS = 20_000_000  # first agreed start instant: 20 ms after it is chosen
MIN_IDLE_GAP_NS = 300_000  # isolated cadence: at least this much idle before each pass
OVERHEAD_LIMIT = 0.05  # harness overhead allowed over the raw loop
OVERHEAD_BLOCK = 10  # passes per block: both sides are compared by their median block mean
RAW_CHUNK = 100  # measured and raw passes alternate in chunks this long (drift hits both)
MIN_WARMUP_S = 0.5  # warm up for at least this long too: clocks and drivers settle slowly


def local_row(rank: int, iteration: int) -> list[int]:
    """A legal row whose every field changes with rank and iteration, so a stale or
    misplaced element is caught by the check."""
    return [
        (iteration + rank) % 2,
        int(iteration % 7 == rank % 7),
        iteration,
        rank + 1,
        iteration * 4096 + rank,
    ]


def expected_buffer(shape: GatherShape, iteration: int) -> list[list[list[int]]]:
    tp = shape.attn_tp_size
    return [[local_row(d * tp + t, iteration) for t in range(tp)] for d in range(shape.dp_rows)]


def count_wrong(got, want) -> int:
    flat_got = [v for plane in got for row in plane for v in row]
    flat_want = [v for plane in want for row in plane for v in row]
    if len(flat_got) != len(flat_want):
        return max(len(flat_got), len(flat_want))
    return sum(g != w for g, w in zip(flat_got, flat_want, strict=True))


@dataclass
class RankRecord:
    """What one rank measured in one case (ns unless named otherwise)."""

    pass_ns: list[int]
    stall_ns: list[int]
    start_ns: list[int]  # start instants on rank 0's clock
    device_us: list[float] | None
    forward_ms: list[float] | None
    wrong_elements: int
    wrong_decisions: int
    checked: int  # iterations whose buffer and decision were checked (warm-up included)
    late_starts: int
    raw_block_median_ns: float | None  # the bare loop's median 10-pass block mean
    period_ns: int | None
    gpu_before: dict | None
    gpu_after: dict | None


class BenchSession:
    """Per-job state: the dist context, cached groups and calibrated forwards."""

    def __init__(self, ctx: DistContext, machine_kind: str) -> None:
        self.ctx = ctx
        self.machine_kind = machine_kind
        self._forwards: dict[str, object] = {}

    # ---- building blocks ------------------------------------------------------------
    def build_path(self, case: Case) -> SyncPath:
        ctx = self.ctx
        cls = path_class(case.path)
        high = case.priority == "high"
        group = ctx.group(cls.backend, high_priority=high and cls.backend == "nccl")
        device = ctx.device if cls.on_cuda else "cpu"
        shape = GatherShape.parse(case.shape)
        with ctx.guard(f"building path {case.path}"):
            if case.path == "nccl_side_stream":
                return cls(group, shape, device, priority=-1 if high else 0)
            return cls(group, shape, device)

    def forward(self, granularity: str):
        if granularity not in self._forwards:
            from .forward import SimulatedForward

            self._forwards[granularity] = SimulatedForward(self.ctx, GRANULARITIES[granularity])
        return self._forwards[granularity]

    # ---- one case -------------------------------------------------------------------
    def run_case(self, case: Case, corrupt: bool = False) -> dict:
        """Run on every rank; every rank returns the same result dict. `corrupt` (tests
        only) damages one gathered element each pass, as a stale-buffer bug would."""
        ctx = self.ctx
        ctx.current_case = case.case_id
        started = time.time()
        path = self.build_path(case)
        fwd = self.forward(case.granularity) if case.forward_ms > 0 else None
        cuda = ctx.device is not None and case.needs_cuda
        sched = torch.cuda.Stream(ctx.device) if cuda else None
        gpu_index = ctx.device.index if ctx.device is not None else None
        gpu_before = gpu_snapshot(gpu_index) if gpu_index is not None else None
        stream_ctx = torch.cuda.stream(sched) if cuda else contextlib.nullcontext()
        with stream_ctx, ctx.guard("running the case"), _gc_paused():
            if sched is not None:
                sched.wait_stream(torch.cuda.default_stream(ctx.device))
            loop = _Loop(self, case, path, fwd, sched, corrupt)
            warm_ns = self._warm_up(loop, case)
            first, period, raw_blocks = len(warm_ns), None, None
            if case.cadence == "isolated":
                period = self._agree_period(warm_ns)
                loop.run(first, case.iters, aligned=True, record=True, period_ns=period)
            elif self._wants_raw_loop(case):
                raw_blocks = []
                for done in range(0, case.iters, RAW_CHUNK):
                    count = min(RAW_CHUNK, case.iters - done)
                    loop.run(first + done, count, aligned=False, record=True)
                    raw_blocks += self._raw_loop(path, count)
            else:
                loop.run(first, case.iters, aligned=False, record=True)
            wrong_elements, wrong_decisions, checked = loop.check()
            device_us = path.collective_device_us() if case.path in NCCL_PATHS else None
        gpu_after = gpu_snapshot(gpu_index) if gpu_index is not None else None
        raw_median = stats.quantile(sorted(raw_blocks), 0.5) if raw_blocks else None
        mine = RankRecord(
            loop.pass_ns,
            loop.stall_ns,
            loop.start_ns,
            device_us,
            loop.forward_ms,
            wrong_elements,
            wrong_decisions,
            checked,
            loop.late,
            raw_median,
            period,
            gpu_before,
            gpu_after,
        )
        records = ctx.all_gather_object(mine)
        return build_result(case, records, self.machine_kind, started, fwd)

    def _warm_up(self, loop: _Loop, case: Case) -> list[int]:
        """`case.warmup` passes, then more until MIN_WARMUP_S has passed on the slowest
        rank; the extra count is agreed, so every rank runs the same passes."""
        walls = loop.run(0, case.warmup, aligned=False, record=False)
        per_pass = max(sum(walls) / len(walls), 1.0) if walls else None
        need = 0
        if per_pass is not None:
            need = max(0, math.ceil((MIN_WARMUP_S * 1e9 - sum(walls)) / per_pass))
        extra = max(self.ctx.all_gather_object(need))
        if extra:
            walls += loop.run(len(walls), extra, aligned=False, record=False)
        return walls

    def _agree_period(self, warm_ns: list[int]) -> int:
        """The isolated cadence's period, the same on every rank: the slowest rank's p90
        warm-up iteration (its first iterations, which set up communicators, left out)
        with 20 % slack, plus a fixed idle gap."""
        settled = warm_ns[len(warm_ns) // 5 + 1 :] or warm_ns or [1_000_000]
        mine = stats.quantile(sorted(settled), 0.90)
        slowest = max(self.ctx.all_gather_object(mine))
        return int(slowest * 1.2 + MIN_IDLE_GAP_NS)

    @staticmethod
    def _wants_raw_loop(case: Case) -> bool:
        return case.forward_ms == 0 and case.cadence == "streaming"

    def _raw_loop(self, path: SyncPath, count: int) -> list[float]:
        """The same gather + decide in a bare loop: no per-pass timers, no snapshots, no
        alignment; one clock read per block of passes. Returns each block's mean (ns per
        pass); their median is compared with the same statistic of the harness's samples."""
        ctx = self.ctx
        rows = [local_row(ctx.rank, i) for i in range(count)]
        config = _config(path.shape)
        state = DelayerState()
        marks = []
        for b in range(0, len(rows) - OVERHEAD_BLOCK + 1, OVERHEAD_BLOCK):
            marks.append(now_ns())
            for row in rows[b : b + OVERHEAD_BLOCK]:
                state = decide(state, path.gather(row), config, 0.0).state
        marks.append(now_ns())
        if ctx.device is not None and path.on_cuda:
            torch.cuda.synchronize(ctx.device)
        return [(b - a) / OVERHEAD_BLOCK for a, b in zip(marks[:-1], marks[1:], strict=True)]


@contextlib.contextmanager
def _gc_paused():
    """No garbage collection inside measured loops (as timeit does): a collection walking
    the loop's thousands of records would land in some pass's figure."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def median_block_mean(samples, block: int = OVERHEAD_BLOCK) -> float:
    means = sorted(
        sum(samples[i : i + block]) / block for i in range(0, len(samples) - block + 1, block)
    )
    return stats.quantile(means, 0.5) if means else float("nan")


def _config(shape: GatherShape) -> DelayerConfig:
    return DelayerConfig(max_delay_passes=30, dp_size=shape.dp_rows, enable_dp_attention=True)


class _Loop:
    """The measured loop of one case on one rank."""

    def __init__(
        self, session: BenchSession, case: Case, path: SyncPath, fwd, sched, corrupt: bool
    ) -> None:
        self.ctx = session.ctx
        self.case = case
        self.path = path
        self.fwd = fwd
        self.sched = sched
        self.config = _config(path.shape)
        self.state = DelayerState()
        self.pass_ns: list[int] = []
        self.stall_ns: list[int] = []
        self.start_ns: list[int] = []
        self.forward_ms: list[float] | None = [] if fwd is not None else None
        self.late = 0
        self.corrupt = corrupt  # tests only: damage one gathered element each pass
        # Checked after the case: what each pass left in the buffer, what it decided.
        self._snapshots: list[torch.Tensor] = []
        self._decided: list[tuple] = []  # (iteration, state before, now, outcome)

    def run(
        self, first: int, count: int, aligned: bool, record: bool, period_ns: int | None = None
    ) -> list[int]:
        """Run iterations first..first+count-1; returns each one's whole wall time."""
        ctx, case, path, fwd, sched = self.ctx, self.case, self.path, self.fwd, self.sched
        rank, offset = ctx.rank, ctx.clock_offset_ns
        if aligned:
            start = ctx.broadcast_object(now_ns() + ALIGN_LEAD_NS if ctx.is_leader else None)
            start += offset  # rank 0's instant on this rank's clock
        walls = []
        for k in range(count):
            i = first + k
            row = local_row(rank, i)
            begin = now_ns()
            if aligned:
                target = start + k * period_ns
                if spin_until(target) - target > MIN_IDLE_GAP_NS // 2:
                    self.late += 1
            if fwd is not None:
                fwd.launch(case.forward_ms, after=sched)
                if case.barrier:
                    sched.wait_stream(fwd.stream)  # upstream's write-after-read barrier
            before = self.state
            path.stall_ns = 0
            t0 = now_ns()
            outcome = decide(before, path.gather(row), self.config, t0 * 1e-9)
            t1 = now_ns()
            # ---- untimed from here ----
            self.state = outcome.state
            if record:
                self.pass_ns.append(t1 - t0)
                self.stall_ns.append(path.stall_ns)
                self.start_ns.append(t0 - offset)
            snap = path.snapshot()
            if self.corrupt:
                snap.reshape(-1)[-1] += 1
            self._snapshots.append(snap)
            if path.on_cuda and sched is not None:  # nothing of ours pending at the next pass
                sched.synchronize()
            self._decided.append((i, before, t0 * 1e-9, outcome))
            if fwd is not None:  # let the forward end before the next pass launches one
                torch.cuda.synchronize(ctx.device)
                if record:
                    self.forward_ms.append(fwd.last_duration_ms())
            walls.append(now_ns() - begin)
        return walls

    def check(self) -> tuple[int, int, int]:
        """Wrong gathered elements, wrong decisions, and iterations checked (all run)."""
        snaps = self._snapshots
        if isinstance(snaps[0], torch.Tensor):
            got = torch.stack(snaps).cpu().tolist()
        else:
            got = numpy.stack(snaps).tolist()
        wrong_elements = 0
        wrong_decisions = 0
        for (i, before, now_s, outcome), buffer in zip(self._decided, got, strict=True):
            want = expected_buffer(self.path.shape, i)
            wrong_elements += count_wrong(buffer, want)
            tp0 = [plane[0] for plane in want]
            if decide(before, GatherSummary.from_rows(tp0), self.config, now_s) != outcome:
                wrong_decisions += 1
        self._snapshots.clear()
        return wrong_elements, wrong_decisions, len(got)


def build_result(
    case: Case, records: list[RankRecord], machine_kind: str, started: float, fwd
) -> dict:
    """The case's result from every rank's record; pure, so every rank builds the same."""
    us = 1e-3
    pass_us = [[v * us for v in r.pass_ns] for r in records]
    stall_us = [[v * us for v in r.stall_ns] for r in records]
    starts_us = [[v * us for v in r.start_ns] for r in records]
    result = {
        "schema": CASE_SCHEMA,
        "case_id": case.case_id,
        "group_key": case.group_key,
        "case": case.to_dict(),
        "machine_kind": machine_kind,
        "world_size": len(records),
        "started_utc": utc_stamp(started),
        "duration_s": round(time.time() - started, 3),
        "reduction": "per-iteration max across ranks",
        "cadence_detail": _cadence_detail(case, records),
        "stats": {
            "pass_us": stats.summarize(stats.reduce_max(pass_us)),
            "stall_us": stats.summarize(stats.reduce_max(stall_us)),
            "start_skew_us": stats.summarize(stats.reduce_spread(starts_us)),
        },
        "per_rank": {
            "pass_us": [stats.summarize(r) for r in pass_us],
            "stall_us": [stats.summarize(r) for r in stall_us],
            "slowest_rank_counts": stats.slowest_rank_counts(pass_us),
        },
        "raw": {"pass_us": pass_us, "stall_us": stall_us, "start_us": starts_us},
        "check": {
            "wrong_elements": sum(r.wrong_elements for r in records),
            "wrong_decisions": sum(r.wrong_decisions for r in records),
            "iterations_checked": min(r.checked for r in records),
        },
        "late_starts": sum(r.late_starts for r in records),
        "gpu_state": {
            "before": [r.gpu_before for r in records],
            "after": [r.gpu_after for r in records],
        },
    }
    if all(r.device_us for r in records):
        device = [r.device_us for r in records]
        result["stats"]["device_us"] = stats.summarize(stats.reduce_max(device))
        result["raw"]["device_us"] = device
        result["device_time_method"] = (
            "CUDA events around 20 back-to-back collectives queued behind a ~1 ms sleep "
            "kernel (GPU busy while the host enqueues), per collective, 10 rounds, idle GPU "
            "otherwise; per-round max across ranks"
        )
    if fwd is not None and all(r.forward_ms for r in records):
        measured = [v for r in records for v in r.forward_ms]
        result["forward"] = {
            "requested_ms": case.forward_ms,
            "measured_ms": stats.summarize(measured),
            "kernel_ms": fwd.calibration.kernel_ms,
            "matrix_size": fwd.calibration.size,
            "kernels": fwd.calibration.kernels_for(case.forward_ms),
        }
    raw_blocks = [r.raw_block_median_ns for r in records]
    if all(m is not None for m in raw_blocks):
        harness = max(median_block_mean(r) for r in pass_us)
        raw = max(raw_blocks) * us
        overhead = (harness - raw) / raw if raw > 0 else 0.0
        result["raw_loop"] = {
            "statistic": f"median over blocks of {OVERHEAD_BLOCK} passes of the block mean, "
            f"slowest rank; raw and measured passes alternate in chunks of {RAW_CHUNK}",
            "mean_us": raw,
            "harness_mean_us": harness,
            "overhead": overhead,
            "within_limit": overhead <= OVERHEAD_LIMIT,
        }
    return result


def _cadence_detail(case: Case, records: list[RankRecord]) -> dict:
    if case.cadence == "streaming":
        prior = "back to back: each pass follows the previous one's check (GPU kept busy)"
        return {"alignment": "none", "gpu_prior_state": prior, "period_us": None}
    period = records[0].period_ns
    return {
        "alignment": "agreed start instants on the shared monotonic clock"
        + ("" if len(records) == 1 else " (offsets estimated across hosts when needed)"),
        "period_us": period * 1e-3 if period else None,
        "gpu_prior_state": f"idle at least {MIN_IDLE_GAP_NS // 1000} us before each pass"
        + (" (then a forward is launched)" if case.forward_ms else ""),
    }
