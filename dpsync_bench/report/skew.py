"""The per-rank figure of a run: how far apart the ranks start a pass, each rank's own pass
p50, and which rank arrived last at the gather (the one every other rank waited for)."""

from __future__ import annotations

from .canvas import log_axis, new_figure
from .labels import case_order, is_main


def _short(case: dict) -> str:
    return case["case_id"].removesuffix("-r0")


def skew_figure(run: dict):
    """A row per main case of two ranks or more; None for a one-rank run."""
    from matplotlib import colormaps

    cases = [c for c in run["cases"].values() if c["world_size"] > 1 and is_main(c)]
    if not cases:
        return None
    cases = sorted(cases, key=case_order, reverse=True)  # the first case on top
    world = max(c["world_size"] for c in cases)

    def color(rank: int):  # distinct colors up to 10 ranks, a gradient beyond
        return f"C{rank}" if world <= 10 else colormaps["viridis"](rank / (world - 1))

    fig, axes = new_figure(3, width=4.4, height=0.2 * len(cases) + 1.2, ncols=3)
    skew_ax, p50_ax, last_ax = axes
    for row, case in enumerate(cases):
        skew = case["stats"]["start_skew_us"]
        skew_ax.plot([skew["p50"], skew["p99"]], [row, row], color="0.6", linewidth=1.5)
        skew_ax.plot([skew["p50"]], [row], marker="o", color="0.2", markersize=4)
        per_rank = case["per_rank"]
        p50s = [block["p50"] for block in per_rank["pass_us"]]
        p50_ax.plot([min(p50s), max(p50s)], [row, row], color="0.75", linewidth=2, zorder=1)
        counts = per_rank["last_arrival_counts"]
        left, total = 0.0, sum(counts) or 1
        for rank, (p50, n) in enumerate(zip(p50s, counts, strict=True)):
            label = f"rank {rank}"
            p50_ax.scatter([p50], [row], color=color(rank), s=14, zorder=2, label=label)
            last_ax.barh(row, n / total, left=left, color=color(rank), label=label)
            left += n / total
    for ax in axes:
        ax.set_yticks(range(len(cases)), [_short(c) for c in cases] if ax is skew_ax else [])
        ax.set_ylim(-0.6, len(cases) - 0.4)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    skew_ax.tick_params(axis="y", labelsize="x-small")
    log_axis(skew_ax, "x")
    skew_ax.set_xlabel("start skew: p50 dot, line to p99 (us, log)")
    skew_ax.set_title("how far apart the ranks start", fontsize="medium")
    log_axis(p50_ax, "x")
    p50_ax.set_xlabel("pass p50 of each rank (us, log)")
    p50_ax.set_title("each rank's own pass", fontsize="medium")
    last_ax.set_xlim(0, 1)
    last_ax.set_xlabel("share of passes the rank arrived last")
    last_ax.set_title("who everyone waited for", fontsize="medium")
    cadences = [c["case"]["cadence"] for c in cases]
    return fig, f"Per-rank skew and last arrival ({world} ranks)", cadences
