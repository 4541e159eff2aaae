"""torchrun worker: every sync path gathers changing rows; results checked on every rank.

    torchrun --nproc-per-node N tests/dist_workers/paths_worker.py OUT_DIR [ITERS [cpu]]

One process per GPU (the CUDA device is LOCAL_RANK). Inits an NCCL default group and a gloo
group over the same ranks. For each path and each buffer shape that fits the world size it
gathers ``ITERS`` rows that change every iteration, checks the returned GatherSummary and
``gathered_rows()`` against the expected buffer, and the stall / device-time accounting
(through ``collective_device_us`` or, on an older delayer_core, ``time_device`` +
``device_time_ms``).
Writes ``OUT_DIR/rank<R>.json``; any mismatch raises (non-zero exit). With ``cpu`` it runs
gloo_cpu alone on a gloo group (no GPU needed).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast on shared hosts

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from delayer_core.decision import GatherSummary  # noqa: E402
from delayer_core.paths import PATHS, GatherShape  # noqa: E402


def row(rank: int, it: int) -> list[int]:
    """Rank ``rank``'s row at iteration ``it``: every field changes with both."""
    return [
        (rank + it) % 2,  # prefillable: mixed, all or none depending on it
        int(it % 5 == 0 and rank == it % 3),  # force_allow, now and then
        rank * it,  # running_batch
        rank + it,  # max_prefill_bs
        (7 * it + 3 * rank) % 11,  # waiting_queue_len
    ]


def expected_buffer(shape: GatherShape, it: int) -> list[list[list[int]]]:
    # rank = dp_index * attn_tp_size + tp_index (row-major in the flat buffer)
    return [
        [row(dp * shape.attn_tp_size + tp, it) for tp in range(shape.attn_tp_size)]
        for dp in range(shape.dp_rows)
    ]


def shapes(world: int) -> list[GatherShape]:
    out = [GatherShape(world, 1)]
    if world > 1:
        out.append(GatherShape(1, world))  # only TP0 (rank 0) is read
    return out


def collective_device_ms(path, cls):
    """Device time per collective (ms) after the loop, for a delayer_core that offers
    ``collective_device_us`` (CUDA paths only; a CPU path must refuse it); else None."""
    if not hasattr(path, "collective_device_us"):
        return None
    if not cls.on_cuda:
        try:
            path.collective_device_us(rounds=1, back_to_back=1)
        except ValueError:
            return None
        raise AssertionError(f"{cls.name} measured a device collective on the CPU")
    return [us / 1000.0 for us in path.collective_device_us(rounds=3, back_to_back=5)]


def check_path(name, group, device, shape, iters, rank, *, timed):
    """Gather ``iters`` changing rows; ``timed`` also queues a "forward" (a sleep kernel) on
    the current stream every 10th pass and asks for the collective's device time."""
    cls = PATHS[name]
    path = cls(group, shape, device)
    assert path.buffer.device.type == ("cuda" if cls.on_cuda else "cpu"), path.buffer.device
    assert path.buffer.shape == shape.dims
    # per-gather CUDA events (the time_device / device_time_ms API), NCCL paths only
    per_gather = timed and cls.backend == "nccl" and hasattr(path, "device_time_ms")
    if per_gather:
        path.time_device = True
    path.stall_ns = 0
    device_times = []
    for it in range(iters):
        if timed and cls.on_cuda and it % 10 == 0:
            torch.cuda._sleep(2_000_000)  # a forward in flight on the current stream
        summary = path.gather(row(rank, it))
        expected = expected_buffer(shape, it)
        want = GatherSummary.from_rows([dp_rows[0] for dp_rows in expected])  # TP0 view
        assert summary == want, (name, str(shape), it, summary, want)
        got = path.gathered_rows()
        assert got == expected, (name, str(shape), it, got, expected)
        if per_gather:
            device_times.append(path.device_time_ms())
    stall = path.stall_ns
    if cls.on_cuda:
        assert stall > 0, (name, stall)
    else:
        assert stall == 0, (name, stall)
    if hasattr(path, "device_time_ms") and not per_gather:
        assert path.device_time_ms() is None, name
    if timed and not per_gather:
        device_times = collective_device_ms(path, cls)
    if cls.on_cuda:
        torch.cuda.synchronize()
    if device_times is not None:
        assert all(isinstance(t, float) and t > 0.0 for t in device_times), (name, device_times)
    return {"stall_ns": stall, "device_times_ms": device_times or None}


def check_rejections(nccl_group, gloo_group, device, shape):
    cases = [
        (PATHS["gloo_cpu"], gloo_group, device, "keeps its buffer on the CPU"),
        (PATHS["nccl_device"], nccl_group, "cpu", "keeps its buffer on a CUDA device"),
        (PATHS["nccl_device"], gloo_group, device, "needs a nccl group"),
        (PATHS["gloo_cpu"], nccl_group, "cpu", "needs a gloo group"),
        (PATHS["gloo_cuda"], nccl_group, device, "needs a gloo group"),
        (PATHS["nccl_side_stream"], gloo_group, device, "needs a nccl group"),
    ]
    for cls, group, dev, message in cases:
        try:
            cls(group, shape, dev)
        except ValueError as exc:
            assert message in str(exc), (cls.name, str(exc))
        else:
            raise AssertionError(f"{cls.name} on {dev} with a mismatched group was accepted")


def main() -> None:
    out_dir = sys.argv[1]
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    cpu_only = len(sys.argv) > 3 and sys.argv[3] == "cpu"  # gloo_cpu alone, no GPU needed
    local_rank = int(os.environ["LOCAL_RANK"])
    timeout = timedelta(seconds=30)
    if cpu_only:
        dist.init_process_group("gloo", timeout=timeout)
        gloo_group = nccl_group = dist.group.WORLD
        device = None
    else:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
        gloo_group = dist.new_group(backend="gloo", timeout=timeout)
        nccl_group = dist.group.WORLD
        check_rejections(nccl_group, gloo_group, device, GatherShape(dist.get_world_size(), 1))
    rank, world = dist.get_rank(), dist.get_world_size()

    results = {}
    for name, cls in PATHS.items():
        if cpu_only and cls.on_cuda:
            continue
        group = gloo_group if cls.backend == "gloo" else nccl_group
        dev = device if cls.on_cuda else "cpu"
        for shape in shapes(world):
            for timed in (False, True):
                key = f"{name}/{shape}/{'timed' if timed else 'untimed'}"
                results[key] = check_path(name, group, dev, shape, iters, rank, timed=timed)
                dist.barrier(group=gloo_group)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as out:
        json.dump({"rank": rank, "world": world, "iters": iters, "results": results}, out)
    dist.barrier(group=gloo_group)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
