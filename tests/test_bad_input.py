"""Bad input: a clear error for every one, before anything runs or is written.

Through run_bench.sh (each): exit code 2, exactly one non-empty stderr line, < 15 s, no
torchrun started, nothing written: unknown path, unknown option (with and without a value),
stray argument, --nproc 0, --nnodes without endpoint, NCCL path without CUDA, shape 3x1 on
2 ranks, --iters 0 / -5, --warmup -1, --timeout 0, --forward-ms -1, --out under a regular
file (and a read-only directory when not root), corrupt / foreign / schema-1 / locked
--resume directory, malformed DPSYNC_FAULT; a locked run directory is never written. The
same validation in-process (`dpsync_bench check`, what run_bench.sh runs first) over a
wider set. Plus check_environment (a malformed env flag: test_selection.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fault_helpers import TIMEOUT_S, run_bench, run_dirs, temp_files

from dpsync_bench import results
from dpsync_bench.cases import Sweep, UsageError, check_environment

JOB_LIMIT_S = 60


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
    "resume-schema-1": (None, None, "before the measurement fixes", None),
    "resume-locked": (None, None, "in use", None),
    "fault-malformed": (_opts(), {"DPSYNC_FAULT": "kill@1"}, "DPSYNC_FAULT", None),
}
if os.geteuid() != 0:  # root writes anywhere: a read-only directory refuses only others
    BAD_INPUTS["out-read-only-dir"] = (None, None, "not writable", None)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


_META = {"schema": results.RUN_SCHEMA, "status": "incomplete", "jobs": []}


def _valid_run_dir(root: Path, kind: str) -> Path:
    """A run directory as a first job leaves it (run.json with its jobs, no case yet)."""
    run = results.create_run_dir(root, kind)
    results.atomic_write_json(run / "run.json", {**_META, "machine_kind": kind})
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
    elif name == "resume-schema-1":
        (run / "run.json").write_text(
            json.dumps({"schema": "dpsync-bench/run/1", "machine_kind": kind})
        )
    elif name == "resume-foreign-run-json":
        (run / "run.json").write_text('{"schema": "someone-else/run/3", "machine_kind": "x"}')
    elif name == "resume-ill-typed-run-json":
        meta = {**_META, "machine_kind": kind, "resumed_utc": "yesterday"}
        (run / "run.json").write_text(json.dumps(meta))
    elif name == "resume-without-jobs":
        meta = {k: v for k, v in _META.items() if k != "jobs"}
        (run / "run.json").write_text(json.dumps({**meta, "machine_kind": kind}))
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
@pytest.mark.parametrize("name", list(_bad_params()))
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
    "forward-without-cuda": (_opts(forward_ms="5", cadences="isolated"), "CUDA", None),
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
    "resume-schema-1": (None, "before the measurement fixes", None),
    "resume-ill-typed-run-json": (None, "run.json", None),
    "resume-without-jobs": (None, "run.json", None),
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


@pytest.mark.parametrize("name", list(_check_params()))
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
