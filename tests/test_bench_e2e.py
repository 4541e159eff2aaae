"""End to end: the benchmarks under torchrun (2 gloo ranks on the CPU), as run_bench.sh runs
them, with the three host paths (gloo_cpu, shm_cpu, hierarchical).

`torchrun --nproc-per-node 2 -m pytest benchmarks/ --dpsync-paths ... --benchmark-json X
--dpsync-out D`: one schema-2 run directory whose every case file validates, with raw
samples of shape (ranks, passes) whose parts add up to the pass; X is pytest-benchmark's
JSON, written by rank 0 alone, whose statistics are the per-pass maxima of those samples
(seconds), timed by the replay clock with GC off, without a copy of the samples.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fault_helpers import BenchProcess, run_dirs, temp_files, torchrun_benchmarks

from dpsync_bench import results, stats
from dpsync_bench.cases import Sweep

ITERS = 40
PATHS = ("gloo_cpu", "shm_cpu", "hierarchical")
SWEEP = Sweep(preset="smoke", paths=list(PATHS), cadences=["isolated", "streaming"], iters=ITERS)
CASE_IDS = [c.case_id for c in SWEEP.cases(2, 0, 2)]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bench_json, out = root / "pytest-benchmark.json", root / "results"
    args = ["--dpsync-preset", "smoke", "--dpsync-paths", ",".join(PATHS),
            "--dpsync-cadences", "isolated,streaming", "--dpsync-iters", str(ITERS),
            "--benchmark-json", bench_json, "--dpsync-out", out]  # fmt: skip
    job = BenchProcess(torchrun_benchmarks(*args)).wait(240)
    assert job.rc == 0, job.describe()
    dirs = run_dirs(out)
    assert len(dirs) == 1, dirs
    with open(bench_json) as f:
        bench = json.load(f)  # one whole document, not two interleaved
    return job, results.load_run(dirs[0]), bench, out


def _benchmarks(bench) -> dict[str, dict]:
    return {b["extra_info"]["case_id"]: b for b in bench["benchmarks"]}


def test_one_complete_schema_2_run_directory(e2e):
    job, run, _, out = e2e
    assert not job.leftover
    meta = run["meta"]
    assert meta["schema"] == results.RUN_SCHEMA and meta["status"] == "complete"
    assert meta["cases_done"] == len(CASE_IDS)
    (only,) = meta["jobs"]
    assert only["world_size"] == 2 and only["status"] == "complete"
    assert only["cases_planned"] == CASE_IDS
    assert sorted(run["cases"]) == sorted(CASE_IDS)
    assert temp_files(out) == [] and not (out / run["dir"] / "current_case").exists()
    assert [p[3] for p in job.progress()] == CASE_IDS  # once per case, from rank 0 only


def test_every_case_validates_and_passed_its_checks(e2e):
    _, run, _, _ = e2e
    for case_id, case in run["cases"].items():
        assert results.load_case(results.case_path(run["dir"], case_id)) == case
        assert case["schema"] == results.CASE_SCHEMA and case["world_size"] == 2
        assert case["check"]["failures"] == [], case_id
        assert case["check"]["wrong_elements"] == case["check"]["wrong_reads"] == 0
        assert case["check"]["passes_checked"] >= ITERS
        assert case["stats"]["pass_us"]["n"] == ITERS
        shm = case["case"]["path"] != "gloo_cpu"  # what took effect: the shm spin budget
        assert ("spin_ns" in case["path_state"]) == shm


def test_samples_are_ranks_by_passes_and_parts_add_up(e2e):
    _, run, _, _ = e2e
    for case_id, case in run["cases"].items():
        s = results.load_samples(run["dir"], case_id)
        for figure in ("pass", *results.PARTS, "start", "arrive"):
            assert s[figure].shape == (2, ITERS) and s[figure].dtype == np.int64, figure
        assert (s["pass"] == sum(s[p] for p in results.PARTS)).all(), case_id
        assert (s["pass"] > 0).all() and (s["stall"] == 0).all()  # host paths: no GPU
        isolated = case["case"]["cadence"] == "isolated"
        assert ("idle_gap" in s) == isolated and ("raw_loop" in case) == (not isolated)
        if isolated:
            assert s["idle_gap"].shape == (2, ITERS)
            gap = stats.summarize(stats.per_pass(s["idle_gap"], "min"), 1e-3)
            assert case["stats"]["idle_gap_us"] == pytest.approx(gap)
        want = stats.summarize(stats.per_pass(s["pass"]), 1e-3)
        assert case["stats"]["pass_us"] == pytest.approx(want)


def test_pytest_benchmark_stats_are_the_per_pass_maxima(e2e):
    _, run, bench, _ = e2e
    benches = _benchmarks(bench)
    assert sorted(benches) == sorted(CASE_IDS)
    for case_id, b in benches.items():
        per_pass_s = stats.per_pass(results.load_samples(run["dir"], case_id)["pass"]) * 1e-9
        s = b["stats"]
        assert s["rounds"] == ITERS and s["iterations"] == 1
        for theirs, ours in (("min", np.min), ("max", np.max), ("mean", np.mean),
                             ("median", np.median), ("total", np.sum)):  # fmt: skip
            assert math.isclose(s[theirs], float(ours(per_pass_s)), rel_tol=1e-6), theirs
        assert b["options"]["timer"] == "replayed_pass_latency"
        assert b["options"]["disable_gc"] is True and b["options"]["warmup"] is False
        assert case_id in b["name"]


def test_pytest_benchmark_json_has_no_copy_of_the_samples(e2e):
    _, _, bench, _ = e2e
    assert not any("data" in b["stats"] or "data" in b for b in bench["benchmarks"])


def test_pytest_benchmark_json_is_rank_0s_with_the_case_summaries(e2e):
    job, run, bench, _ = e2e
    wrote = [line for _, line in job.stderr_lines if "Wrote benchmark data" in line]
    assert len(wrote) == 1, job.describe()
    assert bench["machine_info"]["dpsync"]["machine_kind"] == run["meta"]["machine_kind"]
    assert len(bench["benchmarks"]) == len(CASE_IDS)
    for case_id, b in _benchmarks(bench).items():
        case = run["cases"][case_id]
        info = b["extra_info"]
        assert (info["world_size"], info["reduction"]) == (case["world_size"], case["reduction"])
        assert info["failures"] == case["check"]["failures"], case_id
        assert info["us"]["pass_us"] == [case["stats"]["pass_us"][q] for q in ("p50", "p99")]
