"""The PrefillDelayer: one gather per pass, the pure decision, in-process metrics."""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from .decision import DelayerConfig, DelayerState, Outcome, decide
from .paths.base import SyncPath

logger = logging.getLogger("delayer_core")

PASSES_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 30, 50, 100)
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Cumulative-bucket histogram (Prometheus style: a value lands in the first bucket >= it)."""

    def __init__(self, buckets) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value


@dataclass
class DelayerMetrics:
    passes_waited: Histogram = field(default_factory=lambda: Histogram(PASSES_BUCKETS))
    seconds_waited: Histogram = field(default_factory=lambda: Histogram(SECONDS_BUCKETS))
    # labels: (status, allow, reason, actually_prefilled)
    outcomes: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class LocalInfo:
    """What this rank knows at the start of a pass."""

    prefillable: bool
    token_usage: float = 0.0
    running_batch: int = 0
    max_prefill_bs: int = 0
    waiting_queue_len: int = 0

    def row(self, low_watermark: Optional[float]) -> tuple[int, int, int, int, int]:
        force = self.prefillable and low_watermark is not None and self.token_usage < low_watermark
        return (
            int(self.prefillable),
            int(force),
            self.running_batch,
            self.max_prefill_bs,
            self.waiting_queue_len,
        )


NOT_PREFILLABLE = LocalInfo(prefillable=False)


class PrefillDelayer:
    def __init__(
        self,
        config: DelayerConfig,
        sync_path: SyncPath,
        *,
        clock: Callable[[], float] = time.monotonic,
        debug: bool = False,
    ) -> None:
        self.config = config
        self.sync_path = sync_path
        self.clock = clock
        self.debug = debug
        self.state = DelayerState()
        self.metrics = DelayerMetrics()
        self.gathers = 0

    @classmethod
    def from_server_args(cls, server_args, sync_path: SyncPath, **kwargs) -> PrefillDelayer:
        queue_ratio = server_args.prefill_delayer_queue_min_ratio
        config = DelayerConfig(
            max_delay_passes=server_args.prefill_delayer_max_delay_passes,
            max_running_requests=server_args.max_running_requests,
            dp_size=server_args.dp_size,
            enable_dp_attention=server_args.enable_dp_attention,
            queue_min_ratio=queue_ratio,
            max_delay_ms=server_args.prefill_delayer_max_delay_ms,
            token_usage_low_watermark=server_args.prefill_delayer_token_usage_low_watermark,
        )
        return cls(config, sync_path, **kwargs)

    def begin_pass(self) -> PassExecutor:
        return PassExecutor(self)

    def _negotiate(self, local: LocalInfo) -> Outcome:
        summary = self.sync_path.gather(local.row(self.config.token_usage_low_watermark))
        self.gathers += 1
        outcome = decide(self.state, summary, self.config, self.clock())
        self.state = outcome.state
        if self.debug:
            logger.debug(
                "prefill delayer: status=%s allow=%s reason=%s delayed=%d",
                outcome.status,
                outcome.allow,
                outcome.reason,
                outcome.delayed_count,
            )
        return outcome

    def _record(self, outcome: Outcome, actually_prefilled: bool) -> None:
        m = self.metrics
        m.outcomes[(outcome.status, outcome.allow, outcome.reason, actually_prefilled)] += 1
        if outcome.ends_episode:
            m.passes_waited.observe(outcome.passes_waited)
            m.seconds_waited.observe(outcome.seconds_waited)


class PassExecutor:
    """One scheduler pass: negotiate at most once; finalize always, so every rank gathers
    exactly once per pass (a rank with nothing to prefill reports "not prefillable")."""

    def __init__(self, delayer: PrefillDelayer) -> None:
        self._delayer = delayer
        self.outcome: Optional[Outcome] = None
        self._finalized = False

    def negotiate(self, local: LocalInfo) -> Outcome:
        if self._finalized:
            raise RuntimeError("negotiate() after finalize()")
        if self.outcome is not None:
            raise RuntimeError("negotiate() called twice in one pass: ranks would desync")
        self.outcome = self._delayer._negotiate(local)
        return self.outcome

    def finalize(self, actually_prefilled: bool = False) -> Outcome:
        if self._finalized:
            raise RuntimeError("finalize() called twice in one pass")
        self._finalized = True
        if self.outcome is None:
            self.outcome = self._delayer._negotiate(NOT_PREFILLABLE)
        self._delayer._record(self.outcome, actually_prefilled)
        return self.outcome

    def __enter__(self) -> PassExecutor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A pass that ends normally always finalizes (and so gathers once). One that raised
        # does not gather: the rank is failing, and the others leave through their
        # collective timeout rather than act on a half-built pass.
        if not self._finalized and exc_type is None:
            self.finalize()
