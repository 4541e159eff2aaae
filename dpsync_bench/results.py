"""Results on disk: one directory per run, one JSON file per finished case.

Layout (documented in results/README.md)::

    results/
      index.json                          runs known, newest last
      <machine_kind>_<YYYYmmddTHHMMSSZ>/  one run, never overwritten
        run.json                          machine, versions, sweep, command, status
        cases/<case_id>.json              one finished case each, written atomically
        pytest-benchmark.json             pytest-benchmark's own file (rank 0)
        summary.md, plots/                 the report

Every write is write-to-temp, fsync, rename: a crash leaves whole files or none.
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

RUN_SCHEMA = "dpsync-bench/run/1"
CASE_SCHEMA = "dpsync-bench/case/1"
INDEX_SCHEMA = "dpsync-bench/index/1"
STAT_KEYS = ("p50", "p90", "p99", "max", "min", "mean", "stdev", "n")
_SAFE = re.compile(r"[A-Za-z0-9._-]+")  # used with fullmatch: no trailing newline


class ResultsError(ValueError):
    """A missing, corrupt or foreign results file: one line, exit code 2."""


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
    if not os.access(root, os.W_OK):
        raise ResultsError(f"results directory {root} is not writable")
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
        return run
    raise ResultsError(f"no free run directory under {root} for {base}")


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold the run directory exclusively (a resumed run and a new one can't interleave)."""
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


def write_case(run_dir: Path, result: dict) -> Path:
    validate_case_result(result, "result")
    path = case_path(run_dir, result["case_id"])
    atomic_write_json(path, result)
    return path


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


def _stat_block(block, where: str) -> None:
    if not isinstance(block, dict):
        raise ResultsError(f"{where}: not a statistics object")
    for key in STAT_KEYS:
        v = block.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ResultsError(f"{where}: field {key!r} missing or not a finite number")
        if key == "n" and not isinstance(v, int):
            raise ResultsError(f"{where}: field 'n' is not a whole number")
        if key != "stdev" and v < 0:
            raise ResultsError(f"{where}: field {key!r} is negative")
    if not block["min"] <= block["p50"] <= block["p90"] <= block["p99"] <= block["max"]:
        raise ResultsError(f"{where}: quantiles out of order")
    if block["n"] < 1:
        raise ResultsError(f"{where}: no samples")


def validate_case_result(data, where: str) -> dict:
    """Check a case result's schema and sanity; raise ResultsError on anything off."""
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: not a JSON object")
    if data.get("schema") != CASE_SCHEMA:
        raise ResultsError(
            f"{where}: not a dpsync-bench case result (schema {data.get('schema')!r})"
        )
    for key, kind in (
        ("case_id", str),
        ("case", dict),
        ("stats", dict),
        ("machine_kind", str),
        ("raw", dict),
        ("check", dict),
    ):
        if not isinstance(data.get(key), kind):
            raise ResultsError(f"{where}: field {key!r} missing or of the wrong type")
    if not _SAFE.fullmatch(data["case_id"]):
        raise ResultsError(f"{where}: unsafe case id")
    for metric in ("pass_us", "stall_us"):
        _stat_block(data["stats"].get(metric), f"{where}: stats.{metric}")
    for metric in ("start_skew_us", "device_us"):  # optional, but whole when present
        if metric in data["stats"]:
            _stat_block(data["stats"][metric], f"{where}: stats.{metric}")
    raw_loop = data.get("raw_loop")
    if raw_loop is not None:
        if not isinstance(raw_loop, dict) or not isinstance(raw_loop.get("within_limit"), bool):
            raise ResultsError(f"{where}: raw_loop is not a raw-loop comparison")
        for key in ("mean_us", "harness_mean_us", "overhead"):
            v = raw_loop.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ResultsError(f"{where}: raw_loop.{key} missing or not a finite number")
    for key in ("wrong_elements", "wrong_decisions"):
        v = data["check"].get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ResultsError(f"{where}: check.{key} missing or not a count")
    raw = data["raw"].get("pass_us")
    if not isinstance(raw, list) or not raw or not all(isinstance(r, list) and r for r in raw):
        raise ResultsError(f"{where}: raw.pass_us must be a list of non-empty per-rank lists")
    if len({len(r) for r in raw}) != 1:
        raise ResultsError(f"{where}: raw.pass_us ranks hold different sample counts")
    for rank_samples in raw:
        for v in rank_samples:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ResultsError(f"{where}: raw.pass_us holds a non-number")
    return data


def load_case(path: Path) -> dict:
    return validate_case_result(load_json(path), str(path))


def load_run(run_dir: Path) -> dict:
    """run.json plus every case file of a run directory, validated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"{run_dir}: not a run directory")
    meta = load_json(run_dir / "run.json")
    if not isinstance(meta, dict) or meta.get("schema") != RUN_SCHEMA:
        raise ResultsError(f"{run_dir / 'run.json'}: not a dpsync-bench run file")
    where = run_dir / "run.json"
    if not isinstance(meta.get("machine_kind"), str) or not _SAFE.fullmatch(meta["machine_kind"]):
        raise ResultsError(f"{where}: no valid machine_kind")
    for key in ("started_utc", "status"):
        if key in meta and not isinstance(meta[key], str):
            raise ResultsError(f"{where}: field {key!r} is not text")
    for key in ("resumed_utc", "cases_planned"):
        if key in meta and not (
            isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])
        ):
            raise ResultsError(f"{where}: field {key!r} is not a list of text")
    cases = {}
    for path in sorted((run_dir / "cases").glob("*.json")):
        case = load_case(path)
        if case["machine_kind"] != meta["machine_kind"]:
            raise ResultsError(
                f"{path}: from machine {case['machine_kind']!r}, run is {meta['machine_kind']!r}"
            )
        cases[case["case_id"]] = case
    return {"dir": str(run_dir), "meta": meta, "cases": cases}


def case_passed(case: dict) -> bool:
    return case["check"]["wrong_elements"] == 0 and case["check"]["wrong_decisions"] == 0


def finished_case_ids(run_dir: Path) -> set[str]:
    """Cases on disk, valid and whose data check passed (what --resume skips); a bad file
    or a case that failed its check is run again."""
    done = set()
    for path in sorted((Path(run_dir) / "cases").glob("*.json")):
        try:
            case = load_case(path)
        except ResultsError:
            continue
        if case_passed(case):
            done.add(case["case_id"])
    return done


def update_index(root: Path, run_dir: Path, meta: dict, n_cases: int) -> None:
    """Record a run in results/index.json (rebuilt from disk if missing or corrupt)."""
    root = Path(root)
    index_path = root / "index.json"
    with open(root / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            index = load_json(index_path)
            if not isinstance(index, dict) or index.get("schema") != INDEX_SCHEMA:
                raise ResultsError("foreign index")
        except ResultsError:
            index = {"schema": INDEX_SCHEMA, "runs": []}
        name = Path(run_dir).name
        runs = [r for r in index["runs"] if isinstance(r, dict) and r.get("dir") != name]
        runs.append(
            {
                "dir": name,
                "machine_kind": meta.get("machine_kind"),
                "started_utc": meta.get("started_utc"),
                "status": meta.get("status"),
                "cases": n_cases,
            }
        )
        runs.sort(key=lambda r: str(r.get("started_utc")))
        index["runs"] = runs
        atomic_write_json(index_path, index)
