"""A simulated forward pass: calibrated GPU work of a requested duration on a forward stream.

The work is bf16 matrix products that fill every SM (like a forward's GEMMs), sized so one
kernel lasts about the requested granularity (coarse ~1 ms, fine ~0.15 ms). Rank 0 picks the
size, every rank times it, and the slowest rank's kernel time sets the kernel count, so all
ranks run the same work for about the same time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CANDIDATE_SIZES = (512, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 7168, 8192, 10240)


@dataclass(frozen=True)
class Calibration:
    size: int  # matrix side
    kernel_ms: float  # slowest rank's median time of one product

    def kernels_for(self, duration_ms: float) -> int:
        return max(1, round(duration_ms / self.kernel_ms))


def pick_size(timings_ms: dict[int, float], target_ms: float) -> int:
    """The candidate whose time is closest to the target, on a log scale."""
    if not timings_ms:
        raise ValueError("no calibration timings")
    if target_ms <= 0:
        raise ValueError(f"target kernel time must be > 0, got {target_ms}")
    return min(timings_ms, key=lambda n: abs(math.log(timings_ms[n] / target_ms)))


def agree(size_from_leader: int, kernel_ms_per_rank: list[float]) -> Calibration:
    """One calibration for every rank: the leader's size, the slowest rank's time."""
    if not kernel_ms_per_rank or min(kernel_ms_per_rank) <= 0:
        raise ValueError(f"bad calibration timings {kernel_ms_per_rank!r}")
    return Calibration(size_from_leader, max(kernel_ms_per_rank))


def time_product(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, reps: int = 15) -> float:
    """Median device time of one product (ms), measured back to back after a warm-up."""
    for _ in range(3):
        torch.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


class SimulatedForward:
    def __init__(self, ctx, granularity_ms: float) -> None:
        self.device = ctx.device
        self.stream = torch.cuda.Stream(self.device)
        gen = torch.Generator(device=self.device).manual_seed(1234 + ctx.rank)
        biggest = CANDIDATE_SIZES[-1]

        def rand(n):
            return torch.randn(n, n, device=self.device, dtype=torch.bfloat16, generator=gen)

        self._a, self._b = rand(biggest), rand(biggest)
        self._out = torch.empty(biggest, biggest, device=self.device, dtype=torch.bfloat16)
        size = None
        if ctx.is_leader:
            timings = {n: time_product(*self._views(n)) for n in CANDIDATE_SIZES}
            size = pick_size(timings, granularity_ms)
        size = ctx.broadcast_object(size)
        mine = time_product(*self._views(size), reps=31)
        self.calibration = agree(size, ctx.all_gather_object(mine))
        self._ops = self._views(size)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def _views(self, n: int):
        return self._a[:n, :n], self._b[:n, :n], self._out[:n, :n]

    def launch(self, duration_ms: float, after: torch.cuda.Stream) -> None:
        """Queue the forward on the forward stream, after what `after` has queued."""
        self.stream.wait_stream(after)
        a, b, out = self._ops
        with torch.cuda.stream(self.stream):
            self._start.record()
            for _ in range(self.calibration.kernels_for(duration_ms)):
                torch.matmul(a, b, out=out)
            self._end.record()

    def last_duration_ms(self) -> float:
        """Measured device time of the last forward; synchronizes, call it untimed."""
        self._end.synchronize()
        return self._start.elapsed_time(self._end)
