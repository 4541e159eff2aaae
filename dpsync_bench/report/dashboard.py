"""A static HTML page over a results root: per machine kind, the recommended sync path, then
per world size the latest run's table and figures, the trend of every case's p50/p99 over
the runs before it, and each run's software stack.

Opens from disk: figures are PNG files beside the page under relative paths; the CSS and
the one script (it marks images that failed to load) are inline; nothing is fetched.
"""

from __future__ import annotations

import argparse
import html
import re
import time
from collections import defaultdict
from pathlib import Path

from ..cases import UsageError
from ..results import ResultsError, write_atomic
from .labels import (
    CADENCE_TEXT,
    REDUCTION,
    case_order,
    code_label,
    machine_label,
    run_date,
    stack_label,
)
from .plots import write_run_plots
from .recommend import Deployment, load_case_summaries, recommend
from .runs import by_series, latest_by_kind, load_root
from .tables import SUMMARY_COLUMNS, failure_lines
from .trends import write_trend_plot

DEFAULT_TRENDS = 30  # runs per trend figure

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1700px; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.fail { background: #fdd; } .meta { color: #555; } .warn { background: #fdd; padding: .5em; }
.advice { background: #eef6ee; border: 1px solid #9c9; padding: .5em; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0; }
"""

# Marks the page once every image has had its chance: what a reader (or a headless browser
# in the tests) checks for missing figures.
_SCRIPT = """
window.addEventListener("load", function () {
  var broken = [];
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!(img.complete && img.naturalWidth > 0)) broken.push(img.getAttribute("src"));
  }
  document.body.setAttribute("data-broken-images", String(broken.length));
  if (broken.length) {
    var p = document.createElement("p");
    p.className = "warn";
    p.textContent = "images that failed to load: " + broken.join(", ");
    document.body.insertBefore(p, document.body.firstChild);
  }
  document.body.setAttribute("data-loaded", "1");
});
"""


def _e(text) -> str:
    return html.escape(str(text))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    for row, cls in zip(rows, classes or [""] * len(rows), strict=True):
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{header}</tr>\n" + "\n".join(body) + "</table>"


def _images(paths: list[Path], out: Path) -> str:
    return "\n".join(
        f'<img src="{_e(p.relative_to(out).as_posix())}" alt="{_e(p.stem)}">' for p in paths
    )


def _case_table(run: dict) -> str:
    cases = sorted(run["cases"].values(), key=case_order)
    rows = [[cell(c) for _, cell in SUMMARY_COLUMNS] for c in cases]
    classes = ["fail" if c["check"]["failures"] else "" for c in cases]
    notes = "".join(f"<li>{_e(line.strip())}</li>" for line in failure_lines(cases))
    return _table([h for h, _ in SUMMARY_COLUMNS], rows, classes) + (
        f"<ul class='meta'>{notes}</ul>" if notes else ""
    )


def _runs_table(runs: list[dict]) -> str:
    rows = [
        [
            Path(r["dir"]).name,
            run_date(r["meta"]),
            r["meta"].get("status", "?"),
            str(len(r["cases"])),
            stack_label(r["meta"]),
            code_label(r["meta"]),
        ]
        for r in reversed(runs)
    ]
    return _table(["run", "started", "status", "cases", "software stack", "code"], rows)


def _world_section(kind: str, world: int, runs: list[dict], out: Path) -> str:
    latest = runs[-1]
    fig_dir = out / _safe(kind) / f"w{world}"
    figures = write_run_plots(latest, fig_dir / "latest")
    trend = write_trend_plot(runs, fig_dir)
    meta = latest["meta"]
    return f"""
<section id="{_e(_safe(kind))}-w{world}">
<h3>{_e(kind)} · {world} rank{"s" if world > 1 else ""}</h3>
<p class="meta">latest run <b>{_e(Path(latest["dir"]).name)}</b>: {_e(machine_label(meta))}<br>
{_e(code_label(meta))} · started {_e(run_date(meta))} · {_e(meta.get("status", "?"))} ·
{len(latest["cases"])} cases<br>command: <code>{_e(meta.get("command", "?"))}</code></p>
{_case_table(latest)}
<h4>Latest run</h4>
{_images(figures, out)}
<h4>Trend over the last {len(runs)} run(s)</h4>
{_images([trend], out) if trend else "<p class='meta'>one run so far: no trend yet</p>"}
<h4>Runs</h4>
{_runs_table(runs)}
</section>"""


def recommendation_text(run: dict) -> str:
    """What `recommend` says for this machine's largest world, overlap scheduler on and off,
    at the longest forward measured (20 ms where none was)."""
    summaries = load_case_summaries(Path(run["dir"]))
    world = max(c["world_size"] for c in run["cases"].values())
    longest = max((c["case"]["forward_ms"] for c in run["cases"].values()), default=0.0)
    blocks = []
    for overlap in (True, False):
        deployment = Deployment(world, overlap=overlap, forward_ms=(longest or 20.0,))
        try:
            blocks.append("\n".join(recommend(summaries, deployment).lines()))
        except ValueError as e:
            blocks.append(f"no recommendation: {e}")
    return "\n\n".join(blocks)


def build(root: Path, out: Path | None = None, history: int = DEFAULT_TRENDS) -> Path:
    """Write OUT/index.html (OUT defaults to ROOT/dashboard) and its figures; return it."""
    root = Path(root)
    out = Path(out) if out is not None else root / "dashboard"
    runs = load_root(root)
    if not runs:
        raise ResultsError(f"{root}: no runs with finished cases")
    latest = latest_by_kind(runs)
    by_kind = defaultdict(list)
    for (kind, world), series in by_series(runs).items():
        by_kind[kind].append(_world_section(kind, world, series[-history:], out))
    kinds = []
    for kind, sections in by_kind.items():
        advice = recommendation_text(latest[kind])
        kinds.append(
            f'<h2 id="{_e(_safe(kind))}">{_e(kind)}</h2>\n'
            f"<p>Recommended sync path (from run {_e(Path(latest[kind]['dir']).name)}):</p>\n"
            f'<div class="advice">{_e(advice)}</div>\n' + "".join(sections)
        )
    cadences = "".join(f"<li>{_e(t)}</li>" for t in CADENCE_TEXT.values())
    built = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>dpsync-bench dashboard</title>
<style>{_STYLE}</style>
<script>{_SCRIPT}</script>
</head><body>
<h1>dpsync-bench: cross-DP sync paths</h1>
<p class="meta">results {_e(root.resolve())}; built {built}.
Times in microseconds, {_e(REDUCTION)}. Cadences:</p>
<ul class="meta">{cadences}</ul>
{"".join(kinds)}
</body></html>
"""
    out.mkdir(parents=True, exist_ok=True)
    return write_atomic(out / "index.html", lambda f: f.write(page.encode()))


def add_dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results root")
    p.add_argument("--out", default=None, help="default: RESULTS/dashboard")
    p.add_argument("--history", type=int, default=DEFAULT_TRENDS, help="runs per trend")


def cmd_dashboard(args) -> int:
    """Static HTML page of a results root: per machine kind and world size."""
    if args.history < 1:
        raise UsageError(f"--history must be >= 1, got {args.history}")
    print(f"dashboard: {build(Path(args.results), args.out and Path(args.out), args.history)}")
    return 0
