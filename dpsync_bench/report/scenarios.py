"""What a simulation is fed: requests, the forward-time model and the per-pass sync cost.

`read_cases` is the only function here that knows the suite's on-disk format; the sync model
(and recommend.py) build on what it returns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..results import ResultsError, case_passed, load_run, load_samples
from ..stats import per_pass
from .labels import is_main

PR23588 = {"requests": 4, "input_tokens": 8192, "off_s": 3.023, "on_s": 1.957}


@dataclass(frozen=True)
class Request:
    arrival_s: float
    rank: int  # the DP rank the router sent it to
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ForwardModel:
    prefill_us_per_token: float  # on the rank holding the token, all layers
    expert_share: float  # part of that in routed experts, which EP spreads over every rank
    ep_fixed_us: float  # paid by every rank whenever any rank prefills (EP dispatch + combine)
    decode_step_us: float

    def prefill_s(self, tokens_per_rank: Sequence[int]) -> float:
        """One lock-step forward: the busiest rank's own work plus an even share of the
        experts' work on every token of every rank."""
        own = max(tokens_per_rank) * (1.0 - self.expert_share)
        experts = sum(tokens_per_rank) / len(tokens_per_rank) * self.expert_share
        return (self.ep_fixed_us + self.prefill_us_per_token * (own + experts)) * 1e-6


def _deepseek_v3_gflops(prompt_tokens: int) -> tuple[float, float]:
    """(routed-expert, everything-else) GFLOP per prompt token, from DeepSeek-V3's
    config.json (huggingface.co/deepseek-ai/DeepSeek-V3): 61 layers, the first 3 dense
    (FFN 18432), 58 MoE (8 of 256 routed experts + 1 shared, 2048 wide), hidden 7168,
    MLA with 128 heads (q rank 1536, kv rank 512, qk 128+64, v 128)."""
    hidden, moe_ffn, heads, layers, moe_layers = 7168, 2048, 128, 61, 58
    expert = 3 * hidden * moe_ffn * 2  # one expert's three matmuls
    # MLA projection weights: q down and up, kv down (+ rope key) and up, output.
    mla = hidden * 1536 + 1536 * heads * 192 + hidden * 576 + 512 * heads * 256
    mla += heads * 128 * hidden
    attention = heads * (192 + 128) * 2 * prompt_tokens / 2  # causal: half the prompt on average
    dense = 3 * 3 * hidden * 18432 * 2
    routed = moe_layers * 8 * expert
    local = moe_layers * (expert + hidden * 256 * 2) + dense + layers * (2 * mla + attention)
    return routed * 1e-9, local * 1e-9


def deepseek_v3_on_h100(prompt_tokens: int = 8192) -> ForwardModel:
    """Forward times of DeepSeek-V3 with DP attention + EP, from public figures:
    - LMSYS, "Deploying DeepSeek with PD Disaggregation and Large-scale Expert Parallelism
      on 96 H100 GPUs" (lmsys.org/blog/2025-05-05-large-scale-ep): prefill 50,302 tokens/s
      per 8-GPU node at 4K prompts, 16,384 tokens per device; decode 22,282 tokens/s per
      node at 256 sequences per device.
    - DeepEP V1 (github.com/deepseek-ai/DeepEP, docs/legacy.md), H800, EP 8: dispatch 77 us
      + combine 114 us per MoE layer: the latency floor of one all-to-all round.
    Per-token time: the 4K figure less the fixed EP cost its 16,384-token batch amortized,
    scaled to `prompt_tokens` by the FLOPs (attention grows with the prompt); the expert
    share is the routed experts' part of the FLOPs."""
    ep_fixed_us = 58 * (77.0 + 114.0)
    at_4k_us = 1e6 * 8 / 50_302 - ep_fixed_us / 16_384
    routed, local = _deepseek_v3_gflops(prompt_tokens)
    routed_4k, local_4k = _deepseek_v3_gflops(4096)
    per_token_us = at_4k_us * (routed + local) / (routed_4k + local_4k)
    decode_step_us = 1e6 * 256 / (22_282 / 8)
    return ForwardModel(per_token_us, routed / (routed + local), ep_fixed_us, decode_step_us)


@dataclass(frozen=True)
class SyncModel:
    """The cost of one pass's gather + read-back + decide, drawn per pass (max over ranks)."""

    name: str
    idle_pass_us: np.ndarray  # with the GPU idle
    exposed_us: np.ndarray  # with a forward in flight: host time after its end

    def __post_init__(self) -> None:
        for label, samples in (
            ("idle_pass_us", self.idle_pass_us),
            ("exposed_us", self.exposed_us),
        ):
            arr = np.asarray(samples, dtype=float)
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"sync model {self.name}: {label} must be finite samples >= 0")
            object.__setattr__(self, label, arr)

    @classmethod
    def constant(cls, name: str, us: float, exposed_us: float | None = None) -> SyncModel:
        """Synthetic: every pass costs `us`; behind a forward `exposed_us` (default `us`, as
        for a device path that runs after the forward)."""
        return cls(name, np.array([us]), np.array([us if exposed_us is None else exposed_us]))

    def decision_at(self, rng: np.random.Generator, start: float, gpu_busy_until: float) -> float:
        """When the decision is on the CPU for a pass starting at `start` (seconds). Both
        draws are taken every pass so the random stream does not depend on the GPU state."""
        idle = self.idle_pass_us[rng.integers(self.idle_pass_us.size)] * 1e-6
        exposed = self.exposed_us[rng.integers(self.exposed_us.size)] * 1e-6
        if gpu_busy_until <= start:
            return start + idle
        return max(start + idle, gpu_busy_until + exposed)


def load_sync_model(
    run_dir: Path, path: str, world_size: int, cadence: str = "streaming"
) -> SyncModel:
    """The path's measured passes at `world_size` ranks: idle passes of `cadence` (else any
    idle cadence; back-to-back passes are what a delaying scheduler runs), exposed time from
    the longest measured forward (the closest to a prefill's length)."""
    cases = [
        c
        for c in read_cases(run_dir)
        if c.path == path and c.world_size == world_size and c.check_ok and c.upstream_like
    ]
    if not cases:
        measured = sorted({(c.path, c.world_size) for c in read_cases(run_dir)})
        raise ValueError(
            f"{run_dir}: no passing {path} case at {world_size} rank(s); has {measured}"
        )
    idle = [c for c in cases if c.forward_ms == 0]
    idle = [c for c in idle if c.cadence == cadence] or idle
    busy = [c for c in cases if c.forward_ms > 0]
    if not idle:
        raise ValueError(f"{run_dir}: {path} at {world_size} rank(s) has no idle-GPU case")
    idle_us = np.concatenate([c.pass_us for c in idle])
    if not busy:  # nothing measured behind a forward: assume the whole pass runs after it
        return SyncModel(f"{path}@{world_size} (no forward cases)", idle_us, idle_us)
    longest = max(c.forward_ms for c in busy)
    exposed = np.concatenate([c.exposed_us for c in busy if c.forward_ms == longest])
    return SyncModel(f"{path}@{world_size}", idle_us, exposed)


def measured_paths(run_dir: Path) -> dict[str, list[int]]:
    """Path -> world sizes with a passing upstream-like idle case."""
    found: dict[str, set[int]] = {}
    for c in read_cases(run_dir):
        if c.check_ok and c.upstream_like and c.forward_ms == 0:
            found.setdefault(c.path, set()).add(c.world_size)
    return {p: sorted(w) for p, w in sorted(found.items())}


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: tuple[Request, ...]
    forward: ForwardModel
    burst: bool  # a closed burst is judged by its makespan, an open stream by mean E2E


def pr23588(spread_ms: float, dp_size: int = 4, output_tokens: int = 1) -> Scenario:
    """PR #23588's experiment: one 8192-token request per DP rank, round-robin, arriving
    evenly over `spread_ms` on a disaggregated prefill engine (output 1: the first token)."""
    if spread_ms < 0:
        raise ValueError(f"arrival spread must be >= 0 ms, got {spread_ms}")
    n = PR23588["requests"]
    gap_s = spread_ms * 1e-3 / max(1, n - 1)
    tokens = PR23588["input_tokens"]
    reqs = tuple(Request(i * gap_s, i % dp_size, tokens, output_tokens) for i in range(n))
    return Scenario("pr23588", reqs, deepseek_v3_on_h100(tokens), burst=True)


def poisson(
    rate_per_s: float, count: int, dp_size: int, input_tokens: int, output_tokens: int, seed: int
) -> Scenario:
    """Open-loop Poisson arrivals, round-robin over the DP ranks (the router's default)."""
    if rate_per_s <= 0 or count < 1 or input_tokens < 1 or output_tokens < 1:
        raise ValueError("poisson needs rate > 0, requests >= 1 and token counts >= 1")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, count)
    arrivals = np.cumsum(gaps) - gaps[0]
    reqs = tuple(
        Request(float(t), i % dp_size, input_tokens, output_tokens) for i, t in enumerate(arrivals)
    )
    return Scenario("poisson", reqs, deepseek_v3_on_h100(input_tokens), burst=False)


def trace(path: Path, dp_size: int) -> Scenario:
    """A CSV with a header `arrival_ms,input_tokens,output_tokens[,rank]`; requests without a
    rank go round-robin."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: unreadable trace ({e.strerror})") from None
    reqs = []
    for line, row in enumerate(rows, start=2):
        try:
            rank = int(row["rank"]) if row.get("rank") not in (None, "") else len(reqs) % dp_size
            req = Request(
                float(row["arrival_ms"]) * 1e-3,
                rank,
                int(row["input_tokens"]),
                int(row["output_tokens"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}:{line}: need arrival_ms,input_tokens,output_tokens[,rank] as numbers"
            ) from None
        if not (req.arrival_s >= 0 and 0 <= rank < dp_size and req.input_tokens > 0):
            raise ValueError(f"{path}:{line}: bad arrival, rank (dp {dp_size}) or token count")
        if req.output_tokens < 1:
            raise ValueError(f"{path}:{line}: output_tokens must be >= 1")
        reqs.append(req)
    if not reqs:
        raise ValueError(f"{path}: the trace holds no requests")
    median_input = int(np.median([r.input_tokens for r in reqs]))
    return Scenario("trace", tuple(reqs), deepseek_v3_on_h100(median_input), burst=False)


def upstream_like(case: dict) -> bool:
    """A case as a deployment runs it: the DP-attention shape (one row per DP replica) and
    none of the variants (no barrier, fine kernels, high priority, a fixed phase)."""
    return case["case"]["shape"].endswith("x1") and is_main(case)


@dataclass(frozen=True)
class CaseSamples:
    """One measured case as the simulation reads it: per pass, the max over ranks."""

    path: str
    world_size: int
    cadence: str
    forward_ms: float  # requested; 0: idle GPU
    upstream_like: bool
    pass_us: np.ndarray
    stall_us: np.ndarray
    exposed_us: np.ndarray  # host time after the forward's end (measured); 0 with no forward
    check_ok: bool


def read_cases(run_dir: Path) -> list[CaseSamples]:
    """Every case of a run (schema dpsync-bench/case/2) with its per-pass figures (µs, the
    max over ranks). A published run may have dropped a case's raw samples: its figures are
    then drawn from the summary's quantiles (min, p5, p50, p90, p99, max), evenly over the
    quantile function. Raises ValueError (ResultsError) on a missing or corrupt run."""
    run_dir = Path(run_dir)
    cases = []
    for data in load_run(run_dir)["cases"].values():
        us = _per_pass_us(run_dir, data)
        cases.append(
            CaseSamples(
                path=data["case"]["path"],
                world_size=data["world_size"],
                cadence=data["case"]["cadence"],
                forward_ms=float(data["case"]["forward_ms"]),
                upstream_like=upstream_like(data),
                pass_us=us["pass"],
                stall_us=us["stall"],
                exposed_us=us.get("exposed", np.zeros_like(us["pass"])),
                check_ok=case_passed(data),
            )
        )
    return cases


_QUANTILE_KEYS = (("min", 0.0), ("p5", 0.05), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1))


def _per_pass_us(run_dir: Path, data: dict) -> dict[str, np.ndarray]:
    try:
        raw = load_samples(run_dir, data["case_id"])
    except ResultsError:  # samples not kept: the summary's quantile function instead
        grid = np.linspace(0.0, 1.0, data["stats"]["pass_us"]["n"])
        qs = [q for _, q in _QUANTILE_KEYS]
        return {
            f: np.interp(grid, qs, [data["stats"][f"{f}_us"][k] for k, _ in _QUANTILE_KEYS])
            for f in ("pass", "stall", "exposed")
            if f"{f}_us" in data["stats"]
        }
    return {f: per_pass(raw[f], "max") * 1e-3 for f in ("pass", "stall", "exposed") if f in raw}
