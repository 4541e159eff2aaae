"""`compare RUN`: the regression gate on the command line.

Exit codes: 0 no regression, 1 a regression (one line per failing case), 2 bad input (one
line, raised as UsageError / ResultsError for the caller to print).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from . import gate


def fraction(text: str) -> float:
    """'10%' or '0.1'."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction or percentage: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def add_compare_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="the run directory to judge")
    parser.add_argument(
        "--baseline", nargs="+", type=Path, default=[], metavar="RUN", help="judge against these"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="ROOT",
        help="without --baseline: the results root holding the history (default: the run's "
        "parent directory)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=gate.WINDOW,
        metavar="N",
        help="window: the last N earlier runs holding a case (%(default)s)",
    )
    parser.add_argument(
        "--min-history",
        type=int,
        default=gate.MIN_HISTORY,
        metavar="N",
        help="runs of history a case needs before it can fail (%(default)s)",
    )
    parser.add_argument(
        "--k", type=float, default=gate.K, help="noise multiple a change must pass (%(default)s)"
    )
    for stat, floor in gate.FLOORS.items():
        parser.add_argument(
            f"--{stat}-floor",
            type=fraction,
            default=floor,
            metavar="F",
            help=f"smallest {stat} growth that can fail, e.g. 10%% or 0.1 (%(default)s)",
        )
    parser.add_argument(
        "--consecutive",
        type=int,
        default=gate.CONSECUTIVE,
        metavar="N",
        help="a case fails only when N consecutive runs regress (%(default)s)",
    )
    parser.add_argument(
        "--fail-across-stack",
        action="store_true",
        help="fail also against runs of another torch, CUDA, NCCL or driver version",
    )
    parser.add_argument("--all", action="store_true", help="print the cases found ok too")


def cmd_compare(args) -> int:
    """Regression gate: a run against its history; exit 1 on a regression."""
    verdicts = gate.gate_run(
        args.run,
        history_root=args.results,
        baselines=args.baseline,
        window=args.history,
        min_history=args.min_history,
        k=args.k,
        p50_floor=args.p50_floor,
        p99_floor=args.p99_floor,
        consecutive=args.consecutive,
        fail_across_stack=args.fail_across_stack,
    )
    where = (
        f"the {len(args.baseline)} run(s) given"
        if args.baseline
        else f"up to {args.history} earlier runs under {args.results or args.run.parent}"
    )
    print(
        f"{args.run.name}: {len(verdicts)} cases, each against {where}; a regression is past "
        f"p50 +{args.p50_floor:.0%} / p99 +{args.p99_floor:.0%} and {args.k:g} x noise with "
        f"{args.min_history}+ runs of history, and fails after {args.consecutive} in a row"
    )
    for verdict in verdicts:
        if args.all or verdict.status != "ok":
            print(verdict.line())
    counts = Counter(v.status for v in verdicts)
    failing = sum(v.fails for v in verdicts)
    waiting = counts["regression"] - failing
    print(
        f"{failing} failing regression(s)"
        + (f" and {waiting} not failing (yet, or across software stacks)" if waiting else "")
        + f", {counts['cannot tell']} cannot tell, {counts['improved']} improved, "
        f"{counts['ok']} ok of {len(verdicts)} cases"
    )
    return 1 if failing else 0
