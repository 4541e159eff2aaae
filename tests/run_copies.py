"""Copies of the real example runs for the reading-side tests: a history made of copies, a
copy made slower by scaling every sample, a copy on another software stack.

A scaled copy keeps summaries and samples consistent: its summaries are rebuilt from the
scaled samples with dpsync_bench.stats, reduced over ranks as the measuring side does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dpsync_bench import results, stats
from dpsync_bench.measure.summary import REDUCED, US

# Two real runs of the smoke sweep on an H200 machine (1 and 2 ranks), read only.
EXAMPLES = Path(os.environ.get("DPSYNC_EXAMPLES", Path(__file__).parent / "data"))
X1 = EXAMPLES / "smoke-x1_20261130T065359Z"
X2 = EXAMPLES / "smoke-x2_20261130T065455Z"
needs_examples = pytest.mark.skipif(
    not (X1 / "run.json").is_file() or not (X2 / "run.json").is_file(),
    reason=f"the example runs are not under {EXAMPLES} (set DPSYNC_EXAMPLES)",
)


def stamp(minute: int) -> str:
    """A UTC run stamp on the examples' day, `minute` minutes after 07:00."""
    return f"20261130T{7 + minute // 60:02d}{minute % 60:02d}00Z"


def copy_run(src: Path, root: Path, minute: int, **meta_changes) -> Path:
    """A copy of run `src` under `root`, started at stamp(minute); run.json fields replaced
    by `meta_changes` (nested dicts are merged one level deep)."""
    meta = json.loads((src / "run.json").read_text())
    started = stamp(minute)
    dest = Path(root) / f"{meta['machine_kind']}_{started}"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".lock", "plots"))
    meta["started_utc"] = started
    for key, value in meta_changes.items():
        meta[key] = {**meta.get(key, {}), **value} if isinstance(value, dict) else value
    results.atomic_write_json(dest / "run.json", meta)
    return dest


def with_versions(src: Path, **versions) -> dict:
    """run.json's machine with some software versions replaced."""
    machine = json.loads((src / "run.json").read_text())["machine"]
    return {**machine, "versions": {**machine["versions"], **versions}}


def rebuilt_stats(samples: dict[str, np.ndarray]) -> dict[str, dict]:
    """The per-pass figures' summaries, from raw samples, as the measuring side makes them."""
    return {
        name: stats.summarize(stats.per_pass(samples[figure], how), US)
        for figure, (how, name) in REDUCED.items()
        if figure in samples
    }


def scale_run(run_dir: Path, factor: float) -> None:
    """Every sample of every case times `factor`, and the summaries rebuilt from them."""
    for case_id in results.load_run(run_dir)["cases"]:
        summary = results.load_case(results.case_path(run_dir, case_id))
        samples = {
            name: np.rint(values * factor).astype(np.int64)
            for name, values in results.load_samples(run_dir, case_id).items()
        }
        for block in summary["stats"].values():  # forward and device times: scaled as they are
            block.update({k: v * factor for k, v in block.items() if k != "n"})
        summary["stats"].update(rebuilt_stats(samples))
        results.write_case(run_dir, summary, samples)


def history(src: Path, root: Path, runs: int, first_minute: int = 0, **meta_changes):
    """`runs` copies of `src` a minute apart: a history with no noise between runs."""
    return [copy_run(src, root, first_minute + i, **meta_changes) for i in range(runs)]
