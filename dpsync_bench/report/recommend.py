"""`recommend`: the sync path a deployment should use, from a measured run.

Works on torch-free case summaries (dicts: path, world_size, forward_ms (0: idle), cadence,
pass_us {p50, p99}, stall_us {p50}, exposed_us {p50} behind a forward, check_ok). It states what
upstream picks (PR #24768: NCCL device group iff the overlap scheduler is off or
SGLANG_NCCL_ALL_GATHER_IN_OVERLAP_SCHEDULER_SYNC_BATCH is set, else gloo on CPU; a decode
engine builds no delayer, PR #23588) and what the best measured path would save.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..results import case_passed, load_run
from .scenarios import upstream_like

DISAGGREGATION_MODES = ("null", "prefill", "decode")
TIE_US = 10.0  # costs closer than this are within the run-to-run noise: a tie
# Why a path may not be used, or what it costs beside its figures.
NEVER = {"gloo_cuda": "an anti-pattern: stages through host memory and syncs the stream"}
ONE_HOST_ONLY = {"shm_cpu"}
MULTI_HOST_ONLY = {"hierarchical"}  # shm per host + leaders over gloo; on one host, use shm
CAVEATS = {
    "shm_cpu": "burns one core per rank while it spins",
    "hierarchical": "burns one core per rank while it spins",
    "nccl_graph": "needs one GPU per rank (a captured CUDA graph on a side stream)",
}


@dataclass(frozen=True)
class Deployment:
    dp_size: int
    overlap: bool = True
    forward_ms: tuple[float, ...] = (20.0,)  # points of the forward-length distribution
    disaggregation_mode: str = "null"
    hosts: int = 1
    nccl_in_overlap_env: bool = False  # SGLANG_NCCL_ALL_GATHER_IN_OVERLAP_SCHEDULER_SYNC_BATCH
    max_delay_passes: int = 30

    def __post_init__(self) -> None:
        if self.dp_size < 1 or self.hosts < 1 or self.max_delay_passes < 1:
            raise ValueError("dp size, hosts and max delay passes must be >= 1")
        if not self.forward_ms or any(not ms > 0 for ms in self.forward_ms):
            raise ValueError("forward lengths must be > 0 ms")
        if self.disaggregation_mode not in DISAGGREGATION_MODES:
            raise ValueError(f"disaggregation mode must be one of {DISAGGREGATION_MODES}")

    @property
    def upstream_path(self) -> str:
        return "nccl_device" if not self.overlap or self.nccl_in_overlap_env else "gloo_cpu"


@dataclass(frozen=True)
class PathCost:
    path: str
    world_size: int
    idle_p50_us: float  # one pass after an idle gap (isolated cadence)
    idle_p99_us: float
    back_to_back_p50_us: float  # delay passes (streaming cadence)
    exposed_us: float  # behind the deployment's forwards (overlap); host time after they end
    stall_us: float  # stall p50 behind those forwards (overlap) or idle (no overlap)
    measured_forward: bool

    def per_pass_us(self, overlap: bool) -> float:
        """GPU-idle time per pass: what the overlap scheduler cannot hide, else the pass."""
        return self.exposed_us if overlap else self.idle_p50_us


@dataclass(frozen=True)
class Recommendation:
    deployment: Deployment
    path: Optional[str]  # None: no delayer is built
    upstream: Optional[PathCost]
    best: Optional[PathCost]
    reasons: tuple[str, ...] = ()

    @property
    def saving_us(self) -> float:
        if self.best is None or self.upstream is None:
            return 0.0
        overlap = self.deployment.overlap
        return self.upstream.per_pass_us(overlap) - self.best.per_pass_us(overlap)

    def lines(self) -> list[str]:
        d = self.deployment
        head = (
            f"deployment: dp {d.dp_size} on {d.hosts} host(s), overlap scheduler "
            f"{'on' if d.overlap else 'off'}, forwards {'/'.join(f'{ms:g}' for ms in d.forward_ms)}"
            f" ms, disaggregation {d.disaggregation_mode}"
        )
        if self.path is None:
            return [head, *self.reasons]
        out = [head, f"use {self.path}: {_describe(self.best, d)}"]
        if self.upstream is not None and self.upstream.path != self.path:
            out.append(f"upstream picks {self.upstream.path}: {_describe(self.upstream, d)}")
        return out + [f"why: {r}" for r in self.reasons]


def _describe(cost: PathCost, d: Deployment) -> str:
    state = "behind the forwards" if d.overlap else "after each forward (GPU idle)"
    text = (
        f"{cost.per_pass_us(d.overlap):.1f} us GPU-idle per pass {state}, stall p50 "
        f"{cost.stall_us:.1f} us; idle GPU: p50 {cost.idle_p50_us:.1f} / p99 "
        f"{cost.idle_p99_us:.1f} us, {cost.back_to_back_p50_us:.1f} us per delay pass"
    )
    if cost.world_size != d.dp_size:
        text += f" (measured at {cost.world_size} rank(s), deployment has {d.dp_size})"
    return text


def path_cost(cases: list[dict], path: str, d: Deployment, world: int) -> Optional[PathCost]:
    """The path's cost in this deployment from its passing cases at `world` ranks."""
    mine = [c for c in cases if c["path"] == path and c["check_ok"] and c["world_size"] == world]
    idle = [c for c in mine if c["forward_ms"] == 0]
    busy = [c for c in mine if c["forward_ms"] > 0]
    if not idle:
        return None
    # One pass after each forward is an isolated pass; delay passes run back to back.
    by_cadence = {c["cadence"]: c for c in idle}
    after_forward = by_cadence.get("isolated", idle[0])
    back_to_back = by_cadence.get("streaming", after_forward)
    if d.overlap and busy:
        nearest = [min(busy, key=lambda c, t=ms: abs(c["forward_ms"] - t)) for ms in d.forward_ms]
        exposed = sum(c["exposed_us"]["p50"] for c in nearest) / len(nearest)
        stall = sum(c["stall_us"]["p50"] for c in nearest) / len(nearest)
    else:  # the pass runs with the GPU idle (or nothing was measured behind a forward)
        exposed, stall = after_forward["pass_us"]["p50"], after_forward["stall_us"]["p50"]
    p50, p99 = after_forward["pass_us"]["p50"], after_forward["pass_us"]["p99"]
    streaming_p50 = back_to_back["pass_us"]["p50"]
    return PathCost(path, world, p50, p99, streaming_p50, exposed, stall, bool(busy))


def comparison_world(cases: list[dict], dp_size: int) -> int:
    """Paths are compared at one world size: of those up to the deployment's (else the
    smallest), the one measured for the most paths, then the largest."""
    paths_at: dict[int, set[str]] = {}
    for c in cases:
        if c["check_ok"] and c["forward_ms"] == 0:
            paths_at.setdefault(c["world_size"], set()).add(c["path"])
    if not paths_at:
        raise ValueError("the run holds no passing idle-GPU case")
    eligible = [w for w in paths_at if w <= dp_size] or [min(paths_at)]
    return max(eligible, key=lambda w: (len(paths_at[w]), w))


def _usable(path: str, d: Deployment) -> bool:
    if path in NEVER:
        return False
    if path in ONE_HOST_ONLY:
        return d.hosts == 1
    return path not in MULTI_HOST_ONLY or d.hosts > 1


def recommend(cases: list[dict], deployment: Deployment) -> Recommendation:
    d = deployment
    if d.disaggregation_mode == "decode":
        reason = "a decode engine builds no delayer (PR #23588): no gather per pass, no path"
        return Recommendation(d, None, None, None, (reason,))
    world = comparison_world(cases, d.dp_size)
    upstream = path_cost(cases, d.upstream_path, d, world)
    paths = sorted({c["path"] for c in cases if _usable(c["path"], d)})
    costs = [path_cost(cases, p, d, world) for p in paths]
    costs = [c for c in costs if c is not None]
    if not costs:
        raise ValueError(
            f"no passing idle case at {world} rank(s) of a path this deployment can use"
        )

    # The GPU-idle time per pass decides, then the delay passes; upstream's own path wins
    # what is left (no code change).
    pool = _near_best(costs, lambda c: c.per_pass_us(d.overlap))
    pool = _near_best(pool, lambda c: c.back_to_back_p50_us)
    best = next((c for c in pool if c.path == d.upstream_path), pool[0])
    return Recommendation(d, best.path, upstream, best, tuple(_reasons(best, upstream, d)))


def _near_best(costs: list[PathCost], key) -> list[PathCost]:
    """The costs within TIE_US of the lowest, lowest first."""
    ordered = sorted(costs, key=key)
    return [c for c in ordered if key(c) <= key(ordered[0]) + TIE_US]


def _reasons(best: PathCost, upstream: Optional[PathCost], d: Deployment) -> list[str]:
    why, world = [], best.world_size
    rule = "overlap scheduler off" if not d.overlap else "overlap on"
    rule += ", NCCL env flag set" if d.nccl_in_overlap_env else ""
    if upstream is None:
        why.append(f"upstream's {d.upstream_path} ({rule}) is not measured at {world} rank(s)")
    elif upstream.path == best.path:
        why.append(f"upstream's rule ({rule}) already picks the cheapest measured path")
    else:
        saving = upstream.per_pass_us(d.overlap) - best.per_pass_us(d.overlap)
        delay_saving = upstream.back_to_back_p50_us - best.back_to_back_p50_us
        typical_ms = sum(d.forward_ms) / len(d.forward_ms)
        why.append(
            f"upstream's rule ({rule}) picks {upstream.path}; {best.path} saves {saving:.1f} us "
            f"GPU-idle per pass ({100 * saving / (typical_ms * 1e3):.2f} % of a "
            f"{typical_ms:g} ms forward) and {delay_saving:.1f} us per delay pass"
        )
    if d.overlap and best.exposed_us < TIE_US:
        why.append("it never waits for the forward, so the overlap scheduler hides it")
    if not best.measured_forward:
        why.append("no forward case measured for it: the whole pass is counted as exposed")
    if best.path in CAVEATS:
        why.append(f"{best.path} {CAVEATS[best.path]}")
    if d.hosts > 1:
        why.append("figures from a single-host run understate it: add the network round trip")
    if upstream is not None and best.back_to_back_p50_us < upstream.back_to_back_p50_us:
        # The simulation's lesson: the delay budget counts passes, so a faster pass shortens
        # the wait for late ranks; keep upstream's window by allowing more passes.
        delays = d.max_delay_passes - 1
        window_ms = delays * upstream.back_to_back_p50_us / 1e3
        passes = math.ceil(window_ms * 1e3 / max(best.back_to_back_p50_us, 1e-3)) + 1
        why.append(
            f"{d.max_delay_passes} delay passes now wait "
            f"{delays * best.back_to_back_p50_us / 1e3:.2f} ms for late ranks, not "
            f"{window_ms:.2f} ms; --prefill-delayer-max-delay-passes {passes} keeps the window"
        )
    return why


def load_case_summaries(run_dir: Path) -> list[dict]:
    """The run's upstream-like cases (scenarios.upstream_like) as this module reads them,
    from the summaries alone: a published run without raw samples still advises."""
    summaries = []
    for case in load_run(Path(run_dir))["cases"].values():
        if not upstream_like(case):
            continue
        s = case["stats"]
        summary = {
            "path": case["case"]["path"],
            "world_size": case["world_size"],
            "forward_ms": float(case["case"]["forward_ms"]),
            "cadence": case["case"]["cadence"],
            "pass_us": {q: s["pass_us"][q] for q in ("p50", "p99")},
            "stall_us": {"p50": s["stall_us"]["p50"]},
            "check_ok": case_passed(case),
        }
        if "exposed_us" in s:
            summary["exposed_us"] = {"p50": s["exposed_us"]["p50"]}
        summaries.append(summary)
    return summaries


def _milliseconds(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--forward-ms: not a list of milliseconds: {text!r}") from None


def add_recommend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="measured run directories")
    p.add_argument("--dp-size", type=int, required=True)
    p.add_argument("--disable-overlap-schedule", action="store_true")
    p.add_argument(
        "--nccl-in-overlap",
        action="store_true",
        help="SGLANG_NCCL_ALL_GATHER_IN_OVERLAP_SCHEDULER_SYNC_BATCH=1",
    )
    p.add_argument("--forward-ms", default="20", help="typical forward lengths, e.g. 5,20")
    p.add_argument("--disaggregation-mode", choices=DISAGGREGATION_MODES, default="null")
    p.add_argument("--hosts", type=int, default=1)
    p.add_argument("--max-delay-passes", type=int, default=30)


def cmd_recommend(args) -> int:
    """Prints the recommendation; bad input raises ValueError with one line."""
    deployment = Deployment(
        dp_size=args.dp_size,
        overlap=not args.disable_overlap_schedule,
        forward_ms=_milliseconds(args.forward_ms),
        disaggregation_mode=args.disaggregation_mode,
        hosts=args.hosts,
        nccl_in_overlap_env=args.nccl_in_overlap,
        max_delay_passes=args.max_delay_passes,
    )
    cases = [s for run in args.runs for s in load_case_summaries(run)]
    for line in recommend(cases, deployment).lines():
        print(line)
    return 0
