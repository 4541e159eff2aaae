"""The one line run_bench.sh ends a failed job with, from torchrun's report in every order.

torchrun names as "root cause" only the first failure it observed, which races: a rank killed
with SIGKILL and its peer that saw the connection close may be reported either way round.
The line must name the killed rank both ways (a CI run caught the peer being blamed).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpsync_bench.failure import exits, explain

CASE = "gloo_cpu-1x2-idle-isolated-r0"
PEER_GONE = (
    f"dpsync: rank 0: case {CASE}: running the case failed: RuntimeError: [pair.cc:553] "
    "Connection closed by peer [127.0.0.1]:55432. This is typically caused by a remote worker "
    "crashing."
)
RAISED = f"dpsync: rank 1: case {CASE}: RuntimeError: injected fault"


def report(root: tuple[int, int], *others: tuple[int, int]) -> str:
    """torchrun's ChildFailedError report: `others` under Failures, then the root cause."""

    def entry(i: int, rank: int, code: int) -> str:
        return (
            f"  [{i}]:\n    time      : 2026-11-24_01:04:43\n    host      : localhost\n"
            f"    rank      : {rank} (local_rank: {rank})\n"
            f"    exitcode  : {code} (pid: {5000 + rank})\n    error_file: <N/A>\n"
        )

    failures = "".join(entry(i + 1, r, c) for i, (r, c) in enumerate(others))
    failures = failures or "  <NO_OTHER_FAILURES>\n"
    return (
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
        "  ======\n  pytest FAILED\n  ------\n  Failures:\n" + failures + "  ------\n"
        "  Root Cause (first observed failure):\n" + entry(0, *root) + "  ======\n"
    )


def test_exits_reads_every_failed_rank_in_report_order():
    assert exits(report((0, 3), (1, -9))) == [(1, -9), (0, 3)]
    assert exits(report((1, 7))) == [(1, 7)]
    assert exits("no report here\n") == []


@pytest.mark.parametrize(
    "torchrun",
    [report((0, 3), (1, -9)), report((1, -9), (0, 3))],
    ids=["peer-observed-first", "killed-observed-first"],
)
def test_killed_rank_is_blamed_whoever_torchrun_saw_first(torchrun):
    line = explain(PEER_GONE + "\n" + torchrun, current_case=CASE)
    assert line.startswith(f"rank 1 exited with code -9 (SIGKILL) in case {CASE}; "), line
    assert line.endswith(PEER_GONE)  # what the survivor saw stays, after the cause


def test_own_exit_code_is_named():
    line = explain(report((1, 7)), current_case=CASE)
    assert line == f"rank 1 exited with code 7 in case {CASE}"


def test_sigterm_is_a_cause_only_when_no_rank_said_anything():
    line = explain(report((0, -15), (1, -11)), current_case=CASE)
    assert line.startswith("rank 1 exited with code -11 (SIGSEGV)"), line
    assert explain(RAISED + "\n" + report((1, 3), (0, -15))) == RAISED
    assert explain(report((0, -15))) == "rank 0 exited with code -15 (SIGTERM)"


@pytest.mark.parametrize("order", ["raiser-first", "peer-first"])
def test_rank_that_raised_beats_peer_that_lost_it(order):
    # Both leave through fail() (exit 3): the cause is the line that is not a peer gone.
    lines = [RAISED, PEER_GONE] if order == "raiser-first" else [PEER_GONE, RAISED]
    stderr = "\n".join(lines) + "\n" + report((0, 3), (1, 3))
    assert explain(stderr, current_case=CASE) == RAISED


def test_only_peer_gone_lines_still_say_something():
    assert explain(PEER_GONE + "\n" + report((0, 3))) == PEER_GONE


def test_failed_data_check_comes_first():
    pytest_out = (
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[b-case]\n"
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[a-case]\n"
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[a-case]\n"
    )
    line = explain(report((0, 1)), pytest_out, CASE)
    assert line == "data check failed in case(s) a-case,b-case"


def test_nothing_known():
    assert explain("", current_case=CASE) == f"see the log above in case {CASE}"
    assert explain("") == "see the log above"


def test_command_reads_what_run_bench_kept(tmp_path: Path):
    job, run_dir = tmp_path / "job", tmp_path / "run"
    (job / "logs" / "rdzv" / "attempt_0" / "1").mkdir(parents=True)
    run_dir.mkdir()
    (job / "stderr").write_text(PEER_GONE + "\n" + report((0, 3), (1, -9)))
    (job / "stdout").write_text("")
    (run_dir / "current_case").write_text(CASE + "\n")
    cmd = [sys.executable, "-m", "dpsync_bench.failure", str(job), str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"rank 1 exited with code -9 (SIGKILL) in case {CASE}; ")
    assert out.count("\n") == 1
    # a data check that failed on rank 1 is only in its redirected log
    log = job / "logs" / "rdzv" / "attempt_0" / "1" / "stdout.log"
    log.write_text(f"FAILED benchmarks/test_sync_paths.py::test_sync_path[{CASE}]\n")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out == f"data check failed in case(s) {CASE}\n"
    # no run directory (the job died before making one), no logs (a 1-rank job has none)
    shutil.rmtree(job / "logs")
    out = subprocess.run(cmd[:-1] + [""], capture_output=True, text=True, check=True).stdout
    assert out.startswith("rank 1 exited with code -9 (SIGKILL); ")
