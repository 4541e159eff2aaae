"""gloo paths: CPU tensors (upstream's default) and CUDA tensors (an anti-pattern)."""

from __future__ import annotations

from .base import SyncPath, local_row_tensor, read_back_upstream


class GlooCpu(SyncPath):
    """Upstream with the overlap scheduler: a CPU row, gloo's all-gather into a CPU buffer,
    upstream's torch reductions and ``.item()`` reads. Never touches the GPU."""

    name = "gloo_cpu"
    upstream_reads = True

    def prepare(self, row):
        return local_row_tensor(row)

    def exchange(self, local) -> None:
        self._gather_into_buffer(local)

    def read(self):
        return read_back_upstream(self.buffer[:, 0, :], self._item)


class GlooCuda(SyncPath):
    """Both tensors on CUDA over gloo: gloo synchronizes the current stream and stages
    through host memory, the worst of both worlds. Kept to measure it."""

    name = "gloo_cuda"

    def prepare(self, row):
        # A pageable host-to-device copy: it waits for everything queued on the stream.
        return self._blocking(local_row_tensor(row).to, self.device)

    def exchange(self, local) -> None:
        # gloo synchronizes the current stream before staging CUDA tensors; doing it first,
        # explicitly, counts that wait as GPU wait.
        self._blocking(self.issue_stream.synchronize)
        self._gather_into_buffer(local)

    def read(self):
        return self._from_host(self._blocking(self.buffer.cpu))
