"""Hand a measured case to pytest-benchmark so its statistics are per-pass latencies.

pytest-benchmark times a target with its timer; here the target advances a virtual clock
by the next measured pass latency (the per-iteration max across ranks), so its min/median/
mean/... and --benchmark-compare-fail speak of what the harness measured, not of Python
calls. Tails, stall, device time, skew and raw samples go to extra_info.
"""

from __future__ import annotations


class VirtualClock:
    def __init__(self, samples_s: list[float]) -> None:
        self._samples = iter(samples_s)
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self) -> None:
        self.now += next(self._samples)


EXTRA_KEYS = (
    "case",
    "case_id",
    "machine_kind",
    "world_size",
    "reduction",
    "cadence_detail",
    "stats",
    "per_rank",
    "check",
    "late_starts",
    "forward",
    "raw_loop",
    "gpu_state",
    "raw",
)


def feed(benchmark, result: dict) -> None:
    from dpsync_bench.stats import reduce_max

    per_iter_us = reduce_max(result["raw"]["pass_us"])
    clock = VirtualClock([v * 1e-6 for v in per_iter_us])
    benchmark._timer = clock  # read when pedantic builds its runner
    benchmark.extra_info.update({k: result[k] for k in EXTRA_KEYS if k in result})
    benchmark.pedantic(clock.advance, rounds=len(per_iter_us), iterations=1, warmup_rounds=0)
