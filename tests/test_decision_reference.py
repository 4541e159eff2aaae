"""``decide`` against ``reference_decide`` (decision_reference.py): Hypothesis over random rows,
configs, states and multi-pass runs, and an exhaustive grid that pins the queue threshold.
"""

from __future__ import annotations

import itertools

from decision_reference import (
    BIG,
    NO_SKIP,
    reference_decide,
    row,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from delayer_core.decision import (
    DelayerConfig,
    DelayerState,
    GatherSummary,
    decide,
)

# --- properties against the reference -------------------------------------------------------

count = st.integers(0, 12)
rows_st = st.lists(
    st.tuples(st.sampled_from((1, 1, 1, 0)), st.sampled_from((0, 0, 0, 0, 1)), count, count, count),
    min_size=1,
    max_size=4,
)
configs_st = st.builds(
    DelayerConfig,
    max_delay_passes=st.integers(-1, 6),
    max_running_requests=st.one_of(st.integers(0, 40), st.just(BIG)),
    dp_size=st.integers(1, 4),
    enable_dp_attention=st.booleans(),
    queue_min_ratio=st.one_of(
        st.none(),
        st.sampled_from((0.1, 0.29, 0.5, 0.57, 0.7, 1.0, 1.5, 0.0, -0.25)),
        st.floats(-0.5, 2.0),
    ),
    max_delay_ms=st.one_of(
        st.none(),
        st.sampled_from((0.0, -1.0, 62.5, 125.0, float("inf"), float("nan"))),
        st.floats(0.0, 300.0),
    ),
)
dt_st = st.one_of(st.sampled_from((0.0, 0.03125, 0.0625, 0.125)), st.floats(0.0, 0.2))


@st.composite
def states_st(draw):
    """delayed_count > 0 exactly while an episode runs (as decide() leaves it)."""
    delayed = draw(st.integers(0, 5))
    start = draw(st.floats(0.0, 10.0)) if delayed else None
    return DelayerState(delayed, start, draw(st.booleans()))


PROPS = settings(max_examples=300, deadline=None)


@PROPS
@given(state=states_st(), rows=rows_st, config=configs_st, dt=dt_st, data=st.data())
def test_decide_matches_reference(state, rows, config, dt, data):
    now = (state.episode_start if state.in_episode else 5.0) + dt
    out = decide(state, rows, config, now)
    assert out == reference_decide(state, rows, config, now)
    assert decide(state, data.draw(st.permutations(rows)), config, now) == out  # rank order
    assert decide(state, GatherSummary.from_rows(rows), config, now) == out
    assert out.allow == (out.reason not in ("delay", "delay_slots", "delay_queue"))


@settings(max_examples=150, deadline=None)
@given(config=configs_st, seq=st.lists(st.tuples(rows_st, dt_st), min_size=1, max_size=30))
def test_runs_match_reference(config, seq):
    state = ref_state = DelayerState()
    now, consecutive, skips = 0.0, 0, 0
    for rows, dt in seq:
        now += dt
        out = decide(state, rows, config, now)
        ref = reference_decide(ref_state, rows, config, now)
        assert out == ref
        consecutive = 0 if out.allow else consecutive + 1
        assert consecutive <= max(0, config.max_delay_passes - 1)
        skips += state.skip_first_pending and not out.state.skip_first_pending
        state, ref_state = out.state, ref.state
    assert skips <= 1


def test_grid_matches_reference_and_tells_the_readings_apart():
    """Every small all-prefillable case with the queue trigger on, passes 1 and 2 of an
    episode; the old reading must disagree somewhere, or the comparison proves nothing."""
    disagree_with_old = queue_delays = 0
    grid = itertools.product(
        range(7),  # running_batch
        range(7),  # max_prefill_bs
        range(7),  # waiting_queue_len
        (0.1, 0.29, 0.5, 1.0, 1.5),
        (0, 6, 13, 100),  # max_running_requests
        ((True, 1), (False, 2), (False, 3)),
        (NO_SKIP, DelayerState(1, 0.0, False)),
    )
    for running, max_bs, queue, ratio, limit, (dp_attn, dp), state in grid:
        cfg = DelayerConfig(
            max_running_requests=limit,
            dp_size=dp,
            enable_dp_attention=dp_attn,
            queue_min_ratio=ratio,
            max_delay_ms=100.0,
        )
        rows = [row(1, running=running, max_bs=max_bs, queue=queue), row(1)]
        out = decide(state, rows, cfg, 0.05)
        assert out == reference_decide(state, rows, cfg, 0.05)
        queue_delays += out.reason == "delay_queue"
        old = reference_decide(state, rows, cfg, 0.05, ratio_of="max_running")
        disagree_with_old += old != out
    assert queue_delays > 100
    assert disagree_with_old > 100
