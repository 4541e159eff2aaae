"""Figures of a run: made from synthetic results, valid images, naming machine and cadence."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import synthetic

from dpsync_bench import plots
from dpsync_bench.cli import main

MACHINE_WORDS = ("NVIDIA H200 x2", "driver 580.159.04", "torch 2.11.0+cu130", "NCCL 2.28.9")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cases = synthetic.sweep() + [synthetic.case_result("gloo_cpu", "2x1", repeat=1, seed=7)]
    return synthetic.write_run(tmp_path_factory.mktemp("results"), cases)


@pytest.fixture(scope="module")
def written(run_dir):
    """What `report RUN --plots` (run_bench.sh's last step) writes and prints."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(run_dir), "--plots"]) == 0
    lines = printed.getvalue().splitlines()
    files = [Path(line.removeprefix("plot: ")) for line in lines if line.startswith("plot: ")]
    return run_dir / "plots", files, lines


def test_report_prints_its_table_and_figures(written):
    out, files, lines = written
    assert any(line.startswith("case ") and "pass p50" in line for line in lines)
    names = {f.name for f in files}
    for figure, _ in plots.RUN_FIGURES:
        assert {f"{figure}.png", f"{figure}.svg"} <= names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left


def test_pngs_are_real_images(written):
    for f in written[1]:
        if f.suffix == ".png":
            synthetic.assert_png(f)


def test_svgs_name_machine_and_cadence(written):
    for f in written[1]:
        if f.suffix == ".svg":
            synthetic.assert_svg(f, *MACHINE_WORDS, "cadence", "max across ranks")
    cdf = written[0] / "cdf.svg"
    synthetic.assert_svg(cdf, "idle GPU · isolated", "idle GPU · streaming", "5 ms forward")
    synthetic.assert_svg(written[0] / "forward.svg", "forward duration", "high-priority stream")


def test_forward_figure_needs_a_forward():
    assert plots.forward_figure(synthetic.sweep(paths=("gloo_cpu",), forward_ms=())) is None


def test_machine_label_without_gpu():
    label = plots.machine_label(
        {"machine_kind": "cpu-2c", "machine": {"cpu": "AMD EPYC", "versions": {"torch": "2.13"}}}
    )
    assert label == "cpu-2c: no GPU (CPU: AMD EPYC) · driver n/a · torch 2.13 · NCCL n/a"


def test_plot_command_on_case_files_across_world_sizes(tmp_path, capsys):
    small = synthetic.write_run(tmp_path / "a", [synthetic.case_result("gloo_cpu", "2x1")])
    big = synthetic.write_run(tmp_path / "b", [synthetic.case_result("gloo_cpu", "4x1")])
    files = [str(next((d / "cases").glob("*.json"))) for d in (small, big)]
    assert main(["plot", *files, "--out", str(tmp_path / "out")]) == 0
    synthetic.assert_svg(tmp_path / "out" / "shapes.svg", "2 ranks", "4 ranks", *MACHINE_WORDS)


@pytest.mark.parametrize(
    "problem",
    ["other machine", "same case twice", "case files without --out", "corrupt"],
)
def test_plot_command_refuses_bad_input(tmp_path, capsys, problem):
    run = synthetic.write_run(tmp_path / "a", [synthetic.case_result()])
    case_file = str(next((run / "cases").glob("*.json")))
    args = [case_file, "--out", str(tmp_path / "out")]
    if problem == "other machine":
        other = synthetic.write_run(tmp_path / "b", [synthetic.case_result()], machine_kind="x")
        args = [str(run), str(other), "--out", str(tmp_path / "out")]
    elif problem == "same case twice":
        args = [str(run), case_file, "--out", str(tmp_path / "out")]
    elif problem == "case files without --out":
        args = [case_file]
    else:
        (run / "cases" / "broken.json").write_text("{")
        args = [str(run)]
    assert main(["plot", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpsync: ") and err.count("\n") == 1
