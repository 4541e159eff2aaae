"""`python -m dpsync_bench COMMAND ...`: everything around a run that is not measuring.

Exit codes: 0 fine, 1 a regression (compare), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cases import UsageError
from .dist import EXIT_USAGE
from .results import ResultsError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage + error by default)
        sys.stderr.write(f"dpsync: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    from .session import OPTION_SPECS

    for name, kind, default, help_text in OPTION_SPECS:
        p.add_argument(f"--{name}", type=kind, default=default, help=help_text)
    p.add_argument("--nproc", type=int, default=None, help="ranks on this node (for check)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes in the job (for check)")


def cmd_check(args) -> int:
    """Validate a sweep for this node before torchrun starts; print the case count."""
    import os

    from .session import options_from, plan

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
    from .report import stability, summary_table
    from .results import load_run

    for run_dir in args.runs:
        run = load_run(Path(run_dir))
        cases = list(run["cases"].values())
        if not cases:
            raise ResultsError(f"{run_dir}: no finished cases")
        table = summary_table(cases, markdown=args.markdown)
        notes = stability(cases)
        print(f"# {run['meta']['machine_kind']}  {run_dir}")
        print(table)
        for line in notes:
            print(line)
        if args.plots:
            from .plots import write_run_plots

            for path in write_run_plots(run, Path(run_dir) / "plots"):
                print(f"plot: {path}")
    return 0


COMMANDS = {
    "check": (cmd_check, _add_sweep_options),
    "report": (
        cmd_report,
        lambda p: (
            p.add_argument("runs", nargs="+"),
            p.add_argument("--markdown", action="store_true"),
            p.add_argument("--plots", action="store_true"),
        ),
    ),
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
