"""The figures of a run (PNG): latency CDFs, the pass split into its parts, stall and exposed
time against the forward left, latency against world size, per-rank skew; and `plot`.

Each figure function takes the run (`results.load_run`'s dict) and returns
(figure, title, cadences shown), or None where the run has nothing for it. Distributions
come from the raw samples; a run published without them falls back to its summaries.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from delayer_core.paths import path_names

from ..cases import UsageError
from ..results import PARTS
from .canvas import PART_COLORS, cadence_note, log_axis, new_figure, save_png
from .labels import (
    REDUCTION,  # noqa: F401  (export.py reads these two here)
    is_main,
    machine_label,  # noqa: F401
    path_color,
    path_order,
    ranks,
    shape_order,
    state_label,
)
from .runs import US_PER_NS, by_group, load_runs, per_pass_us, samples_ns
from .skew import skew_figure

LINESTYLES = ("-", "--", ":", "-.")
QUANTILE_POINTS = (("min", 0.0), ("p5", 0.05), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def _main_groups(run: dict) -> list[list[dict]]:
    """The main cases of a run, repeats of one case together, in registry order."""
    groups = [g for g in by_group(run["cases"].values()).values() if is_main(g[0])]
    return sorted(groups, key=lambda g: (path_order(g[0]["case"]["path"]), g[0]["case_id"]))


def _pooled(run: dict, group: list[dict], figure: str = "pass") -> np.ndarray | None:
    arrays = [per_pass_us(run["dir"], c["case_id"], figure) for c in group]
    return None if any(a is None for a in arrays) else np.concatenate(arrays)


def _dp_shape(run: dict) -> str:
    """The DP-attention shape of the largest world: the one forwards are measured at."""
    world = max(c["world_size"] for c in run["cases"].values())
    return f"{world}x1"


# ---- latency CDF -----------------------------------------------------------------------
def cdf_figure(run: dict):
    """Pass latency CDF per path (and shape), a panel per GPU state and cadence."""
    groups = _main_groups(run)
    panels = sorted(
        {(g[0]["case"]["forward_ms"], g[0]["case"]["cadence"]) for g in groups},
        key=lambda k: (k[0], k[1] != "isolated", k[1]),
    )
    shapes = sorted({g[0]["case"]["shape"] for g in groups}, key=shape_order)
    fig, axes = new_figure(len(panels), width=5.0, ncols=2)
    for ax, (forward_ms, cadence) in zip(axes, panels, strict=True):
        for g in groups:
            c = g[0]["case"]
            if (c["forward_ms"], c["cadence"]) != (forward_ms, cadence):
                continue
            style = {
                "color": path_color(c["path"]),
                "linestyle": LINESTYLES[shapes.index(c["shape"]) % len(LINESTYLES)],
                "label": c["path"] if len(shapes) == 1 else f"{c['path']} {c['shape']}",
            }
            values = _pooled(run, g)
            if values is None:  # summaries only: the CDF through its quantiles
                s = g[0]["stats"]["pass_us"]
                ax.plot(
                    [s[k] for k, _ in QUANTILE_POINTS], [q for _, q in QUANTILE_POINTS], **style
                )
            else:
                xs = np.sort(values)
                ax.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", **style)
        log_axis(ax, "x")
        ax.set_title(f"{state_label(forward_ms)} · {cadence}", fontsize="medium")
        ax.set_xlabel("pass latency (us, log scale)")
        ax.set_ylabel("fraction of passes")
        ax.grid(True, which="both", alpha=0.3)
    return fig, "Pass latency CDF per path", [c for _, c in panels]


# ---- the pass split into its parts -----------------------------------------------------
def _part_means(run: dict, case: dict) -> dict[str, float]:
    """Mean of each part over passes, taken on the slowest rank of each pass, so the parts
    add up to the mean pass; from the summaries (each part's own max) without samples."""
    per_rank = samples_ns(run["dir"], case["case_id"])
    if per_rank is None:
        return {p: case["stats"][f"{p}_us"]["mean"] for p in PARTS}
    slowest = per_rank["pass"].argmax(axis=0)
    columns = np.arange(slowest.size)
    return {p: float(per_rank[p][slowest, columns].mean()) * US_PER_NS for p in PARTS}


def parts_figure(run: dict):
    """Stacked bars per path: row, collective, stall, decide; idle and behind a forward."""
    shape = _dp_shape(run)
    mains = [g[0] for g in _main_groups(run) if g[0]["case"]["shape"] == shape]
    longest = max((c["case"]["forward_ms"] for c in mains), default=0.0)
    wanted = ((0.0, "isolated"), (longest, "isolated"), (longest, "busy"))
    panels = list(dict.fromkeys(p for p in wanted if any(_at(c, *p) for c in mains)))
    if not panels:
        return None
    fig, axes = new_figure(len(panels), width=5.2, height=3.8)
    for ax, (forward_ms, cadence) in zip(axes, panels, strict=True):
        cases = [c for c in mains if _at(c, forward_ms, cadence)]
        bottom = np.zeros(len(cases))
        means = [_part_means(run, c) for c in cases]
        for part in PARTS:
            heights = np.array([m[part] for m in means])
            ax.bar(range(len(cases)), heights, bottom=bottom, color=PART_COLORS[part], label=part)
            bottom += heights
        for x, total in enumerate(bottom):
            ax.text(x, total, f"{total:.0f}", ha="center", va="bottom", fontsize="x-small")
        ax.set_xticks(range(len(cases)), [c["case"]["path"] for c in cases], rotation=35)
        ax.tick_params(axis="x", labelsize="small")
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.set_title(f"{state_label(forward_ms)} · {cadence} · {shape}", fontsize="medium")
        ax.set_ylabel("mean per pass (us), slowest rank")
        ax.grid(True, axis="y", alpha=0.3)
    return fig, "The pass split into its four parts", [c for _, c in panels]


def _at(case: dict, forward_ms: float, cadence: str) -> bool:
    return (case["case"]["forward_ms"], case["case"]["cadence"]) == (forward_ms, cadence)


# ---- stall and exposed time against the forward left -----------------------------------
def forward_figure(run: dict):
    """Per pass: stall and exposed time against the forward remaining when the pass began.
    A path that queues behind the forward lies on the diagonal; a host path at 0."""
    groups = [g for g in _main_groups(run) if g[0]["case"]["forward_ms"] > 0]
    if not groups:
        return None
    fig, axes = new_figure(2, width=6.0, height=4.2, ncols=2)
    top = max(c["stats"]["remaining_us"]["max"] for g in groups for c in g) / 1e3
    axes[0].plot([0, top], [0, top], color="0.6", linestyle=":", label="stall = forward left")
    for g in groups:
        c = g[0]["case"]
        marker = "o" if c["cadence"] == "isolated" else "x"
        style = {"color": path_color(c["path"]), "marker": marker, "linestyle": "none"}
        remaining = _pooled(run, g, "remaining")
        stall, exposed = _pooled(run, g, "stall"), _pooled(run, g, "exposed")
        if remaining is None or stall is None or exposed is None:  # summaries: the p50s
            remaining, stall, exposed = (
                np.array([g[0]["stats"][f"{f}_us"]["p50"]])
                for f in ("remaining", "stall", "exposed")
            )
        axes[0].plot(remaining / 1e3, stall / 1e3, markersize=4, alpha=0.7, **style)
        axes[1].plot(remaining / 1e3, exposed, markersize=4, alpha=0.7, **style)
    for path in dict.fromkeys(g[0]["case"]["path"] for g in groups):  # the color key
        axes[0].plot([], [], marker="s", color=path_color(path), linestyle="none", label=path)
    for cadence, marker in (("isolated", "o"), ("busy", "x")):  # the marker key, in grey
        axes[1].plot([], [], marker=marker, color="0.4", linestyle="none", label=cadence)
    axes[0].set_ylabel("stall: host blocked on the GPU (ms)")
    axes[0].set_title("stall against the forward left", fontsize="medium")
    axes[1].set_yscale("symlog", linthresh=10)  # host paths expose exactly 0
    axes[1].set_ylabel("exposed after the forward's end (us, symlog)")
    axes[1].set_title("exposed time: what the overlap scheduler cannot hide", fontsize="medium")
    lengths = "/".join(f"{ms:g}" for ms in sorted({g[0]["case"]["forward_ms"] for g in groups}))
    for ax in axes:
        ax.set_xlabel(f"forward left when the pass began (ms; {lengths} ms forwards)")
        ax.grid(True, alpha=0.3)
    cadences = [g[0]["case"]["cadence"] for g in groups]
    return fig, "Behind a forward: stall and exposed time per pass (o isolated, x busy)", cadences


# ---- latency against world size --------------------------------------------------------
def world_figure(cases: list[dict]):
    """Idle pass p50 (whisker to p99) of the host paths against the ranks, DP-attention
    shape; from several runs' cases if need be. None with fewer than two world sizes."""
    host = set(path_names(cuda=False))
    idle_dp = [
        c for c in cases if not c["case"]["forward_ms"] and c["case"]["shape"].endswith("x1")
    ]
    chosen = [c for c in idle_dp if c["case"]["path"] in host and is_main(c)]
    worlds = sorted({ranks(c["case"]["shape"]) for c in chosen})
    if len(worlds) < 2:
        return None
    cadences = sorted({c["case"]["cadence"] for c in chosen}, key=lambda x: x != "isolated")
    fig, axes = new_figure(len(cadences), width=5.5, height=3.8, ncols=2)
    for ax, cadence in zip(axes, cadences, strict=True):
        paths = sorted({c["case"]["path"] for c in chosen}, key=path_order)
        for i, path in enumerate(paths):
            dodge = 2 ** (0.04 * (i - (len(paths) - 1) / 2))  # whiskers side by side
            points = sorted(
                (ranks(c["case"]["shape"]), c["stats"]["pass_us"])
                for c in chosen
                if (c["case"]["path"], c["case"]["cadence"]) == (path, cadence)
            )
            xs = [w * dodge for w, _ in points]
            color = path_color(path)
            ax.plot(xs, [s["p50"] for _, s in points], marker="o", color=color, label=path)
            ax.vlines(xs, [s["p50"] for _, s in points], [s["p99"] for _, s in points], color=color)
        ax.set_xscale("log", base=2)
        ax.set_xticks(worlds, [str(w) for w in worlds])
        log_axis(ax, "y")
        ax.set_title(f"idle GPU · {cadence}: p50, whisker to p99", fontsize="medium")
        ax.set_xlabel("ranks (shape Nx1)")
        ax.set_ylabel("pass latency (us, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    return fig, "Host paths against world size", cadences


RUN_FIGURES = (
    ("cdf", cdf_figure),
    ("parts", parts_figure),
    ("forward", forward_figure),
    ("world", lambda run: world_figure(list(run["cases"].values()))),
    ("skew", skew_figure),
)


def write_run_plots(run: dict, out_dir) -> list[Path]:
    """Every figure a run has data for, as PNG under out_dir; returns the files."""
    written = []
    for name, draw in RUN_FIGURES:
        made = draw(run) if run["cases"] else None
        if made is not None:
            fig, title, cadences = made
            written.append(
                save_png(fig, out_dir, name, [run["meta"]], title, cadence_note(cadences))
            )
    return written


def add_plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default=None, help="default: RUN/plots; with several runs, OUT/RUN")


def cmd_plot(args) -> int:
    """Figures of each run; with several runs, also latency against world size across them."""
    runs = load_runs(args.runs)
    if len(runs) > 1 and not args.out:
        raise UsageError("give --out DIR with several runs: one figure spans them")
    for run in runs:
        name = Path(run["dir"]).name
        out = Path(args.out) / name if args.out and len(runs) > 1 else args.out
        for path in write_run_plots(run, Path(out or Path(run["dir"]) / "plots")):
            print(f"plot: {path}")
    made = world_figure([c for r in runs for c in r["cases"].values()]) if len(runs) > 1 else None
    if made is not None:
        fig, title, cadences = made
        metas = [r["meta"] for r in runs]
        print(
            f"plot: {save_png(fig, Path(args.out), 'world', metas, title, cadence_note(cadences))}"
        )
    return 0
