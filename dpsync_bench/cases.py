"""Benchmark cases, the sweep that generates them, and validation of user input.

Validation runs before any process group exists and raises :class:`UsageError` with a
one-line message; the entry points turn it into exit code 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from delayer_core.paths import GatherShape

PATH_NAMES = ("gloo_cpu", "nccl_device", "nccl_device_one_copy", "nccl_side_stream", "gloo_cuda")
NCCL_PATHS = frozenset(p for p in PATH_NAMES if p.startswith("nccl"))
CUDA_PATHS = frozenset(p for p in PATH_NAMES if p != "gloo_cpu")
CADENCES = ("isolated", "streaming")
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
    priority: str = "default"  # of the dedicated stream (nccl_side_stream)
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
        if self.path == "nccl_side_stream":
            parts.append(f"prio-{self.priority}")
        parts.append(f"r{self.repeat}")
        return "-".join(parts)

    @property
    def group_key(self) -> str:
        """The case without its repeat index: repeats of one case share it."""
        return self.case_id.rsplit("-r", 1)[0]

    @property
    def needs_cuda(self) -> bool:
        return self.path in CUDA_PATHS or self.forward_ms > 0

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
    if case.path not in PATH_NAMES:
        raise UsageError(f"unknown path {case.path!r}; known: {', '.join(PATH_NAMES)}")
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
    return case


@dataclass
class Sweep:
    """What to run; `cases()` expands it. Lists are comma-separated on the command line."""

    preset: str = "auto"
    paths: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    forward_ms: list[float] = field(default_factory=list)
    cadences: list[str] = field(default_factory=list)
    variants: bool | None = None  # no-barrier / fine-grained / high-priority extras
    iters: int | None = None
    forward_iters: int | None = None
    warmup: int | None = None
    repeat: int = 1

    def resolved(self, world_size: int, cuda: bool) -> Sweep:
        """Fill unset fields from the preset ("auto": gpu with CUDA, else cpu)."""
        preset = self.preset if self.preset != "auto" else ("gpu" if cuda else "cpu")
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; known: auto, {', '.join(PRESETS)}")
        d = _PRESET_DEFAULTS[preset]
        shapes = self.shapes or default_shapes(world_size)
        paths = self.paths or list(d["paths"])
        if not cuda and not self.paths:
            paths = ["gloo_cpu"]
        return Sweep(
            preset=preset,
            paths=paths,
            shapes=shapes,
            forward_ms=self.forward_ms or list(d["forward_ms"] if cuda else [0.0]),
            cadences=self.cadences or list(d["cadences"]),
            variants=d["variants"] and cuda if self.variants is None else self.variants,
            iters=self.iters if self.iters is not None else d["iters"],
            forward_iters=self.forward_iters
            if self.forward_iters is not None
            else (self.iters if self.iters is not None else d["forward_iters"]),
            warmup=self.warmup if self.warmup is not None else d["warmup"],
            repeat=self.repeat,
        )

    def cases(self, world_size: int, cuda: bool) -> list[Case]:
        s = self.resolved(world_size, cuda)
        if s.repeat < 1:
            raise UsageError(f"repeat must be >= 1, got {s.repeat}")
        for ms in s.forward_ms:
            if not 0 <= ms < 10_000:  # NaN fails too
                raise UsageError(f"forward durations must be in [0, 10000) ms, got {ms!r}")
        base: list[Case] = []
        for path in s.paths:
            for shape in s.shapes:
                for cadence in s.cadences:
                    base.append(Case(path, shape, 0.0, cadence, iters=s.iters, warmup=s.warmup))
            # A forward in flight: the realistic cadence (a pass right after a launch) and
            # the DP-attention shape (one row per DP replica) only, to keep the sweep short.
            for ms in (m for m in s.forward_ms if m > 0):
                base.append(
                    Case(
                        path,
                        s.shapes[0],
                        ms,
                        "isolated",
                        iters=s.forward_iters,
                        warmup=min(s.warmup, s.forward_iters),
                    )
                )
            if s.variants and any(m > 0 for m in s.forward_ms) and path in NCCL_PATHS:
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


def _variants(path: str, s: Sweep) -> list[Case]:
    """Behind a mid-size forward: without the WAR barrier, fine kernels, a high-priority
    stream: what changes what a path pays behind a forward."""
    ms = sorted(m for m in s.forward_ms if m > 0)[len([m for m in s.forward_ms if m > 0]) // 2]
    common = dict(
        path=path,
        shape=s.shapes[0],
        forward_ms=ms,
        cadence="isolated",
        iters=s.forward_iters,
        warmup=min(s.warmup, s.forward_iters),
    )
    out = [Case(**common, barrier=False), Case(**common, granularity="fine")]
    if path == "nccl_side_stream":
        out += [
            Case(**common, priority="high"),
            Case(**common, granularity="fine", priority="high"),
        ]
    return out


_PRESET_DEFAULTS = {
    "cpu": dict(
        paths=["gloo_cpu"],
        forward_ms=[0.0],
        cadences=list(CADENCES),
        variants=False,
        iters=1000,
        forward_iters=1000,
        warmup=100,
    ),
    "gpu": dict(
        paths=list(PATH_NAMES),
        forward_ms=[0.0, 1.0, 5.0, 20.0],
        cadences=list(CADENCES),
        variants=True,
        iters=1000,
        forward_iters=1000,
        warmup=100,
    ),
    "smoke": dict(
        paths=["gloo_cpu"],
        forward_ms=[0.0],
        cadences=list(CADENCES),
        variants=False,
        iters=50,
        forward_iters=20,
        warmup=10,
    ),
}


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
        if any(c.path in NCCL_PATHS for c in cases) and local_world_size > cuda_devices:
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
