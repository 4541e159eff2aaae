"""torchrun worker: every sync path gathers changing rows; results checked on every rank.

    torchrun --nproc-per-node N tests/dist_workers/paths_worker.py OUT_DIR [ITERS [cpu]]

One process per GPU (the CUDA device is LOCAL_RANK). Inits an NCCL default group and a gloo
group over the same ranks. For each path and each buffer shape that fits the world size it
gathers ``ITERS`` rows that change every iteration, checks the returned GatherSummary and
``gathered_rows()`` against the expected buffer, and the stall / device-time accounting.
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


def check_path(name, group, device, shape, iters, rank, *, time_device, in_flight):
    cls = PATHS[name]
    path = cls(group, shape, device)
    assert path.buffer.device.type == ("cuda" if cls.on_cuda else "cpu"), path.buffer.device
    assert path.buffer.shape == shape.dims
    # CUDA-event timing is an NCCL-path feature (the harness sets it on those alone)
    path.time_device = time_device and cls.backend == "nccl"
    path.stall_ns = 0
    device_times = []
    for it in range(iters):
        if in_flight and cls.on_cuda and it % 10 == 0:
            # a "forward" queued on the current stream while the pass gathers
            torch.cuda._sleep(2_000_000)
        summary = path.gather(row(rank, it))
        expected = expected_buffer(shape, it)
        tp0 = [dp_rows[0] for dp_rows in expected]
        want = GatherSummary.from_rows(tp0)
        assert summary == want, (name, str(shape), it, summary, want)
        got = path.gathered_rows()
        assert got == expected, (name, str(shape), it, got, expected)
        if path.time_device:
            ms = path.device_time_ms()
            assert isinstance(ms, float) and ms > 0.0, (name, it, ms)
            device_times.append(ms)
    stall = path.stall_ns
    if cls.on_cuda:
        assert stall > 0, (name, stall)
    else:
        assert stall == 0, (name, stall)
    if not path.time_device:
        assert path.device_time_ms() is None, name
    if cls.on_cuda:
        torch.cuda.synchronize()
    return {"stall_ns": stall, "device_times_ms": device_times}


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
            for time_device in (False, True):
                key = f"{name}/{shape}/{'timed' if time_device else 'untimed'}"
                results[key] = check_path(
                    name,
                    group,
                    dev,
                    shape,
                    iters,
                    rank,
                    time_device=time_device,
                    in_flight=time_device,
                )
                dist.barrier(group=gloo_group)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as out:
        json.dump({"rank": rank, "world": world, "iters": iters, "results": results}, out)
    dist.barrier(group=gloo_group)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
