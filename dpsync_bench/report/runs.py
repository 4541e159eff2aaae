"""Reading runs for the reports: one figure's per-pass samples, groups of cases, and the
latest runs of a results root. Summaries come from `results.load_run`; samples only when a
figure needs the whole distribution, and never for history (a published run may lack them).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import stats
from ..results import PARTS, ResultsError, list_runs, load_run, load_samples

US_PER_NS = 1e-3
# Per-pass figure -> how its ranks are combined per pass and the summary that holds it (the
# case's "reduction" line; tests check it against real runs).
SUMMARY_OF = {
    **{f: ("max", f"{f}_us") for f in ("pass", *PARTS, "phase", "remaining", "exposed")},
    "idle_gap": ("min", "idle_gap_us"),
    "start": ("spread", "start_skew_us"),
}


def samples_ns(run_dir, case_id: str) -> dict[str, np.ndarray] | None:
    """Every figure of a case, (ranks, passes) of integer ns; None when the run kept no
    samples. Reduce before scaling: start instants are too large for float microseconds."""
    try:
        return load_samples(Path(run_dir), case_id)
    except ResultsError:
        return None


def per_pass_us(run_dir, case_id: str, figure: str = "pass") -> np.ndarray | None:
    """One figure of a case per pass in us, its ranks combined as its summary's are; None
    when the run kept no samples of it."""
    samples = samples_ns(run_dir, case_id)
    if samples is None or figure not in samples:
        return None
    return stats.per_pass(samples[figure], SUMMARY_OF[figure][0]) * US_PER_NS


def load_runs(dirs) -> list[dict]:
    """Several run directories, each validated; ResultsError names the first bad one."""
    runs = [load_run(Path(d)) for d in dirs]
    for run in runs:
        if not run["cases"]:
            raise ResultsError(f"{run['dir']}: no finished cases")
    return runs


def by_group(cases) -> dict[str, list[dict]]:
    """Repeats of one case (same group key) together, from one run or several."""
    out: dict[str, list[dict]] = defaultdict(list)
    for case in cases:
        out[case.get("group_key") or case["case_id"].rsplit("-r", 1)[0]].append(case)
    return dict(out)


def with_world(run: dict, world: int) -> dict:
    """The run restricted to the cases of one world size (a section of the dashboard)."""
    cases = {k: c for k, c in run["cases"].items() if c["world_size"] == world}
    return {**run, "cases": cases}


def load_root(root: Path) -> list[dict]:
    """Every readable run with finished cases under a results root, oldest first; summaries
    only. Unreadable runs are left out (a results root outlives schema changes)."""
    runs = []
    for run_dir, _meta in list_runs(Path(root)):
        try:
            run = load_run(run_dir)
        except ResultsError:
            continue
        if run["cases"]:
            runs.append(run)
    return runs


def by_series(runs: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """(machine kind, world size) -> the runs, each restricted to that world's cases."""
    series: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for run in runs:
        for world in sorted({c["world_size"] for c in run["cases"].values()}):
            series[(run["meta"]["machine_kind"], world)].append(with_world(run, world))
    return dict(sorted(series.items()))


def latest_by_kind(runs: list[dict]) -> dict[str, dict]:
    """Machine kind -> its latest run (`runs` oldest first)."""
    return {run["meta"]["machine_kind"]: run for run in runs}
