"""Exports: github-action-benchmark customSmallerIsBetter and Bencher Metric Format, checked
field by field against what those tools read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic

from dpsync_bench.cli import main
from dpsync_bench.compare import load_results
from dpsync_bench.export import to_bmf, to_gab


def _p10_p50_p90(case, metric="pass_us"):
    per_iteration = np.max(np.array(case["raw"][metric]), axis=0)  # max across ranks
    return np.percentile(per_iteration, [10, 50, 90])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cases = synthetic.sweep(paths=("gloo_cpu", "nccl_device"), shapes=("2x1", "1x2"))
    return synthetic.write_run(tmp_path_factory.mktemp("results"), cases)


@pytest.fixture(scope="module")
def run(run_dir):
    return load_results([run_dir])


def test_gab_format(run):
    data = to_gab(run)
    synthetic.validate_gab(data)
    assert len(data) == 2 * len(run["cases"])  # p50 and p99 of each case
    for case_id, case in run["cases"].items():
        for q in ("p50", "p99"):
            entry = next(e for e in data if e["name"] == f"{case_id} pass {q}")
            assert entry["value"] == case["stats"]["pass_us"][q]
            assert entry["unit"] == "us"
            assert "NVIDIA H200 x2" in entry["extra"] and "NCCL 2.28.9" in entry["extra"]
            assert f"cadence {case['case']['cadence']}" in entry["extra"]


def test_bmf_format_with_p10_p90_from_raw_samples(run):
    data = to_bmf(run)
    synthetic.validate_bmf(data)
    assert set(data) == set(run["cases"])
    for case_id, case in run["cases"].items():
        p10, p50, p90 = _p10_p50_p90(case) * 1000  # Bencher's latency is in ns
        latency = data[case_id]["latency"]
        assert latency["value"] == pytest.approx(p50, rel=1e-9)
        assert latency["value"] == pytest.approx(case["stats"]["pass_us"]["p50"] * 1000)
        assert latency["lower_value"] == pytest.approx(p10, rel=1e-9)
        assert latency["upper_value"] == pytest.approx(p90, rel=1e-9)
        stall = data[case_id]["stall"]
        assert stall["value"] == pytest.approx(_p10_p50_p90(case, "stall_us")[1] * 1000)


@pytest.mark.parametrize("fmt", ["gab", "bmf"])
def test_export_command(run_dir, tmp_path, capsys, fmt):
    out = tmp_path / f"{fmt}.json"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
    validate = synthetic.validate_gab if fmt == "gab" else synthetic.validate_bmf
    validate(json.loads(out.read_text()))
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # written atomically
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", fmt]) == 0  # to stdout
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


@pytest.mark.parametrize("args", [["--format", "csv"], ["--format", "bmf", "--out", "/no/dir/x"]])
def test_export_bad_input_exits_2(run_dir, capsys, args):
    try:
        rc = main(["export", str(run_dir), *args])
    except SystemExit as e:  # argparse's errors
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("dpsync: ") and err.count("\n") == 1
