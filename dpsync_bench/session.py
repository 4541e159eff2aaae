"""A sweep from start to finish on every rank: validate, join, agree, run, write, report.

Bad input is refused before any process group exists (UsageError -> one line, exit 2).
Every rank computes the same case list and proves it (a fingerprint compared across ranks);
rank 0 alone writes files. Each finished case is on disk before the next one starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import results
from .cases import Case, Sweep, UsageError, check_environment, sweep_fingerprint
from .dist import DEFAULT_TIMEOUT_S, console, env_int, fail, first_line
from .exit_codes import EXIT_USAGE

# Testing only: "KIND@RANK:CASE", CASE a case ordinal or "start" (pytest start-up, before any
# case). exit0 leaves with code 0 mid-job, as a rank that returns early would.
FAULT_ENV = "DPSYNC_FAULT"
FAULT_KINDS = ("kill", "raise", "sleep", "exit", "exit0", "corrupt")
AT_START_UP = -1


def parse_fault(spec: str | None) -> tuple[str, int, int] | None:
    """DPSYNC_FAULT's KIND@RANK:CASE, checked before anything starts (UsageError)."""
    if not spec:
        return None
    try:
        kind, where = spec.split("@")
        rank_text, case_text = where.split(":")
        at_rank = int(rank_text)
        at_case = AT_START_UP if case_text == "start" else int(case_text)
    except ValueError:
        raise UsageError(f"{FAULT_ENV}={spec!r} is not KIND@RANK:CASE") from None
    if kind not in FAULT_KINDS or at_rank < 0 or at_case < AT_START_UP:
        raise UsageError(
            f"{FAULT_ENV}={spec!r}: kind is one of {', '.join(FAULT_KINDS)}, "
            "rank is non-negative, case is a non-negative ordinal or 'start'"
        )
    return kind, at_rank, at_case


def inject_fault(rank: int, ordinal: int) -> bool:
    """Fail on purpose where DPSYNC_FAULT says (the fault-matrix tests use this); True means
    "corrupt the gathered buffer in this case"."""
    fault = parse_fault(os.environ.get(FAULT_ENV))
    if fault is None or fault[1:] != (rank, ordinal):
        return False
    kind = fault[0]
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "raise":
        where = "at start-up" if ordinal == AT_START_UP else f"in case {ordinal}"
        raise RuntimeError(f"injected fault {where} on rank {rank}")
    elif kind == "sleep":
        time.sleep(3600)
    elif kind in ("exit", "exit0"):
        os._exit(0 if kind == "exit0" else 7)
    return kind == "corrupt"


def fault_at_start_up(rank: int) -> None:
    """DPSYNC_FAULT=KIND@RANK:start fires here, as pytest configures, before any case."""
    with contextlib.suppress(UsageError):  # a bad spec is refused later, with one line
        inject_fault(rank, AT_START_UP)


@dataclass
class Options:
    sweep: Sweep = field(default_factory=Sweep)
    out: str | None = None  # results root; None: write no run directory
    resume: str | None = None  # an existing run directory to complete
    machine_kind: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Recorded in run.json: run_bench.sh passes its own command line, else this argv.
    command: str = field(
        default_factory=lambda: os.environ.get("DPSYNC_COMMAND") or shlex.join(sys.argv)
    )
    resumed_meta: dict | None = field(default=None, repr=False)  # set by validate()

    def validate(self) -> None:
        if not self.timeout_s > 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.out is not None and self.resume is not None:
            raise UsageError("give either an output root or --resume DIR, not both")
        parse_fault(os.environ.get(FAULT_ENV))
        if self.resume is not None:
            try:
                self.resumed_meta = results.load_run(Path(self.resume))["meta"]
                with results.locked(Path(self.resume)):  # in use by a running job?
                    pass
            except (results.ResultsError, OSError) as e:
                raise UsageError(f"--resume: {e}") from None
        if self.out is not None:
            _check_writable(Path(self.out))


def _check_writable(root: Path) -> None:
    """Try what creating the results root needs: make (and remove) a uniquely named
    directory in its nearest existing ancestor. Only trying tells (root passes os.access on
    /proc); unique names keep the ranks, which all validate at once, out of each other's way;
    and nothing is left behind."""
    existing = root.absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.rmdir(tempfile.mkdtemp(prefix=".dpsync-probe-", dir=existing))
    except OSError as e:
        raise UsageError(f"results directory {root} is not writable ({e.strerror})") from None


def plan(options: Options) -> list[Case]:
    """The case list for this job, checked against this node; raises UsageError."""
    import torch

    options.validate()
    world = env_int("WORLD_SIZE", 1)
    local_world = env_int("LOCAL_WORLD_SIZE", 1)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cases = options.sweep.cases(world, cuda_devices > 0)
    check_environment(cases, world, local_world, cuda_devices)
    meta = options.resumed_meta or {}
    planned = meta.get("cases_planned")
    same = meta.get("sweep_fingerprint", sweep_fingerprint(cases)) == sweep_fingerprint(cases)
    if planned is not None and (planned != [c.case_id for c in cases] or not same):
        raise UsageError(
            f"--resume {options.resume}: give the sweep options of that run "
            f"(it planned {len(planned)} cases; these options plan {len(cases)}, not all the same)"
        )
    return cases


class SweepRunner:
    def __init__(self, options: Options) -> None:
        self.options = options
        try:
            self.cases = plan(options)
        except UsageError as e:
            fail(str(e), EXIT_USAGE)
        self.ctx = None
        self.session = None
        self.run_dir: Path | None = None
        self.done: set[str] = set()
        self.results: dict[str, dict] = {}
        self._lock = None
        self._t0 = time.monotonic()
        self._ran = 0

    # ---- start ------------------------------------------------------------------------
    def start(self) -> SweepRunner:
        from .dist import init
        from .harness import BenchSession
        from .machine import default_machine_kind, host_gpu_floor, machine_info

        ctx = self.ctx = init(
            self.options.timeout_s, want_cuda=any(c.needs_cuda for c in self.cases)
        )
        prints = ctx.all_gather_object(sweep_fingerprint(self.cases))
        if len(set(prints)) != 1:
            fail(
                f"rank {ctx.rank}: ranks planned different sweeps (GPU counts differ per node?)",
                EXIT_USAGE,
            )
        info = machine_info() if ctx.is_leader else None
        floors = ctx.all_gather_object(host_gpu_floor(ctx.device))
        offsets = ctx.all_gather_object(ctx.clock_offset_ns)
        if info is not None:
            info["host_gpu_floor"] = {"start_per_rank": floors}
            info["clocks"] = {"same_host": ctx.same_host, "offset_to_rank0_ns": offsets}
        kind = self.options.machine_kind or (default_machine_kind(info) if info else None)
        kind = ctx.broadcast_object(kind)
        self.session = BenchSession(ctx, kind)
        self.machine = info
        run_dir, done, error = None, [], None
        if ctx.is_leader:
            try:
                run_dir, done = self._open_run_dir(kind, info)
            except (results.ResultsError, OSError) as e:
                error = str(e)
        run_dir, done, error = ctx.broadcast_object((run_dir, done, error))
        if error:
            fail(error, EXIT_USAGE)
        self.run_dir = Path(run_dir) if run_dir else None
        self.done = set(done)
        self._todo = sum(c.case_id not in self.done for c in self.cases)
        note = os.environ.get("DPSYNC_RUN_DIR_FILE")  # run_bench.sh learns the directory here
        if note and ctx.is_leader and self.run_dir is not None:
            Path(note).write_text(f"{self.run_dir}\n")
        return self

    def _open_run_dir(self, kind: str, info: dict) -> tuple[str | None, list[str]]:
        opts = self.options
        if opts.resume:  # validate() already loaded and checked it
            run_dir = Path(opts.resume)
            meta = opts.resumed_meta
            if meta["machine_kind"] != kind:
                raise results.ResultsError(
                    f"--resume {run_dir}: recorded on {meta['machine_kind']!r}, this is {kind!r}"
                )
            done = sorted(results.finished_case_ids(run_dir))
        elif opts.out:
            run_dir, done = results.create_run_dir(Path(opts.out), kind), []
        else:
            return None, []
        self._lock = results.locked(run_dir)
        self._lock.__enter__()
        self._write_meta(run_dir, kind, info, status="running")
        return str(run_dir), done

    def _write_meta(self, run_dir: Path, kind: str, info: dict, status: str) -> None:
        meta = {
            "schema": results.RUN_SCHEMA,
            "machine_kind": kind,
            "started_utc": results.utc_stamp(),
            "status": status,
            "command": self.options.command,
            "world_size": self.ctx.world_size,
            "nnodes": env_int("GROUP_WORLD_SIZE", 1)
            if "GROUP_WORLD_SIZE" in os.environ
            else max(1, self.ctx.world_size // max(1, self.ctx.local_world_size)),
            "sweep": asdict(self.options.sweep),
            "cases_planned": [c.case_id for c in self.cases],
            "sweep_fingerprint": sweep_fingerprint(self.cases),
            "timeout_s": self.options.timeout_s,
            "machine": info,
        }
        old = self.options.resumed_meta
        if old is not None:  # a resumed run keeps its start time and history
            meta["started_utc"] = old.get("started_utc", meta["started_utc"])
            meta["resumed_utc"] = old.get("resumed_utc", []) + [results.utc_stamp()]
        results.atomic_write_json(Path(run_dir) / "run.json", meta)
        self.meta = meta

    # ---- cases ------------------------------------------------------------------------
    def should_run(self, case: Case) -> bool:
        return case.case_id not in self.done

    def run(self, case: Case) -> dict:
        # A rank that raised and went on would pair its next collectives with the other
        # ranks' current case: any failure here ends the whole job, with one line.
        try:
            if self.ctx.is_leader and self.run_dir is not None:  # names the case if we die
                (self.run_dir / "current_case").write_text(case.case_id + "\n")
            corrupt = inject_fault(self.ctx.rank, self._ran)
            result = self.session.run_case(case, corrupt=corrupt)
            self.results[case.case_id] = result
            if self.ctx.is_leader and self.run_dir is not None:
                results.write_case(self.run_dir, result)
        except Exception as e:
            fail(f"rank {self.ctx.rank}: case {case.case_id}: {first_line(e)}")
        self._ran += 1
        self._progress(case, result)
        return result

    def _progress(self, case: Case, result: dict) -> None:
        if not self.ctx.is_leader:
            return
        k = self._ran
        elapsed = time.monotonic() - self._t0
        eta = elapsed / k * (self._todo - k) if k else 0.0
        s = result["stats"]
        console(
            f"[dpsync] case {k}/{self._todo} {case.case_id}: pass p50 {s['pass_us']['p50']:.1f} "
            f"p99 {s['pass_us']['p99']:.1f} us, stall p50 {s['stall_us']['p50']:.1f} us "
            f"(elapsed {elapsed:.0f}s, ETA {eta:.0f}s)"
        )

    # ---- end --------------------------------------------------------------------------
    def finish(self, ok: bool = True) -> None:
        if self.ctx is None:
            return
        if self.ctx.is_leader and self.run_dir is not None:
            (self.run_dir / "current_case").unlink(missing_ok=True)
            n = len(results.finished_case_ids(self.run_dir))
            self.meta["status"] = "complete" if ok and n == len(self.cases) else "incomplete"
            self.meta["finished_utc"] = results.utc_stamp()
            self.meta["cases_done"] = n
            if self.machine is not None and "host_gpu_floor" in self.machine:
                from .machine import host_gpu_floor

                self.machine["host_gpu_floor"]["end_rank0"] = host_gpu_floor(self.ctx.device)
            results.atomic_write_json(self.run_dir / "run.json", self.meta)
            results.update_index(self.run_dir.parent, self.run_dir, self.meta, n)
        if self._lock is not None:
            self._lock.__exit__(None, None, None)


# One table of options for every entry point (pytest's --dpsync-*, the CLI's --*).
OPTION_SPECS = (
    ("preset", str, "auto", "sweep preset: auto (gpu with CUDA, else cpu), cpu, gpu, smoke"),
    ("paths", str, None, "comma-separated sync paths (default: the preset's)"),
    ("shapes", str, None, "comma-separated DPxTP shapes covering the world (default: Nx1,1xN)"),
    ("forward-ms", str, None, "comma-separated forward durations in ms; 0 = idle GPU"),
    ("cadences", str, None, "comma-separated: isolated, streaming"),
    ("variants", str, None, "on/off: no-barrier, fine-kernel, high-priority extras"),
    ("iters", int, None, "timed iterations per idle case (default 1000)"),
    ("forward-iters", int, None, "timed iterations per case with a forward in flight"),
    ("warmup", int, None, "warm-up iterations per case (default 100)"),
    ("repeat", int, 1, "run the whole sweep this many times (stability check)"),
    ("out", str, None, "results root: a new run directory is created under it"),
    ("resume", str, None, "an existing run directory: run only its missing cases"),
    ("machine-kind", str, None, "label for the machine (default: from the hardware)"),
    ("timeout", float, DEFAULT_TIMEOUT_S, "seconds before a collective gives up"),
)


def options_from(get) -> Options:
    """Build Options from a getter of option values (by name, '-' as in the table)."""
    from .cases import parse_list

    variants = get("variants")
    if variants not in (None, "on", "off"):
        raise UsageError(f"variants must be on or off, got {variants!r}")
    sweep = Sweep(
        preset=get("preset"),
        paths=parse_list(get("paths")),
        shapes=parse_list(get("shapes")),
        forward_ms=parse_list(get("forward-ms"), float),
        cadences=parse_list(get("cadences")),
        variants=None if variants is None else variants == "on",
        iters=get("iters"),
        forward_iters=get("forward-iters"),
        warmup=get("warmup"),
        repeat=get("repeat"),
    )
    return Options(
        sweep=sweep,
        out=get("out"),
        resume=get("resume"),
        machine_kind=get("machine-kind"),
        timeout_s=get("timeout"),
    )
