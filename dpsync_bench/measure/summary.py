"""One case's result from every rank's record: the summary (JSON) and the raw samples.

Pure and torch-free, so every rank builds the same and tests feed it invented records.
Per-pass figures are reduced over ranks per pass (the max: every rank waits for the
slowest; the min for idle gaps: the shortest any rank had), then summarized.
"""

from __future__ import annotations

import time

import numpy as np

from .. import stats
from ..cases import Case
from ..results import CASE_SCHEMA, utc_stamp
from .loop import OVERHEAD_BLOCK

US = 1e-3
# The conditions a case's label promises (the harness aims at them, the checks hold them).
MIN_IDLE_GAP_NS = 300_000  # isolated cadence: idle time before each pass, on every rank
MIN_IDLE_GAP_US = MIN_IDLE_GAP_NS * US
MAX_LATE_FRACTION = 0.05  # isolated cadence: slots skipped
FORWARD_TOLERANCE = 0.05  # a forward's measured p50 against its label
OVERHEAD_LIMIT = 0.05  # harness over the bare loop
# figure -> (how ranks are reduced per pass, the name in stats)
REDUCED = {
    "pass": ("max", "pass_us"),
    "row": ("max", "row_us"),
    "collective": ("max", "collective_us"),
    "stall": ("max", "stall_us"),
    "decide": ("max", "decide_us"),
    "start": ("spread", "start_skew_us"),
    "idle_gap": ("min", "idle_gap_us"),
    "phase": ("max", "phase_us"),
    "remaining": ("max", "remaining_us"),
    "exposed": ("max", "exposed_us"),
}


def stack(records: list[dict], figure: str) -> np.ndarray | None:
    """(ranks, passes) of one figure, or None where no rank has it."""
    arrays = [r["samples"].get(figure) for r in records]
    if any(a is None or len(a) == 0 for a in arrays):
        return None
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"ranks recorded different pass counts of {figure}")
    return np.stack(arrays).astype(np.int64)


def build_result(
    case: Case, records: list[dict], machine_kind: str, started: float
) -> tuple[dict, dict]:
    samples = {f: a for f in (*REDUCED, "arrive") if (a := stack(records, f)) is not None}
    figures = {}
    for figure, (how, name) in REDUCED.items():
        if figure in samples:
            figures[name] = stats.summarize(stats.per_pass(samples[figure], how), US)
    result = {
        "schema": CASE_SCHEMA,
        "case_id": case.case_id,
        "group_key": case.group_key,
        "case": case.to_dict(),
        "machine_kind": machine_kind,
        "world_size": len(records),
        "started_utc": utc_stamp(started),
        "duration_s": round(time.time() - started, 3),
        "reduction": "per pass, the max over ranks (idle gap: the min; start: the spread)",
        "stats": figures,
        "per_rank": {
            "pass_us": [stats.summarize(r, US) for r in samples["pass"]],
            "slowest_pass_counts": stats.argmax_counts(samples["pass"]),
            "last_arrival_counts": stats.argmax_counts(samples["arrive"]),
        },
        "path_state": records[0]["path"],
        "gpu_state": [r.get("gpu_state") for r in records],
        "cadence_detail": _cadence(case, records, figures),
    }
    if "forward" in records[0]:
        durations = np.stack([r["forward"]["durations_ns"] for r in records])
        samples["forward"] = durations
        figures["forward_ms"] = stats.summarize(durations, 1e-6)
        result["forward"] = _forward(case, records, figures["forward_ms"])
    if "device" in records[0]:
        rounds = np.stack([r["device"]["ns"] for r in records])
        samples["device"] = rounds
        figures["device_us"] = stats.summarize(rounds.max(axis=0), US)
        result["device_time"] = {
            k: records[0]["device"][k] for k in ("method", "discarded_rounds", "sleep_cycles")
        }
    if all(r.get("raw_block_means_ns") for r in records) and samples["pass"].shape[1] >= (
        OVERHEAD_BLOCK
    ):  # fewer passes than one block: nothing to compare
        result["raw_loop"] = _overhead(records, samples["pass"])
    result["check"] = _checks(case, records, result)
    return result, samples


def _cadence(case: Case, records: list[dict], figures: dict) -> dict:
    if case.cadence == "streaming":
        return {"cadence": "streaming", "detail": "passes back to back, GPU idle"}
    if case.cadence == "busy":
        return {
            "cadence": "busy",
            "detail": "forwards back to back; iteration N launches forward N, waits for "
            "forward N-1, then runs the pass at its phase of forward N",
            "phase": case.phase,
        }
    detail = records[0].get("cadence", {})
    attempts = detail.get("attempts", [])
    gap = figures.get("idle_gap_us", {})
    return {
        "cadence": "isolated",
        "detail": "one pass per slot of an agreed grid, each after at least "
        f"{MIN_IDLE_GAP_US:g} us idle on every rank; slots too close are skipped"
        + (
            "; the forward is launched at the slot, the pass starts at its phase"
            if case.forward_ms
            else ""
        ),  # fmt: skip
        "period_us": attempts[-1]["period_ns"] * US if attempts else None,
        "allowance_us": detail.get("allowance_ns", 0) * US,
        "idle_wait": detail.get("idle_wait"),
        "idle_gap_us": {k: gap[k] for k in ("p5", "p50", "min", "n")} if gap else None,
        "late_fraction": attempts[-1]["late_fraction"] if attempts else None,
        "attempts": attempts,
        "phase": case.phase if case.forward_ms else None,
    }


def _forward(case: Case, records: list[dict], measured: dict) -> dict:
    f = [r["forward"] for r in records]
    return {
        "requested_ms": case.forward_ms,
        "measured_ms": measured,
        "within_tolerance": abs(measured["p50"] / case.forward_ms - 1) <= FORWARD_TOLERANCE,
        "tolerance": FORWARD_TOLERANCE,
        "tuning": [x["tuning"] for x in f],
        "rows": [x["rows"] for x in f],  # of matrix_size-wide products, per rank
        "matrix_size": f[0]["matrix_size"],
        "kernel_ms": [x["kernel_ms"] for x in f],
        "granularity": case.granularity,
        "barrier": case.barrier,
    }


def _overhead(records: list[dict], passes: np.ndarray) -> dict:
    """The slowest rank's median block mean, timed against bare. The verdict needs the gap to
    clear the limit by twice its standard error either way; in between it cannot tell (a
    gloo pass's noise on a busy host is larger than the few clock reads measured)."""
    harness, h_err = max(
        stats.median_and_error(stats.block_means(r, OVERHEAD_BLOCK)) for r in passes
    )
    bare, b_err = max(stats.median_and_error(r["raw_block_means_ns"]) for r in records)
    overhead = (harness - bare) / bare if bare > 0 else 0.0
    error = float(np.hypot(h_err, b_err) / bare) if bare > 0 else 0.0
    if overhead - 2 * error > OVERHEAD_LIMIT:
        verdict = "over"
    elif overhead + 2 * error <= OVERHEAD_LIMIT:
        verdict = "within"
    else:
        verdict = "cannot tell"
    return {
        "statistic": f"median over blocks of {OVERHEAD_BLOCK} passes of the block mean, "
        "slowest rank; bare and measured passes alternate in chunks of 100",
        "mean_us": bare * US,
        "harness_mean_us": harness * US,
        "overhead": overhead,
        "error": error,  # standard error of `overhead`
        "within_limit": overhead <= OVERHEAD_LIMIT,
        "verdict": verdict,
    }


def _checks(case: Case, records: list[dict], result: dict) -> dict:
    out = {
        k: sum(r["checks"][k] for r in records)
        for k in ("wrong_elements", "wrong_reads", "wrong_decisions")
    }
    out["passes_checked"] = min(r["checks"]["passes_checked"] for r in records)
    failures = [f"{out[k]} {k.replace('_', ' ')}" for k in out if k.startswith("wrong") and out[k]]
    cadence = result["cadence_detail"]
    if case.cadence == "isolated":
        late, gap = cadence["late_fraction"], cadence["idle_gap_us"]
        if late is not None and late > MAX_LATE_FRACTION:
            failures.append(f"{late:.1%} of slots skipped (limit {MAX_LATE_FRACTION:.0%})")
        if gap and gap["p5"] < MIN_IDLE_GAP_US:
            failures.append(f"idle gap p5 {gap['p5']:.0f} us < {MIN_IDLE_GAP_US:g} us")
    forward = result.get("forward")
    if forward and not forward["within_tolerance"]:
        failures.append(
            f"forward measured {forward['measured_ms']['p50']:.2f} ms, labelled "
            f"{case.forward_ms:g} ms (over {FORWARD_TOLERANCE:.0%} off)"
        )
    out["failures"] = failures
    return out
