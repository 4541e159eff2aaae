"""NCCL on the current stream, as PR #24768 runs it, and with one read-back copy."""

from __future__ import annotations

import torch

from ..decision import NUM_FIELDS
from .base import SyncPath, local_row_tensor, read_back_upstream


class NcclDevice(SyncPath):
    """The row built on the device (a blocking host-to-device copy that waits for the
    stream), the gather queued on the current stream, then upstream's reads: every
    ``.item()`` a blocking device-to-host sync. Behind a forward the first one waits for
    all of it."""

    name = "nccl_device"
    upstream_reads = True

    def __init__(self, group, shape, device="cuda") -> None:
        super().__init__(group, shape, device)
        self._probe = torch.zeros(NUM_FIELDS, dtype=torch.int64, device=self.device)

    def prepare(self, row):
        return self._blocking(local_row_tensor(row).to, self.device)

    def exchange(self, local) -> None:
        self._gather_into_buffer(local)

    def read(self):
        return read_back_upstream(self.buffer[:, 0, :], self._item)

    def enqueue_collective(self) -> None:
        self._gather_into_buffer(self._probe)


class NcclDeviceOneCopy(NcclDevice):
    """The same gather, then one device-to-host copy of the whole buffer (upstream PR
    #34338's idea) and the reductions on the host."""

    name = "nccl_device_one_copy"
    upstream_reads = False

    def read(self):
        return self._from_host(self._blocking(self.buffer.cpu))
