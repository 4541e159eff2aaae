"""The pure PrefillDelayer decision, ``decide(state, rows, config, now)``: constants, rules 2-5
case by case at each boundary (every pass also checked against ``reference_decide``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from decision_reference import (
    BIG,
    DELAY_KINDS,
    FRESH,
    NO_SKIP,
    all_rows,
    drive,
    mixed_rows,
    queue_cfg,
    reasons,
    reference_decide,
    row,
)

from delayer_core.decision import (
    FIELDS,
    NUM_FIELDS,
    REASONS,
    STATUSES,
    DelayerConfig,
    DelayerState,
    GatherSummary,
    Outcome,
    decide,
)

# --- constants, containers ----------------------------------------------------------------


def test_constants_and_defaults():
    assert FIELDS == (
        "prefillable",
        "token_watermark_force_allow",
        "running_batch",
        "max_prefill_bs",
        "waiting_queue_len",
    )
    assert NUM_FIELDS == 5
    assert set(STATUSES) == {"all", "none", "mixed"}
    assert len(REASONS) == 8 and {"delay_slots", "delay_queue", "wait_timeout"} <= set(REASONS)
    cfg = DelayerConfig()
    assert (cfg.max_delay_passes, cfg.queue_min_ratio, cfg.max_delay_ms) == (30, None, 5000.0)
    assert cfg.token_usage_low_watermark is None
    assert DelayerState(0, None, True) == FRESH and not FRESH.in_episode


@pytest.mark.parametrize(
    "rows, status",
    [
        ([row(1)], "all"),
        ([row(0)], "none"),
        ([row(1), row(0)], "mixed"),
        ([row(0), row(0), row(1)], "mixed"),
        ([row(1), (7, 0, 0, 0, 0)], "all"),  # any positive value counts as prefillable
    ],
)
def test_status_classification(rows, status):
    assert GatherSummary.from_rows(rows).status == status
    assert decide(FRESH, rows, DelayerConfig(), 0.0).status == status


def test_gather_summary_reductions_and_errors():
    rows = [(1, 0, 3, 8, 2), (0, 1, 5, 4, 9), (1, 0, 1, 16, 0)]
    assert GatherSummary.from_rows(rows) == GatherSummary(0, 1, 1, 5, 16, 9)
    with pytest.raises(ValueError, match="no gathered rows"):
        GatherSummary.from_rows([])
    for bad in [(1, 0, 0, 0), (1, 0, 0, 0, 0, 0)]:
        with pytest.raises(ValueError, match=rf"{len(bad)} fields, expected 5"):
            decide(FRESH, [row(1), bad], DelayerConfig(), 0.0)


def test_config_and_state_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        DelayerConfig().max_delay_passes = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        FRESH.delayed_count = 5  # type: ignore[misc]


def test_decision_module_is_torch_free():
    code = "import sys, delayer_core.decision; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- rules 2-4: watermark, none, mixed ------------------------------------------------------


def test_none_allows_and_ignores_force_column():
    out = decide(FRESH, [row(0, force=1), row(0)], DelayerConfig(), 5.0)
    assert out == Outcome(True, "", "none", FRESH, 0)
    assert not out.ends_episode


@pytest.mark.parametrize("rows", [[row(1), row(1, force=1)], [row(0), row(1, force=1)]])
def test_token_watermark_beats_every_delay(rows):
    cfg = queue_cfg(max_running_requests=4)  # slot and queue conditions would both hold
    rows = [(r[0], r[1], 4, 4, 0) for r in rows]
    out = decide(NO_SKIP, rows, cfg, 0.0)
    assert (out.allow, out.reason) == (True, "token_watermark")
    assert decide(FRESH, rows, cfg, 0.0).state.skip_first_pending  # skip not consumed


@pytest.mark.parametrize("end_rows, reason", [([row(0), row(0)], ""), (all_rows(), "wait_success")])
def test_episode_end_reports_passes_and_seconds(end_rows, reason):
    outs = drive(DelayerConfig(), [mixed_rows(), mixed_rows(), end_rows], t0=10.0, dt=0.5)
    assert reasons(outs) == ["delay", "delay", reason]
    assert [o.state.episode_start for o in outs[:2]] == [10.0, 10.0]  # the start is kept
    end = outs[-1]
    assert end.allow and end.passes_waited == end.delayed_count == 2
    assert end.seconds_waited == pytest.approx(1.0)
    assert end.state == FRESH


def test_seconds_waited_never_negative():
    state = decide(FRESH, mixed_rows(), DelayerConfig(), 10.0).state
    assert decide(state, all_rows(), DelayerConfig(), 9.0).seconds_waited == 0.0


# --- the delay cap: max_delay_passes 1/2/3, for every kind of delay -------------------------


@pytest.mark.parametrize("kind", sorted(DELAY_KINDS))
@pytest.mark.parametrize("max_delay_passes", [1, 2, 3])
def test_delays_capped_by_max_delay_passes(kind, max_delay_passes):
    cfg = queue_cfg(max_delay_passes=max_delay_passes, max_running_requests=4, max_delay_ms=1e9)
    n = max_delay_passes
    outs = drive(cfg, [DELAY_KINDS[kind]] * (n + 1), state=NO_SKIP, t0=50.0, dt=0.25)
    assert reasons(outs[:n]) == [kind] * (n - 1) + ["wait_timeout"]
    assert [o.delayed_count for o in outs[: n - 1]] == list(range(1, n))
    timeout = outs[n - 1]
    assert timeout.allow and timeout.state == NO_SKIP
    assert timeout.passes_waited == (n - 1 if n > 1 else None)  # n == 1: nothing waited
    # after the release the next pass starts a new episode (or times out again at once)
    assert outs[n].reason == (kind if n > 1 else "wait_timeout")


@pytest.mark.parametrize("max_delay_passes", [0, -3])
def test_max_delay_passes_below_one_never_delays(max_delay_passes):
    cfg = DelayerConfig(max_delay_passes=max_delay_passes)
    assert reasons(drive(cfg, [mixed_rows()] * 2)) == ["wait_timeout"] * 2


def test_slot_and_mixed_delays_share_one_episode():
    cfg = DelayerConfig(max_delay_passes=3, max_running_requests=4)
    seq = [DELAY_KINDS["delay_slots"], mixed_rows(), mixed_rows()]
    outs = drive(cfg, seq, state=NO_SKIP, t0=1.0, dt=1.0)
    assert reasons(outs) == ["delay_slots", "delay", "wait_timeout"]
    assert outs[2].passes_waited == 2 and outs[2].seconds_waited == pytest.approx(2.0)


# --- rule 5: the slot condition -------------------------------------------------------------


@pytest.mark.parametrize(
    "max_running, rows, reason",
    [
        (10, [row(1, running=6, max_bs=2), row(1, running=1, max_bs=4)], "no_wait"),  # 4 == 4
        (10, [row(1, running=7, max_bs=2), row(1, running=1, max_bs=4)], "delay_slots"),
        (8, [row(1, running=5, max_bs=1), row(1, running=0, max_bs=4)], "delay_slots"),
        (0, [row(1, running=0, max_bs=0)], "no_wait"),  # 0 - 0 < 0 is false
        (0, [row(1, running=0, max_bs=1)], "delay_slots"),
    ],
)
def test_slot_condition_boundary(max_running, rows, reason):
    cfg = DelayerConfig(max_running_requests=max_running, dp_size=2)
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == reason


@pytest.mark.parametrize(
    "max_running_requests, dp_size, expected",
    [(7, 2, 4), (8, 2, 4), (9, 2, 5), (1, 4, 1), (10, 3, 4), (0, 3, 0), (5, 1, 5)]
    + [(2**60 + 1, 2, 2**59 + 1)],  # exact integer rounding: float ceil would give 2**59
)
def test_per_replica_limit_without_dp_attention_rounds_up(max_running_requests, dp_size, expected):
    off = DelayerConfig(
        max_running_requests=max_running_requests, dp_size=dp_size, enable_dp_attention=False
    )
    assert off.max_running == expected
    on = DelayerConfig(max_running_requests=max_running_requests, dp_size=dp_size)
    assert on.max_running == max_running_requests


def test_slot_condition_uses_the_rounded_limit():
    # ceil(7 / 2) = 4 slots per replica without DP attention; 7 with it
    off = DelayerConfig(max_running_requests=7, dp_size=2, enable_dp_attention=False)
    on = DelayerConfig(max_running_requests=7, dp_size=2)
    assert decide(NO_SKIP, [row(1, running=2, max_bs=2)], off, 0.0).reason == "no_wait"
    assert decide(NO_SKIP, [row(1, running=3, max_bs=2)], off, 0.0).reason == "delay_slots"
    assert decide(NO_SKIP, [row(1, running=3, max_bs=2)], on, 0.0).reason == "no_wait"


# --- rule 5: the queue condition ------------------------------------------------------------


@pytest.mark.parametrize(
    "ratio, running, max_bs, queue, delays",
    [
        # threshold = min(int(running * ratio), max_prefill_bs), queue must be below it
        (0.5, 10, 8, 4, True),
        (0.5, 10, 8, 5, False),  # threshold == waiting queue: no delay
        (0.5, 10, 8, 6, False),
        (0.5, 40, 3, 2, True),  # capped by max_prefill_bs: min(20, 3) = 3
        (0.5, 40, 3, 3, False),
        (0.29, 10, 8, 1, True),  # int(2.9) = 2
        (0.29, 10, 8, 2, False),
        (0.29, 100, 40, 27, True),  # int(28.999999999999996) = 28, not 29
        (0.29, 100, 40, 28, False),
        (1.5, 4, 8, 5, True),  # a ratio above 1: int(6.0) = 6
        (1.5, 4, 8, 6, False),
        (0.3, 3, 8, 0, False),  # int(0.9) == 0: a zero threshold never delays
        (0.0, 10, 8, 0, False),
        (-0.5, 10, 8, 0, False),
        (0.5, 10, 0, 0, False),  # max_prefill_bs == 0
        (0.5, 0, 8, 0, False),  # nobody running: the trigger is off
    ],
)
def test_queue_threshold(ratio, running, max_bs, queue, delays):
    rows = [row(1, running=running, max_bs=max_bs, queue=queue), row(1)]
    out = decide(NO_SKIP, rows, queue_cfg(ratio), 0.0)
    assert out == reference_decide(NO_SKIP, rows, queue_cfg(ratio), 0.0)
    assert out.reason == ("delay_queue" if delays else "no_wait")
    assert out.allow is not delays


def test_queue_threshold_follows_running_batch_not_request_limit():
    # the issue: int(max_running_requests * ratio) = 50 would delay a queue of 3; upstream's
    # threshold is min(int(4 * 0.5), 8) = 2, so a queue of 3 is enough
    cfg = queue_cfg(0.5, max_running_requests=100)
    rows = all_rows(running=4, max_bs=8, queue=3)
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "no_wait"
    old = reference_decide(NO_SKIP, rows, cfg, 0.0, ratio_of="max_running")
    assert old.reason == "delay_queue"  # the reading that was fixed


def test_queue_columns_are_maxima_over_rows():
    cfg = queue_cfg(0.5)
    # running max (8 -> threshold 4) from rank 0, max_prefill_bs from rank 1, queue from 2
    rows = [row(1, running=8), row(1, max_bs=6), row(1, queue=3)]
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "delay_queue"
    rows[2] = row(1, queue=4)
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "no_wait"


def test_slot_condition_named_first_when_both_hold():
    rows = all_rows(running=6, max_bs=4, queue=0)
    assert decide(NO_SKIP, rows, queue_cfg(0.5, max_running_requests=8), 0.0).reason == (
        "delay_slots"
    )


def test_queue_trigger_off_without_ratio():
    rows = all_rows(running=10, max_bs=8, queue=0)
    assert decide(NO_SKIP, rows, DelayerConfig(max_running_requests=BIG), 0.0).reason == "no_wait"
