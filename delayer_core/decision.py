"""The PrefillDelayer decision as a pure function.

    decide(state: DelayerState, rows, config: DelayerConfig, now: float) -> Outcome

``rows`` is the TP0 view of the gathered buffer: one 5-field row per DP replica
(``buffer[:, 0, :]``), as a sequence of sequences of ints or a :class:`GatherSummary`
already reduced from them. Fields, in order (``FIELDS``): prefillable,
token_watermark_force_allow, running_batch, max_prefill_bs, waiting_queue_len.
``now`` is the caller's clock in seconds (monotonic); it only measures waits.

Every input comes from the gathered rows, the previous state and the config, so all ranks
that gathered the same rows reach the same outcome. Below, ``max(x)`` is the maximum of
column ``x`` over the gathered rows. Rules, in order:

1. Classify the prefillable column: ``all`` ranks, ``none`` or ``mixed``.
2. ``all`` or ``mixed`` with any ``token_watermark_force_allow`` -> allow, ``token_watermark``.
3. ``none`` -> allow, reason ``""``.
4. ``mixed`` -> delay (``delay``) while ``delayed_count < max_delay_passes - 1``, else allow
   with ``wait_timeout``.
5. ``all`` -> allow (``wait_success`` if an episode was running, else ``no_wait``), unless
   - the slot condition holds: ``max_running - max(running_batch) < max(max_prefill_bs)``
     (reason ``delay_slots``), or
   - the queue condition holds (reason ``delay_queue``): the trigger is on
     (``queue_min_ratio`` set), ``max(running_batch) > 0``, and with
     ``threshold = min(int(max(running_batch) * queue_min_ratio), max(max_prefill_bs))``
     (the float product truncated by ``int()``), ``threshold > 0`` and
     ``max(waiting_queue_len) < threshold``; it is switched off once a running episode is
     ``max_delay_ms`` old or older (``(now - episode_start) * 1000 >= max_delay_ms``; a pass
     that starts an episode is never too old).
   Then the pass is delayed under the same ``max_delay_passes`` cap as rule 4, except that
   the first time either condition holds in a process it is skipped
   (``skip_first_delayer``) and the pass is allowed. (SGLang's 5-field delayer leaves these
   delays uncapped; its later versions cap them like rule 4, as this module does.)

``max_running`` is ``max_running_requests``; without DP attention it is divided among the
DP replicas, rounded up (``(max_running_requests + dp_size - 1) // dp_size``). Every allow
ends the running episode; the outcome then carries the passes and seconds it waited.

:class:`DelayerConfig` rejects only what SGLang cannot run with: a non-integer count, a
``dp_size`` below 1 (upstream divides by it) and a non-finite ``queue_min_ratio`` (upstream's
``int()`` of the product raises). Other values are accepted and decided as upstream does: a
``queue_min_ratio`` <= 0 never triggers, ``max_delay_passes`` <= 1 never delays, and
``max_delay_ms=None`` means 5000 ms.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

FIELDS = (
    "prefillable",
    "token_watermark_force_allow",
    "running_batch",
    "max_prefill_bs",
    "waiting_queue_len",
)
NUM_FIELDS = len(FIELDS)

STATUSES = ("all", "none", "mixed")
REASONS = (
    "",
    "token_watermark",
    "no_wait",
    "wait_success",
    "wait_timeout",
    "delay",
    "delay_slots",
    "delay_queue",
)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class DelayerConfig:
    max_delay_passes: int = 30
    max_running_requests: int = 1 << 30
    dp_size: int = 1
    enable_dp_attention: bool = True
    queue_min_ratio: Optional[float] = None  # None: queue trigger off
    max_delay_ms: Optional[float] = 5000.0  # None: 5000 ms, as upstream
    token_usage_low_watermark: Optional[float] = None  # used locally, not by decide()

    def __post_init__(self) -> None:
        for name in ("max_delay_passes", "max_running_requests", "dp_size"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.dp_size < 1:
            raise ValueError(f"dp_size must be >= 1, got {self.dp_size}")
        ratio = self.queue_min_ratio
        if ratio is not None and not (_is_real(ratio) and math.isfinite(ratio)):
            raise ValueError(f"queue_min_ratio must be a finite number or None, got {ratio!r}")
        for name in ("max_delay_ms", "token_usage_low_watermark"):
            value = getattr(self, name)
            if value is not None and not _is_real(value):
                raise ValueError(f"{name} must be a number or None, got {value!r}")
        if self.max_delay_ms is None:
            object.__setattr__(self, "max_delay_ms", 5000.0)

    @property
    def max_running(self) -> int:
        """Running-request limit one row is compared against (per DP replica)."""
        if self.enable_dp_attention:
            return self.max_running_requests
        return (self.max_running_requests + self.dp_size - 1) // self.dp_size


# The per-pass types are NamedTuples: immutable like frozen dataclasses, but built in a
# third of the time, and a shared-memory pass is only a few microseconds long.
class DelayerState(NamedTuple):
    delayed_count: int = 0
    episode_start: Optional[float] = None  # None: no delay episode running
    skip_first_pending: bool = True  # skip_first_delayer not consumed yet

    @property
    def in_episode(self) -> bool:
        return self.episode_start is not None


class GatherSummary(NamedTuple):
    """The reductions of the TP0 rows that the decision reads (what upstream `.item()`s).

    Upstream reads lazily: the prefillable maximum only when the minimum is 0, the last three
    only when every rank is prefillable and none forces; a field not read is None, and
    `decide` never needs it then."""

    prefillable_min: int
    prefillable_max: Optional[int]
    force_allow_max: int
    running_batch_max: Optional[int]
    max_prefill_bs_max: Optional[int]
    waiting_queue_max: Optional[int]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]]) -> GatherSummary:
        if len(rows) == 0:
            raise ValueError("no gathered rows")
        lengths = {*map(len, rows)}
        if lengths != {NUM_FIELDS}:
            bad = min(lengths - {NUM_FIELDS})
            raise ValueError(f"a gathered row has {bad} fields, expected {NUM_FIELDS}")
        cols = zip(*rows, strict=True)
        prefillable, force, running, prefill_bs, queue = cols
        return cls(
            int(min(prefillable)),
            int(max(prefillable)),
            int(max(force)),
            int(max(running)),
            int(max(prefill_bs)),
            int(max(queue)),
        )

    @classmethod
    def from_extrema(cls, lows: Sequence[int], highs: Sequence[int]) -> GatherSummary:
        """From each field's minimum and maximum over the rows, in FIELDS order."""
        return cls(lows[0], *highs[:NUM_FIELDS])

    @property
    def status(self) -> str:
        if self.prefillable_min > 0:
            return "all"
        if self.prefillable_max == 0:
            return "none"
        return "mixed"


class Outcome(NamedTuple):
    allow: bool
    reason: str
    status: str
    state: DelayerState  # the state to pass to the next decide()
    delayed_count: int  # delays in the episode so far (after this pass)
    passes_waited: Optional[int] = None  # set when this pass ends an episode
    seconds_waited: Optional[float] = None

    @property
    def ends_episode(self) -> bool:
        return self.passes_waited is not None


Rows = Union[Sequence[Sequence[int]], GatherSummary]


def decide(state: DelayerState, rows: Rows, config: DelayerConfig, now: float) -> Outcome:
    summary = rows if isinstance(rows, GatherSummary) else GatherSummary.from_rows(rows)
    status = summary.status

    if status != "none" and summary.force_allow_max > 0:
        return _allow(state, status, "token_watermark", now)
    if status == "none":
        return _allow(state, status, "", now)
    if status == "mixed":
        return _delay_or_timeout(state, status, "delay", now, config)

    condition = _all_prefillable_delay_condition(state, summary, config, now)
    if condition is None:
        return _allow(state, status, "wait_success" if state.in_episode else "no_wait", now)
    if state.skip_first_pending:
        skipped = DelayerState(state.delayed_count, state.episode_start, False)
        return _allow(skipped, status, "wait_success" if state.in_episode else "no_wait", now)
    return _delay_or_timeout(state, status, condition, now, config)


def _all_prefillable_delay_condition(
    state: DelayerState, summary: GatherSummary, config: DelayerConfig, now: float
) -> Optional[str]:
    """Reason to hold back a prefill every rank could start, or None."""
    running = summary.running_batch_max
    if config.max_running - running < summary.max_prefill_bs_max:
        return "delay_slots"
    if config.queue_min_ratio is None or running <= 0:
        return None
    threshold = min(int(running * config.queue_min_ratio), summary.max_prefill_bs_max)
    if threshold <= 0 or summary.waiting_queue_max >= threshold:
        return None
    if state.in_episode and (now - state.episode_start) * 1000.0 >= config.max_delay_ms:
        return None  # the episode has waited max_delay_ms: the queue trigger lets go
    return "delay_queue"


def _delay_or_timeout(
    state: DelayerState, status: str, reason: str, now: float, config: DelayerConfig
) -> Outcome:
    if state.delayed_count < config.max_delay_passes - 1:
        count = state.delayed_count + 1
        start = state.episode_start if state.in_episode else now
        nxt = DelayerState(count, start, state.skip_first_pending)
        return Outcome(False, reason, status, nxt, count)
    return _allow(state, status, "wait_timeout", now)


def _allow(state: DelayerState, status: str, reason: str, now: float) -> Outcome:
    ended = DelayerState(0, None, state.skip_first_pending)
    if not state.in_episode:
        return Outcome(True, reason, status, ended, 0)
    return Outcome(
        True,
        reason,
        status,
        ended,
        state.delayed_count,
        passes_waited=state.delayed_count,
        seconds_waited=max(0.0, now - state.episode_start),
    )
