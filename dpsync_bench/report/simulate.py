"""Discrete-event simulation (SimPy) of a DP-attention engine running the PrefillDelayer.

Each of N DP ranks runs a scheduler loop: receive requests; one gather per pass (its cost a
draw from a measured SyncModel); `delayer_core.decide` on the gathered rows; build a batch;
launch a lock-step forward (every rank joins every forward, as the EP all-to-all makes
them); with the overlap scheduler, run the next pass while that forward runs. A collective
is a rendezvous whose last arrival completes it for all ranks, so the engine's bookkeeping
happens once, at one instant, and every rank sees the same state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import simpy

from delayer_core.decision import DelayerConfig, DelayerState, decide

from .scenarios import Request, Scenario, SyncModel


@dataclass(frozen=True)
class EngineConfig:
    dp_size: int = 4
    delayer: bool = True
    max_delay_passes: int = 30
    overlap: bool = True  # the pass for forward N+1 runs while forward N runs
    disaggregated_prefill: bool = True  # prefilled requests leave for a decode engine
    max_prefill_tokens: int = 16_384
    pass_overhead_us: float = 0.0  # the scheduler's own host work per pass, besides the gather

    def __post_init__(self) -> None:
        if self.dp_size < 1 or self.max_prefill_tokens < 1 or self.pass_overhead_us < 0:
            raise ValueError("dp size and max prefill tokens must be >= 1, pass overhead >= 0")
        if self.max_delay_passes < 1:
            raise ValueError(f"max_delay_passes must be >= 1, got {self.max_delay_passes}")


@dataclass
class RequestOutcome:
    request: Request
    ttft_s: float = math.nan
    e2e_s: float = math.nan
    delayed_passes: int = 0
    delayed_s: float = 0.0
    tokens: int = 0  # scheduled so far
    first_delay: Optional[float] = None


@dataclass(frozen=True)
class SimResult:
    requests: tuple[RequestOutcome, ...]
    prefill_rounds: int
    passes: int
    delayed_passes: int
    sync_lost_s: float  # GPU-idle time spent waiting for a pass's decision
    forwards: tuple[tuple[float, float, tuple[int, ...]], ...]  # start, end, prefill tokens

    @property
    def makespan_s(self) -> float:
        first = min(o.request.arrival_s for o in self.requests)
        return max(o.request.arrival_s + o.e2e_s for o in self.requests) - first

    @property
    def mean_ttft_s(self) -> float:
        return float(np.mean([o.ttft_s for o in self.requests]))

    @property
    def mean_e2e_s(self) -> float:
        return float(np.mean([o.e2e_s for o in self.requests]))

    @property
    def mean_delayed_s(self) -> float:
        return float(np.mean([o.delayed_s for o in self.requests]))


@dataclass(frozen=True)
class _Batch:
    prefill: tuple[RequestOutcome, ...] = ()
    decode: tuple[RequestOutcome, ...] = ()


@dataclass(frozen=True)
class _Step:
    forward_end: Optional[float]  # None: no rank had work
    idle_until: Optional[float]  # nothing anywhere: sleep until the next arrival


class _Rendezvous:
    """A collective: each rank joins with a value; the last arrival calls
    `complete(values) -> (seconds it takes, result)` and every rank resumes with the result."""

    def __init__(self, env: simpy.Environment, size: int, complete) -> None:
        self.env, self.size, self.complete = env, size, complete
        self._values: dict[int, object] = {}
        self._done = env.event()

    def join(self, rank: int, value) -> simpy.Event:
        done = self._done
        self._values[rank] = value
        if len(self._values) == self.size:
            values = [self._values[r] for r in range(self.size)]
            self._values, self._done = {}, self.env.event()
            delay, result = self.complete(values)
            self.env.timeout(delay).callbacks.append(lambda _: done.succeed(result))
        return done


class _Rank:
    def __init__(self, index: int, inbox: list[RequestOutcome]) -> None:
        self.index, self.inbox = index, deque(inbox)  # requests not yet received, by arrival
        self.waiting: deque[RequestOutcome] = deque()
        self.running: list[RequestOutcome] = []
        self.max_prefill_bs = 0  # high-water mark, as upstream reports it

    def receive(self, now: float) -> None:
        while self.inbox and self.inbox[0].request.arrival_s <= now:
            self.waiting.append(self.inbox.popleft())

    def row(self) -> tuple[int, int, int, int, int]:
        # The KV pool is not modeled, so the token watermark never forces a prefill.
        waiting = len(self.waiting)
        return (int(waiting > 0), 0, len(self.running), self.max_prefill_bs, waiting)

    def note_delay(self, pass_start: float) -> None:
        for o in self.waiting:
            o.delayed_passes += 1
            o.first_delay = pass_start if o.first_delay is None else o.first_delay

    def take_batch(self, allow: bool, max_tokens: int) -> _Batch:
        if not (allow and self.waiting):
            return _Batch(decode=tuple(self.running))
        batch = [self.waiting.popleft()]
        tokens = batch[0].request.input_tokens
        while self.waiting and tokens + self.waiting[0].request.input_tokens <= max_tokens:
            batch.append(self.waiting.popleft())
            tokens += batch[-1].request.input_tokens
        self.max_prefill_bs = max(self.max_prefill_bs, len(batch))
        return _Batch(prefill=tuple(batch))


class _Engine:
    def __init__(self, scenario: Scenario, sync: SyncModel, config: EngineConfig, seed: int):
        self.env, self.sync, self.config = simpy.Environment(), sync, config
        self.model, self.rng = scenario.forward, np.random.default_rng(seed)
        self.outcomes = [
            RequestOutcome(r) for r in sorted(scenario.requests, key=lambda r: r.arrival_s)
        ]
        self.ranks = [
            _Rank(i, [o for o in self.outcomes if o.request.rank == i])
            for i in range(config.dp_size)
        ]
        self.delayer_config = DelayerConfig(
            max_delay_passes=config.max_delay_passes, dp_size=config.dp_size
        )
        self.gather = _Rendezvous(self.env, config.dp_size, self._gathered)
        self.launch = _Rendezvous(self.env, config.dp_size, self._launched)
        self.unfinished, self.gpu_busy_until = len(self.outcomes), 0.0
        self.passes = self.delayed_passes = self.prefill_rounds = 0
        self.sync_lost_s, self.forwards = 0.0, []

    def rank_loop(self, rank: _Rank):
        env, config = self.env, self.config
        state, in_flight = DelayerState(), None
        while self.unfinished:
            rank.receive(env.now)
            pass_start = env.now
            rows = yield self.gather.join(rank.index, rank.row())
            allow = True
            if config.delayer:  # every rank decides on the same rows, so all agree
                outcome = decide(state, rows, self.delayer_config, env.now)
                state, allow = outcome.state, outcome.allow
                if not allow:
                    rank.note_delay(pass_start)
                    if rank.index == 0:  # count each pass once
                        self.delayed_passes += 1
            batch = rank.take_batch(allow, config.max_prefill_tokens)
            step = yield self.launch.join(rank.index, batch)
            if config.overlap:  # launch N+1, then wait for N's results
                wait_for, in_flight = in_flight, step.forward_end
            else:
                wait_for = step.forward_end
            until = max(t for t in (wait_for, step.idle_until, env.now) if t is not None)
            if until > env.now:
                yield env.timeout(until - env.now)

    def _gathered(self, rows):
        self.passes += 1
        now, decided = self.env.now, self.env.now
        if self.config.delayer:
            decided = self.sync.decision_at(self.rng, now, self.gpu_busy_until)
            self.sync_lost_s += max(0.0, decided - max(now, self.gpu_busy_until))
        return decided - now + self.config.pass_overhead_us * 1e-6, rows

    def _launched(self, batches: list[_Batch]):
        now, end = self.env.now, None
        tokens = tuple(sum(o.request.input_tokens for o in b.prefill) for b in batches)
        if any(tokens) or any(b.decode for b in batches):
            start = max(now, self.gpu_busy_until)  # the GPU runs one forward at a time
            step_s = self.model.decode_step_us * 1e-6
            end = start + (self.model.prefill_s(tokens) if any(tokens) else step_s)
            self.gpu_busy_until, self.prefill_rounds = end, self.prefill_rounds + any(tokens)
            self.forwards.append((start, end, tokens))
            for rank, batch in zip(self.ranks, batches, strict=True):
                self._account(rank, batch, now, end)
        idle = end is None and self.gpu_busy_until <= now
        if idle and not any(r.waiting or r.running for r in self.ranks):
            arrivals = [r.inbox[0].request.arrival_s for r in self.ranks if r.inbox]
            return 0.0, _Step(None, min(arrivals, default=now))
        return 0.0, _Step(end, None)

    def _account(self, rank: _Rank, batch: _Batch, launched: float, end: float) -> None:
        for o in batch.prefill:
            o.ttft_s, o.tokens = end - o.request.arrival_s, 1
            if o.first_delay is not None:
                o.delayed_s = launched - o.first_delay
            if self.config.disaggregated_prefill or o.request.output_tokens == 1:
                remote_s = (o.request.output_tokens - 1) * self.model.decode_step_us * 1e-6
                self._finish(o, end + remote_s)
            else:
                rank.running.append(o)
        for o in batch.decode:
            o.tokens += 1
            if o.tokens == o.request.output_tokens:
                rank.running.remove(o)
                self._finish(o, end)

    def _finish(self, o: RequestOutcome, at: float) -> None:
        o.e2e_s = at - o.request.arrival_s
        self.unfinished -= 1


def simulate(scenario: Scenario, sync: SyncModel, config: EngineConfig, seed: int = 0) -> SimResult:
    """One run; the same seed gives the same numbers."""
    if any(not 0 <= r.rank < config.dp_size for r in scenario.requests):
        raise ValueError(f"a request is routed to a rank outside dp size {config.dp_size}")
    engine = _Engine(scenario, sync, config, seed)
    for rank in engine.ranks:
        engine.env.process(engine.rank_loop(rank))
    engine.env.run()
    return SimResult(
        tuple(engine.outcomes),
        engine.prefill_rounds,
        engine.passes,
        engine.delayed_passes,
        engine.sync_lost_s,
        tuple(engine.forwards),
    )


@dataclass(frozen=True)
class Comparison:
    off: SimResult
    on: SimResult
    burst: bool  # a burst is judged by its makespan (PR #23588), an open stream by mean E2E

    def headline_s(self, result: SimResult) -> float:
        return result.makespan_s if self.burst else result.mean_e2e_s

    @property
    def gain(self) -> float:
        return 1.0 - self.headline_s(self.on) / self.headline_s(self.off)


def compare(scenario: Scenario, sync: SyncModel, config: EngineConfig, seed: int = 0) -> Comparison:
    """The same requests and draws with the delayer off, then on."""
    off = simulate(scenario, sync, replace(config, delayer=False), seed)
    on = simulate(scenario, sync, replace(config, delayer=True), seed)
    return Comparison(off, on, scenario.burst)
