"""The results on disk: what measuring writes and reporting reads (numpy; no torch).

One directory per run (a whole sweep, every job and world size of it)::

    <machine_kind>_<YYYYmmddTHHMMSSZ>/
      run.json                  schema run/2: machine, versions, code, command, jobs, status
      cases/<case_id>.json      schema case/2: one finished case's summary (statistics,
                                checks, cadence, forward, device time), small
      samples/<case_id>.npz     its raw samples: integer ns, one (ranks, passes) array per
                                figure, compressed; optional (a published run may drop them)
      pytest-benchmark-w<N>.json  pytest-benchmark's file of the job at world size N (stats)

Every write is temp file, fsync, rename: a crash leaves whole files or none. Files of the
first schema (case/1, run/1) are refused with one line: they predate the measurement fixes
whose figures they would be compared with.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from .stats import STAT_KEYS

RUN_SCHEMA = "dpsync-bench/run/2"
CASE_SCHEMA = "dpsync-bench/case/2"
# Per-pass figures, each a (ranks, passes) int64 array in ns; the first five add up per pass.
PARTS = ("row", "collective", "stall", "decide")
FIGURES = ("pass", *PARTS, "start", "arrive", "idle_gap", "phase", "remaining", "exposed")
_SAFE = re.compile(r"[A-Za-z0-9._-]+")  # used with fullmatch: no trailing newline


class ResultsError(ValueError):
    """A missing, corrupt or foreign results file: one line, exit code 2."""


# ---- writing ---------------------------------------------------------------------------
def write_atomic(path: Path, write) -> Path:
    """Temp file, fsync, rename (then fsync the directory): a reader or a crash sees the old
    file or the new one, never half. `write` gets the open binary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other readers
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
    write_atomic(path, lambda f: f.write(text.encode()))


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def create_run_dir(root: Path, machine_kind: str) -> Path:
    """A new directory named by machine kind and UTC time; never an existing one."""
    if not _SAFE.fullmatch(machine_kind):
        raise ResultsError(f"machine kind {machine_kind!r} must be letters, digits, . _ -")
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create results directory {root}: {e.strerror}") from None
    base = f"{machine_kind}_{utc_stamp()}"
    for n in range(1000):
        run = root / (base if n == 0 else f"{base}-{n}")
        try:
            run.mkdir()  # atomic: two runs at once can never get the same directory
        except FileExistsError:
            continue
        except OSError as e:
            raise ResultsError(f"cannot create {run}: {e.strerror}") from None
        (run / "cases").mkdir()
        (run / "samples").mkdir()
        return run
    raise ResultsError(f"no free run directory under {root} for {base}")


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold the run directory exclusively (two jobs can't write one run at once)."""
    fd = os.open(Path(run_dir) / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsError(f"{run_dir} is in use by another run") from None
        yield
    finally:
        os.close(fd)


def case_path(run_dir: Path, case_id: str) -> Path:
    if not _SAFE.fullmatch(case_id):
        raise ResultsError(f"unsafe case id {case_id!r}")
    return Path(run_dir) / "cases" / f"{case_id}.json"


def samples_path(run_dir: Path, case_id: str) -> Path:
    return case_path(run_dir, case_id).parent.parent / "samples" / f"{case_id}.npz"


def write_case(run_dir: Path, summary: dict, samples: dict[str, np.ndarray]) -> Path:
    """The samples first, then the summary: a summary on disk always has its samples."""
    validate_case(summary, "result")
    arrays = {name: np.asarray(a, dtype=np.int64) for name, a in samples.items()}
    target = samples_path(run_dir, summary["case_id"])
    target.parent.mkdir(exist_ok=True)
    write_atomic(target, lambda f: np.savez_compressed(f, **arrays))
    path = case_path(run_dir, summary["case_id"])
    atomic_write_json(path, summary)
    return path


# ---- reading -------------------------------------------------------------------------
def load_json(path: Path):
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise ResultsError(
            f"{path}: corrupt JSON ({e.msg}: line {e.lineno}, column {e.colno})"
        ) from None


def _schema(data, want: str, where: str) -> None:
    got = data.get("schema") if isinstance(data, dict) else None
    if got == want:
        return
    if isinstance(got, str) and got.rsplit("/", 1)[0] == want.rsplit("/", 1)[0]:
        raise ResultsError(
            f"{where}: schema {got}, from before the measurement fixes of 2026-11-30; this "
            f"version reads {want} only (re-run it, or read it with an older checkout)"
        )
    raise ResultsError(f"{where}: not a dpsync-bench file of schema {want} (got {got!r})")


def _stat_block(block, where: str) -> None:
    if not isinstance(block, dict):
        raise ResultsError(f"{where}: not a statistics object")
    for key in STAT_KEYS:
        v = block.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ResultsError(f"{where}: field {key!r} missing or not a finite number")
    if not isinstance(block["n"], int) or block["n"] < 1:
        raise ResultsError(f"{where}: field 'n' is not a positive whole number")
    order = [block[k] for k in ("min", "p5", "p50", "p90", "p99", "max")]
    if order != sorted(order):
        raise ResultsError(f"{where}: quantiles out of order")


def validate_case(data, where: str) -> dict:
    """Check a case summary's schema and sanity; raise ResultsError on anything off."""
    _schema(data, CASE_SCHEMA, where)
    for key, kind in (
        ("case_id", str),
        ("case", dict),
        ("stats", dict),
        ("machine_kind", str),
        ("check", dict),
        ("world_size", int),
    ):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ResultsError(f"{where}: field {key!r} missing or of the wrong type")
    if not _SAFE.fullmatch(data["case_id"]):
        raise ResultsError(f"{where}: unsafe case id")
    if "pass_us" not in data["stats"]:
        raise ResultsError(f"{where}: no stats.pass_us")
    for metric, block in data["stats"].items():
        _stat_block(block, f"{where}: stats.{metric}")
    for key in ("wrong_elements", "wrong_reads", "wrong_decisions", "passes_checked"):
        v = data["check"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ResultsError(f"{where}: check.{key} missing or not a count")
    if not isinstance(data["check"].get("failures"), list):
        raise ResultsError(f"{where}: check.failures missing")
    return data


def load_case(path: Path) -> dict:
    return validate_case(load_json(path), str(path))


def case_passed(case: dict) -> bool:
    """Data, reads and decisions right, and every labelled condition met."""
    return not case["check"]["failures"]


def load_samples(run_dir: Path, case_id: str) -> dict[str, np.ndarray]:
    """A case's raw samples; ResultsError if absent (a published run may have dropped them)."""
    path = samples_path(run_dir, case_id)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ResultsError(f"{path}: no raw samples kept for this case") from None
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: corrupt samples ({e})") from None


def load_meta(run_dir: Path) -> dict:
    where = Path(run_dir) / "run.json"
    meta = load_json(where)
    _schema(meta, RUN_SCHEMA, str(where))
    if not isinstance(meta.get("machine_kind"), str) or not _SAFE.fullmatch(meta["machine_kind"]):
        raise ResultsError(f"{where}: no valid machine_kind")
    for key in ("started_utc", "status"):
        if key in meta and not isinstance(meta[key], str):
            raise ResultsError(f"{where}: field {key!r} is not text")
    for key in ("jobs", "resumed_utc"):
        if key in meta and not isinstance(meta[key], list):
            raise ResultsError(f"{where}: field {key!r} is not a list")
    if not all(isinstance(j, dict) for j in meta.get("jobs", [])):
        raise ResultsError(f"{where}: a job record is not an object")
    return meta


def load_run(run_dir: Path) -> dict:
    """run.json plus every case summary of a run directory, validated (samples stay on
    disk: `load_samples` reads one case's when a figure needs them)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a run directory")
    meta = load_meta(run_dir)
    cases = {}
    for path in sorted((run_dir / "cases").glob("*.json")):
        case = load_case(path)
        if case["machine_kind"] != meta["machine_kind"]:
            raise ResultsError(
                f"{path}: from machine {case['machine_kind']!r}, run is {meta['machine_kind']!r}"
            )
        cases[case["case_id"]] = case
    return {"dir": str(run_dir), "meta": meta, "cases": cases}


def finished_case_ids(run_dir: Path) -> set[str]:
    """Cases on disk, valid and passing their checks (what --resume skips)."""
    done = set()
    for path in sorted((Path(run_dir) / "cases").glob("*.json")):
        try:
            case = load_case(path)
        except ResultsError:
            continue
        if case_passed(case) and samples_path(run_dir, case["case_id"]).is_file():
            done.add(case["case_id"])
    return done


def list_runs(root: Path) -> list[tuple[Path, dict]]:
    """(run directory, run.json) of every readable run under a results root, oldest first;
    read from the directories themselves, so a run copied in counts."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no results directory")
    found = []
    for meta_path in root.glob("*/run.json"):
        try:
            found.append((meta_path.parent, load_meta(meta_path.parent)))
        except ResultsError:
            continue
    return sorted(found, key=lambda r: (str(r[1].get("started_utc")), r[0].name))
