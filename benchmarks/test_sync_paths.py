"""Per-pass cost of each cross-DP sync path. Run under torchrun; see README.md.

Parametrized by conftest.py from the --dpsync-* options (paths x shapes x GPU state x
cadence); the harness measures, this file hands the result on and checks it.
"""

import pytest

from dpsync_bench.measure.pytest_bridge import REPLAY, feed


@pytest.mark.benchmark(timer=REPLAY, disable_gc=True, warmup=False)
def test_pass_latency(benchmark, dpsync_runner, dpsync_case):
    if not dpsync_runner.should_run(dpsync_case):
        pytest.skip("already on disk (--resume)")
    summary, per_pass = dpsync_runner.run(dpsync_case)
    feed(benchmark, summary, per_pass)
    failures = summary["check"]["failures"]
    assert not failures, f"{dpsync_case.case_id}: " + "; ".join(failures)
