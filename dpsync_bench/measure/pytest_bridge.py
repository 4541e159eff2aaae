"""Hand a measured case to pytest-benchmark, so its statistics are the measured passes.

The benchmark test is marked `@pytest.mark.benchmark(timer=REPLAY, disable_gc=True,
warmup=False)` (public marker options): pytest-benchmark times each round with `REPLAY`, a
clock that only moves when the round's target replays the next measured pass latency (the
per-pass max over ranks). Its min/median/mean/... and --benchmark-compare-fail therefore
speak of what the harness measured, its JSON names the replaying timer, and disable_gc is
true because the harness's loops ran with GC paused. extra_info carries the case id and
the p50/p99 of its figures; the case file holds the rest, the run's npz the raw samples.
"""

from __future__ import annotations


class ReplayClock:
    """A clock (seconds) that advances only by replaying recorded durations."""

    __name__ = "replayed_pass_latency"

    def __init__(self) -> None:
        self.now = 0.0
        self._next = iter(())

    def __call__(self) -> float:
        return self.now

    def load(self, durations_s) -> None:
        self._next = iter(list(durations_s))

    def advance(self) -> None:
        self.now += next(self._next)


REPLAY = ReplayClock()
REPLAY.__module__ = __name__


def feed(benchmark, summary: dict, pass_ns_per_pass) -> None:
    """Replay the case's per-pass latencies (ns, already reduced over ranks) as rounds."""
    durations = [v * 1e-9 for v in pass_ns_per_pass]
    REPLAY.load(durations)
    benchmark.extra_info.update(
        case_id=summary["case_id"],
        world_size=summary["world_size"],
        reduction=summary["reduction"],
        us={k: [s["p50"], s["p99"]] for k, s in summary["stats"].items() if k.endswith("_us")},
        failures=summary["check"]["failures"],
    )
    benchmark.pedantic(REPLAY.advance, rounds=len(durations), iterations=1, warmup_rounds=0)
