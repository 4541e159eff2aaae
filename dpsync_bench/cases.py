"""Benchmark cases, the sweep that generates them, and validation of user input.

Validation runs before any process group exists and raises :class:`UsageError` with a
one-line message; the entry points turn it into exit code 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from delayer_core.paths import PATHS, path_names
from delayer_core.shape import GatherShape

CADENCES = ("isolated", "streaming", "busy")  # busy: forwards back to back
GRANULARITIES = {"coarse": 1.0, "fine": 0.15}  # ms per forward kernel
PRIORITIES = ("default", "high")
PRESETS = ("cpu", "gpu", "smoke")


class UsageError(ValueError):
    """Bad input: reported as one line, exit code 2."""


@dataclass(frozen=True)
class Case:
    path: str
    shape: str  # "DPxTP"
    forward_ms: float = 0.0  # 0: GPU idle; > 0: a simulated forward in flight
    cadence: str = "isolated"
    barrier: bool = True  # schedule stream waits on the forward (upstream's WAR barrier)
    granularity: str = "coarse"
    priority: str = "default"  # of the path's own stream (side stream, graph)
    phase: str = "random"  # where in the forward a pass starts: "random" or a fraction
    iters: int = 1000
    warmup: int = 100
    repeat: int = 0

    @property
    def case_id(self) -> str:
        state = "idle" if self.forward_ms == 0 else f"fwd{self.forward_ms:g}ms"
        parts = [self.path, self.shape, state, self.cadence]
        if self.forward_ms:
            parts.append("barrier" if self.barrier else "nobarrier")
            parts.append(self.granularity)
            if self.phase != "random":
                parts.append(f"phase{self.phase}")
        if self.priority != "default":
            parts.append(f"prio-{self.priority}")
        parts.append(f"r{self.repeat}")
        return "-".join(parts)

    @property
    def group_key(self) -> str:
        """The case without its repeat index: repeats of one case share it."""
        return self.case_id.rsplit("-r", 1)[0]

    @property
    def needs_cuda(self) -> bool:
        return PATHS[self.path].cuda or self.forward_ms > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise UsageError(f"unknown case fields: {sorted(unknown)}")
        return validate_case(cls(**data))


def validate_case(case: Case) -> Case:
    if case.path not in PATHS:
        raise UsageError(f"unknown path {case.path!r}; known: {', '.join(PATHS)}")
    try:
        GatherShape.parse(case.shape)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if case.cadence not in CADENCES:
        raise UsageError(f"unknown cadence {case.cadence!r}; known: {', '.join(CADENCES)}")
    if case.granularity not in GRANULARITIES:
        raise UsageError(f"unknown granularity {case.granularity!r}; known: coarse, fine")
    if case.priority not in PRIORITIES:
        raise UsageError(f"unknown priority {case.priority!r}; known: default, high")
    if not isinstance(case.iters, int) or case.iters < 1:
        raise UsageError(f"iterations must be a positive integer, got {case.iters!r}")
    if not isinstance(case.warmup, int) or case.warmup < 0:
        raise UsageError(f"warmup must be a non-negative integer, got {case.warmup!r}")
    if not (case.forward_ms >= 0 and case.forward_ms < 10_000):
        raise UsageError(f"forward duration must be in [0, 10000) ms, got {case.forward_ms!r}")
    if case.cadence == "busy" and not case.forward_ms:
        raise UsageError("the busy cadence runs forwards back to back: give a forward > 0 ms")
    if case.cadence == "streaming" and case.forward_ms:
        raise UsageError("a forward runs in the isolated or busy cadence, not streaming")
    if case.phase != "random":
        try:
            fraction = float(case.phase)
        except ValueError:
            fraction = -1.0
        if not 0 <= fraction < 1:
            raise UsageError(f"phase must be 'random' or a fraction in [0, 1), got {case.phase!r}")
    if case.priority != "default" and case.path not in ("nccl_side_stream", "nccl_graph"):
        raise UsageError(f"{case.path} has no stream of its own to give a priority")
    return case


@dataclass
class Sweep:
    """What to run; `cases()` expands it. Lists are comma-separated on the command line."""

    preset: str = "auto"
    paths: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    forward_ms: list[float] = field(default_factory=list)
    busy_forward_ms: list[float] | None = None  # forwards also run back to back (busy)
    cadences: list[str] = field(default_factory=list)
    variants: bool | None = None  # no-barrier / fine-kernel / high-priority extras
    iters: int | None = None
    forward_iters: int | None = None
    warmup: int | None = None
    repeat: int = 1

    def resolved(self, world_size: int, gpus: int, local_world: int = 1) -> Sweep:
        """Fill unset fields from the preset ("auto": gpu with a GPU, else cpu)."""
        preset = self.preset if self.preset != "auto" else ("gpu" if gpus else "cpu")
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
        d = _PRESET_DEFAULTS[preset]
        paths = self.paths or [p for p in d["paths"] if runs_here(p, world_size, gpus, local_world)]
        forward = self.forward_ms or (list(d["forward_ms"]) if gpus else [0.0])
        busy = self.busy_forward_ms
        if busy is None:  # the preset's, among the forwards this sweep runs
            busy = [m for m in d["busy_forward_ms"] if m in forward]
        return Sweep(
            preset=preset,
            paths=paths,
            shapes=self.shapes or default_shapes(world_size),
            forward_ms=forward,
            busy_forward_ms=busy,
            cadences=self.cadences or list(CADENCES),
            variants=d["variants"] and gpus > 0 if self.variants is None else self.variants,
            iters=self.iters if self.iters is not None else d["iters"],
            forward_iters=_first(self.forward_iters, self.iters, d["forward_iters"]),
            warmup=self.warmup if self.warmup is not None else d["warmup"],
            repeat=self.repeat,
        )

    def cases(self, world_size: int, gpus: int, local_world: int = 1) -> list[Case]:
        s = self.resolved(world_size, gpus, local_world)
        if s.repeat < 1:
            raise UsageError(f"repeat must be >= 1, got {s.repeat}")
        for ms in s.forward_ms:
            if not 0 <= ms < 10_000:  # NaN fails too
                raise UsageError(f"forward durations must be in [0, 10000) ms, got {ms!r}")
        for cadence in s.cadences:
            if cadence not in CADENCES:
                raise UsageError(f"unknown cadence {cadence!r}; known: {', '.join(CADENCES)}")
        if any(m > 0 for m in s.forward_ms) and not {"isolated", "busy"} & set(s.cadences):
            raise UsageError("a forward runs in the isolated or busy cadence; none is asked for")
        base: list[Case] = []
        fwd_warmup = min(s.warmup, s.forward_iters)
        for path in s.paths:
            for shape in s.shapes:
                for cadence in (c for c in s.cadences if c != "busy"):
                    base.append(Case(path, shape, 0.0, cadence, iters=s.iters, warmup=s.warmup))
            # Behind a forward: the DP-attention shape (one row per DP replica) only, in the
            # isolated and the busy cadence, to keep the sweep short.
            for ms in (m for m in s.forward_ms if m > 0):
                wanted = ("isolated", "busy") if ms in s.busy_forward_ms else ("isolated",)
                for cadence in (c for c in s.cadences if c in wanted):
                    base.append(
                        Case(
                            path, s.shapes[0], ms, cadence, iters=s.forward_iters, warmup=fwd_warmup
                        )  # fmt: skip
                    )
            if s.variants and any(m > 0 for m in s.forward_ms) and PATHS[path].group == "nccl":
                base.extend(_variants(path, s))
        cases = [
            validate_case(Case(**{**c.to_dict(), "repeat": r}))
            for r in range(s.repeat)
            for c in base
        ]
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            raise UsageError("the sweep lists a case twice")
        return cases


def _first(*values):
    return next(v for v in values if v is not None)


def runs_here(path: str, world_size: int, gpus: int, local_world: int) -> bool:
    """Whether a preset includes the path on this job: a GPU for CUDA paths, one GPU per
    rank for NCCL, two ranks or more for the hierarchical one (a leader of itself)."""
    p = PATHS[path]
    if p.cuda and not gpus:
        return False
    if p.gpu_per_rank and local_world > gpus:
        return False
    return path != "hierarchical" or world_size > 1


def _variants(path: str, s: Sweep) -> list[Case]:
    """Behind a mid-size forward: without the WAR barrier, fine kernels, a high-priority
    stream: what changes what a path pays behind a forward."""
    positive = sorted(m for m in s.forward_ms if m > 0)
    common = dict(
        path=path,
        shape=s.shapes[0],
        forward_ms=positive[len(positive) // 2],
        cadence="isolated",
        iters=s.forward_iters,
        warmup=min(s.warmup, s.forward_iters),
    )
    out = [Case(**common, barrier=False), Case(**common, granularity="fine")]
    if path in ("nccl_side_stream", "nccl_graph"):
        out += [
            Case(**common, priority="high"),
            Case(**common, granularity="fine", priority="high"),
        ]
    return out


# fmt: off
_PRESET_DEFAULTS = {
    "cpu": dict(paths=path_names(cuda=False), forward_ms=[0.0], busy_forward_ms=[],
                variants=False, iters=500, forward_iters=200, warmup=100),
    "gpu": dict(paths=list(PATHS), forward_ms=[0.0, 1.0, 5.0, 20.0], busy_forward_ms=[5.0, 20.0],
                variants=True, iters=1000, forward_iters=100, warmup=100),
    "smoke": dict(paths=["gloo_cpu"], forward_ms=[0.0], busy_forward_ms=[5.0],
                  variants=False, iters=50, forward_iters=20, warmup=10),
}
# fmt: on


def default_shapes(world_size: int) -> list[str]:
    """DP attention (one row per rank) and pure attention TP (one DP replica)."""
    shapes = [f"{world_size}x1"]
    if world_size > 1:
        shapes.append(f"1x{world_size}")
    return shapes


def check_environment(
    cases: list[Case], world_size: int, local_world_size: int, cuda_devices: int
) -> None:
    """Refuse what cannot run here, before any process group is created."""
    for case in cases:
        shape = GatherShape.parse(case.shape)
        if shape.world_size != world_size:
            raise UsageError(
                f"shape {case.shape} needs {shape.world_size} ranks, the job has {world_size}"
            )
    if any(c.needs_cuda for c in cases):
        what = sorted({c.path for c in cases if c.needs_cuda})
        if cuda_devices == 0:
            raise UsageError(f"{', '.join(what)} (or a forward) need CUDA; no GPU is visible")
        if any(PATHS[c.path].gpu_per_rank for c in cases) and local_world_size > cuda_devices:
            raise UsageError(
                f"NCCL needs one GPU per rank: {local_world_size} ranks on this node, "
                f"{cuda_devices} GPU(s)"
            )


def sweep_fingerprint(cases: list[Case]) -> str:
    """Every rank must run the same list; compare this across ranks."""
    blob = json.dumps([c.to_dict() for c in cases], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_list(text: str | None, kind=str) -> list:
    if text is None or text.strip() == "":
        return []
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(kind(item))
        except ValueError:
            raise UsageError(f"bad value {item!r} in list {text!r}") from None
    return out
