"""`nightly`: the nightly CI job as one command (torch-free: the sweep is a subprocess).

1. sweep      ./run_bench.sh [--out ROOT] [-- its options]: the default sweep for this
              machine, the whole run kept under ROOT (or take a run made already: --run DIR)
2. store      the run into the history store as `publish` copies it (within --max-bytes),
              then `prune --keep N` per machine kind; a store is --store DIR (a directory
              the CI keeps) or --store-branch BRANCH [--store-repo REPO] [--store-remote R]
              (a git branch of its own, committed and pushed: history_store.py)
3. gate       `compare RUN --results STORE`: the run against its machine kind's history
4. dashboard  `dashboard --results STORE --out SITE` (default SITE: the run's root/dashboard),
              the gate's report beside it as gate.txt; --summary FILE gets it in Markdown
Exit codes: 0 no regression; 1 a regression (one REGRESSION line per failing case, last) or
a failed sweep (its line, after storing what finished); 2 bad setup (one line). The gate's
production rule stands unless --gate changes it: --min-history 5 --consecutive 2, a case
fails on its second night in a row beyond the noise, with five nights of history before it
(so a new store fails nothing for six nights; the three-night test gives 2 and 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import subprocess
import sys
from pathlib import Path

from . import results
from .cases import UsageError
from .exit_codes import EXIT_USAGE
from .history_store import BranchStore, DirStore
from .report import compare, dashboard, gate, publish

RUN_BENCH = Path(__file__).resolve().parents[1] / "run_bench.sh"
RESULTS_LINE = "run_bench: results in "
KEEP = 60  # nights kept per machine kind in the store (git keeps the older ones)


class _GateParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"--gate: {message}")


def add_nightly_args(p: argparse.ArgumentParser) -> None:
    store = p.add_mutually_exclusive_group()
    store.add_argument("--store", type=Path, metavar="DIR", help="history store: a directory")
    store.add_argument(
        "--store-branch", metavar="BRANCH", help="history store: a git branch of its own"
    )
    p.add_argument("--store-repo", type=Path, metavar="REPO", help="its repository (default: .)")
    p.add_argument("--store-remote", metavar="REMOTE", help="fetch the branch from, push to")
    p.add_argument("--run", type=Path, metavar="DIR", help="a run made already: no sweep")
    p.add_argument("--out", type=Path, metavar="ROOT", help="run_bench.sh's --out")
    p.add_argument("--site", type=Path, metavar="DIR", help="the dashboard's folder")
    p.add_argument("--summary", type=Path, metavar="FILE", help="append the gate in Markdown")
    p.add_argument("--keep", type=int, default=KEEP, help="runs kept per machine (%(default)s)")
    p.add_argument("--max-bytes", type=int, default=publish.MAX_BYTES, help="per stored run")
    p.add_argument(
        "--gate",
        default="",
        metavar="ARGS",
        help="compare's options, e.g. '--min-history 2 --consecutive 1' (default: its own)",
    )
    p.add_argument("sweep", nargs=argparse.REMAINDER, help="after --: run_bench.sh's options")


def gate_namespace(args, run: Path, root: Path) -> argparse.Namespace:
    """`compare RUN --results ROOT [--gate's options]`, parsed by compare's own parser."""
    parser = _GateParser(prog="compare")
    compare.add_compare_args(parser)
    try:
        more = shlex.split(args.gate)
    except ValueError as e:
        raise UsageError(f"--gate: {e}") from None
    ns = parser.parse_args([str(run), "--results", str(root), *more])
    if ns.baseline or ns.results != root:
        raise UsageError("--gate: the history store is the baseline: no --baseline, --results")
    gate.Rule(ns.history, ns.min_history, ns.k, ns.p50_floor, ns.p99_floor, ns.consecutive)
    return ns


def run_sweep(out: Path | None, options: list[str]) -> tuple[Path | None, str]:
    """run_bench.sh, its stderr passed through: (the run directory, why it failed or '')."""
    if not RUN_BENCH.is_file():
        raise UsageError(f"{RUN_BENCH} is not here: run the sweep yourself and give --run DIR")
    cmd = [str(RUN_BENCH), *(["--out", str(out.absolute())] if out else []), *options]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
    run_dir, last = None, ""
    for line in proc.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        if line.startswith(RESULTS_LINE):
            run_dir = RUN_BENCH.parent / line[len(RESULTS_LINE) :].strip()
        last = line.strip() or last
    rc = proc.wait()
    if rc == EXIT_USAGE:
        raise UsageError(f"the sweep refused its options: {last}")
    return run_dir, "" if rc == 0 else (last or f"run_bench.sh exit {rc}")


def store_run(run: Path, store, args) -> str:
    """Publish the run into the store (unless it is there already), prune, save."""
    if run.parent.resolve() != store.root.resolve():
        dest, size, _ = publish.publish(run, store.root, max_bytes=args.max_bytes)
        print(f"nightly: stored {dest.name} ({size} bytes)")
    publish.prune(store.root, args.keep, say=lambda line: print(f"nightly: {line}"))
    return store.save(f"nightly: {run.name}")


def run_gate(ns: argparse.Namespace) -> tuple[int, str]:
    """compare's exit code and report (also printed)."""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        code = compare.cmd_compare(ns)
    sys.stdout.write(report.getvalue())
    return code, report.getvalue()


def summary_markdown(run: Path, store, verdict: str, failing: list[str], report: str) -> str:
    meta = results.load_meta(run)
    lines = [f"### dpsync-bench nightly: {verdict}", ""]
    lines.append(f"Run `{run.name}` on `{meta['machine_kind']}`; history: {store.describe()}.")
    lines += ["", *(f"- `{line}`" for line in failing), ""] if failing else [""]
    lines += ["<details><summary>gate report</summary>", "", "```text", report.rstrip()]
    return "\n".join([*lines, "```", "", "</details>", ""])


def _check(args) -> None:
    """Bad setup, found before any sweep: one line, exit 2."""
    if args.store is None and args.store_branch is None:
        raise UsageError("give a history store: --store DIR or --store-branch BRANCH")
    if (args.store_repo or args.store_remote) and args.store_branch is None:
        raise UsageError("--store-repo and --store-remote go with --store-branch")
    if args.keep < 1 or args.max_bytes < 1:
        raise UsageError("--keep and --max-bytes must be positive")
    if args.run is not None:
        results.load_run(args.run)  # ResultsError: one line, exit 2
        if args.sweep:
            raise UsageError("--run takes a run made already: no run_bench.sh options")


def cmd_nightly(args) -> int:
    """Nightly CI job: sweep, store into the history, gate, rebuild the dashboard."""
    args.sweep = args.sweep[1:] if args.sweep[:1] == ["--"] else args.sweep
    _check(args)
    gate_namespace(args, Path("RUN"), Path("ROOT"))  # bad gate options stop here, not later
    if args.store is not None:
        store = DirStore(args.store)
    else:
        store = BranchStore(args.store_branch, args.store_repo, args.store_remote)
    with store:
        run, failed = (args.run, "") if args.run else run_sweep(args.out, args.sweep)
        if run is None or not any(Path(run).glob("cases/*.json")):
            why = f"nightly: no case finished ({failed or 'run_bench.sh named no run'})"
            if args.summary:
                with open(args.summary, "a") as f:
                    f.write(f"### dpsync-bench nightly: {why}\n\n")
            print(why, file=sys.stderr)
            return 1
        print(f"nightly: {store_run(run, store, args)}")
        code, report = run_gate(gate_namespace(args, run, store.root))
        site = args.site or run.parent / "dashboard"
        print(f"nightly: dashboard {dashboard.build(store.root, site)}")
        results.write_atomic(site / "gate.txt", lambda f: f.write(report.encode()))
    failing = [line for line in report.splitlines() if line.startswith("REGRESSION")]
    verdict = f"REGRESSION in {len(failing)} case(s)" if code else "no regression"
    verdict = f"sweep failed ({failed}); {verdict}" if failed else verdict
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(summary_markdown(run, store, verdict, failing, report))
    print(f"nightly: {run.name}: {verdict}", file=sys.stderr)
    for line in failing:
        print(line, file=sys.stderr)
    return 1 if code or failed else 0
