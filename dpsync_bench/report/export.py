"""Case results of schema-2 runs in the formats benchmark dashboards read.

- ``gab``: github-action-benchmark's ``customSmallerIsBetter`` JSON, a list of
  ``{name, unit, value, range, extra}``: the p50 and the p99 of each case's pass latency
  (the summary's), in us; ``range`` names its spread: p10-p90 of the passes where the run
  kept its samples, else the summary's p5-p90.
- ``bmf``: Bencher Metric Format, ``{case_id: {measure: {value, lower_value,
  upper_value}}}`` in ns (Bencher's Latency unit); ``latency`` is the pass time, ``stall``
  the time the host was blocked on the GPU: the summary's p50, bounded by the p10 and p90 of
  the passes where the run kept its samples, else by the summary's p5 and p90 (the nearest
  quantiles it keeps; the command says on stderr for how many cases).

Per pass, both figures take the slowest rank, as the summaries do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import results, stats
from ..cases import UsageError
from ..results import ResultsError
from .history import machine_label
from .noise import per_pass_us

FORMATS = ("gab", "bmf")
MEASURES = {"latency": ("pass", "pass_us"), "stall": ("stall", "stall_us")}  # sample, stat
FROM_SAMPLES, FROM_SUMMARY = "p10-p90", "p5-p90"


def spread_us(run_dir: Path, case: dict) -> dict[str, tuple[str, float, float]]:
    """{stat name: (which, low, high)} of each measure the case has, in us."""
    path = results.samples_path(run_dir, case["case_id"])
    samples = results.load_samples(run_dir, case["case_id"]) if path.is_file() else {}
    out = {}
    for figure, metric in MEASURES.values():
        if metric not in case["stats"]:
            continue
        if figure in samples:
            values = per_pass_us(samples, figure)
            out[metric] = (FROM_SAMPLES, stats.quantile(values, 0.1), stats.quantile(values, 0.9))
        else:
            summary = case["stats"][metric]
            out[metric] = (FROM_SUMMARY, summary["p5"], summary["p90"])
    return out


def load_cases(run_dirs) -> list[tuple[dict, dict, dict]]:
    """(run.json, case, its spreads) of every case of the runs, in case order; a case id
    may appear once (the exported names identify series)."""
    found = {}
    for run_dir in map(Path, run_dirs):
        run = results.load_run(run_dir)
        for case_id, case in run["cases"].items():
            if case_id in found:
                raise ResultsError(f"{run_dir}: case {case_id} is given twice")
            found[case_id] = (run["meta"], case, spread_us(run_dir, case))
    if not found:
        raise ResultsError("no finished cases in the runs given")
    return [found[c] for c in sorted(found)]


def to_gab(cases) -> list[dict]:
    out = []
    for meta, case, spread in cases:
        s = case["stats"]["pass_us"]
        which, low, high = spread["pass_us"]
        extra = (
            f"{machine_label(meta)}; world size {case['world_size']}; cadence "
            f"{case['case']['cadence']}; per pass the slowest rank; n={s['n']}"
        )
        for q in ("p50", "p99"):
            out.append(
                {
                    "name": f"{case['case_id']} pass {q}",
                    "unit": "us",
                    "value": s[q],
                    "range": f"{which} {low:.1f}-{high:.1f}",
                    "extra": extra,
                }
            )
    return out


def to_bmf(cases) -> dict:
    out = {}
    for _, case, spread in cases:
        out[case["case_id"]] = {
            measure: {
                "value": case["stats"][metric]["p50"] * 1000.0,
                "lower_value": spread[metric][1] * 1000.0,
                "upper_value": spread[metric][2] * 1000.0,
            }
            for measure, (_, metric) in MEASURES.items()
            if metric in spread
        }
    return out


def export(cases, fmt: str):
    """`cases` from load_cases, in format `fmt` (gab or bmf)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return to_gab(cases) if fmt == "gab" else to_bmf(cases)


# ---- command line ----------------------------------------------------------------------
def add_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")


def cmd_export(args) -> int:
    """Case results as github-action-benchmark (gab) or Bencher (bmf) JSON."""
    cases = load_cases(args.runs)
    data = export(cases, args.format)
    from_summary = sum(
        any(which == FROM_SUMMARY for which, _, _ in spread.values()) for _, _, spread in cases
    )
    if from_summary:
        print(
            f"dpsync: {from_summary} case(s) without raw samples: their bounds are the "
            f"summary's {FROM_SUMMARY}, not {FROM_SAMPLES}",
            file=sys.stderr,
        )
    if args.out is None:
        print(json.dumps(data, indent=1, allow_nan=False))
        return 0
    try:
        results.atomic_write_json(args.out, data)
    except OSError as e:
        raise ResultsError(f"cannot write {args.out}: {e.strerror}") from None
    print(f"{args.format}: {args.out}")
    return 0
