"""Fault matrix: never hang, never lose a finished case, one line that names what broke.

Real jobs (`run_bench.sh`, torchrun, 2 ranks on the CPU), each under a hard limit that
kills its whole process group, so this file can never hang. Fault jobs run
`--preset smoke --iters 30 --warmup 5 --timeout 10` (4 cases: 2x1/1x2 x isolated/streaming)
with DPSYNC_FAULT=KIND@RANK:ORDINAL (ORDINAL: 0-based index of the case the rank runs):

  fault            what happens                      bound (fault -> exit)  then
  kill@1:2         rank 1 SIGKILLs itself, case 3    timeout + 15 s         --resume, extend
  raise@0:2        rank 0 raises, case 3             timeout + 15 s
  raise@1:1        rank 1 raises, case 2             timeout + 15 s
  sleep@1:2        rank 1 never arrives, case 3      timeout + 15 s
  exit@1:1         rank 1 os._exit(7), case 2        timeout + 15 s
  exit0@1:1        rank 1 os._exit(0), case 2        timeout + 15 s
  shm kill@1:2     the same kill on --paths shm_cpu  timeout + 15 s         /dev/shm unchanged
  raise@1:start    rank 1 raises at pytest start-up  (no case runs)
  corrupt@0:1      rank 0's gathered buffer damaged  (runs to the end)      --resume

The fault jobs run two at a time. For each: exit code not 0 and not 2, stderr's last line
is `run_bench: job failed ...` naming the rank and the case, at most one `dpsync: rank` line
per rank, no traceback from our code, no process left behind, every case finished before
the fault on disk (summary and samples) and valid, nothing after it, no partial (*.tmp)
file. --resume on a copy of the run directory runs only the missing cases and rewrites none
of the others; a further --resume with more paths extends the same run. After a failed
check it never claims "complete". Two jobs with one --out get two run directories.
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_helpers import (
    FAST,
    OUR_FRAME,
    TIMEOUT_S,
    BenchProcess,
    Job,
    read_json,
    run_bench,
    run_dirs,
    smoke_case_ids,
    temp_files,
)

from dpsync_bench import results

pytestmark = pytest.mark.slow
WORLD = 2
HANG_BOUND_S = TIMEOUT_S + 15  # from the fault to the end of run_bench.sh
JOB_LIMIT_S = 150  # hard limit of any one job (the test fails, it never hangs)
CASE_IDS = smoke_case_ids(WORLD)  # the order every rank runs them in
SHM_IDS = smoke_case_ids(WORLD, paths=["shm_cpu"])

FAULTS = {
    "kill@1:2": ("kill", 1, 2),
    "raise@0:2": ("raise", 0, 2),
    "raise@1:1": ("raise", 1, 1),
    "sleep@1:2": ("sleep", 1, 2),
    "exit@1:1": ("exit", 1, 1),
    "exit0@1:1": ("exit0", 1, 1),
    "shm:kill@1:2": ("kill", 1, 2),  # on the shared-memory path
}
START_UP = "raise@1:start"  # rank 1 raises as pytest configures, before any case
CORRUPT = "corrupt@0:1"


def _ids(spec: str) -> list[str]:
    return SHM_IDS if spec.startswith("shm:") else CASE_IDS


def _dev_shm() -> set[str]:
    """/dev/shm's names, less the POSIX semaphores other programs' multiprocessing makes."""
    return {n for n in os.listdir("/dev/shm") if not n.startswith("sem.")}


# ---- running the fault jobs, two at a time, once each ----------------------------------------
@pytest.fixture(scope="module")
def fault_jobs(tmp_path_factory):
    def one(spec: str):
        out = tmp_path_factory.mktemp("fault-" + re.sub(r"\W", "_", spec))
        paths = ["--paths", "shm_cpu"] if spec.startswith("shm:") else []
        env = {"DPSYNC_FAULT": spec.removeprefix("shm:")}
        job = run_bench([*FAST, *paths, "--out", out, "--no-report"], env, JOB_LIMIT_S)
        return spec, (job, out)

    shm_before = _dev_shm()
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = dict(pool.map(one, [*FAULTS, CORRUPT, START_UP]))
    return jobs, shm_before, _dev_shm()


@pytest.fixture
def fault_job(fault_jobs):
    return fault_jobs[0].__getitem__


def _one_run_dir(out: Path, job: Job) -> Path:
    dirs = run_dirs(out)
    assert len(dirs) == 1, f"expected one run directory under {out}, got {dirs}\n{job.describe()}"
    return dirs[0]


def _fault_onset(job: Job, ordinal: int) -> float:
    """When the faulty case began: the progress line of the case before it (rank 0 prints
    it once that case is on disk), or the launch line for the first case."""
    progress = [t for t, k, _, _ in job.progress() if k == ordinal]
    if ordinal and progress:
        return progress[-1]
    launch = [t for t, line in job.stderr_lines if line.startswith("run_bench: torchrun")]
    return launch[0] if launch else 0.0


# ---- the matrix ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", list(FAULTS))
def test_fault_ends_the_job_within_the_bound(fault_job, spec):
    job, _ = fault_job(spec)
    assert job.rc is not None, f"job still running after {JOB_LIMIT_S} s\n{job.describe()}"
    assert job.rc not in (0, 2), job.describe()
    took = job.wall_s - _fault_onset(job, FAULTS[spec][2])
    assert took <= HANG_BOUND_S, f"{took:.1f} s from fault to exit\n{job.describe()}"
    assert not job.leftover, "a process of the job outlived run_bench.sh"
    assert job.last_line.startswith("run_bench: job failed"), job.describe()


@pytest.mark.parametrize("spec", [*FAULTS, CORRUPT])
def test_fault_no_traceback_storm(fault_job, spec):
    job, _ = fault_job(spec)
    assert len(job.lines_starting("dpsync: rank")) <= WORLD, job.describe()
    ours = [line for _, line in job.stderr_lines if OUR_FRAME.search(line)]
    assert not ours, f"traceback from our code on stderr: {ours}\n{job.describe()}"
    # torchrun's own ChildFailedError report carries one traceback (of torchrun itself)
    assert job.stderr.count("Traceback (most recent call last)") <= 1, job.describe()


@pytest.mark.parametrize("spec", ["raise@0:2", "raise@1:1"])
def test_raising_rank_is_named_with_its_case(fault_job, spec):
    job, _ = fault_job(spec)
    _, rank, ordinal = FAULTS[spec]
    want = f"dpsync: rank {rank}: case {CASE_IDS[ordinal]}: RuntimeError: injected fault"
    assert want in job.last_line, job.describe()
    if rank == 0:  # the others' output is in their log files; the last line quotes it
        assert want in job.lines_starting("dpsync: rank")[0]


def test_rank_that_never_arrives_times_out_with_the_case(fault_job):
    job, _ = fault_job("sleep@1:2")
    assert re.search(rf"dpsync: rank \d+: case {re.escape(CASE_IDS[2])}: ", job.last_line), (
        job.describe()
    )
    assert re.search(r"time[ds]? ?out", job.last_line, re.IGNORECASE), job.describe()


def test_rank_failing_at_start_up_is_named_with_its_error(fault_job):
    # Rank 1 failed on its own before any case; torchrun then stopped rank 0 with SIGTERM.
    # The last line names rank 1 and quotes its exception, and nothing hangs.
    job, out = fault_job(START_UP)
    assert job.rc not in (None, 0, 2) and not job.leftover, job.describe()
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    assert "rank 1 " in job.last_line, job.describe()
    assert "RuntimeError: injected fault at start-up on rank 1" in job.last_line, job.describe()
    assert "rank 0" not in job.last_line and "SIGTERM" not in job.last_line, job.describe()
    assert run_dirs(out) == []  # no case ran, so no run directory was made


@pytest.mark.parametrize("spec", ["kill@1:2", "exit@1:1", "exit0@1:1", "shm:kill@1:2"])
def test_dead_rank_is_named_with_its_case(fault_job, spec):
    job, _ = fault_job(spec)
    _, rank, ordinal = FAULTS[spec]
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    assert f"rank {rank}" in job.last_line, job.describe()
    assert _ids(spec)[ordinal] in job.last_line, job.describe()


@pytest.mark.parametrize("spec", list(FAULTS))
def test_fault_keeps_every_finished_case(fault_job, spec):
    job, out = fault_job(spec)
    ids, ordinal = _ids(spec), FAULTS[spec][2]
    run_dir = _one_run_dir(out, job)
    for case_id in ids[:ordinal]:
        case = results.load_case(results.case_path(run_dir, case_id))
        assert case["check"]["failures"] == [] and case["stats"]["pass_us"]["n"] == 30
        assert results.load_samples(run_dir, case_id)["pass"].shape == (WORLD, 30)
    for case_id in ids[ordinal:]:
        assert not results.case_path(run_dir, case_id).exists(), case_id
        assert not results.samples_path(run_dir, case_id).exists(), case_id
    assert temp_files(out) == []
    run = results.load_run(run_dir)
    assert set(run["cases"]) == set(ids[:ordinal])
    assert run["meta"]["status"] != "complete"
    assert run["meta"]["jobs"][-1]["cases_planned"] == ids
    assert (run_dir / "current_case").read_text().strip() == ids[ordinal]


def test_a_killed_shm_rank_leaves_nothing_in_dev_shm(fault_jobs):
    """The issue: a SIGKILLed rank of shm_cpu ends the job within the timeout, names the
    rank (the tests above) and leaves nothing in /dev/shm (memfd segments have no name)."""
    jobs, before, after = fault_jobs
    job, _ = jobs["shm:kill@1:2"]
    assert job.rc not in (None, 0, 2) and not job.leftover, job.describe()
    assert after - before == set(), f"left in /dev/shm: {sorted(after - before)}"


# ---- resume: complete the run, then extend it ------------------------------------------------
def _snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    files = [*(run_dir / "cases").iterdir(), *(run_dir / "samples").iterdir()]
    return {f"{p.parent.name}/{p.name}": (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def _resume_copy(run_dir: Path, dest_root: Path) -> Path:
    dest = dest_root / run_dir.name
    shutil.copytree(run_dir, dest)  # copy2: mtimes kept
    return dest


@pytest.fixture(scope="module")
def resumed(fault_jobs, tmp_path_factory):
    job, out = fault_jobs[0]["kill@1:2"]
    root = tmp_path_factory.mktemp("resume")
    run_dir = _resume_copy(_one_run_dir(out, job), root)
    before = _snapshot(run_dir)
    again = run_bench([*FAST, "--resume", run_dir, "--no-report"], None, JOB_LIMIT_S)
    middle = _snapshot(run_dir)
    more = [*FAST, "--paths", "gloo_cpu,shm_cpu", "--resume", run_dir, "--no-report"]
    extended = run_bench(more, None, JOB_LIMIT_S)
    return root, run_dir, (before, again), (middle, extended)


def test_resume_runs_only_the_missing_cases(resumed):
    root, run_dir, (before, job), _ = resumed
    assert job.rc == 0 and not job.leftover, job.describe()
    assert len(before) == 2 * 2  # two cases, summary and samples each
    missing = CASE_IDS[2:]
    assert [p[3] for p in job.progress()] == missing, job.describe()
    assert {p[2] for p in job.progress()} == {len(missing)}
    assert run_dirs(root) == [run_dir], "--resume must not create a new run directory"
    assert temp_files(root) == []


def test_resume_rewrites_no_finished_case(resumed):
    _, _, (before, _), (middle, _) = resumed
    for name, (mtime, data) in before.items():
        assert middle[name] == (mtime, data), f"{name} was rewritten by --resume"


def test_resume_with_more_paths_extends_the_same_run(resumed):
    root, run_dir, _, (middle, job) = resumed
    assert job.rc == 0 and not job.leftover, job.describe()
    assert [p[3] for p in job.progress()] == SHM_IDS  # the gloo_cpu cases are all done
    after = _snapshot(run_dir)
    assert {k: after[k] for k in middle} == middle
    run = results.load_run(run_dir)
    assert set(run["cases"]) == set(CASE_IDS) | set(SHM_IDS)
    meta = run["meta"]
    assert meta["status"] == "complete" and meta["cases_done"] == 8
    assert [j["cases_planned"] for j in meta["jobs"]] == [CASE_IDS, CASE_IDS, CASE_IDS + SHM_IDS]
    assert [j["status"] for j in meta["jobs"][1:]] == ["complete", "complete"]
    assert len(meta["resumed_utc"]) == 2 and run_dirs(root) == [run_dir]


# ---- corrupt: a failed check -----------------------------------------------------------------
def test_corrupt_buffer_fails_the_job_and_keeps_the_flagged_case(fault_job):
    """The harness writes each case before the benchmark asserts on its check: the damaged
    case is on disk with its check failure recorded, and the job fails."""
    job, out = fault_job(CORRUPT)
    assert job.rc is not None and job.rc not in (0, 2) and not job.leftover, job.describe()
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    run_dir = _one_run_dir(out, job)
    cases = results.load_run(run_dir)["cases"]
    assert set(cases) == set(CASE_IDS)  # it ran to the end
    for case_id, case in cases.items():
        damaged = case_id == CASE_IDS[1]
        assert (case["check"]["wrong_elements"] > 0) == damaged, case_id
        assert bool(case["check"]["failures"]) == damaged, case_id
    assert results.finished_case_ids(run_dir) == set(CASE_IDS) - {CASE_IDS[1]}
    assert read_json(run_dir / "run.json")["status"] != "complete"
    assert temp_files(out) == []


def test_corrupt_buffer_last_line_names_the_case(fault_job):
    job, _ = fault_job(CORRUPT)
    assert "check failed" in job.last_line and CASE_IDS[1] in job.last_line, job.describe()


def test_resume_after_a_failed_check_reruns_it_and_completes(fault_job, tmp_path):
    job, out = fault_job(CORRUPT)
    run_dir = _resume_copy(_one_run_dir(out, job), tmp_path)
    again = run_bench([*FAST, "--resume", run_dir, "--no-report"], None, JOB_LIMIT_S)
    assert again.rc == 0, again.describe()
    assert [p[3] for p in again.progress()] == [CASE_IDS[1]]  # only the failed one again
    run = results.load_run(run_dir)
    assert run["meta"]["status"] == "complete"
    assert all(c["check"]["failures"] == [] for c in run["cases"].values())


# ---- two jobs, one --out ---------------------------------------------------------------------
def test_two_jobs_one_out_get_two_run_dirs(tmp_path):
    out = tmp_path / "results"
    one_case = [*FAST, "--shapes", "2x1", "--cadences", "streaming", "--out", out, "--no-report"]
    procs = [BenchProcess(["./run_bench.sh", *one_case]) for _ in range(2)]
    jobs = [p.wait(JOB_LIMIT_S) for p in procs]
    for job in jobs:
        assert job.rc == 0 and not job.leftover, job.describe()
    dirs = run_dirs(out)
    assert len(dirs) == 2, dirs
    said = {
        line.split("results in ", 1)[1].strip()
        for job in jobs
        for line in job.lines_starting("run_bench: results in")
    }
    assert {Path(d).resolve() for d in said} == {d.resolve() for d in dirs}
    for d in dirs:
        run = results.load_run(d)
        assert set(run["cases"]) == {"gloo_cpu-2x1-idle-streaming-r0"}
        assert run["meta"]["status"] == "complete"
        assert (d / "pytest-benchmark-w2.json").is_file()
    assert temp_files(out) == []
