"""What every sync path shares: the buffer, the three timed steps, stall accounting, checks.

A pass is ``prepare`` (the local row in the path's form), ``exchange`` (the collective),
``read`` (back to a GatherSummary on the host). Host time spent blocked on the GPU (blocking
copies, ``.item()``, event and stream waits) is added to ``gpu_ns`` by ``_blocking``, so the
harness can split each step into GPU wait and the rest without timers inside the paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist

from ..decision import GatherSummary
from ..shape import GatherShape
from . import PathInfo, path_info

_now_ns = time.perf_counter_ns
# torch 2.13 renamed all_gather_into_tensor to all_gather_single; the old name warns on every
# call, which would land inside every timed sample. Same collective either way.
all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def read_back_upstream(tp0: torch.Tensor, item: Callable[[torch.Tensor], int]) -> GatherSummary:
    """Upstream's reads of the gathered TP0 rows, in its order and as lazily: a torch
    reduction and one ``item`` per scalar (the prefillable max only when the min is 0; the
    two debug sums always; the last three maxima only when every rank is prefillable and
    none forces). gloo_cpu and nccl_device both read this way, as upstream does."""
    prefillable, force = tp0[:, 0], tp0[:, 1]
    low = item(prefillable.min())
    high = None if low > 0 else item(prefillable.max())
    force_max = item(force.max())
    item(prefillable.sum()), item(force.sum())  # upstream's debug counts: read, not used
    rest = [None, None, None]
    if low > 0 and force_max == 0:
        rest = [item(tp0[:, k].max()) for k in (2, 3, 4)]
    return GatherSummary(low, high, force_max, *rest)


class SyncPath:
    """One way to run the per-pass gather. Subclasses implement the three steps."""

    name: ClassVar[str]
    upstream_reads: ClassVar[bool] = False  # reads as read_back_upstream does (lazily)

    def __init__(self, group, shape: GatherShape, device="cpu") -> None:
        info = self.info()
        device = torch.device(device)
        if (device.type == "cuda") != info.cuda:
            where = "a CUDA device" if info.cuda else "the CPU"
            raise ValueError(f"{self.name} runs on {where}, got device {device}")
        if info.cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if group is not None:
            backend = dist.get_backend(group)
            if backend != info.group:
                raise ValueError(f"{self.name} needs a {info.group} group, got {backend}")
            if dist.get_world_size(group) != shape.world_size:
                raise ValueError(
                    f"shape {shape} needs {shape.world_size} ranks, the group has "
                    f"{dist.get_world_size(group)}"
                )
        self.group = group
        self.shape = shape
        self.device = device
        self.buffer = torch.zeros(shape.dims, dtype=torch.int64, device=device)
        self.gpu_ns = 0  # cumulative host time blocked on the GPU

    @classmethod
    def info(cls) -> PathInfo:
        return path_info(cls.name)

    @classmethod
    def build(cls, env, shape: GatherShape, **options) -> SyncPath:
        """From the job's environment (``env.group(backend)``, ``env.device``)."""
        device = env.device if cls.info().cuda else "cpu"
        return cls(env.group(cls.info().group), shape, device, **options)

    # ---- the three timed steps ---------------------------------------------------------
    def prepare(self, row: Sequence[int]):
        raise NotImplementedError

    def exchange(self, local) -> None:
        raise NotImplementedError

    def read(self) -> GatherSummary:
        raise NotImplementedError

    def gather(self, row: Sequence[int]) -> GatherSummary:
        """The three steps in one call (the delayer's use)."""
        self.exchange(self.prepare(row))
        return self.read()

    # ---- around the measurement --------------------------------------------------------
    def snapshot(self):
        """An untimed copy of the gathered buffer as the host decided on it: the host
        buffer itself where the decision reads one, else a device copy queued without a
        sync (``host_rows`` brings it over later)."""
        if self.device.type == "cuda":
            return self.buffer.clone()
        return self.buffer.numpy().copy()

    @staticmethod
    def host_rows(snapshots: list) -> np.ndarray:
        """Stacked snapshots on the host, (passes, dp_rows, attn_tp_size, 5)."""
        if snapshots and isinstance(snapshots[0], torch.Tensor):
            return torch.stack(snapshots).cpu().numpy()
        return np.stack(snapshots)

    @property
    def leaves_work_queued(self) -> bool:
        """Whether a pass leaves device work queued (a snapshot copy) to drain before the
        next; paths whose read waited for their own stream leave none."""
        return self.device.type == "cuda"

    def describe(self) -> dict:
        """What took effect (stream priority, capture, spin budget...), for the results."""
        return {}

    def enqueue_collective(self) -> None:
        """Queue one collective on the issue stream without waiting (device time)."""
        raise NotImplementedError(f"{self.name} runs no device collective")

    @property
    def issue_stream(self):
        return torch.cuda.current_stream(self.device)

    def close(self) -> None:
        pass

    # ---- helpers for subclasses --------------------------------------------------------
    def _blocking(self, fn, *args, **kwargs):
        """Run a call that waits for the GPU and count its host time as GPU wait."""
        t0 = _now_ns()
        result = fn(*args, **kwargs)
        self.gpu_ns += _now_ns() - t0
        return result

    def _item(self, scalar: torch.Tensor) -> int:
        return self._blocking(scalar.item) if scalar.is_cuda else scalar.item()

    def _gather_into_buffer(self, local: torch.Tensor) -> None:
        all_gather(self.buffer.view(-1), local, group=self.group)

    def _from_host(self, host: torch.Tensor | np.ndarray) -> GatherSummary:
        """The decision's reductions of a host copy of the whole buffer (TP0 rows)."""
        return GatherSummary.from_rows(host[:, 0, :].tolist())


def local_row_tensor(row: Sequence[int]) -> torch.Tensor:
    """The local row as a CPU tensor, as upstream builds it (before any device copy)."""
    return torch.tensor(row, dtype=torch.int64)
