"""What every table and figure says about its numbers: the machine, the software stack, the
code, the date, the GPU state, the cadence and the variant of a case.

Without these two figures cannot be compared, so they are built in one place from run.json
(`meta`) and the case summaries, and nothing here reads samples.
"""

from __future__ import annotations

from collections import Counter

from delayer_core.paths import PATHS

from ..cases import CADENCES

REDUCTION = "per pass, the max over ranks (idle gap: the min; start skew: the spread)"
CADENCE_TEXT = {
    "isolated": "isolated = one pass per slot of an agreed grid, after idle time on every rank",
    "streaming": "streaming = passes back to back, GPU idle",
    "busy": "busy = forwards back to back, each pass at a random phase of one",
}
VARIANT_ORDER = ("no barrier", "fine kernels", "high-priority stream")


def fmt_us(v) -> str:
    """Microseconds for a table: one decimal below 1 ms, whole numbers above."""
    if v is None:
        return "-"
    return f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"


# ---- the run ---------------------------------------------------------------------------
def stack_label(meta: dict) -> str:
    """'torch 2.11.0+cu130 · NCCL 2.28.9 · CUDA 13.0 · driver 580.159.04 · python 3.12.3'."""
    v = (meta.get("machine") or {}).get("versions") or {}
    names = (("torch", "torch"), ("nccl", "NCCL"), ("cuda", "CUDA"), ("driver", "driver"))
    parts = [f"{label} {v.get(key) or 'n/a'}" for key, label in names]
    if v.get("python"):
        parts.append(f"python {v['python']}")
    return " · ".join(parts)


def hardware_label(meta: dict) -> str:
    machine = meta.get("machine") or {}
    gpus = Counter(g.get("name", "?") for g in machine.get("gpus") or [])
    hw = " + ".join(f"{name} x{n}" for name, n in gpus.items())
    return hw or f"no GPU (CPU: {machine.get('cpu') or 'unknown'})"


def machine_label(meta: dict) -> str:
    """'<kind>: NVIDIA H200 x2 · torch … · NCCL … · CUDA … · driver …'."""
    return f"{meta.get('machine_kind', '?')}: {hardware_label(meta)} · {stack_label(meta)}"


def code_label(meta: dict) -> str:
    code = meta.get("code") or {}
    commit = str(code.get("commit") or "unknown")[:7]
    return f"code {commit}" + (" (uncommitted changes)" if code.get("dirty") else "")


def run_date(meta: dict) -> str:
    """'2026-11-30 06:54 UTC' from the run's start stamp (YYYYmmddTHHMMSSZ)."""
    s = str(meta.get("started_utc") or "")
    if len(s) != 16:
        return s or "date unknown"
    return f"{s[:4]}-{s[4:6]}-{s[6:8]} {s[9:11]}:{s[11:13]} UTC"


def provenance(meta: dict) -> str:
    """The line under every figure: machine, stack, code and date."""
    return f"{machine_label(meta)}\n{code_label(meta)} · run started {run_date(meta)}"


# ---- a case ----------------------------------------------------------------------------
def forward_label(case: dict) -> str:
    """'idle' or 'fwd 5 ms (measured 4.64)': the label and what the GPU actually ran."""
    ms = case["case"]["forward_ms"]
    if not ms:
        return "idle"
    measured = ((case.get("forward") or {}).get("measured_ms") or {}).get("p50")
    return f"fwd {ms:g} ms" + (f" (measured {measured:.2f})" if measured is not None else "")


def state_label(forward_ms: float) -> str:
    return "idle GPU" if not forward_ms else f"behind a {forward_ms:g} ms forward"


def variant_label(case: dict) -> str:
    """What sets a case apart from the main sweep ('' for a main case)."""
    c = case["case"]
    parts = []
    if c.get("forward_ms") and not c.get("barrier", True):
        parts.append("no barrier")
    if c.get("forward_ms") and c.get("granularity", "coarse") != "coarse":
        parts.append("fine kernels")
    if c.get("priority", "default") != "default":
        parts.append("high-priority stream")
    if c.get("phase", "random") != "random":
        parts.append(f"phase {c['phase']}")
    return " + ".join(parts)


def is_main(case: dict) -> bool:
    return not variant_label(case)


def ranks(shape: str) -> int:
    dp, tp = (int(x) for x in shape.split("x"))
    return dp * tp


def shape_label(shape: str) -> str:
    return f"{shape} ({ranks(shape)} rank{'s' if ranks(shape) > 1 else ''})"


def shape_order(shape: str) -> tuple[int, int]:
    """Fewer ranks first; at one world size DP attention (Nx1) before pure TP (1xN)."""
    dp, _ = (int(x) for x in shape.split("x"))
    return (ranks(shape), -dp)


def cadence_order(cadence: str) -> int:
    return CADENCES.index(cadence) if cadence in CADENCES else len(CADENCES)


def path_order(path: str) -> int:
    """Registry order: a new path sorts where it was registered."""
    names = list(PATHS)
    return names.index(path) if path in names else len(names)


def path_color(path: str) -> str:
    return f"C{path_order(path) % 10}" if path in PATHS else "0.4"


def case_order(case: dict) -> tuple:
    """Path, then world and shape, GPU state, cadence, variant, repeat: a table reads down."""
    c = case["case"]
    return (
        path_order(c["path"]),
        c["path"],
        shape_order(c["shape"]),
        c["forward_ms"],
        not is_main(case),  # the main cases of a GPU state first, then its variants
        cadence_order(c["cadence"]),
        variant_label(case),
        c.get("repeat", 0),
    )
