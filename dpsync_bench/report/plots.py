"""Figures of a run and of a machine's history (matplotlib, Agg: PNG and SVG).

Every figure names the machine it came from (GPU, driver, torch, NCCL), the cadence of each
panel and the reduction across ranks: without them two figures cannot be compared.
Only reads results; written atomically, since plots live next to the results.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

from delayer_core.paths import PATHS

from .. import stats
from ..cases import CADENCES

PATH_NAMES = tuple(PATHS)
from ..results import write_atomic
from .gate import group_key, samples

REDUCTION = "per-iteration max across ranks"
CADENCE_TEXT = {
    "isolated": "isolated = each pass released at an agreed instant after idle time",
    "streaming": "streaming = passes back to back",
}
_COLORS = {p: f"C{i}" for i, p in enumerate(PATH_NAMES)}
_LINESTYLES = ("-", "--", ":", "-.")
_VARIANT_MARKERS = {"no barrier": "v", "fine kernels": "s", "high-priority stream": "^"}


# ---- what a figure says about itself ---------------------------------------------------
def machine_label(meta: dict) -> str:
    """'<kind>: NVIDIA H200 x2 · driver 580.x · torch 2.11 · NCCL 2.28 · CUDA 13.0'."""
    machine = meta.get("machine") or {}
    v = machine.get("versions") or {}
    gpus = Counter(g.get("name", "?") for g in machine.get("gpus") or [])
    hw = " + ".join(f"{name} x{n}" for name, n in gpus.items())
    hw = hw or f"no GPU (CPU: {machine.get('cpu') or 'unknown'})"
    parts = [
        f"{meta.get('machine_kind', '?')}: {hw}",
        f"driver {v.get('driver') or 'n/a'}",
        f"torch {v.get('torch') or 'unknown'}",
        f"NCCL {v.get('nccl') or 'n/a'}",
    ]
    if v.get("cuda"):
        parts.append(f"CUDA {v['cuda']}")
    return " · ".join(parts)


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
    return " + ".join(parts)


def _short_case(case_id: str) -> str:
    return re.sub(r"-r0$", "", case_id)


# ---- writing ---------------------------------------------------------------------------
def _figure(panels: int, width: float = 5.0, height: float = 3.6, ncols: int = 3):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _save(fig, out_dir: Path, name: str, meta: dict, title: str, cadence: str) -> list[Path]:
    fig.suptitle(
        f"{title}\n{machine_label(meta)}\ncadence: {cadence}; {REDUCTION}",
        fontsize="medium",
    )
    handles, labels = [], []
    for ax in fig.axes:  # one legend for the figure, each entry once
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(5, len(labels)))
    fig.draw_without_rendering()  # lay out once, then keep it for both formats
    fig.set_layout_engine("none")
    out_dir.mkdir(parents=True, exist_ok=True)
    formats = {"png": {"dpi": 110}, "svg": {"metadata": {"Date": None}}}  # SVG: reproducible
    return [
        write_atomic(out_dir / f"{name}.{fmt}", partial(fig.savefig, format=fmt, **kwargs))
        for fmt, kwargs in formats.items()
    ]


# ---- data for the figures --------------------------------------------------------------
def _groups(cases) -> dict[str, list[dict]]:
    """Repeats of one case together (their samples are pooled)."""
    out = defaultdict(list)
    for c in sorted(cases, key=lambda c: c["case_id"]):
        out[group_key(c)].append(c)
    return dict(out)


def _stat(group: list[dict], metric: str) -> dict:
    if len(group) == 1:
        return group[0]["stats"][metric]
    return stats.summarize([v for c in group for v in samples(c, metric)])


def _is_main(case: dict) -> bool:
    return not variant_label(case)


def _shape_order(shape: str) -> tuple[int, int]:
    dp, tp = (int(x) for x in shape.split("x"))
    return (dp * tp, -dp)


def _style(case: dict, shapes: list[str]) -> dict:
    c = case["case"]
    label = c["path"] if len(shapes) == 1 else f"{c['path']} {c['shape']}"
    return {
        "color": _COLORS.get(c["path"], "0.4"),
        "linestyle": _LINESTYLES[shapes.index(c["shape"]) % len(_LINESTYLES)],
        "label": label,
    }


def _log_scale(ax, which: str) -> None:
    """Log scale with plain-number ticks at 1-2-5 steps (the default minor labels collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _cadence_text(cases) -> str:
    present = {c["case"]["cadence"] for c in cases}
    return "; ".join(CADENCE_TEXT.get(c, c) for c in sorted(present, key=_cadence_order))


def _cadence_order(cadence: str) -> int:
    return CADENCES.index(cadence) if cadence in CADENCES else len(CADENCES)


# ---- run figures: each returns (figure, title, cadence text) or None -------------------
def cdf_figure(cases):
    """Latency CDF per path, one panel per GPU state and cadence."""
    groups = [g for g in _groups(cases).values() if _is_main(g[0])]
    panels = sorted(
        {(g[0]["case"]["forward_ms"], g[0]["case"]["cadence"]) for g in groups},
        key=lambda k: (k[0], _cadence_order(k[1])),
    )
    shapes = sorted({g[0]["case"]["shape"] for g in groups}, key=_shape_order)
    fig, axes = _figure(len(panels))
    for ax, (fwd, cadence) in zip(axes, panels, strict=True):
        for g in groups:
            c = g[0]["case"]
            if (c["forward_ms"], c["cadence"]) != (fwd, cadence):
                continue
            xs = sorted(v for case in g for v in samples(case))
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.step(xs, ys, where="post", **_style(g[0], shapes))
        _log_scale(ax, "x")
        ax.set_title(f"{state_label(fwd)} · {cadence}", fontsize="medium")
        ax.set_xlabel("pass latency (us, log scale)")
        ax.set_ylabel("fraction of passes")
        ax.grid(True, which="both", alpha=0.3)
    return fig, "pass latency CDF per path", _cadence_text(x for g in groups for x in g)


def forward_figure(cases):
    """p50/p99 pass latency and stall against the forward in flight, per path: whether a
    path waits for the forward (stall on the reference line) or not."""
    groups = [g for g in _groups(cases).values() if g[0]["case"]["cadence"] == "isolated"]
    fwd_cases = [g[0]["case"] for g in groups if _is_main(g[0]) and g[0]["case"]["forward_ms"]]
    with_fwd = {(c["path"], c["shape"]) for c in fwd_cases}
    lines = defaultdict(list)  # (path, shape) -> its main cases, the idle one included
    variants = []
    for g in groups:
        c = g[0]["case"]
        if (c["path"], c["shape"]) in with_fwd:
            (lines[(c["path"], c["shape"])] if _is_main(g[0]) else variants).append(g)
    if not lines:
        return None
    shapes = sorted({k[1] for k in lines}, key=_shape_order)
    top = max(c["forward_ms"] for c in fwd_cases)
    ref_x = [top * i / 100 for i in range(101)]  # dense: straight on the linear x axis
    fig, axes = _figure(2, width=6.5, height=4.2, ncols=2)
    for ax, metric, what in (
        (axes[0], "pass_us", "pass latency"),
        (axes[1], "stall_us", "stall (host blocked on the GPU)"),
    ):
        ref_y = [x * 1000 for x in ref_x]
        ax.plot(ref_x, ref_y, color="0.6", linestyle=":", label="forward duration")
        for _, gs in sorted(lines.items()):
            gs.sort(key=lambda g: g[0]["case"]["forward_ms"])
            xs = [g[0]["case"]["forward_ms"] for g in gs]
            style = _style(gs[0][0], shapes)
            ax.plot(xs, [_stat(g, metric)["p50"] for g in gs], marker="o", **style)
            style.update(label=None, alpha=0.5, linewidth=1)
            ax.plot(xs, [_stat(g, metric)["p99"] for g in gs], marker=".", **style)
        for g in variants:
            ax.scatter(
                [g[0]["case"]["forward_ms"]],
                [_stat(g, metric)["p50"]],
                marker=_VARIANT_MARKERS.get(variant_label(g[0]).split(" + ")[-1], "x"),
                color=_COLORS.get(g[0]["case"]["path"], "0.4"),
                edgecolors="black",
                zorder=3,
            )
        for kind, marker in _VARIANT_MARKERS.items():  # legend entries for variant markers
            if any(variant_label(g[0]).endswith(kind) for g in variants):
                ax.scatter([], [], marker=marker, color="white", edgecolors="black", label=kind)
        ax.set_yscale("symlog", linthresh=10)  # stall is often exactly 0
        ax.set_title(f"{what}: p50 (solid), p99 (faint)", fontsize="medium")
        ax.set_xlabel("forward in flight (ms; 0 = idle GPU)")
        ax.set_ylabel("us (symlog scale)")
        ax.grid(True, which="both", alpha=0.3)
    used = [x for gs in lines.values() for g in gs for x in g]
    return fig, "pass latency and stall against the forward in flight", _cadence_text(used)


def shape_figure(cases):
    """Idle pass latency per shape / world size and path: p50 dot, whisker up to p99."""
    groups = [g for g in _groups(cases).values() if _is_main(g[0])]
    groups = [g for g in groups if not g[0]["case"]["forward_ms"]]
    if not groups:
        return None
    cadences = sorted({g[0]["case"]["cadence"] for g in groups}, key=_cadence_order)
    shapes = sorted({g[0]["case"]["shape"] for g in groups}, key=_shape_order)
    paths = [p for p in PATH_NAMES if any(g[0]["case"]["path"] == p for g in groups)]
    paths += sorted({g[0]["case"]["path"] for g in groups} - set(paths))
    step = 0.8 / len(paths)
    fig, axes = _figure(len(cadences), width=max(5.0, 0.9 * len(shapes) * len(paths)), ncols=2)
    for ax, cadence in zip(axes, cadences, strict=True):
        for g in groups:
            c = g[0]["case"]
            if c["cadence"] != cadence:
                continue
            x = shapes.index(c["shape"]) + (paths.index(c["path"]) - (len(paths) - 1) / 2) * step
            s = _stat(g, "pass_us")
            color = _COLORS.get(c["path"], "0.4")
            ax.plot([x, x], [s["p50"], s["p99"]], color=color, linewidth=1.5)
            ax.plot([x], [s["p99"]], marker="_", color=color, markersize=10)
            ax.plot([x], [s["p50"]], marker="o", color=color, label=c["path"])
        ax.set_xticks(range(len(shapes)), [f"{s}\n{_shape_order(s)[0]} ranks" for s in shapes])
        ax.set_xlim(-0.6, len(shapes) - 0.4)
        _log_scale(ax, "y")
        ax.set_title(f"idle GPU · {cadence}: p50 dot, whisker to p99", fontsize="medium")
        ax.set_xlabel("shape DPxTP (world size)")
        ax.set_ylabel("pass latency (us, log scale)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    title = "pass latency against shape and world size"
    return fig, title, _cadence_text(x for g in groups for x in g)


def _per_rank(case: dict) -> tuple[list[float], list[int]]:
    pr = case.get("per_rank") or {}
    raw = case["raw"]["pass_us"]
    p50s = (
        [b["p50"] for b in pr["pass_us"]]
        if "pass_us" in pr
        else [stats.summarize(r)["p50"] for r in raw]
    )
    slowest = pr.get("slowest_rank_counts") or stats.slowest_rank_counts(raw)
    return p50s, slowest


def skew_figure(cases):
    """Per rank: pass p50 of each rank, and how often each rank arrived last."""
    cases = sorted(cases, key=lambda c: c["case_id"], reverse=True)  # first case on top
    ranks = max(len(c["raw"]["pass_us"]) for c in cases)
    cmap = "tab10" if ranks <= 10 else "viridis"
    from matplotlib import colormaps

    colors = colormaps[cmap].resampled(max(ranks, 2))
    fig, axes = _figure(2, width=6.5, height=0.28 * len(cases) + 1.5, ncols=2)
    for row, case in enumerate(cases):
        p50s, slowest = _per_rank(case)
        axes[0].plot([min(p50s), max(p50s)], [row, row], color="0.7", linewidth=2, zorder=1)
        left = 0.0
        total = sum(slowest) or 1
        for r, (p50, n) in enumerate(zip(p50s, slowest, strict=True)):
            axes[0].scatter([p50], [row], color=colors(r), zorder=2, label=f"rank {r}")
            axes[1].barh(row, n / total, left=left, color=colors(r), label=f"rank {r}")
            left += n / total
    labels = [_short_case(c["case_id"]) for c in cases]
    for ax in axes:
        ax.set_yticks(range(len(cases)), labels if ax is axes[0] else [""] * len(cases))
        ax.set_ylim(-0.6, len(cases) - 0.4)
    _log_scale(axes[0], "x")
    axes[0].set_xlabel("pass p50 of each rank (us, log scale)")
    axes[0].set_title("per-rank pass p50 (grey: spread)", fontsize="medium")
    axes[1].set_xlim(0, 1)
    axes[1].set_xlabel("share of passes where the rank arrived last")
    axes[1].set_title("which rank is the slowest", fontsize="medium")
    return fig, "per-rank skew", "per row, in the case id"


RUN_FIGURES = (
    ("cdf", cdf_figure),
    ("forward", forward_figure),
    ("shapes", shape_figure),
    ("skew", skew_figure),
)


def write_run_plots(run: dict, out_dir) -> list[Path]:
    """Every figure of a run (load_run's dict) as PNG and SVG; returns the files."""
    cases = list(run["cases"].values())
    if not cases:
        return []
    written = []
    for name, draw in RUN_FIGURES:
        made = draw(cases)
        if made is not None:
            written += _save(made[0], Path(out_dir), name, run["meta"], *made[1:])
    return written


# ---- history ---------------------------------------------------------------------------
def _versions(meta: dict) -> str:
    v = (meta.get("machine") or {}).get("versions") or {}
    return " ".join(f"{k} {v[k]}" for k in ("torch", "nccl", "driver") if v.get(k))


def _run_tick(meta: dict) -> str:
    stamp = str(meta.get("started_utc", "?"))  # YYYYmmddTHHMMSSZ
    return f"{stamp[4:6]}-{stamp[6:8]}\n{stamp[9:11]}:{stamp[11:13]}" if len(stamp) == 16 else stamp


def write_trend_plots(runs: list[dict], out_dir) -> list[Path]:
    """p50 and p99 of every case over a machine's runs (oldest first, evenly spaced): one
    figure per path, one panel per case; dotted lines where torch/NCCL/driver changed."""
    series = defaultdict(list)  # group key -> (run index, p50, p99, one of its cases)
    for i, run in enumerate(runs):
        for key, group in _groups(run["cases"].values()).items():
            p50 = statistics.median(c["stats"]["pass_us"]["p50"] for c in group)
            p99 = statistics.median(c["stats"]["pass_us"]["p99"] for c in group)
            series[key].append((i, p50, p99, group[0]))
    changes = [
        i
        for i in range(1, len(runs))
        if _versions(runs[i - 1]["meta"]) != _versions(runs[i]["meta"])
    ]
    step = max(1, math.ceil(len(runs) / 6))
    ticks = list(range(len(runs) - 1, -1, -step))[::-1]  # always label the latest run
    by_path = defaultdict(list)
    for key, points in sorted(series.items()):
        by_path[points[0][3]["case"]["path"]].append((key, points))
    written = []
    for path, panels in sorted(by_path.items()):
        fig, axes = _figure(len(panels), width=4.2, height=2.8, ncols=3)
        color = _COLORS.get(path, "0.4")
        for ax, (key, points) in zip(axes, panels, strict=True):
            xs = [p[0] for p in points]
            ax.plot(xs, [p[1] for p in points], marker="o", color=color, label="p50")
            p99 = [p[2] for p in points]
            ax.plot(xs, p99, marker=".", color=color, alpha=0.5, linestyle="--", label="p99")
            for i in changes:
                ax.axvline(i - 0.5, color="0.5", linestyle=":", label="versions changed")
            ax.set_xticks(ticks, [_run_tick(runs[i]["meta"]) for i in ticks], fontsize="small")
            ax.set_xlim(-0.5, len(runs) - 0.5)
            ax.set_ylim(bottom=0)
            ax.set_title(key.removeprefix(f"{path}-"), fontsize="small")
            ax.set_ylabel("pass latency (us)")
            ax.grid(True, alpha=0.3)
        if changes:  # name the latest versions beside their line
            versions = _versions(runs[changes[-1]]["meta"])
            at = (changes[-1] - 0.5, 0)
            axes[0].annotate(
                versions,
                at,
                xytext=(2, 2),
                textcoords="offset points",
                rotation=90,
                va="bottom",
                fontsize="x-small",
            )
        written += _save(
            fig,
            Path(out_dir),
            f"trend-{path}",
            runs[-1]["meta"],
            f"{path}: pass latency over the last {len(runs)} runs (p50 solid, p99 dashed; UTC)",
            "per panel, in its name; " + _cadence_text(p[3] for _, ps in panels for p in ps),
        )
    return written
