"""Cross-DP sync paths: the one registry (torch-free) and one module per path.

Every pass, every rank contributes one 5-int64 row to a ``(dp_rows, attn_tp_size, 5)``
buffer and reads the TP0 rows back for the decision. A path does it in three steps the
harness times apart (``base.SyncPath``): ``prepare`` the local row in the path's form,
``exchange`` it with every rank, ``read`` the result back into a ``GatherSummary``.

Adding a path: one module here with a ``SyncPath`` subclass, its entry below, its test.
Everything else (sweep, checks, plots, gate) finds it through this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class PathInfo:
    name: str
    cls: str  # "module.Class" under delayer_core.paths
    group: str  # the process group the collective runs on: "gloo", "nccl" or "shm"
    cuda: bool  # touches the GPU: needs a CUDA device
    gpu_per_rank: bool  # NCCL: one GPU per rank
    one_host: bool  # every rank on one host
    upstream: bool  # a path SGLang itself has (PR #24768)
    summary: str


PATHS: dict[str, PathInfo] = {
    p.name: p
    for p in (
        PathInfo(
            "gloo_cpu", "gloo_cpu.GlooCpu", "gloo", False, False, False, True,
            "CPU tensors over gloo; upstream's default with the overlap scheduler",
        ),
        PathInfo(
            "nccl_device", "nccl_device.NcclDevice", "nccl", True, True, False, True,
            "PR #24768: the row built on the device, gather on the current stream, "
            "upstream's .item() reads",
        ),
        PathInfo(
            "nccl_device_one_copy", "nccl_device.NcclDeviceOneCopy", "nccl", True, True,
            False, False, "the same gather, then one device-to-host copy of the buffer",
        ),
        PathInfo(
            "nccl_side_stream", "nccl_side_stream.NcclSideStream", "nccl", True, True, False,
            False, "pinned host buffers, a stream of its own: async H2D, gather, async D2H, "
            "one event wait",
        ),
        PathInfo(
            "nccl_graph", "nccl_graph.NcclGraph", "nccl", True, True, False, False,
            "H2D, gather and D2H captured once in a CUDA graph on a side stream, replayed",
        ),
        PathInfo(
            "gloo_cuda", "gloo_cpu.GlooCuda", "gloo", True, False, False, False,
            "CUDA tensors over gloo: stages through host memory and syncs the stream",
        ),
        PathInfo(
            "shm_cpu", "shm.ShmCpu", "shm", False, False, True, False,
            "rows and pass numbers in a shared segment on one host; no TCP, no GPU",
        ),
        PathInfo(
            "hierarchical", "shm.Hierarchical", "gloo", False, False, False, False,
            "shared memory inside each host, one leader per host gathers over gloo",
        ),
    )
}  # fmt: skip


def path_info(name: str) -> PathInfo:
    try:
        return PATHS[name]
    except KeyError:
        raise ValueError(f"unknown sync path {name!r}; known: {', '.join(PATHS)}") from None


def path_class(name: str):
    """The path's class (imports torch)."""
    module, cls = path_info(name).cls.split(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def path_names(**where) -> list[str]:
    """Registered paths whose attributes equal `where`, in registry order."""
    return [n for n, p in PATHS.items() if all(getattr(p, k) == v for k, v in where.items())]
