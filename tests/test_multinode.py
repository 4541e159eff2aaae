"""Two "nodes" of two processes each on loopback, over gloo: `run_bench.sh --nnodes 2`.

Both launchers meet at a c10d rendezvous on 127.0.0.1; the job has 4 ranks; exactly one run
directory is written (by global rank 0) with world_size 4, nnodes 2 and valid cases. The
cross-host clock-offset estimate is forced on (one host shares a clock, so every estimated
offset must come out near zero).
"""

from __future__ import annotations

import uuid

import pytest
from fault_helpers import BenchProcess, free_port, run_dirs, temp_files

from dpsync_bench import results

pytestmark = pytest.mark.slow

SHAPES = ("4x1", "1x4")
CADENCES = ("isolated", "streaming")
CASE_IDS = sorted(f"gloo_cpu-{s}-idle-{c}-r0" for s in SHAPES for c in CADENCES)


def test_two_nodes_two_processes_each(tmp_path):
    out = tmp_path / "results"
    port = free_port()
    args = [
        "./run_bench.sh",
        "--nnodes",
        "2",
        "--nproc",
        "2",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        f"ci-{uuid.uuid4().hex[:12]}",
        "--preset",
        "smoke",
        "--iters",
        "30",
        "--warmup",
        "5",
        "--shapes",
        ",".join(SHAPES),
        "--out",
        out,
        "--no-report",
    ]
    nodes = [BenchProcess(args, {"DPSYNC_ESTIMATE_CLOCK_OFFSETS": "1"}) for _ in range(2)]
    jobs = [node.wait(180) for node in nodes]
    for job in jobs:
        assert job.rc == 0, job.describe()
        assert not job.leftover
    dirs = run_dirs(out)
    assert len(dirs) == 1, dirs
    said = [line for job in jobs for line in job.lines_starting("run_bench: results in")]
    assert len(said) == 1, said  # only the node of global rank 0 has a run directory
    run = results.load_run(dirs[0])
    meta = run["meta"]
    assert meta["status"] == "complete"
    assert meta["world_size"] == 4
    assert meta["nnodes"] == 2
    assert sorted(run["cases"]) == CASE_IDS
    offsets = meta["machine"]["clocks"]["offset_to_rank0_ns"]
    assert len(offsets) == 4 and offsets[0] == 0
    assert all(abs(o) < 2_000_000 for o in offsets), offsets  # one clock: ~0, within 2 ms
    for case in run["cases"].values():
        assert case["world_size"] == 4
        assert len(case["raw"]["pass_us"]) == 4
        assert all(len(r) == 30 for r in case["raw"]["pass_us"])
        assert case["check"]["wrong_elements"] == 0
        assert case["check"]["wrong_decisions"] == 0
    progress = [p for job in jobs for p in job.progress()]
    assert sorted(p[3] for p in progress) == CASE_IDS  # printed once, by rank 0
    assert temp_files(out) == []
