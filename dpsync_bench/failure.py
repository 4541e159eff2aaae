"""One line that says why a torchrun job failed (run_bench.sh prints it last).

`python -m dpsync_bench.failure JOB_TMP [RUN_DIR]` reads what run_bench.sh kept of the job:
JOB_TMP/stderr (every rank's stderr and torchrun's report), JOB_TMP/stdout and JOB_TMP/logs
(pytest's output), and RUN_DIR/current_case (the case that was running).
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from .exit_codes import EXIT_FAILED, EXIT_USAGE

# pytest's summary line for a failed data check, e.g. "FAILED benchmarks/x.py::test[case-id]"
_FAILED_TEST = re.compile(r"FAILED \S*\[([^\]]+)\]")
# torchrun's report: "rank : 1 (local_rank: 1)" followed by "exitcode : -9 (pid: ...)"
_REPORT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_REPORT_CODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
# What a rank sees when a peer has gone: a symptom, not the cause.
_PEER_GONE = re.compile(
    r"connection (closed|reset)|remote worker crash|broken pipe|peer", re.IGNORECASE
)


def exits(torchrun_stderr: str) -> list[tuple[int, int]]:
    """(rank, exit code) of every failed rank in torchrun's report, in report order."""
    found, rank = [], None
    for line in torchrun_stderr.splitlines():
        if m := _REPORT_RANK.match(line):
            rank = int(m.group(1))
        elif (m := _REPORT_CODE.match(line)) and rank is not None:
            found.append((rank, int(m.group(1))))
            rank = None
    return found


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


def explain(stderr: str, pytest_output: str = "", current_case: str = "") -> str:
    """The one line: a failed data check, else a rank that died on its own (a signal, an
    exit we did not make), else the first error a rank reported that is not just a peer
    having gone, else whatever is known."""
    failed = sorted(set(_FAILED_TEST.findall(pytest_output)))
    if failed:
        return f"data check failed in case(s) {','.join(failed)}"
    ours = [line for line in stderr.splitlines() if line.startswith("dpsync: ")]
    cause = next((line for line in ours if not _PEER_GONE.search(line)), ours[0] if ours else "")
    # Exit codes 2 and 3 are our own fail(), whose line is in `ours`. A rank killed by a signal or
    # leaving with another code is the cause even when a peer reported first (torchrun's
    # "root cause" is only the first failure it observed). SIGTERM is what torchrun sends the
    # ranks left when one fails: a cause only when no rank said anything.
    dead = [(r, c) for r, c in exits(stderr) if c not in (EXIT_USAGE, EXIT_FAILED)]
    dead = [(r, c) for r, c in dead if c != -signal.SIGTERM] or ([] if cause else dead)
    in_case = f" in case {current_case}" if current_case else ""
    if dead:
        rank, code = dead[0]
        return f"rank {rank} exited with {_describe(code)}{in_case}" + (
            f"; first error seen: {cause}" if cause else ""
        )
    if cause:
        return cause
    return f"see the log above{in_case}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    job_tmp = Path(argv[0])
    run_dir = Path(argv[1]) if len(argv) > 1 and argv[1] else None
    logs = sorted((job_tmp / "logs").rglob("*.log"))  # none for a 1-rank job
    pytest_output = "\n".join(_read(p) for p in [job_tmp / "stdout", *logs])
    case = _read(run_dir / "current_case").strip().splitlines() if run_dir else []
    print(explain(_read(job_tmp / "stderr"), pytest_output, case[0] if case else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
