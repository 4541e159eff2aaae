"""`python -m dpsync_bench COMMAND ...`: everything around a run that is not measuring.

Exit codes: 0 fine, 1 a regression (compare), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cases import UsageError
from .exit_codes import EXIT_USAGE
from .results import ResultsError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage + error by default)
        sys.stderr.write(f"dpsync: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    from .measure.runner import OPTION_SPECS

    for name, kind, default, help_text in OPTION_SPECS:
        p.add_argument(f"--{name}", type=kind, default=default, help=help_text)
    p.add_argument("--nproc", type=int, default=None, help="ranks on this node (for check)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes in the job (for check)")


def cmd_check(args) -> int:
    """Validate a sweep for this node before torchrun starts; print the case count."""
    import os

    from .measure.runner import options_from, plan

    if args.nproc is not None:
        if args.nproc < 1 or args.nnodes < 1:
            raise UsageError("--nproc and --nnodes must be positive")
        os.environ["WORLD_SIZE"] = str(args.nproc * args.nnodes)
        os.environ["LOCAL_WORLD_SIZE"] = str(args.nproc)
    options = options_from(lambda name: getattr(args, name.replace("-", "_")))
    cases = plan(options)
    print(f"{len(cases)} cases")
    return 0


def cmd_report(args) -> int:
    """Summary table (and plots, where the plotting module is there) of run directories."""
    from .report.tables import pivot_table, stability, summary_table
    from .results import load_run

    everything = []
    for run_dir in args.runs:
        run = load_run(Path(run_dir))
        cases = list(run["cases"].values())
        if not cases:
            raise ResultsError(f"{run_dir}: no finished cases")
        everything += cases
        print(f"# {run['meta']['machine_kind']}  {run_dir}")
        print(pivot_table(cases) if args.pivot else summary_table(cases, markdown=args.markdown))
        for line in stability(cases):
            print(line)
        if args.plots:
            from .report.plots import write_run_plots

            for path in write_run_plots(run, Path(run_dir) / "plots"):
                print(f"plot: {path}")
    if len(args.runs) > 1:  # the same case in several runs: do their p50s agree?
        print(f"# across {len(args.runs)} runs")
        for line in stability(everything, overhead=False):
            print(line)
    return 0


def _fraction(text: str) -> float:
    """'10%' or '0.1'."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction or percentage: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def cmd_plot(args) -> int:
    """Figures (PNG and SVG) of run directories or case files of one machine."""
    from .report.gate import load_results
    from .report.plots import write_run_plots

    run = load_results(args.paths)
    out = args.out
    if out is None:
        if len(args.paths) != 1 or not Path(args.paths[0]).is_dir():
            raise UsageError("give --out DIR for case files or several runs")
        out = Path(args.paths[0]) / "plots"
    for path in write_run_plots(run, Path(out)):
        print(f"plot: {path}")
    return 0


def cmd_export(args) -> int:
    """Case results as github-action-benchmark (gab) or Bencher (bmf) JSON."""
    import json

    from .report.export import export
    from .report.gate import load_results
    from .results import atomic_write_json

    data = export(load_results(args.runs), args.format)
    if args.out is None:
        print(json.dumps(data, indent=1, allow_nan=False))
        return 0
    try:
        atomic_write_json(Path(args.out), data)
    except OSError as e:
        raise ResultsError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"{args.format}: {args.out}")
    return 0


def cmd_compare(args) -> int:
    """Regression gate: a run against baseline runs or its history; exit 1 on a regression."""
    from .report.gate import Gate, gate_run

    gate = Gate(args.p50_threshold, args.p99_threshold, args.alpha, args.alternative)
    verdicts, notes = gate_run(
        Path(args.run), [Path(b) for b in args.baseline], args.history, args.results, gate
    )
    for line in notes:
        print(line)
    for v in verdicts:
        print(v.line())
    regressed = sum(v.regressed for v in verdicts)
    print(
        f"{regressed} regression(s) in {len(verdicts)} cases (p50 +{gate.p50:.0%} or p99 "
        f"+{gate.p99:.0%} over the baseline, and Mann-Whitney {gate.alternative} "
        f"p < {gate.alpha:g})"
    )
    return 1 if regressed else 0


def cmd_dashboard(args) -> int:
    """Static HTML page of a results root: latest run per machine, figures, trends."""
    from .report.dashboard import build

    if args.history < 1:
        raise UsageError(f"--history must be >= 1, got {args.history}")
    print(f"dashboard: {build(Path(args.results), args.out and Path(args.out), args.history)}")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    from .report.gate import ALTERNATIVES, DEFAULT_HISTORY, Gate

    d = Gate()
    p.add_argument("run", help="the run directory to judge (give it first)")
    p.add_argument("--baseline", nargs="+", default=[], metavar="RUN", help="baseline runs")
    p.add_argument(
        "--history",
        type=int,
        default=DEFAULT_HISTORY,
        metavar="N",
        help="without --baseline: the last N earlier runs (%(default)s)",
    )
    p.add_argument("--results", default=None, help="results root (default: the run's parent)")
    for q in ("p50", "p99"):
        p.add_argument(
            f"--{q}-threshold",
            type=_fraction,
            default=getattr(d, q),
            metavar="F",
            help="allowed growth, e.g. 10%% or 0.1 (%(default)s)",
        )
    p.add_argument("--alpha", type=float, default=d.alpha, help="significance (%(default)s)")
    p.add_argument("--alternative", choices=ALTERNATIVES, default=d.alternative)


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    from .report.dashboard import DEFAULT_TRENDS

    p.add_argument("--results", default="results", help="results root")
    p.add_argument("--out", default=None, help="default: RESULTS/dashboard")
    p.add_argument("--history", type=int, default=DEFAULT_TRENDS, help="runs per trend figure")


COMMANDS = {
    "check": (cmd_check, _add_sweep_options),
    "report": (
        cmd_report,
        lambda p: (
            p.add_argument("runs", nargs="+"),
            p.add_argument("--markdown", action="store_true"),
            p.add_argument("--plots", action="store_true"),
            p.add_argument(
                "--pivot", action="store_true", help="a row per path, a column per GPU state"
            ),
        ),
    ),
    "plot": (
        cmd_plot,
        lambda p: (
            p.add_argument("paths", nargs="+", help="run directories and/or case files"),
            p.add_argument("--out", default=None, help="default: RUN/plots for one run"),
        ),
    ),
    "export": (
        cmd_export,
        lambda p: (
            p.add_argument("runs", nargs="+", help="run directories and/or case files"),
            p.add_argument("--format", choices=("gab", "bmf"), required=True),
            p.add_argument("--out", default=None, help="file to write (default: stdout)"),
        ),
    ),
    "compare": (cmd_compare, _compare_args),
    "dashboard": (cmd_dashboard, _dashboard_args),
}


def main(argv=None) -> int:
    parser = _Parser(prog="python -m dpsync_bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (fn, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0])
        add_args(p)
        p.set_defaults(func=fn)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ResultsError) as e:
        sys.stderr.write(f"dpsync: {e}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
