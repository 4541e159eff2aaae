"""Tables of runs (summaries only): a line per case, the pivot for the README, the agreement
of one case's p50 across runs or repeats, the harness-overhead lines; and `report`.

Times are microseconds of the per-pass max over ranks (labels.REDUCTION).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ..results import PARTS
from ..stats import relative_spread
from .labels import (
    REDUCTION,
    cadence_order,
    case_order,
    code_label,
    fmt_us,
    forward_label,
    is_main,
    machine_label,
    path_order,
    run_date,
    shape_label,
    shape_order,
)
from .runs import by_group, load_runs

STABLE_P50 = 0.10  # the same case in two runs (or two repeats) should agree this closely
SHORT = {"collective": "coll"}


def render(head: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Markdown, or plain text: first column left-aligned, the numbers right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]

    def line(r):
        pairs = enumerate(zip(r, widths, strict=True))
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in pairs).rstrip()

    return "\n".join([line(head)] + [line(r) for r in rows])


def _p(case: dict, metric: str, q: str = "p50") -> str:
    block = case["stats"].get(metric)
    return fmt_us(block[q]) if block else "-"


def _isolated(case: dict, key: str):
    detail = case.get("cadence_detail") or {}
    return detail.get(key) if detail.get("cadence") == "isolated" else None


def _late(case: dict) -> str:
    late = _isolated(case, "late_fraction")
    return "-" if late is None else f"{100 * late:.1f}"


# header, cell of a case
SUMMARY_COLUMNS = (
    ("case", lambda c: c["case_id"]),
    ("GPU", forward_label),
    ("pass p50", lambda c: _p(c, "pass_us")),
    ("pass p99", lambda c: _p(c, "pass_us", "p99")),
    *((f"{SHORT.get(part, part)} p50", lambda c, part=part: _p(c, f"{part}_us")) for part in PARTS),
    ("exposed p50", lambda c: _p(c, "exposed_us")),
    ("idle gap p5", lambda c: _p(c, "idle_gap_us", "p5")),
    ("late %", _late),
    ("device p50", lambda c: _p(c, "device_us")),
    ("n", lambda c: str(c["stats"]["pass_us"]["n"])),
    ("check", lambda c: "FAIL" if c["check"]["failures"] else "ok"),
)


def summary_table(cases, markdown: bool = False) -> str:
    """A line per case: pass p50/p99, the four parts' p50 (they add up per pass), the time
    exposed after a forward, the isolated cadence's idle gap and late share, device time."""
    cases = sorted(cases, key=case_order)
    rows = [[cell(c) for _, cell in SUMMARY_COLUMNS] for c in cases]
    return render([h for h, _ in SUMMARY_COLUMNS], rows, markdown)


def failure_lines(cases) -> list[str]:
    """What made each FAIL in the check column fail."""
    return [
        f"  FAIL {c['case_id']}: {'; '.join(c['check']['failures'])}"
        for c in sorted(cases, key=case_order)
        if c["check"]["failures"]
    ]


def _column(case: dict) -> tuple[float, str]:
    c = case["case"]
    return (c["forward_ms"], c["cadence"])


def pivot_table(cases, markdown: bool = True) -> str:
    """A row per path and shape, a column per GPU state and cadence: pass p50 / p99 (us) of
    the main cases (barrier, coarse kernels, default priority); repeats: their median."""
    cells: dict[tuple, dict[tuple, list[dict]]] = {}
    for case in (c for c in cases if is_main(c)):
        row = (case["case"]["path"], case["case"]["shape"])
        cells.setdefault(row, {}).setdefault(_column(case), []).append(case)
    columns = sorted(
        {col for row in cells.values() for col in row}, key=lambda k: (k[0], cadence_order(k[1]))
    )
    rows_order = sorted(cells, key=lambda r: (path_order(r[0]), r[0], shape_order(r[1])))
    head = ["path · shape"]
    head += [f"{'idle' if not ms else f'fwd {ms:g} ms'} · {cadence}" for ms, cadence in columns]
    rows = []
    for path, shape in rows_order:
        line = [f"{path} · {shape_label(shape)}"]
        for col in columns:
            found = cells[(path, shape)].get(col)
            if not found:
                line.append("-")
                continue
            p50 = statistics.median(c["stats"]["pass_us"]["p50"] for c in found)
            p99 = statistics.median(c["stats"]["pass_us"]["p99"] for c in found)
            line.append(f"{fmt_us(p50)} / {fmt_us(p99)}")
        rows.append(line)
    return render(head, rows, markdown)


def stability(cases, limit: float = STABLE_P50, overhead: bool = True) -> list[str]:
    """Cases measured more than once (repeats, or the same case in several runs): the
    relative p50 difference of each, (max - min) / mean, against `limit`; then the
    harness-overhead lines."""
    compared = []
    for key, group in sorted(by_group(cases).items()):
        if len(group) > 1:
            p50s = [c["stats"]["pass_us"]["p50"] for c in group]
            compared.append((relative_spread(p50s), key, p50s))
    lines = []
    if compared:
        agree = sum(diff <= limit for diff, _, _ in compared)
        lines.append(f"stability: {agree}/{len(compared)} cases agree on p50 within {limit:.0%}")
        rows = [
            [key, ", ".join(fmt_us(v) for v in p50s), f"{100 * diff:.1f}", _verdict(diff, limit)]
            for diff, key, p50s in sorted(compared, reverse=True)
        ]
        table = render(["case", "p50s (us)", "difference %", ""], rows)
        lines += ["  " + line for line in table.splitlines()]
    return lines + (overhead_lines(cases) if overhead else [])


def _verdict(diff: float, limit: float) -> str:
    return "ok" if diff <= limit else "UNSTABLE"


def overhead_lines(cases) -> list[str]:
    """The harness against a bare loop of the same passes (streaming cases measure both)."""
    measured = [c for c in sorted(cases, key=case_order) if c.get("raw_loop")]
    if not measured:
        return []
    verdicts = [_overhead_verdict(c["raw_loop"]) for c in measured]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("over", "cannot tell") if v in verdicts)
    lines = [
        f"harness overhead: {verdicts.count('within')}/{len(measured)} within its limit"
        + (f" ({counts})" if counts else "")
    ]
    for c, verdict in zip(measured, verdicts, strict=True):
        raw = c["raw_loop"]
        error = f" ± {raw['error']:.1%}" if "error" in raw else ""
        lines.append(
            f"  {c['case_id']}: bare loop {raw['mean_us']:.1f} us, harness "
            f"{raw['harness_mean_us']:.1f} us, {raw['overhead']:+.1%}{error}"
            + {"within": "", "over": "  OVER", "cannot tell": "  cannot tell"}[verdict]
        )
    return lines


def _overhead_verdict(raw: dict) -> str:
    """Runs before the verdict was recorded: over or within by the point estimate."""
    return raw.get("verdict") or ("within" if raw["within_limit"] else "over")


def run_header(run: dict) -> list[str]:
    meta = run["meta"]
    return [
        f"# {Path(run['dir']).name}: {machine_label(meta)}",
        f"# {code_label(meta)} · started {run_date(meta)} · {meta.get('status', '?')}; "
        f"us, {REDUCTION}",
    ]


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--plots", action="store_true", help="also write RUN/plots/*.png")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--pivot", action="store_true", help="a row per path, a column per state")
    form.add_argument("--markdown", action="store_true", help="the summary table as markdown")


def cmd_report(args) -> int:
    """Tables of run directories; with several runs, whether their common cases agree."""
    runs = load_runs(args.runs)
    for run in runs:
        cases = list(run["cases"].values())
        print("\n".join(run_header(run)))
        if args.pivot:
            print(pivot_table(cases))
        else:
            print(summary_table(cases, markdown=args.markdown))
            print("\n".join(failure_lines(cases) + stability(cases)))
        if args.plots:
            from .plots import write_run_plots  # matplotlib only when asked for

            for path in write_run_plots(run, Path(run["dir"]) / "plots"):
                print(f"plot: {path}")
    if len(runs) > 1:
        print(f"# the same cases across {len(runs)} runs")
        everything = [c for run in runs for c in run["cases"].values()]
        print("\n".join(stability(everything, overhead=False) or ["no case in two runs"]))
    return 0
