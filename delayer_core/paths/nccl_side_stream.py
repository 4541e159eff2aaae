"""NCCL on a stream of its own with pinned host buffers: the gather never queues behind
the forward's stream (vLLM PR #44636's design)."""

from __future__ import annotations

import torch

from ..decision import NUM_FIELDS
from .base import SyncPath

PRIORITIES = ("default", "high")


def side_stream(device, priority: str) -> torch.cuda.Stream:
    """A stream that never waits on the compute streams. "high" asks for the greatest
    priority the device offers; since torch 2.8 a synchronous NCCL collective runs on the
    caller's current stream, so its kernel gets this priority too."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    _, greatest = torch.cuda.Stream.priority_range()
    return torch.cuda.Stream(device, priority=greatest if priority == "high" else 0)


def priority_record(stream: torch.cuda.Stream, asked: str) -> dict:
    """What priority the stream really has (torch clamps to what the device offers)."""
    least, greatest = torch.cuda.Stream.priority_range()
    return {
        "priority_asked": asked,
        "stream_priority": stream.priority,
        "priority_range": [least, greatest],
        "priority_applied": asked == "default" or stream.priority < least,
    }


class NcclSideStream(SyncPath):
    name = "nccl_side_stream"

    def __init__(self, group, shape, device="cuda", *, priority: str = "default") -> None:
        super().__init__(group, shape, device)
        self.stream = side_stream(self.device, priority)
        self._priority = priority
        self._local = torch.zeros(NUM_FIELDS, dtype=torch.int64, device=self.device)
        self._host_in = torch.zeros(NUM_FIELDS, dtype=torch.int64).pin_memory()
        self._host_out = torch.zeros(shape.dims, dtype=torch.int64).pin_memory()
        self._host_in_view = self._host_in.numpy()
        self._host_out_view = self._host_out.numpy()
        self._done = torch.cuda.Event()
        # The buffers were zeroed on the current stream; the side stream must see that done.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def prepare(self, row):
        # Safe to overwrite: the previous pass waited for its copies to finish.
        self._host_in_view[:] = row
        return self._host_in

    def _steps(self) -> None:
        """H2D of the pinned row, the gather, D2H into the pinned buffer (queued)."""
        self._local.copy_(self._host_in, non_blocking=True)
        self._gather_into_buffer(self._local)
        self._host_out.copy_(self.buffer, non_blocking=True)

    def exchange(self, local) -> None:
        with torch.cuda.stream(self.stream):
            self._steps()
            self._done.record()

    def read(self):
        self._blocking(self._done.synchronize)
        return self._from_host(self._host_out_view)

    def snapshot(self):
        return self._host_out_view.copy()  # what the host read: read() waited for the copy

    def describe(self) -> dict:
        return priority_record(self.stream, self._priority)

    def enqueue_collective(self) -> None:
        with torch.cuda.stream(self.stream):
            self._gather_into_buffer(self._local)

    @property
    def issue_stream(self):
        return self.stream

    @property
    def leaves_work_queued(self) -> bool:
        return False  # read() waited for the stream, the snapshot is a host copy
