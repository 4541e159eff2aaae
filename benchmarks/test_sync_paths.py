"""Per-pass cost of each cross-DP sync path. Run under torchrun; see README.md.

Parametrized by conftest.py from the --dpsync-* options (paths x shapes x GPU state x
cadence); the harness does the measuring, this file only hands the result on and checks it.
"""

import pytest

from dpsync_bench.pytest_bridge import feed


def test_pass_latency(benchmark, dpsync_runner, dpsync_case):
    if not dpsync_runner.should_run(dpsync_case):
        pytest.skip("already on disk (--resume)")
    result = dpsync_runner.run(dpsync_case)
    feed(benchmark, result)
    check = result["check"]
    assert check["wrong_elements"] == 0, f"{check['wrong_elements']} gathered elements wrong"
    assert check["wrong_decisions"] == 0, f"{check['wrong_decisions']} decisions differ"
