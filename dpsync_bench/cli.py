"""`python -m dpsync_bench COMMAND ...`: parses, then calls one function of measure/ or report/.

Only `check` reaches the measuring code (and torch), lazily; every reading command runs
without torch. Exit codes: 0 fine, 1 a regression (compare), 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import sys

from delayer_core.paths import PATHS

from .cases import UsageError
from .exit_codes import EXIT_USAGE
from .measure.options import OPTION_SPECS
from .nightly import add_nightly_args, cmd_nightly
from .report import compare, dashboard, export, history, plots, publish, recommend, tables
from .report import simulate_cli as simulate
from .results import ResultsError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage + error by default)
        sys.stderr.write(f"dpsync: {message}\n")
        raise SystemExit(EXIT_USAGE)


def add_check_args(p: argparse.ArgumentParser) -> None:
    for name, kind, default, help_text in OPTION_SPECS:
        p.add_argument(f"--{name}", type=kind, default=default, help=help_text)
    p.add_argument("--nproc", type=int, default=None, help="ranks on this node")
    p.add_argument("--nnodes", type=int, default=1, help="nodes in the job")


def cmd_check(args) -> int:
    """Validate a sweep for this node before torchrun starts; print the case count."""
    import os

    from .measure.options import options_from
    from .measure.runner import plan

    if args.nproc is not None:
        if args.nproc < 1 or args.nnodes < 1:
            raise UsageError("--nproc and --nnodes must be positive")
        os.environ["WORLD_SIZE"] = str(args.nproc * args.nnodes)
        os.environ["LOCAL_WORLD_SIZE"] = str(args.nproc)
    cases = plan(options_from(lambda n: getattr(args, n.replace("-", "_"))))
    one_host = sorted({c.path for c in cases if PATHS[c.path].one_host})
    if one_host and args.nnodes > 1:
        raise UsageError(
            f"{', '.join(one_host)} needs every rank on one host, one node (use hierarchical)"
        )
    print(f"{len(cases)} cases")
    return 0


COMMANDS = {
    "check": (cmd_check, add_check_args),
    "report": (tables.cmd_report, tables.add_report_args),
    "plot": (plots.cmd_plot, plots.add_plot_args),
    "dashboard": (dashboard.cmd_dashboard, dashboard.add_dashboard_args),
    "compare": (compare.cmd_compare, compare.add_compare_args),
    "runs": (history.cmd_runs, history.add_runs_args),
    "publish": (publish.cmd_publish, publish.add_publish_args),
    "prune": (publish.cmd_prune, publish.add_prune_args),
    "export": (export.cmd_export, export.add_export_args),
    "simulate": (simulate.cmd_simulate, simulate.add_simulate_args),
    "recommend": (recommend.cmd_recommend, recommend.add_recommend_args),
    "nightly": (cmd_nightly, add_nightly_args),
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
    except (UsageError, ResultsError, ValueError) as e:
        sys.stderr.write(f"dpsync: {e}\n")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
