"""Cross-DP sync paths: the per-pass all-gather of one 5-int64 row plus the read-back.

Every path gathers the local row into a ``(dp_rows, attn_tp_size, 5)`` int64 buffer on its
group and returns the :class:`GatherSummary` the decision reads (TP0 view). Each path counts
the host time it spends blocked in GPU<->CPU synchronization in ``stall_ns`` (the caller
resets it), so a benchmark can separate that stall from the rest of the pass.

- ``gloo_cpu``: CPU tensors on a gloo group (upstream default with the overlap scheduler).
- ``nccl_device``: upstream PR #24768 as it runs: the local row built on the device (a
  blocking host-to-device copy), the gather on the current stream, then one ``.item()`` per
  reduction the decision reads (six blocking device-to-host reads).
- ``nccl_device_one_copy``: the same gather, then one device-to-host copy of the buffer.
- ``nccl_side_stream``: pinned host buffers and a dedicated stream that never waits on the
  compute stream: async H2D -> gather -> async D2H, then one event wait.
- ``gloo_cuda``: both tensors on CUDA over gloo (an anti-pattern, kept for measurement): gloo
  stages through host memory and synchronizes the current stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist

from .decision import NUM_FIELDS, GatherSummary

_now_ns = time.perf_counter_ns
# torch >= 2.13 renamed all_gather_into_tensor (the old name warns on every call, which would
# land inside every timed sample); same collective either way.
all_gather_into_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class GatherShape:
    """Buffer shape: ``dp_rows`` is dp_size with DP attention, else 1."""

    dp_rows: int
    attn_tp_size: int

    def __post_init__(self) -> None:
        if self.dp_rows < 1 or self.attn_tp_size < 1:
            raise ValueError(f"shape {self.dp_rows}x{self.attn_tp_size} must be positive")

    @property
    def world_size(self) -> int:
        return self.dp_rows * self.attn_tp_size

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.dp_rows, self.attn_tp_size, NUM_FIELDS)

    def __str__(self) -> str:
        return f"{self.dp_rows}x{self.attn_tp_size}"

    @classmethod
    def parse(cls, text: str) -> GatherShape:
        try:
            dp, tp = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {text!r} is not DPxTP, e.g. 2x1") from None
        return cls(dp, tp)


class SyncPath:
    """One way to run the per-pass gather; subclasses set the class attributes."""

    name: ClassVar[str]
    backend: ClassVar[str]  # the group's backend: "gloo" or "nccl"
    on_cuda: ClassVar[bool]  # buffer and local row live on the CUDA device

    def __init__(self, group, shape: GatherShape, device="cpu") -> None:
        device = torch.device(device)
        if (device.type == "cuda") != self.on_cuda:
            where = "a CUDA device" if self.on_cuda else "the CPU"
            raise ValueError(f"{self.name} keeps its buffer on {where}, got device {device}")
        if self.on_cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        backend = dist.get_backend(group)
        if backend != self.backend:
            raise ValueError(f"{self.name} needs a {self.backend} group, got {backend}")
        if dist.get_world_size(group) != shape.world_size:
            raise ValueError(
                f"shape {shape} needs {shape.world_size} ranks, the group has "
                f"{dist.get_world_size(group)}"
            )
        self.group = group
        self.shape = shape
        self.device = device
        self.buffer = torch.zeros(shape.dims, dtype=torch.int64, device=device)
        self._flat = self.buffer.view(-1)
        self.stall_ns = 0

    def gather(self, row: Sequence[int]) -> GatherSummary:
        raise NotImplementedError

    def snapshot(self):
        """A copy of what the last gather left, as cheap as possible: a numpy copy of a host
        buffer, or a device copy queued on the current stream (no sync) of a device one."""
        if self.on_cuda:
            return self.buffer.clone()
        return self.buffer.numpy().copy()

    def gathered_rows(self) -> list[list[list[int]]]:
        """The whole buffer on the host, for checking; it synchronizes, so call it untimed."""
        snap = self.snapshot()
        return (snap.cpu() if isinstance(snap, torch.Tensor) else snap).tolist()

    def _blocking(self, fn, *args, **kwargs):
        """Run a GPU<->CPU synchronizing call and count its host time as stall."""
        t0 = _now_ns()
        result = fn(*args, **kwargs)
        self.stall_ns += _now_ns() - t0
        return result

    def _all_gather(self, local: torch.Tensor) -> None:
        all_gather_into_tensor(self._flat, local, group=self.group)

    def _issue_stream(self):
        return torch.cuda.current_stream(self.device)

    def collective_device_us(self, rounds: int = 10, back_to_back: int = 20) -> list[float]:
        """Device time of one collective, nccl-tests style: the GPU is kept busy (a sleep
        kernel) while the host queues `back_to_back` collectives between two events, so the
        host's enqueue time stays out. One figure per round (us per collective). Leaves the
        buffer zeroed: call it after the measured loop."""
        if not self.on_cuda:
            raise ValueError(f"{self.name} runs no device collective")
        local = torch.zeros(NUM_FIELDS, dtype=torch.int64, device=self.device)
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        out = []
        with torch.cuda.stream(self._issue_stream()):
            for _ in range(rounds):
                torch.cuda._sleep(2_000_000)  # about 1 ms of a busy GPU
                start.record()
                for _ in range(back_to_back):
                    self._all_gather(local)
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) * 1000.0 / back_to_back)
        return out

    def _device_row(self, row: Sequence[int]) -> torch.Tensor:
        # torch.tensor(..., device=cuda) copies from pageable memory: a blocking copy that
        # waits for everything queued on the current stream.
        return self._blocking(torch.tensor, row, dtype=torch.int64, device=self.device)


class GlooCpu(SyncPath):
    name = "gloo_cpu"
    backend = "gloo"
    on_cuda = False

    def gather(self, row):
        self._all_gather(torch.tensor(row, dtype=torch.int64))
        return GatherSummary.from_rows(self.buffer[:, 0, :].tolist())


class NcclDevice(SyncPath):
    name = "nccl_device"
    backend = "nccl"
    on_cuda = True

    def gather(self, row):
        self._all_gather(self._device_row(row))
        tp0 = self.buffer[:, 0, :]
        item = self._item
        return GatherSummary(
            prefillable_min=item(tp0[:, 0].min()),
            prefillable_max=item(tp0[:, 0].max()),
            force_allow_max=item(tp0[:, 1].max()),
            running_batch_max=item(tp0[:, 2].max()),
            max_prefill_bs_max=item(tp0[:, 3].max()),
            waiting_queue_max=item(tp0[:, 4].max()),
        )

    def _item(self, scalar: torch.Tensor) -> int:
        return self._blocking(scalar.item)


class NcclDeviceOneCopy(SyncPath):
    name = "nccl_device_one_copy"
    backend = "nccl"
    on_cuda = True

    def gather(self, row):
        self._all_gather(self._device_row(row))
        host = self._blocking(self.buffer.cpu)
        return GatherSummary.from_rows(host[:, 0, :].tolist())


class NcclSideStream(SyncPath):
    name = "nccl_side_stream"
    backend = "nccl"
    on_cuda = True

    def __init__(self, group, shape, device="cuda", *, priority: int = 0) -> None:
        super().__init__(group, shape, device)
        # A stream of its own: it never waits on the compute (schedule/forward) streams.
        self.stream = torch.cuda.Stream(self.device, priority=priority)
        self._local = torch.zeros(NUM_FIELDS, dtype=torch.int64, device=self.device)
        self._host_in = torch.zeros(NUM_FIELDS, dtype=torch.int64).pin_memory()
        self._host_out = torch.zeros(shape.dims, dtype=torch.int64).pin_memory()
        self._host_in_view = self._host_in.numpy()
        self._host_out_view = self._host_out.numpy()
        self._done = torch.cuda.Event()
        # The buffer was zeroed on the current stream; the side stream must see it done.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def gather(self, row):
        # Safe to overwrite: the previous pass waited for its copies to finish.
        self._host_in_view[:] = row
        with torch.cuda.stream(self.stream):
            self._local.copy_(self._host_in, non_blocking=True)
            self._all_gather(self._local)
            self._host_out.copy_(self.buffer, non_blocking=True)
            self._done.record()
        self._blocking(self._done.synchronize)
        return GatherSummary.from_rows(self._host_out[:, 0, :].tolist())

    def snapshot(self):
        return self._host_out_view.copy()  # final: gather() waited for the copy

    def _issue_stream(self):
        return self.stream


class GlooCuda(SyncPath):
    name = "gloo_cuda"
    backend = "gloo"
    on_cuda = True

    def gather(self, row):
        local = self._device_row(row)
        # gloo synchronizes the current stream before staging CUDA tensors through host
        # memory; doing it first, explicitly, lets that wait be counted as stall.
        self._blocking(torch.cuda.current_stream(self.device).synchronize)
        all_gather_into_tensor(self._flat, local, group=self.group)
        host = self._blocking(self.buffer.cpu)
        return GatherSummary.from_rows(host[:, 0, :].tolist())


PATHS: dict[str, type[SyncPath]] = {
    cls.name: cls for cls in (GlooCpu, NcclDevice, NcclDeviceOneCopy, NcclSideStream, GlooCuda)
}


def path_class(name: str) -> type[SyncPath]:
    try:
        return PATHS[name]
    except KeyError:
        raise ValueError(f"unknown sync path {name!r}; known: {', '.join(PATHS)}") from None
