"""End to end: the benchmarks under torchrun (2 gloo ranks on the CPU), as CI would run them.

`torchrun --nproc-per-node 2 -m pytest benchmarks/ --dpsync-preset smoke --dpsync-iters 40
--benchmark-json X --dpsync-out D`: every case file validates; X is pytest-benchmark's JSON
whose statistics are the per-pass latencies (seconds) the case files hold, computed from the
same samples; rank 0 alone wrote it.
"""

from __future__ import annotations

import json
import math

import pytest
from fault_helpers import (
    BenchProcess,
    Job,
    run_dirs,
    smoke_case_ids,
    temp_files,
    torchrun_benchmarks,
)

from dpsync_bench import results
from dpsync_bench.stats import reduce_max

ITERS = 40
CASE_IDS = smoke_case_ids(2, iters=ITERS, warmup=None)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bench_json = root / "pytest-benchmark.json"
    out = root / "results"
    job = BenchProcess(
        torchrun_benchmarks(
            "--dpsync-preset",
            "smoke",
            "--dpsync-iters",
            str(ITERS),
            "--benchmark-json",
            bench_json,
            "--dpsync-out",
            out,
        )  # fmt: skip
    ).wait(240)
    return job, bench_json, out


def _run(e2e) -> tuple[Job, dict]:
    job, _, out = e2e
    assert job.rc == 0, job.describe()
    dirs = run_dirs(out)
    assert len(dirs) == 1, dirs
    return job, results.load_run(dirs[0])


def _benchmarks(e2e) -> dict[str, dict]:
    _, bench_json, _ = e2e
    with open(bench_json) as f:
        data = json.load(f)
    return {b["extra_info"]["case_id"]: b for b in data["benchmarks"]}


def test_job_succeeds_and_every_case_file_validates(e2e):
    job, run = _run(e2e)
    assert not job.leftover
    assert run["meta"]["status"] == "complete"
    assert run["meta"]["world_size"] == 2
    assert run["meta"]["cases_planned"] == CASE_IDS
    assert sorted(run["cases"]) == sorted(CASE_IDS)
    for case_id, case in run["cases"].items():
        path = results.case_path(run["dir"], case_id)
        assert results.load_case(path) == case
        assert case["world_size"] == 2
        assert [len(r) for r in case["raw"]["pass_us"]] == [ITERS, ITERS]
        assert case["stats"]["pass_us"]["n"] == ITERS
        assert case["check"]["wrong_elements"] == 0
        assert case["check"]["wrong_decisions"] == 0
    assert temp_files(e2e[2]) == []
    # progress: once per case, from rank 0 only
    assert [p[3] for p in job.progress()] == CASE_IDS


def test_pytest_benchmark_stats_are_the_per_pass_latencies(e2e):
    _, run = _run(e2e)
    benches = _benchmarks(e2e)
    assert sorted(benches) == sorted(CASE_IDS)
    for case_id, bench in benches.items():
        case = run["cases"][case_id]
        s = bench["stats"]
        mine = case["stats"]["pass_us"]
        assert 1e-6 <= s["median"] <= 0.1, s["median"]  # seconds, a pass is us to ms
        assert s["rounds"] == ITERS
        for theirs, ours in (("median", "p50"), ("min", "min"), ("max", "max"), ("mean", "mean")):
            assert math.isclose(s[theirs], mine[ours] * 1e-6, rel_tol=1e-6), (case_id, theirs)
        per_iter_s = [v * 1e-6 for v in reduce_max(case["raw"]["pass_us"])]
        if "data" in s:
            assert s["data"] == pytest.approx(per_iter_s, rel=1e-6)
        assert math.isclose(s["total"], sum(per_iter_s), rel_tol=1e-6)


def test_pytest_benchmark_extra_info_and_machine_info(e2e):
    _, run = _run(e2e)
    _, bench_json, _ = e2e
    with open(bench_json) as f:
        data = json.load(f)
    dpsync = data["machine_info"]["dpsync"]  # only rank 0 knows the machine
    assert dpsync["machine_kind"] == run["meta"]["machine_kind"]
    for case_id, bench in _benchmarks(e2e).items():
        case = run["cases"][case_id]
        extra = bench["extra_info"]
        for key in ("stats", "per_rank", "raw", "cadence_detail", "check", "case"):
            assert extra[key] == case[key], (case_id, key)
        assert case_id in bench["name"]


def test_only_rank_0_wrote_the_benchmark_json(e2e):
    job, _ = _run(e2e)
    _, bench_json, _ = e2e
    wrote = [line for _, line in job.stderr_lines if "Wrote benchmark data" in line]
    assert len(wrote) == 1, job.describe()
    with open(bench_json) as f:
        data = json.load(f)  # one whole document, not two interleaved
    assert len(data["benchmarks"]) == len(CASE_IDS)
    assert "dpsync" in data["machine_info"]


def test_raw_loop_overhead_fields_on_streaming_cases(e2e):
    _, run = _run(e2e)
    benches = _benchmarks(e2e)
    for case_id, case in run["cases"].items():
        if case["case"]["cadence"] == "streaming" and case["case"]["forward_ms"] == 0:
            raw = case["raw_loop"]
            for key in ("mean_us", "harness_mean_us", "overhead"):
                assert isinstance(raw[key], float) and math.isfinite(raw[key]), (case_id, key)
            assert raw["mean_us"] > 0 and raw["harness_mean_us"] > 0
            assert isinstance(raw["within_limit"], bool)
            assert benches[case_id]["extra_info"]["raw_loop"] == raw
        else:
            assert "raw_loop" not in case, case_id
