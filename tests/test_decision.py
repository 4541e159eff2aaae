"""The pure PrefillDelayer decision: ``decide(state, rows, config, now)``.

Every rule of CONTEXT.md / the ``delayer_core.decision`` docstring, each boundary, plus
hypothesis properties (determinism, rank-order invariance, the delay cap).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

# --- row builders -------------------------------------------------------------------------


def row(prefillable=0, force=0, running=0, max_bs=0, queue=0):
    return (int(prefillable), int(force), running, max_bs, queue)


def all_rows(n=2, **kw):
    return [row(prefillable=1, **kw) for _ in range(n)]


def mixed_rows(n=2, **kw):
    return [row(prefillable=1, **kw)] + [row(prefillable=0) for _ in range(n - 1)]


def none_rows(n=2, **kw):
    return [row(prefillable=0, **kw) for _ in range(n)]


FRESH = DelayerState()
NO_SKIP = DelayerState(skip_first_pending=False)


def drive(config, rows_seq, state=FRESH, t0=100.0, dt=0.01):
    """Thread the state through decide() over a sequence of gathered rows."""
    outcomes = []
    for i, rows in enumerate(rows_seq):
        out = decide(state, rows, config, t0 + i * dt)
        outcomes.append(out)
        state = out.state
    return outcomes


def reasons(outcomes):
    return [o.reason for o in outcomes]


# --- module constants -----------------------------------------------------------------------


def test_constants():
    assert FIELDS == (
        "prefillable",
        "token_watermark_force_allow",
        "running_batch",
        "max_prefill_bs",
        "waiting_queue_len",
    )
    assert NUM_FIELDS == 5
    assert set(STATUSES) == {"all", "none", "mixed"}
    assert set(REASONS) == {
        "",
        "token_watermark",
        "no_wait",
        "wait_success",
        "wait_timeout",
        "delay",
        "delay_slots",
        "delay_queue",
    }


def test_default_config_and_state():
    cfg = DelayerConfig()
    assert cfg.max_delay_passes == 30
    assert cfg.queue_min_ratio is None
    assert cfg.token_usage_low_watermark is None
    assert cfg.max_delay_ms == 5000.0
    assert FRESH.delayed_count == 0
    assert FRESH.episode_start is None
    assert FRESH.skip_first_pending is True
    assert not FRESH.in_episode


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, status",
    [
        ([row(1)], "all"),
        ([row(0)], "none"),
        ([row(1), row(1), row(1)], "all"),
        ([row(0), row(0), row(0)], "none"),
        ([row(1), row(0)], "mixed"),
        ([row(0), row(0), row(1)], "mixed"),
        # any positive value counts as prefillable
        ([row(1), (7, 0, 0, 0, 0)], "all"),
    ],
)
def test_status_classification(rows, status):
    assert GatherSummary.from_rows(rows).status == status
    assert decide(FRESH, rows, DelayerConfig(), 0.0).status == status


def test_gather_summary_reductions():
    rows = [(1, 0, 3, 8, 2), (0, 1, 5, 4, 9), (1, 0, 1, 16, 0)]
    s = GatherSummary.from_rows(rows)
    assert s == GatherSummary(
        prefillable_min=0,
        prefillable_max=1,
        force_allow_max=1,
        running_batch_max=5,
        max_prefill_bs_max=16,
        waiting_queue_max=9,
    )
    assert all(isinstance(v, int) for v in vars(s).values())


def test_gather_summary_empty_rows():
    with pytest.raises(ValueError, match="no gathered rows"):
        GatherSummary.from_rows([])


@pytest.mark.parametrize("bad", [(1, 0, 0, 0), (1, 0, 0, 0, 0, 0), ()])
def test_gather_summary_wrong_row_length(bad):
    with pytest.raises(ValueError, match=rf"{len(bad)} fields, expected 5"):
        GatherSummary.from_rows([row(1), bad])
    with pytest.raises(ValueError):
        decide(FRESH, [bad], DelayerConfig(), 0.0)


def test_decide_accepts_summary_or_rows():
    rows = mixed_rows(3, running=2)
    cfg = DelayerConfig()
    assert decide(FRESH, rows, cfg, 1.0) == decide(FRESH, GatherSummary.from_rows(rows), cfg, 1.0)


# --- none ---------------------------------------------------------------------------------


def test_none_allows_with_empty_reason():
    out = decide(FRESH, none_rows(3), DelayerConfig(), 5.0)
    assert out == Outcome(True, "", "none", FRESH, 0)
    assert not out.ends_episode
    assert out.passes_waited is None and out.seconds_waited is None


def test_none_ignores_force_allow_column():
    # force_allow is only ever set on a prefillable rank; on "none" the column is ignored.
    out = decide(FRESH, [row(0, force=1), row(0)], DelayerConfig(), 0.0)
    assert (out.allow, out.reason, out.status) == (True, "", "none")


def test_none_after_delays_ends_episode():
    cfg = DelayerConfig(max_delay_passes=5)
    outs = drive(cfg, [mixed_rows(), mixed_rows(), none_rows()], t0=10.0, dt=0.5)
    assert reasons(outs) == ["delay", "delay", ""]
    end = outs[-1]
    assert end.allow and end.status == "none"
    assert end.passes_waited == 2
    assert end.seconds_waited == pytest.approx(1.0)
    assert end.state == FRESH


# --- mixed --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_delay_passes", [1, 2, 3, 30])
def test_mixed_delays_then_times_out(max_delay_passes):
    cfg = DelayerConfig(max_delay_passes=max_delay_passes)
    n = max_delay_passes
    outs = drive(cfg, [mixed_rows()] * (n + 1), t0=50.0, dt=0.25)
    assert reasons(outs[: n - 1]) == ["delay"] * (n - 1)
    assert [o.allow for o in outs[: n - 1]] == [False] * (n - 1)
    assert [o.delayed_count for o in outs[: n - 1]] == list(range(1, n))
    for o in outs[: n - 1]:
        assert o.status == "mixed"
        assert not o.ends_episode
        assert o.state.episode_start == 50.0  # the episode's start is kept
    timeout = outs[n - 1]
    assert (timeout.allow, timeout.reason, timeout.status) == (True, "wait_timeout", "mixed")
    assert timeout.state.delayed_count == 0 and not timeout.state.in_episode
    if n == 1:
        # no delay, so no episode to end
        assert timeout.passes_waited is None and timeout.seconds_waited is None
    else:
        assert timeout.passes_waited == n - 1
        assert timeout.delayed_count == n - 1
        assert timeout.seconds_waited == pytest.approx((n - 1) * 0.25)
    # after the release a new episode starts from scratch
    nxt = outs[n]
    if n == 1:
        assert nxt.reason == "wait_timeout"
    else:
        assert (nxt.allow, nxt.reason, nxt.delayed_count) == (False, "delay", 1)
        assert nxt.state.episode_start == 50.0 + n * 0.25


def test_three_passes_two_delays_release_on_third():
    outs = drive(DelayerConfig(max_delay_passes=3), [mixed_rows()] * 3)
    assert reasons(outs) == ["delay", "delay", "wait_timeout"]


def test_mixed_does_not_consume_skip_first():
    outs = drive(DelayerConfig(max_delay_passes=3), [mixed_rows()] * 3)
    assert all(o.state.skip_first_pending for o in outs)


def test_mixed_wait_success():
    cfg = DelayerConfig(max_delay_passes=30)
    outs = drive(cfg, [mixed_rows(), mixed_rows(), mixed_rows(), all_rows()], t0=0.0, dt=0.1)
    assert reasons(outs) == ["delay", "delay", "delay", "wait_success"]
    end = outs[-1]
    assert end.allow and end.status == "all"
    assert end.passes_waited == 3
    assert end.seconds_waited == pytest.approx(0.3)
    assert end.state == FRESH


def test_seconds_waited_never_negative():
    state = decide(FRESH, mixed_rows(), DelayerConfig(), 10.0).state
    out = decide(state, all_rows(), DelayerConfig(), 9.0)  # a clock that went back
    assert out.seconds_waited == 0.0


def test_no_wait_without_episode():
    out = decide(FRESH, all_rows(), DelayerConfig(), 1.0)
    assert (out.allow, out.reason, out.status) == (True, "no_wait", "all")
    assert not out.ends_episode
    assert out.state == FRESH  # skip_first untouched: no condition held


# --- token watermark ------------------------------------------------------------------------


def test_token_watermark_in_all():
    out = decide(FRESH, [row(1), row(1, force=1)], DelayerConfig(), 0.0)
    assert (out.allow, out.reason, out.status) == (True, "token_watermark", "all")
    assert not out.ends_episode


def test_token_watermark_in_mixed():
    out = decide(FRESH, [row(0), row(1, force=1), row(0)], DelayerConfig(), 0.0)
    assert (out.allow, out.reason, out.status) == (True, "token_watermark", "mixed")


def test_token_watermark_beats_slot_condition():
    cfg = DelayerConfig(max_running_requests=4)
    rows = [row(1, force=1, running=4, max_bs=4), row(1)]
    out = decide(FRESH, rows, cfg, 0.0)
    assert out.reason == "token_watermark"
    assert out.state.skip_first_pending  # the slot condition was never evaluated


def test_token_watermark_ends_episode():
    cfg = DelayerConfig(max_delay_passes=10)
    seq = [mixed_rows(), mixed_rows(), [row(1, force=1), row(0)]]
    outs = drive(cfg, seq, t0=3.0, dt=2.0)
    assert reasons(outs) == ["delay", "delay", "token_watermark"]
    assert outs[-1].passes_waited == 2
    assert outs[-1].seconds_waited == pytest.approx(4.0)
    assert outs[-1].state == FRESH


# --- slot condition -------------------------------------------------------------------------


def test_slot_condition_boundary_dp_attention():
    cfg = DelayerConfig(max_running_requests=10, dp_size=2)
    # free = 10 - 6 = 4 == max_prefill_bs -> no delay
    ok = decide(NO_SKIP, [row(1, running=6, max_bs=2), row(1, running=1, max_bs=4)], cfg, 0.0)
    assert (ok.allow, ok.reason) == (True, "no_wait")
    # one less free slot -> delay
    rows = [row(1, running=7, max_bs=2), row(1, running=1, max_bs=4)]
    out = decide(NO_SKIP, rows, cfg, 0.0)
    assert (out.allow, out.reason, out.status, out.delayed_count) == (
        False,
        "delay_slots",
        "all",
        1,
    )
    # equivalently, max_prefill_bs one more than the free slots
    rows = [row(1, running=6, max_bs=5), row(1)]
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "delay_slots"


def test_slot_condition_uses_max_over_rows():
    cfg = DelayerConfig(max_running_requests=8)
    # running max comes from one rank, max_prefill_bs max from another
    rows = [row(1, running=5, max_bs=1), row(1, running=0, max_bs=4)]
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "delay_slots"  # 8-5=3 < 4
    rows = [row(1, running=4, max_bs=1), row(1, running=0, max_bs=4)]
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "no_wait"  # 8-4=4


@pytest.mark.parametrize(
    "max_running_requests, dp_size, expected",
    [(7, 2, 4), (8, 2, 4), (9, 2, 5), (1, 4, 1), (10, 3, 4), (5, 1, 5)],
)
def test_max_running_without_dp_attention_rounds_up(max_running_requests, dp_size, expected):
    cfg = DelayerConfig(
        max_running_requests=max_running_requests, dp_size=dp_size, enable_dp_attention=False
    )
    assert cfg.max_running == expected == math.ceil(max_running_requests / dp_size)
    dp_attn = DelayerConfig(max_running_requests=max_running_requests, dp_size=dp_size)
    assert dp_attn.max_running == max_running_requests


def test_slot_condition_without_dp_attention_boundary():
    # max_running = ceil(7 / 2) = 4
    cfg = DelayerConfig(max_running_requests=7, dp_size=2, enable_dp_attention=False)
    assert decide(NO_SKIP, [row(1, running=2, max_bs=2)], cfg, 0.0).reason == "no_wait"
    assert decide(NO_SKIP, [row(1, running=3, max_bs=2)], cfg, 0.0).reason == "delay_slots"
    # with DP attention the same row has 7 - 3 = 4 free slots
    cfg_dp = DelayerConfig(max_running_requests=7, dp_size=2)
    assert decide(NO_SKIP, [row(1, running=3, max_bs=2)], cfg_dp, 0.0).reason == "no_wait"


def test_slot_condition_capped_then_timeout():
    cfg = DelayerConfig(max_delay_passes=3, max_running_requests=4)
    rows = all_rows(running=4, max_bs=1)
    outs = drive(cfg, [rows] * 4, state=NO_SKIP)
    assert reasons(outs) == ["delay_slots", "delay_slots", "wait_timeout", "delay_slots"]
    assert outs[2].passes_waited == 2


def test_slot_delay_then_mixed_shares_the_cap():
    cfg = DelayerConfig(max_delay_passes=3, max_running_requests=4)
    slots = all_rows(running=4, max_bs=1)
    outs = drive(cfg, [slots, mixed_rows(), mixed_rows()], state=NO_SKIP, t0=1.0, dt=1.0)
    assert reasons(outs) == ["delay_slots", "delay", "wait_timeout"]
    assert outs[1].state.episode_start == 1.0
    assert outs[2].passes_waited == 2 and outs[2].seconds_waited == pytest.approx(2.0)


def test_slot_condition_released_is_wait_success():
    cfg = DelayerConfig(max_delay_passes=30, max_running_requests=4)
    outs = drive(cfg, [all_rows(running=4, max_bs=1), all_rows(running=3, max_bs=1)], NO_SKIP)
    assert reasons(outs) == ["delay_slots", "wait_success"]
    assert outs[1].passes_waited == 1


def test_slot_condition_not_checked_when_mixed():
    cfg = DelayerConfig(max_running_requests=4)
    rows = [row(1, running=4, max_bs=4), row(0)]
    out = decide(FRESH, rows, cfg, 0.0)
    assert out.reason == "delay"
    assert out.state.skip_first_pending


# --- skip_first_delayer ---------------------------------------------------------------------


def test_skip_first_consumed_exactly_once_slots():
    cfg = DelayerConfig(max_delay_passes=30, max_running_requests=4)
    slots = all_rows(running=4, max_bs=1)
    outs = drive(cfg, [slots, slots, slots])
    first = outs[0]
    assert (first.allow, first.reason, first.status) == (True, "no_wait", "all")
    assert first.state.skip_first_pending is False
    assert first.state.delayed_count == 0 and not first.state.in_episode
    assert reasons(outs[1:]) == ["delay_slots", "delay_slots"]
    assert all(o.state.skip_first_pending is False for o in outs)


def test_skip_first_not_restored_by_episode_end():
    cfg = DelayerConfig(max_delay_passes=2, max_running_requests=4)
    slots = all_rows(running=4, max_bs=1)
    outs = drive(cfg, [slots, slots, slots, all_rows(), slots])
    assert reasons(outs) == ["no_wait", "delay_slots", "wait_timeout", "no_wait", "delay_slots"]


def test_skip_first_consumed_during_episode_is_wait_success():
    cfg = DelayerConfig(max_delay_passes=30, max_running_requests=4)
    slots = all_rows(running=4, max_bs=1)
    outs = drive(cfg, [mixed_rows(), slots, slots], t0=0.0, dt=1.0)
    assert reasons(outs) == ["delay", "wait_success", "delay_slots"]
    assert outs[1].passes_waited == 1 and outs[1].seconds_waited == pytest.approx(1.0)
    assert outs[1].state == DelayerState(skip_first_pending=False)


def test_skip_first_queue_condition():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=100)
    q = all_rows(running=1, max_bs=8, queue=0)
    outs = drive(cfg, [q, q])
    assert reasons(outs) == ["no_wait", "delay_queue"]
    assert outs[0].state.skip_first_pending is False


# --- queue condition ------------------------------------------------------------------------


def test_queue_trigger_off_by_default():
    cfg = DelayerConfig(max_running_requests=100)
    assert decide(NO_SKIP, all_rows(running=1, max_bs=8, queue=0), cfg, 0.0).reason == "no_wait"


def test_queue_trigger_needs_some_rank_running():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=100)
    idle = all_rows(running=0, max_bs=8, queue=0)
    assert decide(NO_SKIP, idle, cfg, 0.0).reason == "no_wait"
    one_running = [row(1, running=0, max_bs=8), row(1, running=1, max_bs=0)]
    assert decide(NO_SKIP, one_running, cfg, 0.0).reason == "delay_queue"


@pytest.mark.parametrize(
    "max_running, ratio, max_bs, queue, delays",
    [
        # threshold = min(int(100 * 0.05), 8) = 5
        (100, 0.05, 8, 4, True),
        (100, 0.05, 8, 5, False),  # threshold == queue: no delay
        (100, 0.05, 8, 6, False),
        # threshold = min(int(100 * 0.5), 3) = 3: capped by max_prefill_bs
        (100, 0.5, 3, 2, True),
        (100, 0.5, 3, 3, False),
        # int() truncates: int(10 * 0.29) = 2
        (10, 0.29, 8, 1, True),
        (10, 0.29, 8, 2, False),
        # threshold 0 never delays, even with an empty queue
        (10, 0.05, 8, 0, False),  # int(0.5) == 0
        (100, 0.5, 0, 0, False),  # max_prefill_bs == 0
    ],
)
def test_queue_threshold(max_running, ratio, max_bs, queue, delays):
    cfg = DelayerConfig(queue_min_ratio=ratio, max_running_requests=max_running)
    rows = [row(1, running=1, max_bs=max_bs, queue=queue), row(1, running=1, queue=0)]
    out = decide(NO_SKIP, rows, cfg, 0.0)
    assert out.reason == ("delay_queue" if delays else "no_wait")
    assert out.allow is not delays


def test_queue_threshold_uses_max_queue_over_rows():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=100)
    rows = [row(1, running=1, max_bs=8, queue=0), row(1, running=0, max_bs=1, queue=8)]
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "no_wait"


def test_queue_threshold_without_dp_attention_uses_divided_limit():
    # max_running = ceil(7 / 2) = 4; int(4 * 0.5) = 2 (not int(7 * 0.5) = 3)
    cfg = DelayerConfig(
        queue_min_ratio=0.5, max_running_requests=7, dp_size=2, enable_dp_attention=False
    )
    assert decide(NO_SKIP, [row(1, running=1, max_bs=3, queue=1)], cfg, 0.0).reason == (
        "delay_queue"
    )
    assert decide(NO_SKIP, [row(1, running=1, max_bs=3, queue=2)], cfg, 0.0).reason == "no_wait"


def test_slot_condition_wins_over_queue_condition():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=8)
    rows = all_rows(running=6, max_bs=4, queue=0)
    assert decide(NO_SKIP, rows, cfg, 0.0).reason == "delay_slots"


def test_queue_condition_stops_after_max_delay_ms():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=100, max_delay_ms=125.0)
    q = all_rows(running=1, max_bs=8, queue=0)
    state = NO_SKIP
    times = [8.0, 8.03125, 8.0625, 8.124, 8.125]  # 125 ms after the start: expired
    outs = []
    for t in times:
        out = decide(state, q, cfg, t)
        outs.append(out)
        state = out.state
    assert reasons(outs) == ["delay_queue"] * 4 + ["wait_success"]
    assert all(o.state.episode_start == 8.0 for o in outs[:4])  # measured from the start
    end = outs[-1]
    assert end.allow and end.passes_waited == 4
    assert end.seconds_waited == 0.125
    # the next pass starts a new episode: the queue condition holds again
    again = decide(end.state, q, cfg, 9.0)
    assert again.reason == "delay_queue" and again.state.episode_start == 9.0


def test_queue_condition_clock_starts_with_earlier_mixed_delay():
    cfg = DelayerConfig(queue_min_ratio=0.5, max_running_requests=100, max_delay_ms=50.0)
    q = all_rows(running=1, max_bs=8, queue=0)
    st0 = decide(NO_SKIP, mixed_rows(), cfg, 1.0).state
    assert decide(st0, q, cfg, 1.04).reason == "delay_queue"
    assert decide(st0, q, cfg, 1.06).reason == "wait_success"


def test_queue_condition_also_capped_by_max_delay_passes():
    cfg = DelayerConfig(
        max_delay_passes=3, queue_min_ratio=0.5, max_running_requests=100, max_delay_ms=1e9
    )
    q = all_rows(running=1, max_bs=8, queue=0)
    outs = drive(cfg, [q] * 3, state=NO_SKIP)
    assert reasons(outs) == ["delay_queue", "delay_queue", "wait_timeout"]


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_delay_passes": 0}, "max_delay_passes"),
        ({"max_delay_passes": -3}, "max_delay_passes"),
        ({"dp_size": 0}, "dp_size"),
        ({"max_running_requests": 0}, "max_running_requests"),
        ({"queue_min_ratio": 0.0}, "queue_min_ratio"),
        ({"queue_min_ratio": -0.1}, "queue_min_ratio"),
        ({"queue_min_ratio": 1.01}, "queue_min_ratio"),
        ({"queue_min_ratio": float("nan")}, "queue_min_ratio"),
        ({"max_delay_ms": 0.0}, "max_delay_ms"),
        ({"max_delay_ms": -1.0}, "max_delay_ms"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DelayerConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_delay_passes": 1},
        {"dp_size": 1, "max_running_requests": 1},
        {"queue_min_ratio": 1.0},
        {"queue_min_ratio": 1e-9},
        {"max_delay_ms": 1e-3},
    ],
)
def test_config_validation_accepts_boundaries(kwargs):
    DelayerConfig(**kwargs)


def test_config_and_state_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        DelayerConfig().max_delay_passes = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FRESH.delayed_count = 5  # type: ignore[misc]


# --- hypothesis properties ------------------------------------------------------------------

small = st.integers(min_value=0, max_value=12)
rows_st = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 1), small, small, small),
    min_size=1,
    max_size=6,
)
configs_st = st.builds(
    DelayerConfig,
    max_delay_passes=st.integers(1, 6),
    max_running_requests=st.integers(1, 24),
    dp_size=st.integers(1, 4),
    enable_dp_attention=st.booleans(),
    queue_min_ratio=st.one_of(st.none(), st.floats(0.01, 1.0)),
    max_delay_ms=st.floats(1.0, 500.0),
)


@st.composite
def states_st(draw):
    """A reachable state: delayed_count > 0 exactly while an episode runs."""
    count = draw(st.integers(0, 4))
    start = draw(st.floats(0.0, 10.0)) if count else None
    return DelayerState(count, start, draw(st.booleans()))


PROPS = settings(max_examples=200, deadline=None)


@PROPS
@given(
    state=states_st(),
    rows=rows_st,
    config=configs_st,
    now=st.floats(0.0, 20.0),
    data=st.data(),
)
def test_outcome_depends_only_on_inputs(state, rows, config, now, data):
    if state.delayed_count > config.max_delay_passes - 1:
        state = DelayerState(skip_first_pending=state.skip_first_pending)  # unreachable
    first = decide(state, rows, config, now)
    assert decide(state, rows, config, now) == first  # deterministic, no hidden state
    permuted = data.draw(st.permutations(rows))
    assert decide(state, permuted, config, now) == first  # rank order does not matter
    assert decide(state, GatherSummary.from_rows(rows), config, now) == first
    assert first.status in STATUSES and first.reason in REASONS
    assert first.allow == (first.reason not in ("delay", "delay_slots", "delay_queue"))
    if first.allow:
        assert first.state.delayed_count == 0 and not first.state.in_episode
        assert first.ends_episode == state.in_episode
    else:
        assert first.delayed_count == first.state.delayed_count == state.delayed_count + 1


@PROPS
@given(
    config=configs_st,
    seq=st.lists(st.tuples(rows_st, st.floats(0.0, 0.2)), min_size=1, max_size=40),
)
def test_delays_never_exceed_cap(config, seq):
    cap = config.max_delay_passes - 1
    state = DelayerState()
    now = 0.0
    consecutive = 0
    skips_consumed = 0
    for rows, dt in seq:
        now += dt
        out = decide(state, rows, config, now)
        if out.allow:
            assert out.state.delayed_count == 0 and not out.state.in_episode
            assert out.ends_episode == (consecutive > 0)
            if out.ends_episode:
                assert out.passes_waited == consecutive
                assert 0.0 <= out.seconds_waited <= now
            consecutive = 0
        else:
            consecutive += 1
            assert out.state.in_episode and out.state.episode_start <= now
            assert out.delayed_count == out.state.delayed_count == consecutive
        assert consecutive <= cap
        assert out.state.delayed_count <= cap
        assert out.state.skip_first_pending <= state.skip_first_pending  # never re-armed
        if state.skip_first_pending and not out.state.skip_first_pending:
            skips_consumed += 1
            assert out.allow and out.status == "all"
        state = out.state
    assert skips_consumed <= 1
