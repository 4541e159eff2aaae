"""Two "nodes" on loopback, over gloo: `run_bench.sh --nnodes 2` twice, meeting at a c10d
rendezvous on 127.0.0.1. DPSYNC_HOST_ID gives each node a host of its own (node0, node1),
as two machines would be: clock offsets are estimated (one real clock: every one comes out
near zero), `hierarchical` makes one shared segment per node and its leaders gather over
gloo, and `shm_cpu`, which needs one host, is refused.

2 x 2 processes, gloo_cpu and hierarchical: exactly one run directory (global rank 0's),
world size 4, nnodes 2, every case valid with its data, reads and decisions right on every
rank. 2 x 1 processes with shm_cpu: both nodes stop at once and name the reason.
"""

from __future__ import annotations

import uuid

import pytest
from fault_helpers import BenchProcess, free_port, run_dirs, temp_files

from dpsync_bench import results

pytestmark = pytest.mark.slow

SHAPES = ("4x1", "1x4")
CADENCES = ("isolated", "streaming")
PATHS = ("gloo_cpu", "hierarchical")
CASE_IDS = sorted(f"{p}-{s}-idle-{c}-r0" for p in PATHS for s in SHAPES for c in CADENCES)
ITERS = 30


def _two_nodes(out, nproc: int, *sweep: str, limit_s: float = 180):
    port = free_port()
    args = ["./run_bench.sh", "--nnodes", "2", "--nproc", str(nproc),
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"ci-{uuid.uuid4().hex[:12]}",
            "--preset", "smoke", "--iters", str(ITERS), "--warmup", "5", "--timeout", "20",
            *sweep, "--out", out, "--no-report"]  # fmt: skip
    nodes = [BenchProcess(args, {"DPSYNC_HOST_ID": f"node{n}"}) for n in range(2)]
    return [node.wait(limit_s) for node in nodes]


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode") / "results"
    jobs = _two_nodes(out, 2, "--paths", ",".join(PATHS), "--shapes", ",".join(SHAPES))
    for job in jobs:
        assert job.rc == 0 and not job.leftover, job.describe()
    dirs = run_dirs(out)
    assert len(dirs) == 1, dirs
    return jobs, results.load_run(dirs[0]), out


def test_one_run_directory_written_by_global_rank_0(four_ranks):
    jobs, run, out = four_ranks
    said = [line for job in jobs for line in job.lines_starting("run_bench: results in")]
    assert len(said) == 1, said  # only the node of global rank 0 has a run directory
    meta = run["meta"]
    assert meta["status"] == "complete"
    (job,) = meta["jobs"]
    assert (job["world_size"], job["nnodes"]) == (4, 2)
    hosts = [r["host"] for r in job["ranks"]]  # the rendezvous decides which node comes first
    assert sorted(hosts) == ["node0", "node0", "node1", "node1"] and hosts[0] == hosts[1]
    assert sorted(run["cases"]) == CASE_IDS
    progress = [p for job in jobs for p in job.progress()]
    assert sorted(p[3] for p in progress) == CASE_IDS  # printed once, by rank 0
    assert temp_files(out) == []


def test_clock_offsets_are_estimated_and_near_zero(four_ranks):
    _, run, _ = four_ranks
    offsets = run["meta"]["jobs"][0]["clock_offsets_ns"]
    assert len(offsets) == 4 and offsets[0] == 0
    assert all(abs(o) < 2_000_000 for o in offsets), offsets  # one clock: ~0, within 2 ms


@pytest.mark.parametrize("path", PATHS)
def test_every_rank_gathered_read_and_decided_right(four_ranks, path):
    _, run, _ = four_ranks
    for case_id, case in run["cases"].items():
        if case["case"]["path"] != path:
            continue
        assert case["world_size"] == 4
        assert case["check"]["failures"] == [], case_id
        check = case["check"]
        assert check["wrong_elements"] == check["wrong_reads"] == check["wrong_decisions"] == 0
        assert check["passes_checked"] >= ITERS
        samples = results.load_samples(run["dir"], case_id)
        assert samples["pass"].shape == (4, ITERS)
        assert (samples["pass"] == sum(samples[p] for p in results.PARTS)).all()
        assert (samples["pass"] > 0).all()
        if path == "hierarchical":  # every rank decided as the rows say: all decided alike
            assert case["path_state"]["leaders_over"] == "gloo"


@pytest.fixture(scope="module")
def shm_refused(tmp_path_factory):
    out = tmp_path_factory.mktemp("shm-refused") / "results"
    sweep = ("--paths", "shm_cpu", "--shapes", "2x1", "--cadences", "streaming")
    return _two_nodes(out, 1, *sweep, limit_s=90), out


def test_shm_cpu_across_two_hosts_is_refused(shm_refused):
    jobs, out = shm_refused
    for job in jobs:
        assert job.rc not in (None, 0), job.describe()
        assert not job.leftover and job.wall_s < 60, job.describe()
        assert "shm_cpu" in job.last_line and "one host" in job.last_line, job.describe()
        assert "hierarchical" in job.last_line, job.describe()  # what to use instead
        assert len(job.lines_starting("dpsync: ")) == 1, job.describe()  # its local rank's
    assert run_dirs(out) == []  # refused before any run directory was made


def test_shm_cpu_across_two_hosts_exits_2_with_one_line(shm_refused):
    jobs, _ = shm_refused
    for job in jobs:
        assert job.rc == 2 and len(job.nonempty_stderr) == 1, job.describe()
