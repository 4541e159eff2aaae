"""torchrun worker: every sync path this job can run gathers changing rows, checked on every
rank and every pass.

    torchrun --nproc-per-node N tests/dist_workers/paths_worker.py OUT_DIR [ITERS [cpu]]

Joins the job as the benchmark does (`dpsync_bench.measure.group.init`: a gloo control
group, one CUDA device per local rank where there is CUDA) and builds each path from its
registry entry (`path_class(name).build(group, shape, **options)`). For each path and each
shape of the world size it runs ITERS passes of prepare / exchange / read with rows that
reach every decision status, and checks on each pass what the host read (upstream's lazy
reads where the path claims them) and the gathered buffer (`snapshot`, `host_rows`). CUDA
paths run a second time with a sleep kernel queued on the current stream every 10th pass (a
forward in flight). Then: GPU-wait accounting (`gpu_ns` > 0 exactly on CUDA paths), the
collective's device time (NCCL paths), what the side-stream and graph paths record of their
stream priority (default and high) and of the capture, and the refusals of a mismatched
device or group. Writes OUT_DIR/rank<R>.json; any mismatch raises (non-zero exit). With
`cpu`: the host paths only (gloo_cpu, shm_cpu, hierarchical), no GPU needed.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast on shared hosts

import numpy as np  # noqa: E402
import torch  # noqa: E402

from delayer_core.paths import PATHS, path_class  # noqa: E402
from delayer_core.shape import GatherShape  # noqa: E402
from dpsync_bench.measure.checks import expected_summary  # noqa: E402
from dpsync_bench.measure.device_time import collective_device_time  # noqa: E402
from dpsync_bench.measure.group import init  # noqa: E402


def row(rank: int, it: int) -> list[int]:
    """Every field changes with rank and pass; over 4 passes the TP0 rows are all
    prefillable, none, then mixed twice, and rank 0 forces now and then."""
    phase = it % 4
    prefillable = 1 if phase == 0 else 0 if phase == 1 else (rank + it) % 2
    force = int(it % 5 == 4 and rank == 0)
    return [prefillable, force, rank * it % 97, rank + it, (7 * it + 3 * rank) % 11]


def expected(shape: GatherShape, it: int) -> np.ndarray:
    rows = [row(r, it) for r in range(shape.world_size)]  # rank = dp * attn_tp + tp
    return np.array(rows, dtype=np.int64).reshape(shape.dims)


def shapes(world: int) -> list[GatherShape]:
    return [GatherShape(world, 1)] + ([GatherShape(1, world)] if world > 1 else [])


def check_path(g, name: str, shape: GatherShape, iters: int, *, busy: bool, **options) -> dict:
    info = PATHS[name]
    path = path_class(name).build(g, shape, **options)
    assert path.buffer.shape == shape.dims, (name, path.buffer.shape)
    statuses = set()
    for it in range(iters):
        if busy and it % 10 == 0:
            torch.cuda._sleep(2_000_000)  # a forward in flight on the current stream
        path.exchange(path.prepare(row(g.rank, it)))
        summary = path.read()
        want = expected(shape, it)
        assert summary == expected_summary(want[:, 0, :], path.upstream_reads), (name, it, summary)
        got = path.host_rows([path.snapshot()])[0]
        assert (got == want).all(), (name, str(shape), it, got.tolist(), want.tolist())
        statuses.add(summary.status)
    assert statuses == {"all", "none", "mixed"} or shape.dp_rows == 1, (name, statuses)
    if info.cuda:
        torch.cuda.synchronize()
    assert (path.gpu_ns > 0) == info.cuda, (name, path.gpu_ns)  # host time blocked on the GPU
    out = {"gpu_ns": path.gpu_ns, "describe": path.describe(), "device_ns": None}
    if info.gpu_per_rank:
        out["device_ns"] = collective_device_time(path, g, rounds=3, per_round=5)["ns"]
        assert len(out["device_ns"]) == 3 and all(ns > 0 for ns in out["device_ns"]), out
    path.close()
    g.barrier()
    return out


def check_rejections(g) -> list[str]:
    shape = GatherShape(g.world_size, 1)
    gloo, nccl = g.group("gloo"), g.group("nccl")
    cases = [
        ("gloo_cpu", gloo, g.device, "gloo_cpu runs on the CPU"),
        ("nccl_device", nccl, "cpu", "nccl_device runs on a CUDA device"),
        ("nccl_device", gloo, g.device, "needs a nccl group, got gloo"),
        ("gloo_cpu", nccl, "cpu", "needs a gloo group, got nccl"),
        ("gloo_cuda", nccl, g.device, "needs a gloo group, got nccl"),
        ("nccl_side_stream", gloo, g.device, "needs a nccl group, got gloo"),
    ]
    seen = []
    for name, group, device, message in cases:
        try:
            path_class(name)(group, shape, device)
        except ValueError as exc:
            assert message in str(exc), (name, str(exc))
            seen.append(str(exc))
        else:
            raise AssertionError(f"{name} on {device} with a mismatched group was accepted")
    return seen


def main() -> None:
    out_dir = sys.argv[1]
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    cpu_only = len(sys.argv) > 3 and sys.argv[3] == "cpu"
    g = init(30.0, want_cuda=not cpu_only)
    assert cpu_only or g.device is not None, "no CUDA device"
    names = [n for n, p in PATHS.items() if not (cpu_only and p.cuda)]
    names = [n for n in names if n != "hierarchical" or g.world_size > 1]
    report = {"rank": g.rank, "world": g.world_size, "iters": iters, "results": {}}
    for name in names:
        priorities = ["default", "high"] if name in ("nccl_side_stream", "nccl_graph") else [None]
        for shape in shapes(g.world_size):
            for busy in [False, True] if PATHS[name].cuda else [False]:
                for prio in priorities:
                    options = {"priority": prio} if prio else {}
                    key = "/".join([name, str(shape), "busy" if busy else "idle", prio or ""])
                    report["results"][key] = check_path(g, name, shape, iters, busy=busy, **options)
    if not cpu_only:
        report["rejections"] = check_rejections(g)
        report["priority_range"] = list(torch.cuda.Stream.priority_range())
    with open(os.path.join(out_dir, f"rank{g.rank}.json"), "w") as f:
        json.dump(report, f)
    g.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
