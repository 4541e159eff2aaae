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

from .base import SyncPath
from .nccl_side_stream import NcclSideStream


class NcclGraph(NcclSideStream):
    """The side stream's pinned buffers, stream and event; its three steps replayed as one
    captured graph."""

    name = "nccl_graph"

    def __init__(self, group, shape, device="cuda", *, priority: str = "default") -> None:
        super().__init__(group, shape, device, priority=priority)
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

    def exchange(self, local) -> None:
        with torch.cuda.stream(self.stream):
            self._replay()
            self._done.record()

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._steps()

    def describe(self) -> dict:
        return {**super().describe(), "captured": self.graph is not None,
                "capture_error": self.capture_error}  # fmt: skip

    def enqueue_collective(self) -> None:
        """One replay: the H2D copy, the gather and the D2H copy."""
        with torch.cuda.stream(self.stream):
            self._replay()
