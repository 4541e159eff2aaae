"""Retention and publishing: what stays in a results root, and what goes into a committed one.

A user's runs live outside the git tree (history.default_results_root); a committed run is
the deliberate result of `publish`, and a committed reference run stays within 1 MB.

publish RUN --to ROOT copies what a reader needs, in this order, while the copy stays within
--max-bytes: run.json, cases/*.json and the pytest-benchmark JSONs' statistics (what
--benchmark-compare-fail reads: required); then the raw samples of as many cases as fit,
smallest first, so that the most cases keep theirs; then pytest-benchmark's per-round data,
a copy of the pass samples, only if everything fits. The published run.json says what was
left out. Figures are the caller's to regenerate.

prune ROOT --keep N keeps the newest N runs of each machine kind and every reference run,
and removes the other schema-2 run directories; nothing else is touched.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from .. import results
from ..cases import UsageError
from ..results import ResultsError
from .history import RunInfo, runs_under

MAX_BYTES = 1_000_000
BENCH_GLOB = "pytest-benchmark-w*.json"
# What a run directory may hold; prune leaves a directory holding anything else alone.
RUN_ENTRIES = ("run.json", "cases", "samples", "plots", ".lock", BENCH_GLOB)


def _json_bytes(data) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


def _bench_files(run_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    """name -> (statistics only, with the per-round data) of each pytest-benchmark JSON."""
    out = {}
    for path in sorted(run_dir.glob(BENCH_GLOB)):
        data = results.load_json(path)
        full = _json_bytes(data)
        for bench in data.get("benchmarks") or []:
            (bench.get("stats") or {}).pop("data", None)
            # extra_info repeats the case file's summary: a published run keeps the pointer
            extra = bench.get("extra_info") or {}
            bench["extra_info"] = {k: extra[k] for k in ("case_id", "world_size") if k in extra}
        out[path.name] = (_json_bytes(data), full)
    return out


def _plan(run_dir: Path, run: dict, meta: dict, max_bytes: int):
    """(files to write, their total size): the rule of the module's doc."""
    files = {f"cases/{p.name}": p.read_bytes() for p in sorted((run_dir / "cases").glob("*.json"))}
    bench = _bench_files(run_dir)
    samples = {
        case_id: path.read_bytes()
        for case_id in sorted(run["cases"])
        if (path := results.samples_path(run_dir, case_id)).is_file()
    }
    kept = sorted(samples, key=lambda c: (len(samples[c]), c))
    with_rounds = True
    while True:
        plan = dict(files)
        plan.update({name: pair[1 if with_rounds else 0] for name, pair in bench.items()})
        plan.update({f"samples/{c}.npz": samples[c] for c in kept})
        dropped = sorted(set(run["cases"]) - set(kept))
        published = {
            "from_run": run_dir.name,
            "utc": results.utc_stamp(),
            "max_bytes": max_bytes,
            "cases_without_samples": dropped,
            "pytest_benchmark_round_data": "kept" if with_rounds else "dropped",
        }
        plan["run.json"] = json.dumps({**meta, "published": published}, indent=1).encode()
        total = sum(map(len, plan.values()))
        if total <= max_bytes:
            return plan, total, published
        if with_rounds and bench:  # the round data go first: the samples hold them too
            with_rounds = False
        elif kept:
            kept.pop()  # the largest samples go next
        else:
            raise ResultsError(
                f"{run_dir}: its summaries alone take {total} bytes, over --max-bytes {max_bytes}"
            )


def publish(run_dir: Path, to_root: Path, reference: bool = False, max_bytes: int = MAX_BYTES):
    """Copy a run into `to_root` (see the module's doc); returns (path, bytes, what was done)."""
    run_dir, to_root = Path(run_dir), Path(to_root)
    if max_bytes < 1:
        raise UsageError(f"--max-bytes must be positive, got {max_bytes}")
    run = results.load_run(run_dir)  # a run that doesn't validate is not published
    dest = to_root / run_dir.name
    if dest.exists():
        raise ResultsError(f"{dest} exists: a run is published once")
    meta = {**run["meta"], "reference": reference or run["meta"].get("reference") is True}
    plan, total, published = _plan(run_dir, run, meta, max_bytes)
    try:
        to_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=to_root))
    except OSError as e:
        raise ResultsError(f"cannot write to {to_root}: {e.strerror}") from None
    try:
        for name, blob in plan.items():
            (staging / name).parent.mkdir(exist_ok=True)
            (staging / name).write_bytes(blob)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        staging.rename(dest)  # a reader sees the whole run or none of it
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ResultsError(f"cannot write {dest}: {e.strerror}") from None
    return dest, total, published


def _is_plain_run(run: RunInfo, root: Path) -> str | None:
    """Why prune must not remove this directory, or None."""
    if run.dir.is_symlink() or run.dir.parent.resolve() != root.resolve():
        return "not a directory of the root itself"
    for entry in run.dir.iterdir():
        if not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in RUN_ENTRIES):
            return f"holds {entry.name!r}, which is no part of a run"
    return None


def prune(root: Path, keep: int, dry_run: bool = False, say=print) -> list[Path]:
    """Remove all but the newest `keep` runs of each machine kind, references aside."""
    if keep < 1:
        raise UsageError(f"--keep must be >= 1, got {keep}")
    root = Path(root)
    per_kind = defaultdict(list)
    for run in runs_under(root):  # readable schema-2 runs only, oldest first
        per_kind[run.machine_kind].append(run)
    removed = []
    for _, runs in sorted(per_kind.items()):
        for run in runs[:-keep]:
            if run.reference:
                continue
            why_not = _is_plain_run(run, root)
            if why_not:
                say(f"kept {run.dir}: {why_not}")
                continue
            if dry_run:
                say(f"would remove {run.dir}")
                removed.append(run.dir)
                continue
            try:
                with results.locked(run.dir):  # not a run being written or resumed
                    shutil.rmtree(run.dir)
            except (ResultsError, OSError) as e:  # in use, or not ours to remove
                say(f"kept {run.dir}: {e}")
                continue
            say(f"removed {run.dir}")
            removed.append(run.dir)
    return removed


# ---- command line ----------------------------------------------------------------------
def add_publish_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="the run directory to publish")
    parser.add_argument("--to", type=Path, required=True, metavar="ROOT", help="committed root")
    parser.add_argument("--reference", action="store_true", help="mark it a reference run")
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_BYTES, help="size limit of the copy (%(default)s)"
    )


def cmd_publish(args) -> int:
    """Copy a run into a committed results root, within a size limit."""
    dest, total, published = publish(args.run, args.to, args.reference, args.max_bytes)
    without = published["cases_without_samples"]
    print(
        f"published {dest} ({total} bytes"
        + (", reference" if args.reference else "")
        + f"; raw samples dropped for {len(without)} case(s)"
        + f"; pytest-benchmark round data {published['pytest_benchmark_round_data']})"
    )
    return 0


def add_prune_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="results root")
    parser.add_argument("--keep", type=int, required=True, help="newest runs kept per machine")
    parser.add_argument("--dry-run", action="store_true", help="say what would go; remove none")


def cmd_prune(args) -> int:
    """Keep the newest N runs per machine kind and every reference run; remove the rest."""
    removed = prune(args.root, args.keep, args.dry_run)
    print(f"{'would remove' if args.dry_run else 'removed'} {len(removed)} run(s)")
    return 0
