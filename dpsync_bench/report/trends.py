"""p50 and p99 of each main case over a series of runs (one machine kind, one world size),
from the summaries alone: a history never needs the raw samples, which a published run may
have dropped."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .canvas import cadence_note, log_axis, new_figure, save_png
from .labels import is_main, path_order, stack_label
from .runs import by_group

MAX_TICKS = 6


def _column(case: dict) -> str:
    c = case["case"]
    state = "idle" if not c["forward_ms"] else f"fwd {c['forward_ms']:g} ms"
    return f"{c['shape']} · {state} · {c['cadence']}"


def _run_tick(meta: dict) -> str:
    stamp = str(meta.get("started_utc", "?"))  # YYYYmmddTHHMMSSZ
    return f"{stamp[4:6]}-{stamp[6:8]}\n{stamp[9:11]}:{stamp[11:13]}" if len(stamp) == 16 else stamp


def trend_series(runs: list[dict]) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """path -> case column -> [(run index, p50, p99)], repeats of a run: their median."""
    series: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, run in enumerate(runs):
        for group in by_group(c for c in run["cases"].values() if is_main(c)).values():
            p50 = statistics.median(c["stats"]["pass_us"]["p50"] for c in group)
            p99 = statistics.median(c["stats"]["pass_us"]["p99"] for c in group)
            series[group[0]["case"]["path"]][_column(group[0])].append((i, p50, p99))
    return {path: dict(series[path]) for path in sorted(series, key=path_order)}


def stack_changes(runs: list[dict]) -> list[int]:
    """Indices of the runs whose software stack differs from the run before."""
    labels = [stack_label(r["meta"]) for r in runs]
    return [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]


def write_trend_plot(runs: list[dict], out_dir: Path, name: str = "trend") -> Path | None:
    """A panel per path, a line per case (p50 solid, p99 dashed); dotted verticals where the
    software stack changed. None with fewer than two runs."""
    if len(runs) < 2:
        return None
    series = trend_series(runs)
    columns = sorted({col for cols in series.values() for col in cols})
    fig, axes = new_figure(len(series), width=4.6, height=3.0, ncols=3)
    step = max(1, -(-len(runs) // MAX_TICKS))
    ticks = list(range(len(runs) - 1, -1, -step))[::-1]  # always label the latest run
    changes = stack_changes(runs)
    for ax, (path, by_column) in zip(axes, series.items(), strict=True):
        for column, points in sorted(by_column.items()):
            color = f"C{columns.index(column) % 10}"
            xs = [i for i, _, _ in points]
            ax.plot(xs, [p50 for _, p50, _ in points], marker="o", color=color, label=column)
            ax.plot(xs, [p99 for _, _, p99 in points], linestyle="--", color=color, alpha=0.4)
        for i in changes:
            ax.axvline(i - 0.5, color="0.4", linestyle=":", label="software stack changed")
        ax.set_xticks(ticks, [_run_tick(runs[i]["meta"]) for i in ticks], fontsize="small")
        ax.set_xlim(-0.5, len(runs) - 0.5)
        log_axis(ax, "y")
        ax.set_title(path, fontsize="medium")
        ax.set_ylabel("pass latency (us, log)")
        ax.grid(True, which="both", alpha=0.3)
    cadences = {c["case"]["cadence"] for r in runs for c in r["cases"].values()}
    title = f"Pass latency over the last {len(runs)} runs: p50 solid, p99 dashed (UTC dates)"
    return save_png(fig, out_dir, name, [runs[-1]["meta"]], title, cadence_note(cadences))
