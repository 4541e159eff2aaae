"""A real CPU sweep (torchrun, 2 gloo ranks, smoke preset), run once and shared by the tests
here: its figures, its exports, our gate on it, and pytest-benchmark's own
--benchmark-compare-fail on the pytest-benchmark JSON it wrote."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import synthetic
import torch
from fault_helpers import torchrun_benchmarks

from dpsync_bench.cli import main
from dpsync_bench.compare import load_results
from dpsync_bench.export import to_bmf, to_gab

pytestmark = pytest.mark.slow  # three torchrun jobs

REPO = Path(__file__).resolve().parents[1]
SMOKE = ("--dpsync-preset", "smoke", "--dpsync-iters", "30", "--dpsync-warmup", "5")
# One case of the smoke sweep: enough for pytest-benchmark to compare, and quick.
ONE_CASE = (
    "--dpsync-paths",
    "gloo_cpu",
    "--dpsync-shapes",
    "2x1",
    "--dpsync-cadences",
    "streaming",
)


def _sweep(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = torchrun_benchmarks(*SMOKE, *args)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # From tmp: pytest-benchmark keeps its storage under the working directory (and cannot
    # name a storage outside it when it warns about machine differences).
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    bench_json = tmp / "pytest-benchmark.json"
    done = _sweep(tmp, "--dpsync-out", str(tmp / "results"), f"--benchmark-json={bench_json}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp / "results").glob("*/run.json")
    return SimpleNamespace(tmp=tmp, run_dir=run_dir.parent, bench_json=bench_json)


def test_report_plots_of_a_real_run(real, capsys):
    assert main(["report", str(real.run_dir), "--plots"]) == 0
    printed = capsys.readouterr().out
    files = [Path(x.removeprefix("plot: ")) for x in printed.splitlines() if x.startswith("plot:")]
    assert {f.stem for f in files} == {"cdf", "shapes", "skew"}  # no forward on a CPU
    words = ("no GPU", f"torch {torch.__version__}", "NCCL n/a", "cadence", "streaming")
    for f in files:
        if f.suffix == ".png":
            synthetic.assert_png(f)
        else:
            synthetic.assert_svg(f, *words)
    synthetic.assert_svg(real.run_dir / "plots" / "skew.svg", "rank 0", "rank 1")


def test_exports_of_a_real_run(real):
    run = load_results([real.run_dir])
    synthetic.validate_gab(to_gab(run))
    bmf = to_bmf(run)
    synthetic.validate_bmf(bmf)
    assert set(bmf) == set(run["cases"]) and len(bmf) == 4


def test_gate_accepts_a_real_run(real, capsys):
    """Against itself: identical samples, ratio 1: no regression."""
    assert main(["compare", str(real.run_dir), "--baseline", str(real.run_dir)]) == 0
    assert "0 regression(s) in 4 cases" in capsys.readouterr().out


def test_pytest_benchmark_compare_fail_works_on_our_json(real):
    ours = json.loads(real.bench_json.read_text())
    assert len(ours["benchmarks"]) == 4
    # Against the real run, with a generous threshold: passes.
    done = _sweep(
        real.tmp,
        *ONE_CASE,
        f"--benchmark-compare={real.bench_json}",
        "--benchmark-compare-fail=median:1000%",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Comparing against benchmarks from" in done.stdout + done.stderr
    # Against the same run made 1000x faster: a regression, always.
    for bench in ours["benchmarks"]:
        s = bench["stats"]
        for key in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "total"):
            s[key] /= 1000
        s["ops"] *= 1000
    fast = real.tmp / "fast.json"
    fast.write_text(json.dumps(ours))
    done = _sweep(
        real.tmp, *ONE_CASE, f"--benchmark-compare={fast}", "--benchmark-compare-fail=median:5%"
    )
    assert done.returncode != 0
    assert "Performance has regressed" in done.stdout + done.stderr
