"""The runs under a results root and what makes two of them comparable: the machine kind,
the world sizes, the software stack (torch, CUDA, NCCL, driver) and the project's code.

A run marked ``"reference": true`` in its run.json is one published on purpose (see
publish.py); retention never removes it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .. import results

STACK_KEYS = ("torch", "cuda", "nccl", "driver")


def default_results_root() -> Path:
    """Where run_bench.sh writes a user's runs: outside the checkout, as it decides."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(os.environ.get("DPSYNC_RESULTS") or Path(data) / "dpsync-bench" / "results")


@dataclass(frozen=True)
class RunInfo:
    """A run directory and its run.json (its cases are read only when needed)."""

    dir: Path
    meta: dict

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def machine_kind(self) -> str:
        return self.meta["machine_kind"]

    @property
    def order(self) -> tuple[str, str]:  # runs started in the same second: -1, -2 suffixes
        return (str(self.meta.get("started_utc")), self.dir.name)

    @property
    def world_sizes(self) -> tuple[int, ...]:
        sizes = {job.get("world_size") for job in self.meta.get("jobs") or []}
        return tuple(sorted(n for n in sizes if isinstance(n, int)))

    @property
    def reference(self) -> bool:
        return self.meta.get("reference") is True

    @property
    def stack(self) -> dict[str, str | None]:
        versions = (self.meta.get("machine") or {}).get("versions") or {}
        return {key: versions.get(key) for key in STACK_KEYS}

    @property
    def code(self) -> dict:
        return self.meta.get("code") or {}


def info_of(run_dir: Path) -> RunInfo:
    return RunInfo(Path(run_dir), results.load_meta(Path(run_dir)))


def runs_under(root: Path) -> list[RunInfo]:
    """Every readable schema-2 run under a results root, oldest first."""
    return [RunInfo(path, meta) for path, meta in results.list_runs(Path(root))]


def earlier_runs(run: RunInfo, root: Path) -> list[RunInfo]:
    """Runs of the same machine kind under root that started before `run`, oldest first."""
    me = run.dir.resolve()
    return [
        other
        for other in runs_under(root)
        if other.machine_kind == run.machine_kind
        and other.order < run.order
        and other.dir.resolve() != me
    ]


def stack_changes(base: RunInfo, run: RunInfo) -> list[str]:
    """'torch 2.11.0 -> 2.12.0' for each part of the software stack that differs."""
    a, b = base.stack, run.stack
    return [f"{key} {a[key]} -> {b[key]}" for key in STACK_KEYS if a[key] != b[key]]


def code_id(code: dict) -> str:
    """A run's code as a reader recognizes it: short commit, source hash, dirty or not."""
    commit = str(code.get("commit") or "unknown")[:9]
    dirty = "+dirty" if code.get("dirty") else ""
    return f"{commit}{dirty} (sources {code.get('source_sha256') or 'unknown'})"


def same_code(a: RunInfo, b: RunInfo) -> bool:
    """The measured sources' hash decides (a commit can be dirty); the commit where no hash."""
    hashed = a.code.get("source_sha256") and b.code.get("source_sha256")
    key = "source_sha256" if hashed else "commit"
    return a.code.get(key) == b.code.get(key)


def machine_label(meta: dict) -> str:
    """'smoke-x2: 2x NVIDIA H200; torch 2.11.0+cu130, cuda 13.0, nccl 2.28.9, driver ...'."""
    info = RunInfo(Path("."), meta)
    gpus = [g.get("name") for g in (meta.get("machine") or {}).get("gpus") or []]
    hardware = f"{len(gpus)}x {gpus[0]}" if gpus else "no GPU"
    stack = ", ".join(f"{k} {v}" for k, v in info.stack.items() if v)
    return f"{meta['machine_kind']}: {hardware}; {stack or 'versions unknown'}"


def index_entry(run: RunInfo) -> dict:
    """What a listing of runs shows about one run."""
    return {
        "run": run.name,
        "dir": str(run.dir),
        "machine_kind": run.machine_kind,
        "world_sizes": list(run.world_sizes),
        "started_utc": run.meta.get("started_utc"),
        "status": run.meta.get("status"),
        "reference": run.reference,
        "stack": run.stack,
        "code": {k: run.code.get(k) for k in ("commit", "dirty", "source_sha256")},
        "cases": len(list((run.dir / "cases").glob("*.json"))),
    }


# ---- command line ----------------------------------------------------------------------
def add_runs_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results root (default: $DPSYNC_RESULTS, else $XDG_DATA_HOME/dpsync-bench/results)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON list of index entries")


def cmd_runs(args) -> int:
    """The runs of a results root, per machine kind and world size, oldest first."""
    entries = [index_entry(r) for r in runs_under(args.results or default_results_root())]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    groups = defaultdict(list)
    for e in entries:
        groups[(e["machine_kind"], tuple(e["world_sizes"]))].append(e)
    for (kind, worlds), group in sorted(groups.items()):
        print(f"{kind}, world size {'+'.join(map(str, worlds)) or '?'}: {len(group)} run(s)")
        for e in group:
            stack = " ".join(f"{k} {v}" for k, v in e["stack"].items() if v)
            print(
                f"  {e['run']}  {e['status'] or '?'}  {e['cases']} cases  {stack}  "
                f"code {code_id(e['code'])}{'  [reference]' if e['reference'] else ''}"
            )
    return 0
