"""The pure PrefillDelayer decision: ``decide(state, rows, config, now)``.

``reference_decide`` below restates SGLang's ``_negotiate_should_allow_prefill_pure``
(python/sglang/srt/managers/prefill_delayer.py, the 5-field version; rule-5 delays capped by
max_delay_passes as in later upstream) straight-line, from the gathered rows, without sharing
code with ``delayer_core.decision``. Hypothesis compares the
two over random rows, configs, states and multi-pass runs; an exhaustive grid pins the queue
threshold; explicit cases cover each boundary.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

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

# --- the reference ------------------------------------------------------------------------


def reference_decide(state, rows, cfg, now, *, ratio_of="running_batch"):
    """Upstream's decision, spelled out. ``ratio_of="max_running"`` is the old misreading
    (threshold from the request limit), kept only to show the tests can tell them apart."""
    prefillable = [r[0] for r in rows]
    if min(prefillable) > 0:
        status = "all"
    elif max(prefillable) == 0:
        status = "none"
    else:
        status = "mixed"
    any_force = max(r[1] for r in rows) > 0
    running = max(r[2] for r in rows)
    max_bs = max(r[3] for r in rows)
    queue = max(r[4] for r in rows)
    waited = state.episode_start is not None

    def release(reason, skip_pending=state.skip_first_pending):
        end = DelayerState(0, None, skip_pending)
        if not waited:
            return Outcome(True, reason, status, end, 0)
        seconds = max(0.0, now - state.episode_start)
        return Outcome(True, reason, status, end, state.delayed_count, state.delayed_count, seconds)

    def hold(reason):
        if not state.delayed_count < cfg.max_delay_passes - 1:
            return release("wait_timeout")
        count = state.delayed_count + 1
        start = state.episode_start if waited else now
        return Outcome(
            False, reason, status, DelayerState(count, start, state.skip_first_pending), count
        )

    if status == "none":
        return release("")
    if any_force:
        return release("token_watermark")
    if status == "mixed":
        return hold("delay")

    limit = cfg.max_running_requests
    if not cfg.enable_dp_attention:
        limit = -(-limit // cfg.dp_size)  # ceil, by another route than the module's
    slot_condition = limit - running < max_bs
    queue_condition = False
    if cfg.queue_min_ratio is not None and running > 0:
        base = running if ratio_of == "running_batch" else limit
        threshold = min(int(base * cfg.queue_min_ratio), max_bs)
        queue_condition = threshold > 0 and queue < threshold
        elapsed_ms = (now - state.episode_start) * 1000.0 if waited else None
        if queue_condition and waited and elapsed_ms >= cfg.max_delay_ms:
            queue_condition = False
    no_delay = "wait_success" if waited else "no_wait"
    if not (slot_condition or queue_condition):
        return release(no_delay)
    if state.skip_first_pending:
        return release(no_delay, skip_pending=False)
    return hold("delay_slots" if slot_condition else "delay_queue")


# --- builders -----------------------------------------------------------------------------


def row(prefillable=0, force=0, running=0, max_bs=0, queue=0):
    return (int(prefillable), int(force), running, max_bs, queue)


def all_rows(n=2, **kw):
    return [row(prefillable=1, **kw) for _ in range(n)]


def mixed_rows(n=2, **kw):
    return [row(prefillable=1, **kw)] + [row(prefillable=0) for _ in range(n - 1)]


FRESH = DelayerState()
NO_SKIP = DelayerState(skip_first_pending=False)
BIG = 1 << 30  # a request limit that never triggers the slot condition


def drive(config, rows_seq, state=FRESH, t0=100.0, dt=0.01):
    """Thread the state through decide() (checked against the reference at every pass)."""
    outcomes = []
    for i, rows in enumerate(rows_seq):
        now = t0 + i * dt
        out = decide(state, rows, config, now)
        assert out == reference_decide(state, rows, config, now)
        outcomes.append(out)
        state = out.state
    return outcomes


def reasons(outcomes):
    return [o.reason for o in outcomes]


def queue_cfg(ratio=0.5, **kw):
    return DelayerConfig(queue_min_ratio=ratio, **{"max_running_requests": BIG, **kw})


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

DELAY_KINDS = {
    "delay": mixed_rows(),
    "delay_slots": all_rows(running=4, max_bs=1),
    # threshold min(int(2 * 0.5), 1) = 1 > 0 queued; 4 - 2 free slots >= 1
    "delay_queue": all_rows(running=2, max_bs=1, queue=0),
}


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
