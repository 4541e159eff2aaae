"""A simulated forward pass: bf16 matrix products on a forward stream, of a measured length.

The products fill every SM, like a forward's GEMMs; one lasts about the granularity (coarse
~1 ms, fine ~0.15 ms). A forward's length is a number of matrix rows: that many rows' worth
of full products, the remainder as one product of fewer rows, so it can be tuned finer than
one kernel. The harness tunes it on whole forwards as its case launches them (timed with
CUDA events on their stream) and records every measured forward, so a label is what was
measured. With one GPU per rank, each forward
starts with a one-element all-reduce among the ranks, as an expert-parallel forward's
all-to-all lines the ranks up, so the ranks' forwards do not drift apart.

Host instants of GPU events come from two anchors (an event recorded on an idle GPU, and
the host clock right after), interpolated linearly between them.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist

CANDIDATE_SIZES = (512, 1024, 1536, 2048, 3072, 4096, 5120, 6144, 7168, 8192, 10240)
HOLD_GAIN = 0.5  # while measuring: each forward corrects this share of the last one's error
HOLD_STEP = 0.03  # ... by at most 3 % a forward


def next_rows(rows: int, measured_ms: float, target_ms: float) -> int:
    """The rows of the next forward: a busier, hotter GPU slows down as a case goes on, so
    each finished forward nudges the next towards the target (a damped, bounded step)."""
    if measured_ms <= 0:
        return rows
    step = (target_ms / measured_ms - 1) * HOLD_GAIN
    return max(1, round(rows * (1 + max(-HOLD_STEP, min(HOLD_STEP, step)))))


class SimulatedForward:
    def __init__(
        self, device: torch.device, granularity_ms: float, seed: int, ep_group=None
    ) -> None:
        self.device, self.ep_group = device, ep_group
        self._token = torch.zeros(1, device=device)
        self.stream = torch.cuda.Stream(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        n = CANDIDATE_SIZES[-1]
        self._a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
        self._b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
        self._out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
        times = {size: self._product_ms(size) for size in CANDIDATE_SIZES}
        self.size = min(times, key=lambda s: abs(times[s] / granularity_ms - 1))
        self.kernel_ms = times[self.size]
        self.rows = self.size  # the forward's length, in rows of products (see launch)
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _ops(self, size: int):
        return self._a[:size, :size], self._b[:size, :size], self._out[:size, :size]

    def _product_ms(self, size: int, reps: int = 9) -> float:
        a, b, out = self._ops(size)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self.stream):
            for _ in range(3):
                torch.matmul(a, b, out=out)
            start.record()
            for _ in range(reps):
                torch.matmul(a, b, out=out)
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / reps

    # ---- launching ---------------------------------------------------------------------
    def launch(self, after: torch.cuda.Stream | None = None) -> int:
        """Queue one forward (after what `after` has queued); returns its handle."""
        if after is not None:
            self.stream.wait_stream(after)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a, b, out = self._ops(self.size)
        full, rest = divmod(self.rows, self.size)
        with torch.cuda.stream(self.stream):
            start.record()
            if self.ep_group is not None:  # the ranks' forwards start together
                tdist.all_reduce(self._token, group=self.ep_group)
            for _ in range(full):
                torch.matmul(a, b, out=out)
            if rest:
                torch.matmul(a[:rest], b, out=out[:rest])
            end.record()
        self._events.append((start, end))
        return len(self._events) - 1

    def rows_for(self, ms: float) -> int:
        """A first guess at the rows of a forward of `ms`, from one product's time."""
        return max(1, round(ms / self.kernel_ms * self.size))

    def wait(self, handle: int) -> None:
        self._events[handle][1].synchronize()

    def duration_ms(self, handle: int) -> float:
        start, end = self._events[handle]
        end.synchronize()
        return start.elapsed_time(end)

    def forget(self) -> None:
        self._events.clear()

    # ---- host instants of GPU events ---------------------------------------------------
    def anchor(self, clock) -> tuple[torch.cuda.Event, int]:
        """An event on an idle GPU and the host instant it was recorded at."""
        torch.cuda.synchronize(self.device)
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        host = clock()
        event.synchronize()
        return event, host

    def host_instants(self, handles: list[int], first, last) -> list[tuple[int, int]]:
        """(start, end) of each forward on the host clock, between two anchors."""
        (e0, h0), (e1, h1) = first, last
        gpu_span_ms = e0.elapsed_time(e1)
        scale = (h1 - h0) / (gpu_span_ms * 1e6) if gpu_span_ms > 0 else 1.0
        out = []
        for h in handles:
            start, end = self._events[h]
            out.append(
                (
                    h0 + round(e0.elapsed_time(start) * 1e6 * scale),
                    h0 + round(e0.elapsed_time(end) * 1e6 * scale),
                )
            )
        return out
