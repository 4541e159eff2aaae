"""The pytest-benchmark bridge (measure/pytest_bridge.py) with a stand-in for its fixture:
the replay clock moves only by the recorded per-pass latencies, so pytest-benchmark's
statistics are the measured ones; extra_info carries the case's summary."""

from __future__ import annotations

import pytest
from fault_helpers import make_case_result

from dpsync_bench.measure.pytest_bridge import REPLAY, ReplayClock, feed
from dpsync_bench.stats import per_pass


def test_replay_clock_advances_only_by_the_loaded_durations():
    clock = ReplayClock()
    assert clock() == 0.0 and clock() == 0.0
    clock.load([1e-6, 2.5e-6, 4e-6])
    t = [clock()]
    for _ in range(3):
        clock.advance()
        t.append(clock())
    assert [b - a for a, b in zip(t, t[1:], strict=False)] == pytest.approx([1e-6, 2.5e-6, 4e-6])
    with pytest.raises(StopIteration):
        clock.advance()


def test_the_timer_names_itself_in_pytest_benchmarks_json():
    assert REPLAY.__name__ == "replayed_pass_latency"
    assert REPLAY.__module__ == "dpsync_bench.measure.pytest_bridge"


class FakeBenchmark:
    """What feed() uses of pytest-benchmark's fixture: extra_info and pedantic, timing each
    round with the marker's timer (REPLAY)."""

    def __init__(self):
        self.extra_info = {}
        self.durations = []

    def pedantic(self, target, rounds, iterations=1, warmup_rounds=0):
        assert iterations == 1 and warmup_rounds == 0
        for _ in range(rounds):
            t0 = REPLAY()
            target()
            self.durations.append(REPLAY() - t0)


def test_feed_replays_the_per_pass_max_over_ranks():
    summary, samples = make_case_result(iters=30)
    per_pass_ns = per_pass(samples["pass"])
    bench = FakeBenchmark()
    feed(bench, summary, per_pass_ns)
    assert bench.durations == pytest.approx([v * 1e-9 for v in per_pass_ns], rel=1e-9, abs=1e-15)
    info = bench.extra_info
    assert set(info) == {"case_id", "world_size", "reduction", "us", "failures"}
    assert (info["case_id"], info["world_size"]) == (summary["case_id"], summary["world_size"])
    assert info["failures"] == summary["check"]["failures"]
    for name, stat in summary["stats"].items():  # p50/p99 of every µs figure, no more
        if name.endswith("_us"):
            assert info["us"][name] == [stat["p50"], stat["p99"]]
    assert "forward_ms" not in info["us"] and "per_rank" not in info


class _Config:
    def __init__(self, save_data: bool) -> None:
        self.save_data = save_data

    def getoption(self, name, default=None):
        assert name == "benchmark_save_data"
        return self.save_data


def _output_json() -> dict:
    """pytest-benchmark's JSON as it generates it (samples under each benchmark's stats)."""
    return {"benchmarks": [{"name": "t", "stats": {"min": 1.0, "data": [1.0, 2.0]}}]}


def test_benchmark_json_keeps_its_samples_with_save_data():
    import conftest

    out = _output_json()
    conftest.pytest_benchmark_update_json(_Config(True), [], out)
    assert out == _output_json()


def test_benchmark_json_drops_its_samples_without_save_data():
    import conftest

    out = _output_json()
    conftest.pytest_benchmark_update_json(_Config(False), [], out)
    assert "data" not in out["benchmarks"][0]["stats"]
