"""One line that says why a torchrun job failed (run_bench.sh prints it last).

`python -m dpsync_bench.failure JOB_TMP [RUN_DIR]` reads what run_bench.sh kept of the job:
JOB_TMP/stderr and JOB_TMP/stdout (local rank 0's output and torchrun's report, as the
console showed them), JOB_TMP/logs (every other local rank's stdout and stderr, torchrun's
--log-dir), JOB_TMP/finished/<local rank> (written by a rank whose pytest session ended
normally) and RUN_DIR/current_case (the case that was running).

The cause is the rank that failed first on its own: killed by a signal torchrun did not send,
leaving with a code that is not our fail-fast, reporting an error that is not merely a peer
having gone, or leaving with code 0 before its session ended. A rank torchrun stopped with
SIGTERM after a peer failed is never the cause while anything else is known.
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from .exit_codes import EXIT_FAILED, EXIT_USAGE

# pytest's summary line for a failed check, e.g. "FAILED benchmarks/x.py::test[case-id]", and
# the benchmark's assertion, "E   AssertionError: case-id: what failed; ..."
_FAILED_TEST = re.compile(r"FAILED \S*\[([^\]]+)\]")
_WHY = re.compile(r"^E\s+AssertionError: (\S+): (.+)$", re.MULTILINE)
# torchrun's report: "rank : 1 (local_rank: 1)", then "exitcode : -9 (pid: ...)", "time : ..."
_REPORT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)")
_REPORT_FIELD = re.compile(r"^\s*(exitcode|time)\s*:\s*(\S+)")
# What a rank sees when a peer has gone: a symptom, not the cause.
_PEER_GONE = re.compile(
    r"connection (closed|reset)|remote worker crash|broken pipe|peer|timed? ?out", re.IGNORECASE
)
# A line that states an error: ours, pytest's INTERNALERROR with the exception, a traceback's
# last line.
_OURS = re.compile(r"^dpsync: ")
_INTERNAL = re.compile(r"^INTERNALERROR> \s*\S*(Error|Exception|Interrupt|Exit)\b.*")
_EXCEPTION = re.compile(r"^(E\s+)?[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b(:.*)?$")


@dataclass
class RankEnd:
    """What is known of how one local rank ended."""

    local_rank: int
    rank: int | None = None  # global rank, from torchrun's report
    code: int | None = None  # None: not in torchrun's report (exited 0, or still running)
    time: str = ""
    error: str = ""  # the last error line of its own output
    finished: bool | None = None  # its session ended normally; None: no markers kept

    @property
    def name(self) -> str:
        return f"rank {self.rank if self.rank is not None else self.local_rank}"

    @property
    def stopped_by_torchrun(self) -> bool:
        return self.code == -signal.SIGTERM

    @property
    def own_failure(self) -> bool:
        """Failed by itself, not as the symptom of a peer's failure."""
        if self.code is None:  # not in the report: it left with code 0, early or not
            return self.finished is False
        if self.code < 0:
            return not self.stopped_by_torchrun
        if self.code in (EXIT_FAILED, EXIT_USAGE):
            return bool(self.error) and not _PEER_GONE.search(self.error)
        return True

    def describe(self) -> str:
        if self.code is None:
            return f"{self.name} exited with code 0 before its session ended"
        if self.code < 0:
            try:
                return f"{self.name} was killed by {signal.Signals(-self.code).name}"
            except ValueError:
                pass
        return f"{self.name} exited with code {self.code}"


# torchrun's own report shares local rank 0's console; its lines are no rank's error.
_TORCHRUN = re.compile(r"torch\.distributed\.elastic|ChildFailedError")


def error_line(text: str) -> str:
    """The last line of a rank's output that states an error (ours first)."""
    lines = [line.rstrip() for line in text.splitlines() if not _TORCHRUN.search(line)]
    for pattern in (_OURS, _INTERNAL, _EXCEPTION):
        found = [line for line in lines if pattern.match(line)]
        if found:
            return found[-1].strip()[:300]
    return ""


def torchrun_report(stderr: str) -> dict[int, RankEnd]:
    """Every failed local rank in torchrun's report, by local rank."""
    ends: dict[int, RankEnd] = {}
    current = None
    for line in stderr.splitlines():
        if m := _REPORT_RANK.match(line):
            current = ends.setdefault(int(m.group(2)), RankEnd(int(m.group(2))))
            current.rank = int(m.group(1))
        elif current is not None and (m := _REPORT_FIELD.match(line)):
            if m.group(1) == "exitcode":
                current.code = int(m.group(2))
            else:
                current.time = m.group(2)
    return ends


def explain(
    console_err: str,
    outputs: dict[int, str],
    finished: set[int] | None,
    pytest_output: str = "",
    current_case: str = "",
) -> str:
    """The one line. `outputs`: each local rank's own output (rank 0: the console);
    `finished`: the local ranks whose session ended normally, None when nobody kept track."""
    failed = sorted(set(_FAILED_TEST.findall(pytest_output)))
    if failed:
        why = dict(_WHY.findall(pytest_output))
        first = next((why[c] for c in failed if c in why), "")
        return f"check failed in case(s) {','.join(failed)}" + (f": {first}" if first else "")
    ends = torchrun_report(console_err)
    for local_rank, text in outputs.items():
        end = ends.setdefault(local_rank, RankEnd(local_rank))
        end.error = error_line(text)
        end.finished = None if finished is None else local_rank in finished
    in_case = f" in case {current_case}" if current_case else ""
    # Earliest first: torchrun's time (seconds), then the report's own order.
    order = sorted(ends.values(), key=lambda e: (e.time or "~", e.code is None, e.local_rank))
    causes = [e for e in order if e.own_failure]
    if causes:
        cause = causes[0]
        line = cause.describe() + in_case
        if cause.error:
            return f"{line}: {cause.error}"
        seen = next((e.error for e in order if e.error), "")
        return line + (f"; first error seen: {seen}" if seen else "")
    symptoms = [e for e in order if e.error]
    if symptoms:
        return f"{symptoms[0].name}{in_case}: {symptoms[0].error}"
    stopped = [e for e in order if e.code is not None]
    if stopped:
        return stopped[0].describe() + in_case
    return f"see the log above{in_case}"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    job_tmp = Path(argv[0])
    run_dir = Path(argv[1]) if len(argv) > 1 and argv[1] else None
    console_err, console_out = _read(job_tmp / "stderr"), _read(job_tmp / "stdout")
    outputs = {0: console_err + console_out}
    # torchrun's --log-dir: <dir>/<run id>/attempt_<n>/<local rank>/{stdout,stderr}.log
    for log in sorted((job_tmp / "logs").glob("*/attempt_*/*/std*.log")):
        if log.parent.name.isdigit():
            local_rank = int(log.parent.name)
            outputs[local_rank] = outputs.get(local_rank, "") + _read(log)
    markers = job_tmp / "finished"
    finished = {int(p.name) for p in markers.glob("*") if p.name.isdigit()}
    pytest_output = "\n".join([console_out, *outputs.values()])
    case = _read(run_dir / "current_case").strip().splitlines() if run_dir else []
    finished_or_unknown = finished if markers.is_dir() else None
    print(explain(console_err, outputs, finished_or_unknown, pytest_output, "".join(case[:1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
