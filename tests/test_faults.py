"""Fault matrix: never hang, never lose a result, a clear error for every bad input.

Real jobs (`run_bench.sh`, torchrun, 2 gloo ranks on the CPU), each under a hard limit that
kills its whole process group, so this file can never hang. Fault jobs run
`--preset smoke --iters 30 --warmup 5 --timeout 10` (4 cases: 2x1/1x2 x isolated/streaming)
with DPSYNC_FAULT=KIND@RANK:ORDINAL (ORDINAL: 0-based index of the case the rank runs):

  fault         what happens                      bound (fault -> exit)  then
  kill@1:2      rank 1 SIGKILLs itself, case 3    timeout + 15 s         --resume: 2 cases
  raise@0:2     rank 0 raises, case 3             timeout + 15 s
  raise@1:1     rank 1 raises, case 2             timeout + 15 s
  sleep@1:2     rank 1 never arrives, case 3      timeout + 15 s
  exit@1:1      rank 1 os._exit(7), case 2        timeout + 15 s
  exit0@1:1     rank 1 os._exit(0), case 2        timeout + 15 s
  raise@1:start rank 1 raises at pytest start-up  (no case runs)
  corrupt@0:1   rank 0's gathered buffer damaged  (runs to the end)      --resume

The eight fault jobs run two at a time. For each: exit code not 0 and not 2, stderr's last
line is `run_bench: job failed ...` naming the rank and the case, at most one
`dpsync: rank` line per rank, no traceback from our code, no process left behind, every
case finished before the fault on disk and valid, nothing after it, no partial (*.tmp)
file. --resume on a copy of the run directory runs only the missing cases, rewrites none
of the others and ends with status "complete"; after a failed check it must not claim
"complete" while a case on disk failed its check.

Concurrency: two run_bench.sh with one --out get two run directories; create_run_dir from
many threads never hands out one twice; results.locked refuses a second holder; a locked
run directory is never written by a second job.

Bad input through run_bench.sh (each): exit code 2, exactly one non-empty stderr line,
< 15 s, no torchrun started, nothing written: unknown path, unknown option (with and
without a value), stray argument, --nproc 0, --nnodes without endpoint, NCCL path without
CUDA, shape 3x1 on 2 ranks, --iters 0 / -5, --warmup -1, --timeout 0, --forward-ms -1,
--out under a regular file (and a read-only directory when not root), corrupt / foreign /
locked --resume directory, malformed DPSYNC_FAULT. The same validation in-process
(`dpsync_bench check`, what run_bench.sh runs first) over a wider set (presets, cadences,
variants, shapes, NaN timeout, --out in /proc, --out with --resume, missing or ill-typed
--resume). Plus check_environment (more ranks per node than GPUs) and the malformed env
flag of delayer_core.selection directly.

Fuzz (hypothesis): load_case/load_run on corrupted files (truncations, byte flips, wrong
types, NaN, missing fields, foreign schema) raise ResultsError (one line), never another
exception, and never return an invalid result; compare.load_results (the baseline
loader) likewise.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_helpers import (
    FAST,
    OUR_FRAME,
    TIMEOUT_S,
    BenchProcess,
    Job,
    make_case_result,
    read_json,
    run_bench,
    run_dirs,
    smoke_case_ids,
    temp_files,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dpsync_bench import report, results
from dpsync_bench.cases import Case, Sweep, UsageError, check_environment

WORLD = 2
HANG_BOUND_S = TIMEOUT_S + 15  # from the fault to the end of run_bench.sh
JOB_LIMIT_S = 150  # hard limit of any one job (the test fails, it never hangs)
CASE_IDS = smoke_case_ids(WORLD)  # the order every rank runs them in

FAULTS = {
    "kill@1:2": ("kill", 1, 2),
    "raise@0:2": ("raise", 0, 2),
    "raise@1:1": ("raise", 1, 1),
    "sleep@1:2": ("sleep", 1, 2),
    "exit@1:1": ("exit", 1, 1),
    "exit0@1:1": ("exit0", 1, 1),
}
START_UP = "raise@1:start"  # rank 1 raises as pytest configures, before any case
CORRUPT = "corrupt@0:1"


# ---- running the fault jobs, two at a time, once each ----------------------------------------
@pytest.fixture(scope="module")
def fault_jobs(tmp_path_factory) -> dict[str, tuple[Job, Path]]:
    def one(spec: str):
        out = tmp_path_factory.mktemp("fault-" + re.sub(r"\W", "_", spec))
        job = run_bench([*FAST, "--out", out, "--no-report"], {"DPSYNC_FAULT": spec}, JOB_LIMIT_S)
        return spec, (job, out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, [*FAULTS, CORRUPT, START_UP]))


@pytest.fixture
def fault_job(fault_jobs):
    return fault_jobs.__getitem__


def _one_run_dir(out: Path, job: Job) -> Path:
    dirs = run_dirs(out)
    assert len(dirs) == 1, f"expected one run directory under {out}, got {dirs}\n" + (
        job.describe()
    )
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
@pytest.mark.slow
@pytest.mark.parametrize("spec", list(FAULTS))
def test_fault_ends_the_job_within_the_bound(fault_job, spec):
    job, _ = fault_job(spec)
    _, _, ordinal = FAULTS[spec]
    assert job.rc is not None, f"job still running after {JOB_LIMIT_S} s\n{job.describe()}"
    assert job.rc not in (0, 2), job.describe()
    took = job.wall_s - _fault_onset(job, ordinal)
    assert took <= HANG_BOUND_S, f"{took:.1f} s from fault to exit\n{job.describe()}"
    assert not job.leftover, "a process of the job outlived run_bench.sh"
    assert job.last_line.startswith("run_bench: job failed"), job.describe()


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(FAULTS) + [CORRUPT])
def test_fault_no_traceback_storm(fault_job, spec):
    job, _ = fault_job(spec)
    rank_lines = job.lines_starting("dpsync: rank")
    assert len(rank_lines) <= WORLD, job.describe()
    ours = [line for _, line in job.stderr_lines if OUR_FRAME.search(line)]
    assert not ours, f"traceback from our code on stderr: {ours}\n{job.describe()}"
    # torchrun's own ChildFailedError report carries one traceback (of torchrun itself)
    assert job.stderr.count("Traceback (most recent call last)") <= 1, job.describe()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["raise@0:2", "raise@1:1"])
def test_raising_rank_is_named_with_its_case(fault_job, spec):
    job, _ = fault_job(spec)
    _, rank, ordinal = FAULTS[spec]
    want = f"dpsync: rank {rank}: case {CASE_IDS[ordinal]}: RuntimeError: injected fault"
    assert want in job.last_line, job.describe()
    if rank == 0:  # the others' output is in their log files; the last line quotes it
        assert want in job.lines_starting("dpsync: rank")[0]


@pytest.mark.slow
def test_rank_that_never_arrives_times_out_with_the_case(fault_job):
    job, _ = fault_job("sleep@1:2")
    case_id = CASE_IDS[2]
    assert re.search(rf"dpsync: rank \d+: case {re.escape(case_id)}: ", job.last_line), (
        job.describe()
    )
    assert re.search(r"time[ds]? ?out", job.last_line, re.IGNORECASE), job.describe()


@pytest.mark.slow
def test_rank_failing_at_start_up_is_named_with_its_error(fault_job):
    # Issue 9: rank 1 failed on its own before any case; torchrun then stopped rank 0 with
    # SIGTERM. The last line names rank 1 and quotes its exception, and nothing hangs.
    job, out = fault_job(START_UP)
    assert job.rc not in (None, 0, 2), job.describe()
    assert not job.leftover
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    assert "rank 1 " in job.last_line, job.describe()
    assert "RuntimeError: injected fault at start-up on rank 1" in job.last_line, job.describe()
    assert "rank 0" not in job.last_line and "SIGTERM" not in job.last_line, job.describe()
    assert run_dirs(out) == []  # no case ran, so no run directory was made


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["kill@1:2", "exit@1:1", "exit0@1:1"])
def test_dead_rank_is_named_with_its_case(fault_job, spec):
    job, _ = fault_job(spec)
    _, rank, ordinal = FAULTS[spec]
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    assert f"rank {rank}" in job.last_line and CASE_IDS[ordinal] in job.last_line, job.describe()


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(FAULTS))
def test_fault_keeps_every_finished_case(fault_job, spec):
    job, out = fault_job(spec)
    _, _, ordinal = FAULTS[spec]
    run_dir = _one_run_dir(out, job)
    for case_id in CASE_IDS[:ordinal]:
        case = results.load_case(run_dir / "cases" / f"{case_id}.json")
        assert case["case_id"] == case_id
        assert case["check"]["wrong_elements"] == 0
        assert case["stats"]["pass_us"]["n"] == 30
    for case_id in CASE_IDS[ordinal:]:
        assert not (run_dir / "cases" / f"{case_id}.json").exists(), case_id
    assert temp_files(out) == []
    run = results.load_run(run_dir)
    assert set(run["cases"]) == set(CASE_IDS[:ordinal])
    assert run["meta"]["status"] != "complete"
    assert run["meta"]["cases_planned"] == CASE_IDS


def _snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run_dir / "cases").iterdir()}


def _resume_copy(run_dir: Path, dest_root: Path) -> Path:
    dest = dest_root / run_dir.name
    shutil.copytree(run_dir, dest)  # copy2: mtimes kept
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["kill@1:2"])
def test_resume_runs_only_the_missing_cases(fault_job, spec, tmp_path):
    job, out = fault_job(spec)
    _, _, ordinal = FAULTS[spec]
    run_dir = _resume_copy(_one_run_dir(out, job), tmp_path)
    before = _snapshot(run_dir)
    assert len(before) == ordinal
    resumed = run_bench([*FAST, "--resume", run_dir, "--no-report"], None, JOB_LIMIT_S)
    assert resumed.rc == 0, resumed.describe()
    assert not resumed.leftover
    missing = CASE_IDS[ordinal:]
    progress = resumed.progress()
    assert [p[3] for p in progress] == missing, resumed.describe()
    assert {p[2] for p in progress} == {len(missing)}
    after = _snapshot(run_dir)
    for name, (mtime, data) in before.items():
        assert after[name] == (mtime, data), f"{name} was rewritten by --resume"
    run = results.load_run(run_dir)
    assert set(run["cases"]) == set(CASE_IDS)
    assert run["meta"]["status"] == "complete"
    assert len(run["meta"].get("resumed_utc", [])) == 1
    assert temp_files(tmp_path) == []
    assert run_dirs(tmp_path) == [run_dir], "--resume must not create a new run directory"


# ---- corrupt: a failed check ------------------------------------------------------------------
@pytest.mark.slow
def test_corrupt_buffer_fails_the_job_and_keeps_the_flagged_case(fault_job):
    """The harness writes each case before the benchmark asserts on its check: the damaged
    case is on disk with its check failure recorded, and the job fails."""
    job, out = fault_job(CORRUPT)
    assert job.rc is not None and job.rc not in (0, 2), job.describe()
    assert not job.leftover
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    run_dir = _one_run_dir(out, job)
    first = results.load_case(run_dir / "cases" / f"{CASE_IDS[0]}.json")
    assert first["check"]["wrong_elements"] == 0
    damaged = results.load_case(run_dir / "cases" / f"{CASE_IDS[1]}.json")
    assert damaged["check"]["wrong_elements"] > 0
    for path in (run_dir / "cases").glob("*.json"):
        if path.stem != CASE_IDS[1]:
            assert results.load_case(path)["check"]["wrong_elements"] == 0, path.name
    assert read_json(run_dir / "run.json")["status"] != "complete"
    assert temp_files(out) == []


@pytest.mark.slow
def test_corrupt_buffer_last_line_names_the_case(fault_job):
    job, _ = fault_job(CORRUPT)
    assert job.last_line.startswith("run_bench: job failed"), job.describe()
    assert "data check failed" in job.last_line and CASE_IDS[1] in job.last_line, job.describe()


@pytest.mark.slow
def test_resume_after_a_failed_check_does_not_claim_complete(fault_job, tmp_path):
    job, out = fault_job(CORRUPT)
    run_dir = _resume_copy(_one_run_dir(out, job), tmp_path)
    resumed = run_bench([*FAST, "--resume", run_dir, "--no-report"], None, JOB_LIMIT_S)
    meta = read_json(run_dir / "run.json")
    cases = [results.load_case(p) for p in (run_dir / "cases").glob("*.json")]
    clean = all(
        c["check"]["wrong_elements"] == 0 and c["check"]["wrong_decisions"] == 0 for c in cases
    )
    if meta["status"] == "complete":
        assert clean and len(cases) == len(CASE_IDS), "complete run with a failed check"
    if resumed.rc == 0:
        assert meta["status"] == "complete" and clean, resumed.describe()


# ---- concurrency -----------------------------------------------------------------------------
ONE_CASE_FAST = [*FAST, "--shapes", "2x1", "--cadences", "streaming"]


@pytest.mark.slow
def test_two_jobs_one_out_get_two_run_dirs(tmp_path):
    out = tmp_path / "results"
    procs = [
        BenchProcess(["./run_bench.sh", *ONE_CASE_FAST, "--out", out, "--no-report"])
        for _ in range(2)
    ]
    jobs = [p.wait(JOB_LIMIT_S) for p in procs]
    for job in jobs:
        assert job.rc == 0, job.describe()
        assert not job.leftover
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
    index = read_json(out / "index.json")
    assert sorted(r["dir"] for r in index["runs"]) == sorted(d.name for d in dirs)
    assert temp_files(out) == []


def test_create_run_dir_from_many_threads(tmp_path):
    got: list[Path] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker():
        start.wait()
        for _ in range(25):
            try:
                d = results.create_run_dir(tmp_path, "race-box")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            with lock:
                got.append(d)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(got) == 200
    assert len({p.resolve() for p in got}) == 200
    assert all((p / "cases").is_dir() and p.name.startswith("race-box_") for p in got)
    assert len(run_dirs(tmp_path)) == 200


def test_locked_refuses_a_second_holder(tmp_path):
    run = results.create_run_dir(tmp_path, "lock-box")
    with results.locked(run):
        with pytest.raises(results.ResultsError, match="in use"), results.locked(run):
            pass
        # still held: a third try fails too
        with pytest.raises(results.ResultsError), results.locked(run):
            pass
    with results.locked(run):  # released: free again
        pass


# ---- bad input ---------------------------------------------------------------------------------
def _opts(**over) -> list[str]:
    base = {
        "preset": "smoke",
        "iters": "30",
        "warmup": "5",
        "timeout": str(TIMEOUT_S),
        "shapes": "2x1",
        "cadences": "streaming",
    }
    base.update({k.replace("_", "-"): v for k, v in over.items()})
    args = []
    for k, v in base.items():
        if v is not None:
            args += [f"--{k}", str(v)]
    return args


# id -> (run_bench args (None: built by _bad_args), env, expected substring, xfail reason).
# Through run_bench.sh: what the issue lists; the wider set runs in-process (check_inputs).
BAD_INPUTS = {
    "unknown-path": (_opts(paths="bogus"), None, "bogus", None),
    "unknown-option": (_opts() + ["--bogus", "1"], None, "--bogus", None),
    "option-without-value": (None, None, "--bogus", None),
    "stray-argument": (_opts() + ["oops"], None, "oops", None),
    "nproc-0": (["--nproc", "0", *_opts()], None, "--nproc", None),
    "nnodes-without-endpoint": (["--nnodes", "2", *_opts()], None, "--rdzv-endpoint", None),
    "nccl-without-cuda": (_opts(paths="nccl_device"), None, "CUDA", None),
    "shape-3x1-on-2-ranks": (_opts(shapes="3x1"), None, "3x1", None),
    "iters-0": (_opts(iters=0), None, "0", None),
    "iters-negative": (_opts(iters=-5), None, "-5", None),
    "warmup-negative": (_opts(warmup=-1), None, "-1", None),
    "timeout-0": (_opts(timeout=0), None, "timeout", None),
    "forward-negative": (_opts(forward_ms=-1), None, "-1", None),
    "out-under-a-file": (None, None, "not writable", None),
    "resume-corrupt-run-json": (None, None, "run.json", None),
    "resume-foreign-run-json": (None, None, "run.json", None),
    "resume-locked": (None, None, "in use", None),
    "fault-malformed": (_opts(), {"DPSYNC_FAULT": "kill@1"}, "DPSYNC_FAULT", None),
}
if os.geteuid() != 0:  # root writes anywhere: a read-only directory refuses only others
    BAD_INPUTS["out-read-only-dir"] = (None, None, "not writable", None)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _valid_run_dir(root: Path, kind: str) -> Path:
    run = results.create_run_dir(root, kind)
    results.atomic_write_json(
        run / "run.json",
        {"schema": results.RUN_SCHEMA, "machine_kind": kind, "status": "running"},
    )
    return run


def _bad_args(name: str, spec, root: Path) -> tuple[list[str], Path]:
    """The run_bench.sh arguments of one bad input and the --out root to check after."""
    args, *_ = spec
    out = root / "out"
    if args is not None:
        return [*args, "--out", out, "--no-report"], out
    if name == "option-without-value":  # last, so it has no value
        return [*_opts(), "--out", out, "--no-report", "--bogus"], out
    if name == "out-under-a-file":
        f = root / "a-file"
        f.write_text("not a directory\n")
        return [*_opts(), "--out", f / "sub", "--no-report"], f / "sub"
    if name == "out-in-proc":
        return [*_opts(), "--out", "/proc/dpsync-ci", "--no-report"], Path("/proc/dpsync-ci")
    if name == "out-read-only-dir":
        ro = root / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return [*_opts(), "--out", ro, "--no-report"], ro
    resume_root = root / "runs"
    kind = "ci-" + re.sub(r"\W", "-", name)
    run = _valid_run_dir(resume_root, kind)
    args = [*_opts(machine_kind=kind), "--resume", run, "--no-report"]
    if name == "out-and-resume":
        return [*args, "--out", out], out
    if name == "resume-missing":
        shutil.rmtree(run)
    elif name == "resume-corrupt-run-json":
        (run / "run.json").write_text('{"schema": "dpsync-bench/run/1", "machine_')
    elif name == "resume-foreign-run-json":
        (run / "run.json").write_text('{"schema": "someone-else/run/3", "machine_kind": "x"}')
    elif name == "resume-ill-typed-run-json":
        meta = {"schema": results.RUN_SCHEMA, "machine_kind": kind, "resumed_utc": "yesterday"}
        (run / "run.json").write_text(json.dumps(meta))
    return args, run


@pytest.fixture(scope="module")
def bad_input_jobs(tmp_path_factory):
    """Every bad input, two at a time (each is mostly interpreter start-up)."""
    root = tmp_path_factory.mktemp("bad")
    prepared = {}
    for name, spec in BAD_INPUTS.items():
        where = root / name
        where.mkdir()
        prepared[name] = (*_bad_args(name, spec, where), spec[1])
    locked_run = prepared["resume-locked"][1]

    def one(name):
        args, _, env = prepared[name]
        return name, run_bench(args, env, JOB_LIMIT_S)

    with results.locked(locked_run):
        before = _files(locked_run)
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs = dict(pool.map(one, BAD_INPUTS))
    ro = root / "out-read-only-dir" / "ro"
    if ro.exists():
        ro.chmod(0o755)
    return {name: (job, prepared[name][1]) for name, job in jobs.items()}, locked_run, before


def _bad_params():
    for name, (_, _, _, reason) in BAD_INPUTS.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, id=name, marks=marks)


@pytest.mark.slow
@pytest.mark.parametrize("name", _bad_params())
def test_bad_input_one_line_exit_2(bad_input_jobs, name):
    jobs, _, _ = bad_input_jobs
    job, where = jobs[name]
    expected = BAD_INPUTS[name][2]
    assert job.rc == 2, job.describe()
    assert len(job.nonempty_stderr) == 1, job.describe()  # so no torchrun was started
    assert not job.lines_starting("run_bench: torchrun"), job.describe()
    line = job.last_line
    assert line.startswith(("dpsync: ", "run_bench: ")), line
    assert expected in line, line
    assert job.wall_s < 15, f"took {job.wall_s:.1f} s"
    assert not job.leftover
    # nothing written: no run directory under --out, no case in a --resume directory
    assert run_dirs(where) == [], "a bad input created a run directory"
    if (where / "cases").is_dir():
        assert list((where / "cases").iterdir()) == []
    if where.is_dir() and not str(where).startswith("/proc"):
        assert temp_files(where) == []


@pytest.mark.slow
def test_locked_run_dir_is_never_written(bad_input_jobs):
    """A run directory held by another job: the second one refuses it and writes nothing."""
    jobs, locked_run, before = bad_input_jobs
    job, _ = jobs["resume-locked"]
    assert job.rc not in (None, 0), job.describe()
    assert "in use" in job.stderr, job.describe()
    assert _files(locked_run) == before
    assert not list((locked_run / "cases").iterdir())


# The same validation in-process (`python -m dpsync_bench check`, what run_bench.sh runs
# first), over a wider set of bad inputs: id -> (args (None: built by _bad_args),
# expected substring, xfail reason).
_ROOT = os.geteuid() == 0
CHECK_INPUTS = {
    "unknown-path": (_opts(paths="bogus"), "bogus", None),
    "unknown-option": (_opts() + ["--bogus", "1"], "--bogus", None),
    "unknown-preset": (_opts(preset="huge"), "huge", None),
    "unknown-cadence": (_opts(cadences="bursty"), "bursty", None),
    "variants-maybe": (_opts(variants="maybe"), "maybe", None),
    "nccl-without-cuda": (_opts(paths="nccl_device"), "CUDA", None),
    "gloo-cuda-without-cuda": (_opts(paths="gloo_cuda"), "CUDA", None),
    "forward-without-cuda": (_opts(forward_ms="5"), "CUDA", None),
    "shape-3x1-on-2-ranks": (_opts(shapes="3x1"), "3x1", None),
    "shape-2x2-on-2-ranks": (_opts(shapes="2x1,2x2"), "2x2", None),
    "shape-garbage": (_opts(shapes="2y1"), "2y1", None),
    "shape-zero": (_opts(shapes="0x2"), "0x2", None),
    "iters-0": (_opts(iters=0), "0", None),
    "iters-negative": (_opts(iters=-5), "-5", None),
    "iters-not-a-number": (_opts(iters="abc"), "abc", None),
    "warmup-negative": (_opts(warmup=-1), "-1", None),
    "repeat-0": (_opts(repeat=0), "repeat", None),
    "timeout-0": (_opts(timeout=0), "timeout", None),
    "timeout-negative": (_opts(timeout=-3), "timeout", None),
    "timeout-nan": (_opts(timeout="nan"), "timeout", None),
    "forward-too-long": (_opts(forward_ms="10000"), "forward", None),
    "forward-negative": (_opts(forward_ms=-1), "-1", None),
    "out-under-a-file": (None, "not writable", None),
    "out-in-proc": (None, "/proc", None),
    "out-and-resume": (None, "resume", None),
    "resume-missing": (None, "resume", None),
    "resume-corrupt-run-json": (None, "run.json", None),
    "resume-foreign-run-json": (None, "run.json", None),
    "resume-ill-typed-run-json": (None, "run.json", None),
}
if not _ROOT:
    CHECK_INPUTS["out-read-only-dir"] = (None, "not writable", None)


def _check_params():
    for name, (_, _, reason) in CHECK_INPUTS.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, id=name, marks=marks)


def _bad_args_any(name: str, root: Path) -> tuple[list[str], Path]:
    args = CHECK_INPUTS[name][0]
    if args is not None:
        return [*args, "--out", root / "out"], root / "out"
    got, where = _bad_args(name, (None,), root)
    return [a for a in got if a != "--no-report"], where


def _isolate_check_env(monkeypatch):
    """`check --nproc` writes WORLD_SIZE/LOCAL_WORLD_SIZE into os.environ: setenv first so
    monkeypatch puts back what was there (or nothing) after the test."""
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.delenv("DPSYNC_FAULT", raising=False)


@pytest.mark.parametrize("name", _check_params())
def test_check_refuses_bad_input(name, tmp_path, monkeypatch, capsys):
    from dpsync_bench import cli

    args, where = _bad_args_any(name, tmp_path)
    _isolate_check_env(monkeypatch)
    try:
        rc = cli.main(["check", "--nproc", "2", *map(str, args)])
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("dpsync: "), err
    assert CHECK_INPUTS[name][1] in lines[0]
    assert run_dirs(where) == []


def test_check_accepts_good_input(tmp_path, monkeypatch, capsys):
    from dpsync_bench import cli

    _isolate_check_env(monkeypatch)
    assert cli.main(["check", "--nproc", "2", *_opts(), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == "1 cases"
    run = _valid_run_dir(tmp_path / "runs", "ci-good")
    args = [*_opts(machine_kind="ci-good"), "--resume", str(run)]
    assert cli.main(["check", "--nproc", "2", *args]) == 0
    assert not (tmp_path / "o").exists(), "check must not create the results directory"


def test_check_environment_more_ranks_than_gpus():
    nccl = Sweep(preset="gpu", paths=["nccl_device"]).cases(2, True)
    with pytest.raises(UsageError, match="one GPU per rank") as err:
        check_environment(nccl, world_size=2, local_world_size=2, cuda_devices=1)
    assert "\n" not in str(err.value)
    check_environment(nccl, world_size=2, local_world_size=2, cuda_devices=2)


def test_malformed_env_flag_names_the_variable():
    from delayer_core.selection import NCCL_FLAG, ServerArgs, env_bool, select_path

    with pytest.raises(ValueError, match=NCCL_FLAG) as err:
        env_bool({NCCL_FLAG: "maybe"}, NCCL_FLAG)
    assert "maybe" in str(err.value)
    with pytest.raises(ValueError, match=NCCL_FLAG):
        select_path(ServerArgs(), {NCCL_FLAG: "maybe"}, object(), object(), "cpu")
    for raw in ("", "2", "tru", "on "):
        with pytest.raises(ValueError, match=NCCL_FLAG):
            select_path(ServerArgs(), {NCCL_FLAG: raw}, object(), object(), "cpu")


# ---- fuzz: the results loader ------------------------------------------------------------------
BASE_CASE = make_case_result(iters=6)
BASE_STREAMING = make_case_result(
    case=Case("gloo_cpu", "1x2", cadence="streaming", iters=6, warmup=2),
    iters=6,
    raw_block_median_ns=150_000.0,
)
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
STAT_KEYS = ("p50", "p90", "p99", "max", "min", "mean", "stdev", "n")


def _paths(obj, prefix=()):
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj:
        for i in sorted({0, len(obj) - 1}):
            yield from _paths(obj[i], (*prefix, i))


PATHS = sorted(set(_paths(BASE_CASE)) | set(_paths(BASE_STREAMING)), key=repr)
WRONG = [None, True, False, 0, -1, 2.5, -1e300, "x", "", [], [[]], [[], []], {}, {"a": 1}]
WRONG += [math.nan, math.inf, -math.inf, [[math.nan]], [[1.0], []], [[1.0, 2.0], [1.0]]]

mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), st.sampled_from(WRONG)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(
        st.just("schema"),
        st.sampled_from(["dpsync-bench/case/2", results.RUN_SCHEMA, "", None, 1, ["x"]]),
    ),
    st.tuples(st.just("top"), st.sampled_from([[], "x", 1, None, True, "BASE-IN-LIST"])),
    st.tuples(st.just("truncate"), st.floats(min_value=0.0, max_value=0.9999)),
    st.tuples(
        st.just("flip"),
        st.floats(min_value=0.0, max_value=0.9999),
        st.integers(min_value=1, max_value=255),
    ),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
)


def _apply(base: dict, mutations) -> bytes:
    obj = copy.deepcopy(base)
    text_ops = []
    for m in mutations:
        kind = m[0]
        if kind in ("set", "delete"):
            parent, key = obj, m[1][-1]
            try:
                for step in m[1][:-1]:
                    parent = parent[step]
                if kind == "set":
                    parent[key] = copy.deepcopy(m[2])
                else:
                    del parent[key]
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed or replaced the path
        elif kind == "schema" and isinstance(obj, dict):
            obj["schema"] = m[1]
        elif kind == "top":
            obj = [copy.deepcopy(base)] if m[1] == "BASE-IN-LIST" else m[1]
        else:
            text_ops.append(m)
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    for m in text_ops:
        if m[0] == "truncate":
            data = data[: int(m[1] * len(data))]
        elif m[0] == "flip" and data:
            i = int(m[1] * len(data))
            data = data[:i] + bytes([data[i] ^ m[2]]) + data[i + 1 :]
        elif m[0] == "bytes":
            data = m[1]
    return data


def _finite_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _block_ok(block) -> bool:
    if not isinstance(block, dict):
        return False
    if not all(_finite_number(block.get(k)) for k in STAT_KEYS):
        return False
    return (
        all(block[k] >= 0 for k in STAT_KEYS if k != "stdev")
        and block["min"] <= block["p50"] <= block["p90"] <= block["p99"] <= block["max"]
        and block["n"] >= 1
    )


def _basic_problems(case) -> list[str]:
    """What validate_case_result promises about a result it lets through."""
    if not isinstance(case, dict):
        return ["not an object"]
    problems = []
    if case.get("schema") != results.CASE_SCHEMA:
        problems.append("schema")
    cid = case.get("case_id")
    if not (isinstance(cid, str) and _SAFE_ID.fullmatch(cid)):
        problems.append("case_id")
    for key in ("case", "stats", "raw", "check"):
        if not isinstance(case.get(key), dict):
            problems.append(key)
    if not isinstance(case.get("machine_kind"), str):
        problems.append("machine_kind")
    if problems:
        return problems
    for metric in ("pass_us", "stall_us"):
        if not _block_ok(case["stats"].get(metric)):
            problems.append(f"stats.{metric}")
    raw = case["raw"].get("pass_us")
    if not (
        isinstance(raw, list)
        and raw
        and all(isinstance(r, list) and all(_finite_number(v) for v in r) for r in raw)
    ):
        problems.append("raw.pass_us")
    return problems


def _usable_problems(case) -> list[str]:
    """What the consumers of a loaded result (report, compare, pytest bridge) rely on."""
    problems = _basic_problems(case)
    if problems:
        return problems
    check = case["check"]
    for key in ("wrong_elements", "wrong_decisions"):
        v = check.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"check.{key}")
    raw = case["raw"]["pass_us"]
    if any(not r for r in raw) or len({len(r) for r in raw}) != 1:
        problems.append("raw.pass_us not one non-empty list per rank, all the same length")
    for metric in ("pass_us", "stall_us"):
        n = case["stats"][metric]["n"]
        if not isinstance(n, int):
            problems.append(f"stats.{metric}.n")
    for metric, block in case["stats"].items():
        if metric not in ("pass_us", "stall_us") and not _block_ok(block):
            problems.append(f"stats.{metric}")
    if not problems:
        try:
            report.summary_table([case])
            report.stability([case])
        except Exception as e:  # noqa: BLE001 - any exception is the finding
            problems.append(f"report: {type(e).__name__}: {e}")
    return problems


_FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load(fuzz_dir: Path, data: bytes):
    path = fuzz_dir / "cases" / "x.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return results.load_case(path)


@_FUZZ
@given(base=st.sampled_from([BASE_CASE, BASE_STREAMING]), muts=st.lists(mutation, max_size=3))
def test_fuzz_load_case_raises_results_error_or_returns_valid(fuzz_dir, base, muts):
    data = _apply(base, muts)
    try:
        got = _load(fuzz_dir, data)
    except results.ResultsError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return
    assert _basic_problems(got) == []
    results.validate_case_result(got, "again")  # what load_case returns stays valid


@_FUZZ
@given(base=st.sampled_from([BASE_CASE, BASE_STREAMING]), muts=st.lists(mutation, max_size=3))
@example(base=BASE_CASE, muts=[("delete", ("check", "wrong_elements"))])
def test_fuzz_load_case_never_returns_an_unusable_result(fuzz_dir, base, muts):
    data = _apply(base, muts)
    try:
        got = _load(fuzz_dir, data)
    except results.ResultsError:
        return
    assert _usable_problems(got) == []


# Each of these is accepted by load_case today, and each breaks a consumer or is nonsense.
UNUSABLE = {
    "check-empty": (
        [("set", ("check",), {})],
        "an empty check block (report.summary_rows: KeyError 'wrong_elements')",
    ),
    "check-wrong-elements-missing": (
        [("delete", ("check", "wrong_elements"))],
        "a check block without wrong_elements (report.summary_rows: KeyError)",
    ),
    "check-wrong-elements-string": (
        [("set", ("check", "wrong_elements"), "0")],
        "check.wrong_elements of the wrong type ('0')",
    ),
    "raw-rank-without-samples": (
        [("set", ("raw", "pass_us", 1), [])],
        "a rank with no raw samples (compare.samples/reduce_max: ValueError)",
    ),
    "raw-ragged-ranks": (
        [("set", ("raw", "pass_us", 1), [1.0, 2.0])],
        "ranks with different raw sample counts (reduce_max: ValueError)",
    ),
    "skew-stats-not-an-object": (
        [("set", ("stats", "start_skew_us"), "x")],
        "stats.start_skew_us that is not a statistics block (report: TypeError)",
    ),
    "device-stats-a-list": (
        [("set", ("stats", "device_us"), [])],
        "stats.device_us that is not a statistics block (report: AttributeError)",
    ),
    "n-not-an-integer": (
        [("set", ("stats", "pass_us", "n"), 2.5)],
        "a fractional sample count stats.pass_us.n",
    ),
    "case-id-trailing-newline": (
        [("set", ("case_id",), "gloo_cpu-2x1-idle-isolated-r0\n")],
        "a case_id ending in a newline (_SAFE's '$' matches before it)",
    ),
}
# ... and these are refused today (controls: they must stay refused).
REFUSED = {
    "truncated": [("truncate", 0.5)],
    "empty-file": [("bytes", b"")],
    "not-utf8": [("bytes", b"\xff\xfe{}")],
    "top-level-list": [("top", "BASE-IN-LIST")],
    "foreign-schema": [("schema", "someone-else/1")],
    "run-schema": [("schema", results.RUN_SCHEMA)],
    "stats-missing": [("delete", ("stats",))],
    "p50-nan": [("set", ("stats", "pass_us", "p50"), math.nan)],
    "max-inf": [("set", ("stats", "pass_us", "max"), math.inf)],
    "p50-string": [("set", ("stats", "pass_us", "p50"), "1.0")],
    "p50-bool": [("set", ("stats", "pass_us", "n"), True)],
    "quantiles-out-of-order": [("set", ("stats", "pass_us", "p50"), 1e12)],
    "raw-nan": [("set", ("raw", "pass_us", 0, 0), math.nan)],
    "raw-missing": [("delete", ("raw", "pass_us"))],
    "raw-flat": [("set", ("raw", "pass_us"), [1.0, 2.0])],
    "case-id-unsafe": [("set", ("case_id",), "../../etc/passwd")],
    "machine-kind-missing": [("delete", ("machine_kind",))],
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_load_case_refuses_broken_results(fuzz_dir, name):
    with pytest.raises(results.ResultsError) as err:
        _load(fuzz_dir, _apply(BASE_CASE, REFUSED[name]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name",
    [pytest.param(name, id=name) for name in UNUSABLE],
)
def test_load_case_refuses_unusable_results(fuzz_dir, name):
    data = _apply(BASE_CASE, UNUSABLE[name][0])
    try:
        got = _load(fuzz_dir, data)
    except results.ResultsError:
        return
    pytest.fail(f"load_case returned an unusable result: {_usable_problems(got)}")


BASE_META = {
    "schema": results.RUN_SCHEMA,
    "machine_kind": "test-box",
    "started_utc": "20260101T000000Z",
    "status": "incomplete",
    "command": "x",
    "world_size": 2,
    "nnodes": 1,
    "sweep": {"preset": "smoke"},
    "cases_planned": [BASE_CASE["case_id"]],
    "timeout_s": 10.0,
    "machine": {},
    "resumed_utc": ["20260101T000100Z"],
}
META_PATHS = sorted(set(_paths(BASE_META)), key=repr)
meta_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(META_PATHS), st.sampled_from(WRONG)),
    st.tuples(st.just("delete"), st.sampled_from(META_PATHS)),
    st.tuples(st.just("schema"), st.sampled_from([results.CASE_SCHEMA, "x/run/1", None])),
    st.tuples(st.just("top"), st.sampled_from([[], "x", None])),
    st.tuples(st.just("truncate"), st.floats(min_value=0.0, max_value=0.9999)),
    st.tuples(
        st.just("flip"),
        st.floats(min_value=0.0, max_value=0.9999),
        st.integers(min_value=1, max_value=255),
    ),
)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzrun")
    run = results.create_run_dir(root, "test-box")
    results.write_case(run, make_case_result(machine_kind="test-box", iters=6))
    return run


@_FUZZ
@given(muts=st.lists(meta_mutation, max_size=3))
def test_fuzz_load_run_and_resume_check(fuzz_run, muts):
    from dpsync_bench.session import Options

    (fuzz_run / "run.json").write_bytes(_apply(BASE_META, muts))
    try:
        run = results.load_run(fuzz_run)
    except results.ResultsError as e:
        assert "\n" not in str(e)
        with pytest.raises(UsageError, match="--resume"):
            Options(resume=str(fuzz_run)).validate()
        return
    meta = run["meta"]
    assert isinstance(meta, dict) and meta["schema"] == results.RUN_SCHEMA
    assert isinstance(meta["machine_kind"], str)
    assert set(run["cases"]) == {BASE_CASE["case_id"]}
    Options(resume=str(fuzz_run)).validate()


@_FUZZ
@given(
    base=st.sampled_from([BASE_CASE, BASE_STREAMING]),
    muts=st.lists(mutation, max_size=3),
    meta_muts=st.lists(meta_mutation, max_size=2),
    as_dir=st.booleans(),
)
def test_fuzz_baseline_loader(tmp_path_factory, base, muts, meta_muts, as_dir):
    """compare.load_results (what a baseline goes through): ResultsError or usable samples."""
    compare = pytest.importorskip("dpsync_bench.compare")
    root = tmp_path_factory.mktemp("baseline")
    run = results.create_run_dir(root, "test-box")
    meta = {**BASE_META, "cases_planned": [base["case_id"]]}
    (run / "run.json").write_bytes(_apply(meta, meta_muts))
    path = run / "cases" / f"{base['case_id']}.json"
    path.write_bytes(_apply(base, muts))
    try:
        loaded = compare.load_results([run if as_dir else path])
    except results.ResultsError as e:
        assert "\n" not in str(e)
        return
    for case in loaded["cases"].values():
        assert _basic_problems(case) == []
        try:
            got = compare.samples(case)
        except results.ResultsError:
            continue
        assert got and all(math.isfinite(v) for v in got)
