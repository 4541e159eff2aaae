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

from dpsync_bench.failure import error_line, explain, torchrun_report

CASE = "gloo_cpu-1x2-idle-isolated-r0"
PEER_GONE = (
    f"dpsync: rank 0: case {CASE}: running the case failed: RuntimeError: [pair.cc:553] "
    "Connection closed by peer [127.0.0.1]:55432. This is typically caused by a remote worker "
    "crashing."
)
RAISED = f"dpsync: rank 1: case {CASE}: RuntimeError: injected fault in case 1 on rank 1"


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


def outputs(rank0: str = "", rank1: str = "") -> dict[int, str]:
    return {0: rank0, 1: rank1}


def test_report_reads_every_failed_rank_with_its_code_and_time():
    ends = torchrun_report(report((0, 13), (1, -9)))
    assert {r: (e.rank, e.code) for r, e in ends.items()} == {0: (0, 13), 1: (1, -9)}
    assert ends[1].time == "2026-11-24_01:04:43"
    assert torchrun_report("no report here\n") == {}


@pytest.mark.parametrize(
    "torchrun",
    [report((0, 13), (1, -9)), report((1, -9), (0, 13))],
    ids=["peer-observed-first", "killed-observed-first"],
)
def test_killed_rank_is_blamed_whoever_torchrun_saw_first(torchrun):
    line = explain(torchrun, outputs(PEER_GONE), None, current_case=CASE)
    assert line.startswith(f"rank 1 was killed by SIGKILL in case {CASE}; "), line
    assert line.endswith(PEER_GONE)  # what the survivor saw stays, after the cause


def test_own_exit_code_is_named():
    line = explain(report((1, 7)), outputs(), None, current_case=CASE)
    assert line == f"rank 1 exited with code 7 in case {CASE}"


def test_start_up_error_in_the_log_is_quoted_and_sigterm_never_blamed():
    # The CI failure of issue 9: rank 1 hit an INTERNALERROR at start-up (pytest's exit 3),
    # torchrun then stopped rank 0 with SIGTERM; rank 1's text was only in its log.
    log = (
        "INTERNALERROR> Traceback (most recent call last):\n"
        'INTERNALERROR>   File "conftest.py", line 40, in pytest_configure\n'
        "INTERNALERROR> AttributeError: 'PosixPath' object has no attribute 'close'\n"
    )
    for torchrun in (report((0, -15), (1, 3)), report((1, 3), (0, -15))):
        line = explain(torchrun, outputs("", log), {0})
        assert line == (
            "rank 1 exited with code 3: INTERNALERROR> AttributeError: 'PosixPath' object "
            "has no attribute 'close'"
        ), line


def test_sigterm_is_named_only_when_nothing_else_is_known():
    line = explain(report((0, -15), (1, -11)), outputs(), None, current_case=CASE)
    assert line.startswith("rank 1 was killed by SIGSEGV"), line
    assert explain(report((0, -15)), outputs(), None) == "rank 0 was killed by SIGTERM"


def test_rank_that_left_with_code_0_before_the_end_is_the_cause():
    # rank 1 returned early: torchrun lists only rank 0 (our fail-fast after the peer left)
    line = explain(report((0, 13)), outputs(PEER_GONE, ""), set(), current_case=CASE)
    assert line.startswith(f"rank 1 exited with code 0 before its session ended in case {CASE}")
    # ... but a rank that finished normally is not
    assert explain(report((0, 13)), outputs(PEER_GONE, ""), {1}) == f"rank 0: {PEER_GONE}"


@pytest.mark.parametrize("order", ["raiser-first", "peer-first"])
def test_rank_that_raised_beats_peer_that_lost_it(order):
    # Both leave through fail() (exit 13): the cause is the rank whose error is its own.
    torchrun = report((0, 13), (1, 13)) if order == "raiser-first" else report((1, 13), (0, 13))
    line = explain(torchrun, outputs(PEER_GONE, RAISED), None, current_case=CASE)
    assert line == f"rank 1 exited with code 13 in case {CASE}: {RAISED}"


def test_only_peer_gone_lines_still_say_something():
    assert explain(report((0, 13)), outputs(PEER_GONE), None) == f"rank 0: {PEER_GONE}"


def test_torchrun_lines_on_the_console_are_no_rank_error():
    console = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n"
    assert error_line(console + "ValueError: bad\n" + console) == "ValueError: bad"
    # ours first, then pytest's INTERNALERROR, then a traceback's last line
    assert error_line("INTERNALERROR> KeyError: 'x'\nE   AssertionError: y") == (
        "INTERNALERROR> KeyError: 'x'"
    )
    assert error_line(f"{RAISED}\nINTERNALERROR> KeyError: 'x'") == RAISED
    assert error_line("collected 4 items\n4 passed") == ""


def test_failed_data_check_comes_first():
    pytest_out = (
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[b-case]\n"
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[a-case]\n"
        "FAILED benchmarks/test_sync_paths.py::test_sync_path[a-case]\n"
    )
    line = explain(report((0, 1)), outputs(), None, pytest_out, CASE)
    assert line == "check failed in case(s) a-case,b-case"
    why = "E       AssertionError: b-case: 3 wrong elements; idle gap p5 12 us < 300 us\n"
    line = explain(report((0, 1)), outputs(), None, pytest_out + why, CASE)
    assert (
        line
        == "check failed in case(s) a-case,b-case: 3 wrong elements; idle gap p5 12 us < 300 us"
    )


def test_nothing_known():
    assert explain("", {}, None, current_case=CASE) == f"see the log above in case {CASE}"
    assert explain("", {}, None) == "see the log above"


def test_command_reads_what_run_bench_kept(tmp_path: Path):
    job, run_dir = tmp_path / "job", tmp_path / "run"
    log_dir = job / "logs" / "rdzv" / "attempt_0" / "1"
    log_dir.mkdir(parents=True)
    (job / "finished").mkdir()
    run_dir.mkdir()
    (job / "stderr").write_text(PEER_GONE + "\n" + report((0, 13), (1, -9)))
    (job / "stdout").write_text("")
    (log_dir / "stderr.log").write_text("")
    (run_dir / "current_case").write_text(CASE + "\n")
    cmd = [sys.executable, "-m", "dpsync_bench.failure", str(job), str(run_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"rank 1 was killed by SIGKILL in case {CASE}; ")
    assert out.count("\n") == 1
    # a data check that failed on rank 1 is only in its redirected log
    (log_dir / "stdout.log").write_text(
        f"FAILED benchmarks/test_sync_paths.py::test_sync_path[{CASE}]\n"
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out == f"check failed in case(s) {CASE}\n"
    # no run directory (the job died before making one), no logs (a 1-rank job has none)
    shutil.rmtree(job / "logs")
    out = subprocess.run(cmd[:-1] + [""], capture_output=True, text=True, check=True).stdout
    assert out.startswith("rank 1 was killed by SIGKILL; ")
