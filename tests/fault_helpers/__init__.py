"""Helpers for the dpsync-bench CI tests: run jobs with a hard time limit, build results.

`BenchProcess` starts `run_bench.sh` (or any command) in its own session, timestamps every
stderr line as it arrives and, when the hard limit passes, kills the whole process group
(the test can never hang). `make_record` builds one rank's record as the harness returns it,
`make_case_result` a real case result from such records (through summary.build_result).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_BENCH = REPO / "run_bench.sh"

TIMEOUT_S = 10  # --timeout of the fault jobs
FAST = ["--preset", "smoke", "--iters", "30", "--warmup", "5", "--timeout", str(TIMEOUT_S)]
ONE_CASE = ["--shapes", "2x1", "--cadences", "streaming"]  # bad-input runs: one short case

# Variables a torchrun job (or an outer test runner) may have set that must not leak into
# the jobs these tests start.
_LEAKY_ENV = (
    "DPSYNC_FAULT",
    "DPSYNC_RUN_DIR_FILE",
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "PYTEST_ADDOPTS",
    "PYTEST_CURRENT_TEST",
)

OUR_FRAME = re.compile(r'File "[^"]*(dpsync_bench|benchmarks|delayer_core|conftest\.py)')
PROGRESS = re.compile(r"^\[dpsync\] case (\d+)/(\d+) (\S+):")


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PYTHON"] = sys.executable  # run_bench.sh: the interpreter of this test run
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


@dataclasses.dataclass
class Job:
    args: list[str]
    rc: int | None  # None: killed at the hard limit
    wall_s: float
    stdout: str
    stderr_lines: list[tuple[float, str]]  # (seconds since start, line without newline)
    leftover: bool  # processes of its group still alive after it exited

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.stderr_lines)

    @property
    def nonempty_stderr(self) -> list[str]:
        return [line for _, line in self.stderr_lines if line.strip()]

    @property
    def last_line(self) -> str:
        lines = self.nonempty_stderr
        return lines[-1] if lines else ""

    def lines_starting(self, prefix: str) -> list[str]:
        return [line for _, line in self.stderr_lines if line.startswith(prefix)]

    def progress(self) -> list[tuple[float, int, int, str]]:
        """[dpsync] progress lines: (time, k, of, case_id)."""
        out = []
        for t, line in self.stderr_lines:
            m = PROGRESS.match(line)
            if m:
                out.append((t, int(m.group(1)), int(m.group(2)), m.group(3)))
        return out

    def describe(self) -> str:
        tail = "\n".join(self.nonempty_stderr[-25:])
        return f"$ {' '.join(self.args)}\nrc={self.rc} wall={self.wall_s:.1f}s\n{tail}"


class BenchProcess:
    """A command in its own session; `wait` enforces a hard limit on the whole group."""

    def __init__(self, args, env_extra=None, cwd=REPO) -> None:
        self.args = [str(a) for a in args]
        self._lines: list[tuple[float, str]] = []
        self._out: list[str] = []
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=job_env(env_extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pgid = self.proc.pid  # start_new_session: its own process group
        self._readers = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read_err(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append((time.monotonic() - self.t0, line))

    def _read_out(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self._out.append(raw.decode("utf-8", "replace"))

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover
            return True
        return True

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)

    def wait(self, limit_s: float) -> Job:
        remaining = max(0.1, limit_s - (time.monotonic() - self.t0))
        try:
            rc = self.proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self._kill_group()
            self.proc.wait()
            rc = None
        wall = time.monotonic() - self.t0
        # Whatever it started must be gone soon after it exits (a rank left behind, still
        # sleeping or waiting on a collective, is a hang in the background).
        deadline = time.monotonic() + 10
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        leftover = self._group_alive()
        self._kill_group()
        for t in self._readers:
            t.join(timeout=10)
        return Job(self.args, rc, wall, "".join(self._out), list(self._lines), leftover)


def run_bench(args, env_extra=None, limit_s: float = 120) -> Job:
    return BenchProcess([str(RUN_BENCH), *map(str, args)], env_extra).wait(limit_s)


def torchrun_benchmarks(*args, nproc: int = 2) -> list:
    """argv of a real benchmark job: torchrun over pytest on benchmarks/ (no run_bench.sh)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(nproc),
        "-m", "pytest", str(REPO / "benchmarks"), "-q", "-p", "no:cacheprovider", *args,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dirs(out: Path) -> list[Path]:
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and (p / "cases").is_dir())


def temp_files(root: Path) -> list[Path]:
    """Partial files an interrupted atomic write would leave (pathlib's glob sees dotfiles)."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp"))


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def smoke_case_ids(world: int = 2, **sweep) -> list[str]:
    from dpsync_bench.cases import Sweep

    kw = dict(preset="smoke", iters=30, warmup=5)
    kw.update(sweep)
    return [c.case_id for c in Sweep(**kw).cases(world, False)]


# ---- synthetic results -------------------------------------------------------------------
CLEAN = {"wrong_elements": 0, "wrong_reads": 0, "wrong_decisions": 0}


def make_record(
    pass_ns,
    *,
    stall_ns=None,
    start_ns=None,
    arrive_ns=None,
    offset_ns=0,
    idle_gap_ns=(),
    phase_ns=(),
    forward_instants=None,
    checks=None,
    **extra,
):
    """One rank's record as `Harness.run_case` returns it (samples through `loop.to_arrays`,
    so their names and types are the harness's). Parts: row = pass/4, decide = pass/8,
    stall as given (0), collective the rest. `extra`: cadence, forward, device,
    raw_block_means_ns, path, gpu_state."""
    from dpsync_bench.measure.loop import Samples, to_arrays

    n = len(pass_ns)
    passes = [int(p) for p in pass_ns]
    stall = [int(v) for v in stall_ns] if stall_ns is not None else [0] * n
    row, decide = [p // 4 for p in passes], [p // 8 for p in passes]
    collective = [p - r - s - d for p, r, s, d in zip(passes, row, stall, decide, strict=True)]
    start = list(start_ns) if start_ns is not None else [1_000_000 * i for i in range(n)]
    arrive = (
        list(arrive_ns)
        if arrive_ns is not None
        else [t + r for t, r in zip(start, row, strict=True)]
    )
    end = [t + p for t, p in zip(start, passes, strict=True)]
    samples = Samples(
        pass_ns=passes, row_ns=row, collective_ns=collective, stall_ns=stall, decide_ns=decide,
        start_ns=start, arrive_ns=arrive, end_ns=end, idle_gap_ns=list(idle_gap_ns),
        phase_ns=list(phase_ns),
    )  # fmt: skip
    record = {
        "samples": to_arrays(samples, offset_ns, forward_instants),
        "checks": {**CLEAN, "passes_checked": n, **(checks or {})},
        "path": {},
        "gpu_state": [None, None],
    }
    record.update(extra)
    return record


def isolated_detail(period_ns=2_000_000, late_fraction=0.0, allowance_ns=100_000) -> dict:
    """The harness's record of an isolated case's attempts (one)."""
    attempt = {"period_ns": period_ns, "allowance_ns": allowance_ns,
               "late_fraction": late_fraction, "short_gaps": False}  # fmt: skip
    return {"allowance_ns": allowance_ns, "attempts": [attempt], "idle_wait": "spin"}


def make_case_result(case=None, ranks: int = 2, iters: int = 20, machine_kind="test-box"):
    """(summary, samples) of a passing case, through `summary.build_result`, from
    deterministic per-rank records (an isolated case by default)."""
    from dpsync_bench.cases import Case
    from dpsync_bench.measure.summary import build_result

    case = case or Case("gloo_cpu", f"{ranks}x1", cadence="isolated", iters=iters, warmup=5)
    records = []
    for r in range(ranks):
        extra = {}
        if case.cadence == "isolated":
            extra["cadence"] = isolated_detail()
            extra["idle_gap_ns"] = [1_500_000 + 1_000 * ((i + r) % 7) for i in range(iters)]
        if case.cadence == "streaming" and not case.forward_ms:
            extra["raw_block_means_ns"] = [190_000.0 + 500 * b for b in range(iters // 10)]
        records.append(
            make_record(
                [200_000 + 1000 * ((7 * i + 13 * r) % 17) for i in range(iters)],
                stall_ns=[(i * r) % 5 * 100 for i in range(iters)],
                start_ns=[1_000_000 * i + 500 * r for i in range(iters)],
                **extra,
            )
        )
    return build_result(case, records, machine_kind, time.time())
