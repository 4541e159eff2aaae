"""Case results in the formats benchmark dashboards already read.

- ``gab``: github-action-benchmark's ``customSmallerIsBetter`` JSON, a list of
  ``{name, unit, value, range, extra}``; pass latency p50 and p99 of each case, in us.
- ``bmf``: Bencher Metric Format, ``{benchmark: {measure: {value, lower_value,
  upper_value}}}``; ``latency`` is pass latency in ns (Bencher's built-in Latency measure
  is in ns), ``stall`` the time the host was blocked on the GPU, also in ns: p50 with p10
  and p90 as the bounds, over the per-iteration max across ranks.
"""

from __future__ import annotations

from ..cases import UsageError
from ..stats import quantile
from .gate import samples
from .plots import REDUCTION, machine_label

FORMATS = ("gab", "bmf")


def _quantiles(case: dict, metric: str) -> tuple[float, float, float]:
    ordered = sorted(samples(case, metric))
    return tuple(quantile(ordered, q) for q in (0.10, 0.50, 0.90))


def to_gab(run: dict) -> list[dict]:
    machine = machine_label(run["meta"])
    out = []
    for case_id, case in sorted(run["cases"].items()):
        p10, _, p90 = _quantiles(case, "pass_us")
        s = case["stats"]["pass_us"]
        extra = f"{machine}; cadence {case['case']['cadence']}; {REDUCTION}; n={s['n']}"
        for q in ("p50", "p99"):
            out.append(
                {
                    "name": f"{case_id} pass {q}",
                    "unit": "us",
                    "value": s[q],
                    "range": f"p10-p90 {p10:.1f}-{p90:.1f}",
                    "extra": extra,
                }
            )
    return out


def to_bmf(run: dict) -> dict:
    out = {}
    for case_id, case in sorted(run["cases"].items()):
        measures = {}
        for measure, metric in (("latency", "pass_us"), ("stall", "stall_us")):
            if metric not in case["raw"]:  # stall samples are optional in the schema
                continue
            p10, p50, p90 = (v * 1000.0 for v in _quantiles(case, metric))
            measures[measure] = {"value": p50, "lower_value": p10, "upper_value": p90}
        out[case_id] = measures
    return out


def export(run: dict, fmt: str):
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return to_gab(run) if fmt == "gab" else to_bmf(run)
