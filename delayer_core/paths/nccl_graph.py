"""The side-stream gather captured once in a CUDA graph and replayed every pass.

H2D copy of a pinned host row, the all-gather and the D2H copy into a pinned host buffer,
captured on a stream of its own (the greatest priority the device offers when asked; since
torch 2.10 a graph's kernels keep their capture stream's priority). One launch per pass
instead of three, and the host waits on an event, never on the forward's stream.

The communicator is the path's own (NCCL serializes eager and captured work on one
communicator), and it is warmed up eagerly before capture, since NCCL connects lazily.
If capture fails the same steps run eagerly and the results say so.
"""

from __future__ import annotations

import torch

from ..decision import NUM_FIELDS
from .base import SyncPath
from .nccl_side_stream import priority_record, side_stream


class NcclGraph(SyncPath):
    name = "nccl_graph"

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
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):  # eager warm-up: communicator and connections
            self._steps()
        self.stream.synchronize()
        self.graph, self.capture_error = torch.cuda.CUDAGraph(), None
        try:
            with torch.cuda.graph(self.graph, stream=self.stream):
                self._steps()
        except RuntimeError as e:
            self.graph, self.capture_error = None, str(e).splitlines()[0][:200]
            torch.cuda.synchronize(self.device)

    @classmethod
    def build(cls, env, shape, **options) -> SyncPath:
        # A communicator of its own: NCCL serializes eager and captured use of one.
        return cls(env.group("nccl", tag="graph"), shape, env.device, **options)

    def _steps(self) -> None:
        self._local.copy_(self._host_in, non_blocking=True)
        self._gather_into_buffer(self._local)
        self._host_out.copy_(self.buffer, non_blocking=True)

    def prepare(self, row):
        # Safe to overwrite: the previous pass waited for its copies to finish.
        self._host_in_view[:] = row
        return self._host_in

    def exchange(self, local) -> None:
        with torch.cuda.stream(self.stream):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._steps()
            self._done.record()

    def read(self):
        self._blocking(self._done.synchronize)
        return self._from_host(self._host_out_view)

    def snapshot(self):
        return self._host_out_view.copy()

    def describe(self) -> dict:
        out = priority_record(self.stream, self._priority)
        out.update(captured=self.graph is not None, capture_error=self.capture_error)
        return out

    def enqueue_collective(self) -> None:
        """One replay: the H2D copy, the gather and the D2H copy."""
        with torch.cuda.stream(self.stream):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._steps()

    @property
    def issue_stream(self):
        return self.stream

    @property
    def leaves_work_queued(self) -> bool:
        return False  # read() waited for the stream, the snapshot is a host copy
