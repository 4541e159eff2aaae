"""The JSON that other tools read, made from the real example runs: github-action-benchmark
(customSmallerIsBetter), Bencher (BMF), and the pytest-benchmark files a run holds, checked
with pytest-benchmark's own loader and --benchmark-compare-fail checks."""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pytest
import run_copies as rc

from dpsync_bench import results, stats
from dpsync_bench.report import export, publish
from dpsync_bench.results import ResultsError

pytestmark = rc.needs_examples


def run_export(*argv) -> int:
    parser = argparse.ArgumentParser()
    export.add_export_args(parser)
    return export.cmd_export(parser.parse_args([str(a) for a in argv]))


def passes_us(run_dir, case_id, figure="pass"):
    """The per-pass max over ranks, straight from the npz, in us."""
    with np.load(results.samples_path(run_dir, case_id)) as npz:
        return npz[figure].max(axis=0) / 1000.0


def test_gab_is_customSmallerIsBetter_with_p10_p90_ranges(tmp_path):
    out = tmp_path / "gab.json"
    assert run_export(rc.X1, rc.X2, "--format", "gab", "--out", out) == 0
    data = json.loads(out.read_text())
    runs = {run: results.load_run(run)["cases"] for run in (rc.X1, rc.X2)}
    cases = {c: (run, case) for run, found in runs.items() for c, case in found.items()}
    assert len(data) == 2 * len(cases)
    assert len({e["name"] for e in data}) == len(data)  # names identify the series
    for entry in data:
        assert set(entry) == {"name", "unit", "value", "range", "extra"}
        case_id, _, q = entry["name"].rsplit(" ", 2)
        run, case = cases[case_id]
        assert entry["unit"] == "us" and entry["value"] == case["stats"]["pass_us"][q]
        low, high = np.percentile(passes_us(run, case_id), [10, 90])
        assert entry["range"] == f"p10-p90 {low:.1f}-{high:.1f}"
        assert f"cadence {case['case']['cadence']}" in entry["extra"]
        assert "NVIDIA H200" in entry["extra"] and "nccl 2.28.9" in entry["extra"]


def test_bmf_latency_and_stall_in_ns(capsys):
    assert run_export(rc.X2, "--format", "bmf") == 0
    data = json.loads(capsys.readouterr().out)
    cases = results.load_run(rc.X2)["cases"]
    assert set(data) == set(cases)
    for case_id, measures in data.items():
        assert set(measures) == {"latency", "stall"}
        for measure, figure in (("latency", "pass"), ("stall", "stall")):
            values = passes_us(rc.X2, case_id, figure)
            m = measures[measure]
            assert m["value"] == pytest.approx(1000 * np.percentile(values, 50))
            assert m["lower_value"] == pytest.approx(1000 * np.percentile(values, 10))
            assert m["upper_value"] == pytest.approx(1000 * np.percentile(values, 90))
            assert m["lower_value"] <= m["value"] <= m["upper_value"]


def test_bounds_from_the_summary_where_samples_were_dropped(tmp_path, capsys):
    run = rc.copy_run(rc.X1, tmp_path, 0)
    case_id = "shm_cpu-1x1-idle-isolated-r0"
    results.samples_path(run, case_id).unlink()
    assert run_export(run, "--format", "bmf") == 0
    captured = capsys.readouterr()
    assert "1 case(s) without raw samples: their bounds are the summary's p5-p90" in captured.err
    summary = results.load_run(run)["cases"][case_id]["stats"]["stall_us"]
    stall = json.loads(captured.out)[case_id]["stall"]
    assert stall["lower_value"] == pytest.approx(1000 * summary["p5"])
    assert stall["upper_value"] == pytest.approx(1000 * summary["p90"])
    gab = export.export(export.load_cases([run]), "gab")
    assert next(e for e in gab if e["name"].startswith(case_id))["range"].startswith("p5-p90 ")


def test_a_case_given_twice_is_refused(tmp_path):
    with pytest.raises(ResultsError, match="is given twice"):
        export.load_cases([rc.X1, rc.copy_run(rc.X1, tmp_path, 0)])


# ---- pytest-benchmark's own contract -------------------------------------------------
benchmark_utils = pytest.importorskip("pytest_benchmark.utils")
storage = pytest.importorskip("pytest_benchmark.storage.file")
COMPARE_FAIL_FIELDS = ("min", "max", "mean", "median", "stddev", "iqr")


def load_with_pytest_benchmark(path) -> dict:
    """The JSON as --benchmark-compare loads it (its file storage normalizes the stats)."""
    files = storage.FileStorage(path.parent, logging.getLogger("test"))
    [(_, data)] = list(files.load(str(path)))  # as --benchmark-compare=PATH gives it
    return data


def failures(current: dict, compared: dict, *specs: str) -> list[str]:
    """What --benchmark-compare-fail=SPEC reports, benchmark by benchmark (by fullname)."""
    checks = [benchmark_utils.parse_compare_fail(spec) for spec in specs]
    before = {b["fullname"]: b["stats"] for b in compared["benchmarks"]}
    return [
        message
        for bench in current["benchmarks"]
        for check in checks
        if (message := check.fails(bench["stats"], before[bench["fullname"]]))
    ]


@pytest.mark.parametrize("published", [False, True], ids=["as-run", "published"])
def test_benchmark_compare_fail_reads_our_json(tmp_path, published):
    src = rc.X2
    if published:  # round data dropped to fit: the statistics must still be there
        _, whole, _ = publish.publish(rc.X2, tmp_path / "whole")
        src, _, done = publish.publish(rc.X2, tmp_path / "site", max_bytes=whole - 10_000)
        assert done["pytest_benchmark_round_data"] == "dropped"
    baseline = load_with_pytest_benchmark(src / "pytest-benchmark-w2.json")
    n_cases = len(results.load_run(rc.X2)["cases"])
    assert len(baseline["benchmarks"]) == n_cases
    for bench in baseline["benchmarks"]:
        assert set(COMPARE_FAIL_FIELDS) <= set(bench["stats"])
        assert all(isinstance(bench["stats"][f], float) for f in COMPARE_FAIL_FIELDS)
    # Against itself nothing fails; against a copy 20 % slower every benchmark does.
    assert failures(baseline, baseline, "median:10%", "mean:10%") == []
    slower = json.loads(json.dumps(baseline))
    for bench in slower["benchmarks"]:
        for field in COMPARE_FAIL_FIELDS:
            bench["stats"][field] *= 1.2
    copy = tmp_path / "slower" / "pytest-benchmark-w2.json"
    copy.parent.mkdir()
    copy.write_text(json.dumps(slower))
    messages = failures(load_with_pytest_benchmark(copy), baseline, "median:10%")
    assert len(messages) == n_cases and "PercentageRegressionCheck" in messages[0]


def test_benchmark_json_median_is_the_measured_pass_median():
    # pytest-benchmark's stats come from the measured passes (seconds), like our summary.
    data = json.loads((rc.X1 / "pytest-benchmark-w1.json").read_text())
    cases = results.load_run(rc.X1)["cases"]
    for bench in data["benchmarks"]:
        case = cases[bench["extra_info"]["case_id"]]
        assert bench["stats"]["rounds"] == case["stats"]["pass_us"]["n"]
        median_us = stats.quantile(np.asarray(bench["stats"]["data"]) * 1e6, 0.5)
        assert median_us == pytest.approx(case["stats"]["pass_us"]["p50"], rel=1e-6)
