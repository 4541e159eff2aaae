"""Tables and checks over case results (no measuring here)."""

from __future__ import annotations

from collections import defaultdict

from ..stats import relative_spread

UNSTABLE_P50 = 0.10  # repeats of one case whose p50s differ more than this are unstable


def fmt_us(v) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def summary_rows(case_results: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(case_results, key=lambda r: r["case_id"]):
        s = r["stats"]
        rows.append(
            {
                "case": r["case_id"],
                "pass_p50": s["pass_us"]["p50"],
                "pass_p99": s["pass_us"]["p99"],
                "pass_max": s["pass_us"]["max"],
                "stall_p50": s["stall_us"]["p50"],
                "stall_p99": s["stall_us"]["p99"],
                "device_p50": s.get("device_us", {}).get("p50"),
                "skew_p50": s["start_skew_us"]["p50"] if "start_skew_us" in s else None,
                "n": s["pass_us"]["n"],
                "ok": not r["check"]["failures"],
            }
        )
    return rows


def summary_table(case_results: list[dict], markdown: bool = False) -> str:
    """One line a case: pass latency and stall p50/p99 (us), device time, start skew."""
    head = [
        "case",
        "pass p50",
        "pass p99",
        "pass max",
        "stall p50",
        "stall p99",
        "device p50",
        "skew p50",
        "n",
        "check",
    ]
    body = [
        [
            row["case"],
            *(
                fmt_us(row[k])
                for k in (
                    "pass_p50",
                    "pass_p99",
                    "pass_max",
                    "stall_p50",
                    "stall_p99",
                    "device_p50",
                    "skew_p50",
                )
            ),
            str(row["n"]),
            "ok" if row["ok"] else "WRONG",
        ]
        for row in summary_rows(case_results)
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

    def fmt(r):
        return "  ".join(
            x.ljust(w) if i == 0 else x.rjust(w)
            for i, (x, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([fmt(head)] + [fmt(r) for r in body])


def stability(
    case_results: list[dict], limit: float = UNSTABLE_P50, overhead: bool = True
) -> list[str]:
    """Repeats of a case must agree on p50 within `limit`; name those that don't, and
    the harness-overhead checks that failed."""
    by_group = defaultdict(list)
    for r in case_results:
        by_group[r.get("group_key", r["case_id"])].append(r["stats"]["pass_us"]["p50"])
    lines = []
    repeated = {k: v for k, v in by_group.items() if len(v) > 1}
    unstable = {k: v for k, v in repeated.items() if relative_spread(v) > limit}
    if repeated:
        lines.append(
            f"stability: {len(repeated) - len(unstable)}/{len(repeated)} repeated "
            f"cases agree on p50 within {limit:.0%}"
        )
    for key, p50s in sorted(unstable.items()):
        lines.append(f"  UNSTABLE {key}: p50s {', '.join(f'{v:.1f}' for v in p50s)} us")
    for r in case_results if overhead else ():
        raw = r.get("raw_loop")
        if raw and not raw["within_limit"]:
            lines.append(
                f"  harness overhead {raw['overhead']:+.1%} over the raw loop in "
                f"{r['case_id']} (raw {raw['mean_us']:.1f} us, harness "
                f"{raw['harness_mean_us']:.1f} us)"
            )
    return lines


def pivot_table(case_results: list[dict]) -> str:
    """Markdown: a row per path, a column per GPU state (coarse kernels, with the barrier):
    pass latency p50 / p99 and stall p50, us."""
    cols = {}
    for r in case_results:
        c = r["case"]
        if c["forward_ms"] and (
            not c["barrier"] or c["granularity"] != "coarse" or c["priority"] != "default"
        ):
            continue
        state = "idle" if not c["forward_ms"] else f"fwd {c['forward_ms']:g} ms"
        key = (f"{state}, {c['cadence']}", c["path"], c["shape"])
        cols.setdefault(key[0], {})[(c["path"], c["shape"])] = r["stats"]
    order = sorted(
        cols,
        key=lambda k: (k.startswith("fwd"), float(k.split()[1]) if k.startswith("fwd") else 0, k),
    )
    rows = sorted({pk for col in cols.values() for pk in col})
    lines = ["| path (shape) | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
    for path, shape in rows:
        cells = []
        for col in order:
            st = cols[col].get((path, shape))
            cells.append(
                "-"
                if st is None
                else f"{fmt_us(st['pass_us']['p50'])} / {fmt_us(st['pass_us']['p99'])}"
                f" ({fmt_us(st['stall_us']['p50'])})"
            )
        lines.append(f"| {path} ({shape}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
