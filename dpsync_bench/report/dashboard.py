"""A static HTML page over a results root, one section per machine kind: the latest run's
table, its verdict against the runs before it, its figures, and each case's trend.

Opens from disk: images are PNG files next to the page under relative paths, the CSS and
the one script (it lists images that failed to load) are inline; nothing is fetched.
"""

from __future__ import annotations

import html
import re
import time
from collections import defaultdict
from pathlib import Path

from ..results import ResultsError, write_atomic
from . import gate as compare
from .plots import (
    CADENCE_TEXT,
    REDUCTION,
    machine_label,
    write_run_plots,
    write_trend_plots,
)
from .tables import fmt_us, summary_rows

DEFAULT_TRENDS = 30  # runs per machine kind in the trend figures

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1700px; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.regression { background: #fdd; font-weight: bold; } .meta { color: #555; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0; }
.warn { background: #fdd; padding: .5em; }
"""

# Marks the page once every image has had its chance: what a reader (or a headless
# browser in the tests) checks for missing figures.
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
    p.id = "broken-images";
    p.textContent = "images that failed to load: " + broken.join(", ");
    document.body.insertBefore(p, document.body.firstChild);
  }
  document.body.setAttribute("data-loaded", "1");
});
"""

_TABLE_COLUMNS = (
    ("pass p50", "pass_p50"),
    ("pass p99", "pass_p99"),
    ("pass max", "pass_max"),
    ("stall p50", "stall_p50"),
    ("stall p99", "stall_p99"),
    ("device p50", "device_p50"),
    ("skew p50", "skew_p50"),
)


def _e(text) -> str:
    return html.escape(str(text))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _images(paths: list[Path], out: Path) -> str:
    """Each PNG inline, linking to its SVG twin."""
    parts = []
    for png in (p for p in paths if p.suffix == ".png"):
        rel = png.relative_to(out).as_posix()
        svg = png.with_suffix(".svg").relative_to(out).as_posix()
        parts.append(f'<a href="{_e(svg)}"><img src="{_e(rel)}" alt="{_e(png.stem)}"></a>')
    return "\n".join(parts)


def _case_table(run: dict, verdicts: dict[str, compare.Verdict]) -> str:
    head = ["case", *(h for h, _ in _TABLE_COLUMNS), "n", "check", "p50 / p99 vs baseline"]
    rows = []
    for row in summary_rows(list(run["cases"].values())):
        v = verdicts.get(row["case"])
        if v is None:
            versus, cls = "no baseline", ""
        else:
            versus = (
                f"{compare.ratio(v.after_p50, v.before_p50):.2f}x / "
                f"{compare.ratio(v.after_p99, v.before_p99):.2f}x, p={v.p_value:.2g}"
                + (" REGRESSION" if v.regressed else "")
            )
            cls = ' class="regression"' if v.regressed else ""
        cells = [row["case"], *(fmt_us(row[k]) for _, k in _TABLE_COLUMNS), row["n"]]
        cells += ["ok" if row["ok"] else "WRONG", versus]
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><tr>{header}</tr>\n" + "\n".join(rows) + "</table>"


def _history_table(runs: list[dict]) -> str:
    rows = []
    for run in reversed(runs):
        meta = run["meta"]
        v = (meta.get("machine") or {}).get("versions") or {}
        cells = [
            Path(run["dir"]).name,
            meta.get("status", "?"),
            len(run["cases"]),
            v.get("torch") or "-",
            v.get("nccl") or "-",
            v.get("driver") or "-",
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("run", "status", "cases", "torch", "NCCL", "driver"))
    return f"<table><tr>{head}</tr>\n" + "\n".join(rows) + "</table>"


def _section(kind: str, runs: list[dict], out: Path, baseline_runs: int) -> str:
    latest = runs[-1]
    earlier = runs[-baseline_runs - 1 : -1][::-1]  # those that kept their raw samples
    found = compare.baselines(latest["cases"], earlier, baseline_runs)
    verdicts = {v.case_id: v for v in compare.compare(latest, found, compare.Gate())}
    regressed = [v for v in verdicts.values() if v.regressed]
    fig_dir = out / _safe(kind)
    latest_plots = write_run_plots(latest, fig_dir / "latest")
    trends = write_trend_plots(runs, fig_dir / "trends")
    meta = latest["meta"]
    gate = (
        f"{len(regressed)} regression(s) among {len(verdicts)} cases compared with the median "
        f"of up to {baseline_runs} earlier runs"
        if verdicts
        else "no earlier run to compare with"
    )
    return f"""
<section id="{_e(_safe(kind))}">
<h2>{_e(kind)}</h2>
<p class="meta">{_e(machine_label(meta))}<br>
latest run <b>{_e(Path(latest["dir"]).name)}</b> ({_e(meta.get("status", "?"))},
{len(latest["cases"])} cases, world size {_e(meta.get("world_size", "?"))})<br>
command: <code>{_e(meta.get("command", "?"))}</code></p>
<p{' class="regression"' if regressed else ""}>{_e(gate)}</p>
{_case_table(latest, verdicts)}
<h3>Latest run</h3>
{_images(latest_plots, out)}
<h3>Trends over the last {len(runs)} runs</h3>
{_images(trends, out)}
<h3>Runs</h3>
{_history_table(runs)}
</section>"""


def _stats_only(run: dict) -> dict:
    """A run for the trend figures only: raw samples dropped (they dominate memory)."""
    cases = {k: {**c, "raw": None, "per_rank": None} for k, c in run["cases"].items()}
    return {**run, "cases": cases}


def build(
    root: Path,
    out: Path | None = None,
    trends: int = DEFAULT_TRENDS,
    baseline_runs: int = compare.DEFAULT_HISTORY,
) -> Path:
    """Write OUT/index.html (OUT defaults to ROOT/dashboard) and its figures; return it."""
    root = Path(root)
    out = Path(out) if out is not None else root / "dashboard"
    by_series = defaultdict(list)  # one section per machine kind and world size
    for entry in compare.list_runs(root):
        by_series[(entry.machine_kind, entry.world_size)].append(entry)
    sections = []
    for (kind, world), entries in sorted(by_series.items()):
        entries = entries[-trends:]
        keep_raw = len(entries) - baseline_runs - 1  # the latest and its baselines
        runs = [
            r if i >= keep_raw else _stats_only(r)
            for i, r in enumerate(compare.load_history(entries))
            if r["cases"]
        ]
        if runs:
            sections.append(_section(f"{kind}, world size {world}", runs, out, baseline_runs))
    if not sections:
        raise ResultsError(f"{root}: no runs with finished cases")
    out.mkdir(parents=True, exist_ok=True)
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
Times in microseconds, {_e(REDUCTION)}; cadence:</p>
<ul class="meta">{cadences}</ul>
{"".join(sections)}
</body></html>
"""
    return write_atomic(out / "index.html", lambda f: f.write(page.encode()))
