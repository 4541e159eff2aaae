"""SGLang's PrefillDelayer decision restated straight-line, and builders for the decision's
tests. ``reference_decide`` restates ``_negotiate_should_allow_prefill_pure``
(python/sglang/srt/managers/prefill_delayer.py, the 5-field version; rule-5 delays capped by
max_delay_passes as in later upstream) from the gathered rows, without sharing code with
``delayer_core.decision``.
"""

from __future__ import annotations

from delayer_core.decision import (
    DelayerConfig,
    DelayerState,
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


# rows that make each kind of delay (with queue_cfg(max_running_requests=4) for the queue)
DELAY_KINDS = {
    "delay": mixed_rows(),
    "delay_slots": all_rows(running=4, max_bs=1),
    # threshold min(int(2 * 0.5), 1) = 1 > 0 queued; 4 - 2 free slots >= 1
    "delay_queue": all_rows(running=2, max_bs=1, queue=0),
}
