"""pytest wiring for the benchmarks (run under torchrun) and the tests.

`torchrun --nproc-per-node N -m pytest benchmarks/ --benchmark-json FILE [--dpsync-*]`:
every rank collects the same cases and runs them in the same order; rank 0 alone writes
pytest-benchmark's JSON and prints; the other ranks run quietly.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

RANK = int(os.environ.get("RANK", "0") or 0)
# run_bench.sh's scratch folder for this job: a rank whose session ends normally leaves a
# marker there, so a rank that left early with code 0 can be told apart (failure.py).
JOB_DIR = os.environ.get("DPSYNC_JOB_DIR")


def pytest_addoption(parser):
    from dpsync_bench.measure.runner import OPTION_SPECS

    group = parser.getgroup("dpsync", "dpsync-bench sweep")
    for name, kind, default, help_text in OPTION_SPECS:
        group.addoption(f"--dpsync-{name}", type=kind, default=default, help=help_text)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads its options (trylast)
def pytest_configure(config):
    import dpsync_bench.measure.console as console_mod

    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:  # errors and progress must reach the console mid-test
        console_mod.console_unlocked = capman.global_and_fixture_disabled
    if RANK != 0:
        # One writer: rank 0. Only the option values are dropped, whatever their type (an
        # open file before pytest-benchmark 5.3, a path since), so nothing else writes the
        # JSON or saves a run; a file an old version opened at parse time is left unwritten.
        for name in ("benchmark_json", "benchmark_save"):
            if getattr(config.option, name, None) is not None:
                setattr(config.option, name, None)
        if getattr(config.option, "benchmark_autosave", False):
            config.option.benchmark_autosave = False
        config.option.verbose = -2  # run_bench.sh also sends their output to a log
    from dpsync_bench.measure.faults import fault_at_start_up

    fault_at_start_up(RANK)


def pytest_unconfigure(config):
    if JOB_DIR:
        marker = Path(JOB_DIR, "finished", os.environ.get("LOCAL_RANK", "0"))
        with contextlib.suppress(OSError):
            marker.touch()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """pytest-benchmark's JSON carries statistics; the raw samples live in the run's own
    files, so its per-round `data` copy is dropped unless --benchmark-save-data asks."""
    if not config.getoption("benchmark_save_data", False):
        for bench in output_json.get("benchmarks", []):
            bench.get("stats", {}).pop("data", None)


RUNNER = pytest.StashKey()  # the session's SweepRunner, for the hooks below


def _options(config):
    from dpsync_bench.measure.runner import options_from

    return options_from(lambda name: config.getoption(f"--dpsync-{name}"))


def pytest_generate_tests(metafunc):
    if "dpsync_case" not in metafunc.fixturenames:
        return
    from dpsync_bench.cases import UsageError
    from dpsync_bench.exit_codes import EXIT_USAGE
    from dpsync_bench.measure.console import fail
    from dpsync_bench.measure.runner import plan

    try:
        cases = plan(_options(metafunc.config))
    except UsageError as e:
        fail(str(e), EXIT_USAGE)
    metafunc.parametrize("dpsync_case", cases, ids=[c.case_id for c in cases])


@pytest.fixture(scope="session")
def dpsync_runner(request):
    from dpsync_bench.measure.runner import SweepRunner

    runner = SweepRunner(_options(request.config)).start()
    request.config.stash[RUNNER] = runner
    yield runner
    runner.finish(ok=request.session.testsfailed == 0)


def pytest_benchmark_update_machine_info(config, machine_info):
    runner = config.stash.get(RUNNER, None)
    if runner is not None and runner.machine is not None:
        machine_info["dpsync"] = {"machine_kind": runner.machine_kind, **runner.machine}


def pytest_terminal_summary(terminalreporter, config):
    runner = config.stash.get(RUNNER, None)
    if runner is None or RANK != 0 or not runner.results:
        return
    from dpsync_bench.report.tables import stability, summary_table

    terminalreporter.write_sep("=", "dpsync-bench summary (per-pass max over ranks, us)")
    terminalreporter.write_line(summary_table(list(runner.results.values())))
    for line in stability(list(runner.results.values())):
        terminalreporter.write_line(line)
    if runner.run_dir is not None:
        terminalreporter.write_line(f"results: {runner.run_dir}")
    sys.stdout.flush()
