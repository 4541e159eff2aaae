"""The decision's clock (max_delay_ms), skip_first_delayer and config validation, case by case."""

from __future__ import annotations

import pytest
from decision_reference import (
    DELAY_KINDS,
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
    DelayerConfig,
    decide,
)

# --- max_delay_ms ---------------------------------------------------------------------------

QUEUE_ROWS = all_rows(running=4, max_bs=8, queue=0)


def run_at(cfg, times, state=NO_SKIP):
    """decide() on QUEUE_ROWS at the given instants (checked against the reference)."""
    outs = []
    for now in times:
        out = decide(state, QUEUE_ROWS, cfg, now)
        assert out == reference_decide(state, QUEUE_ROWS, cfg, now)
        outs.append(out)
        state = out.state
    return outs


def test_queue_condition_released_when_max_delay_ms_elapsed_exactly():
    cfg = queue_cfg(max_delay_ms=125.0)
    outs = run_at(cfg, [8.0, 8.03125, 8.0625, 8.124, 8.125])  # 8.125 - 8.0 == 0.125 exactly
    assert reasons(outs) == ["delay_queue"] * 4 + ["wait_success"]
    assert all(o.state.episode_start == 8.0 for o in outs[:4])
    assert outs[-1].passes_waited == 4 and outs[-1].seconds_waited == 0.125
    assert run_at(cfg, [9.0], outs[-1].state)[0].state.episode_start == 9.0  # a new episode


def test_max_delay_ms_clock_starts_with_the_episode():
    cfg = queue_cfg(max_delay_ms=62.5)
    state = decide(NO_SKIP, mixed_rows(), cfg, 1.0).state  # a mixed delay starts the episode
    assert run_at(cfg, [1.0625 - 1e-9], state)[0].reason == "delay_queue"
    assert run_at(cfg, [1.0625], state)[0].reason == "wait_success"


@pytest.mark.parametrize("max_delay_ms", [0.0, -5.0])
def test_non_positive_max_delay_ms_still_delays_the_first_pass(max_delay_ms):
    # upstream only measures an episode that exists: the opening pass always delays
    outs = run_at(queue_cfg(max_delay_ms=max_delay_ms), [3.0, 3.0, 3.5])
    assert reasons(outs) == ["delay_queue", "wait_success", "delay_queue"]


@pytest.mark.parametrize("max_delay_ms", [float("inf"), float("nan")])
def test_unbounded_max_delay_ms_leaves_only_the_pass_cap(max_delay_ms):
    cfg = queue_cfg(max_delay_ms=max_delay_ms, max_delay_passes=3)
    assert reasons(run_at(cfg, [0.0, 1e6, 2e6])) == ["delay_queue"] * 2 + ["wait_timeout"]


def test_max_delay_ms_does_not_release_the_slot_condition():
    cfg = DelayerConfig(max_running_requests=4, max_delay_ms=1.0)
    state = decide(NO_SKIP, DELAY_KINDS["delay_slots"], cfg, 0.0).state
    assert decide(state, DELAY_KINDS["delay_slots"], cfg, 60.0).reason == "delay_slots"


# --- skip_first_delayer ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["delay_slots", "delay_queue"])
def test_skip_first_consumed_exactly_once(kind):
    cfg = queue_cfg(max_delay_passes=2, max_running_requests=4)
    seq = [DELAY_KINDS[kind]] * 3 + [all_rows(running=0)] + [DELAY_KINDS[kind]]
    outs = drive(cfg, seq)
    assert reasons(outs) == ["no_wait", kind, "wait_timeout", "no_wait", kind]
    assert outs[0].allow and outs[0].state == NO_SKIP  # allowed, no episode, skip spent
    assert not any(o.state.skip_first_pending for o in outs)


def test_skip_first_during_an_episode_is_wait_success():
    cfg = DelayerConfig(max_running_requests=4)
    outs = drive(cfg, [mixed_rows(), DELAY_KINDS["delay_slots"]], t0=0.0, dt=1.0)
    assert reasons(outs) == ["delay", "wait_success"]
    assert outs[1].passes_waited == 1 and outs[1].state == NO_SKIP


def test_skip_first_kept_while_no_condition_holds():
    outs = drive(queue_cfg(max_running_requests=4), [mixed_rows(), all_rows(), [row(0)]])
    assert all(o.state.skip_first_pending for o in outs)


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dp_size": 0}, "dp_size must be >= 1, got 0"),
        ({"dp_size": -2}, "dp_size must be >= 1, got -2"),
        ({"max_delay_passes": 2.5}, "max_delay_passes must be an integer, got 2.5"),
        ({"max_delay_passes": True}, "max_delay_passes must be an integer, got True"),
        ({"max_running_requests": None}, "max_running_requests must be an integer, got None"),
        ({"dp_size": "2"}, "dp_size must be an integer, got '2'"),
        ({"queue_min_ratio": float("nan")}, "queue_min_ratio must be a finite number"),
        ({"queue_min_ratio": float("inf")}, "queue_min_ratio must be a finite number"),
        ({"queue_min_ratio": -float("inf")}, "queue_min_ratio must be a finite number"),
        ({"queue_min_ratio": "0.5"}, "queue_min_ratio must be a finite number"),
        ({"max_delay_ms": "5000"}, "max_delay_ms must be a number or None, got '5000'"),
        ({"token_usage_low_watermark": "x"}, "token_usage_low_watermark must be a number"),
    ],
)
def test_config_rejects(kwargs, message):
    with pytest.raises(ValueError) as info:
        DelayerConfig(**kwargs)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_delay_passes": 0},
        {"max_delay_passes": -1},
        {"max_running_requests": 0},
        {"queue_min_ratio": 0.0},
        {"queue_min_ratio": -0.1},
        {"queue_min_ratio": 1.5},
        {"queue_min_ratio": 2},
        {"max_delay_ms": 0.0},
        {"max_delay_ms": -1.0},
        {"max_delay_ms": float("inf")},
        {"token_usage_low_watermark": 1.5},
    ],
)
def test_config_accepts_what_upstream_runs_with(kwargs):
    cfg = DelayerConfig(**kwargs)
    assert all(getattr(cfg, k) == v for k, v in kwargs.items())


def test_max_delay_ms_none_means_5000():
    assert DelayerConfig(max_delay_ms=None) == DelayerConfig(max_delay_ms=5000.0)
    assert DelayerConfig(max_delay_ms=None).max_delay_ms == 5000.0
