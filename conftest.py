"""pytest wiring for the benchmarks (run under torchrun) and the tests.

`torchrun --nproc-per-node N -m pytest benchmarks/ --benchmark-json FILE [--dpsync-*]`:
every rank collects the same cases and runs them in the same order; rank 0 alone writes
pytest-benchmark's JSON and prints; the other ranks run quietly.
"""

from __future__ import annotations

import os
import sys

import pytest

RANK = int(os.environ.get("RANK", "0") or 0)


def pytest_addoption(parser):
    from dpsync_bench.session import OPTION_SPECS

    group = parser.getgroup("dpsync", "dpsync-bench sweep")
    for name, kind, default, help_text in OPTION_SPECS:
        group.addoption(f"--dpsync-{name}", type=kind, default=default, help=help_text)


def pytest_configure(config):
    import dpsync_bench.dist as dist_mod

    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:  # errors and progress must reach the console mid-test
        dist_mod.console_unlocked = capman.global_and_fixture_disabled
    if RANK != 0:  # one writer: rank 0 (pytest-benchmark opened the JSON file already)
        json_file = getattr(config.option, "benchmark_json", None)
        if json_file is not None:
            json_file.close()
            config.option.benchmark_json = None
        for attr in ("benchmark_save", "benchmark_autosave"):
            if hasattr(config.option, attr):
                setattr(config.option, attr, None if attr == "benchmark_save" else False)
        config.option.verbose = -2  # run_bench.sh also sends their stdout to a log


def _options(config):
    from dpsync_bench.session import options_from

    return options_from(lambda name: config.getoption(f"--dpsync-{name}"))


def pytest_generate_tests(metafunc):
    if "dpsync_case" not in metafunc.fixturenames:
        return
    from dpsync_bench.cases import UsageError
    from dpsync_bench.dist import fail
    from dpsync_bench.exit_codes import EXIT_USAGE
    from dpsync_bench.session import plan

    try:
        cases = plan(_options(metafunc.config))
    except UsageError as e:
        fail(str(e), EXIT_USAGE)
    metafunc.parametrize("dpsync_case", cases, ids=[c.case_id for c in cases])


@pytest.fixture(scope="session")
def dpsync_runner(request):
    from dpsync_bench.session import SweepRunner

    runner = SweepRunner(_options(request.config)).start()
    request.config._dpsync_runner = runner
    yield runner
    runner.finish(ok=request.session.testsfailed == 0)


def pytest_benchmark_update_machine_info(config, machine_info):
    runner = getattr(config, "_dpsync_runner", None)
    if runner is not None and runner.machine is not None:
        machine_info["dpsync"] = {"machine_kind": runner.session.machine_kind, **runner.machine}


def pytest_terminal_summary(terminalreporter, config):
    runner = getattr(config, "_dpsync_runner", None)
    if runner is None or RANK != 0 or not runner.results:
        return
    from dpsync_bench.report import stability, summary_table

    terminalreporter.write_sep("=", "dpsync-bench summary (per-iteration max across ranks, us)")
    terminalreporter.write_line(summary_table(list(runner.results.values())))
    for line in stability(list(runner.results.values())):
        terminalreporter.write_line(line)
    if runner.run_dir is not None:
        terminalreporter.write_line(f"results: {runner.run_dir}")
    sys.stdout.flush()
