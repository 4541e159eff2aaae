"""The figures of a run: which are drawn, that they say where their numbers come from, that
the data behind them holds the physics, that they stay small, and `plot`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import synthetic

from dpsync_bench.cases import UsageError
from dpsync_bench.report import plots
from dpsync_bench.report.canvas import save_png
from dpsync_bench.report.runs import per_pass_us
from dpsync_bench.results import load_run

COMMIT = "0123456"
RUN_FIGURES = {"cdf.png", "parts.png", "forward.png", "skew.png"}


def plot(*argv: str) -> list[Path]:
    out = synthetic.run_command(plots.add_plot_args, plots.cmd_plot, *argv)
    return [Path(x.removeprefix("plot: ")) for x in out.splitlines()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    paths = ("gloo_cpu", "nccl_device", "nccl_side_stream", "shm_cpu")
    return load_run(synthetic.write_run(tmp_path_factory.mktemp("r"), synthetic.sweep(paths)))


def test_run_figures_are_small_real_images(run, tmp_path):
    files = plots.write_run_plots(run, tmp_path)
    assert {f.name for f in files} == RUN_FIGURES  # one world size: no world figure
    for f in files:
        synthetic.assert_png(f)
    assert sum(f.stat().st_size for f in files) < 300_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(RUN_FIGURES)  # no temp files


def test_a_figure_names_machine_stack_code_date_and_cadence(run, tmp_path):
    fig, title, cadences = plots.cdf_figure(run)
    save_png(fig, tmp_path, "cdf", [run["meta"]], title, plots.cadence_note(cadences))
    text = fig.get_suptitle()
    for words in (
        "synth-h200-x2: NVIDIA H200 x2 · torch 2.11.0+cu130 · NCCL 2.28.9 · CUDA 13.0",
        f"code {COMMIT} · run started 2026-09-21 14:13 UTC",
        "isolated = one pass per slot",
        "busy = forwards back to back",
        "per pass, the max over ranks",
    ):
        assert words in text.replace("\n", " "), words
    panels = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert panels == [
        "idle GPU · isolated",
        "idle GPU · streaming",
        "behind a 5 ms forward · isolated",
        "behind a 5 ms forward · busy",
    ]


def test_the_parts_add_up_to_the_slowest_ranks_pass(run):
    case = run["cases"]["nccl_device-2x1-fwd5ms-isolated-barrier-coarse-r0"]
    means = plots._part_means(run, case)
    total = per_pass_us(run["dir"], case["case_id"]).mean()
    assert sum(means.values()) == pytest.approx(total, rel=1e-9)
    assert means["stall"] > 0.8 * total  # it waited for the forward


def test_stall_follows_the_forward_left_for_device_paths_only(run):
    """The physics the forward figure shows: queued on the forward's stream, stall is the
    rest of the forward; a host path never stalls; a side stream stalls a little."""

    def stall_and_left(path):
        case_id = f"{path}-2x1-fwd5ms-isolated-barrier-coarse-r0"
        return (per_pass_us(run["dir"], case_id, f) for f in ("stall", "remaining"))

    stall, left = stall_and_left("nccl_device")
    assert np.corrcoef(stall, left)[0, 1] > 0.99 and np.all(stall >= left)
    stall, _ = stall_and_left("gloo_cpu")
    assert not stall.any()
    stall, left = stall_and_left("nccl_side_stream")
    assert np.median(stall) < 0.3 * np.median(left)
    fig, *_ = plots.forward_figure(run)
    assert [ax.get_title() for ax in fig.axes][:2] == [
        "stall against the forward left",
        "exposed time: what the overlap scheduler cannot hide",
    ]


def test_no_forward_no_world_no_skew_figures(tmp_path):
    one_rank = synthetic.sweep(("gloo_cpu",), ("1x1",), forward_ms=())
    run = load_run(synthetic.write_run(tmp_path, one_rank))
    assert plots.forward_figure(run) is None and plots.skew_figure(run) is None
    assert [f.name for f in plots.write_run_plots(run, tmp_path / "p")] == ["cdf.png", "parts.png"]


def test_world_figure_over_1_to_8_ranks_of_the_host_paths(tmp_path):
    host = ("gloo_cpu", "shm_cpu", "hierarchical", "nccl_device")
    cases = [
        synthetic.case_result(path, f"{w}x1", cadence=cadence, iters=50)
        for w in (1, 2, 4, 8)
        for path in host
        for cadence in ("isolated", "streaming")
        if path != "hierarchical" or w > 1
    ]
    run = load_run(synthetic.write_run(tmp_path, cases))
    fig, _, cadences = plots.world_figure(list(run["cases"].values()))
    assert cadences == ["isolated", "streaming"]
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["gloo_cpu", "shm_cpu", "hierarchical"]  # the registry's host paths
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert "world.png" in {f.name for f in plots.write_run_plots(run, tmp_path / "p")}


def test_without_samples_the_figures_come_from_the_summaries(run, tmp_path):
    copy = Path(shutil.copytree(run["dir"], tmp_path / "run"))
    shutil.rmtree(copy / "samples")
    files = plots.write_run_plots(load_run(copy), tmp_path / "p")
    assert {f.name for f in files} == RUN_FIGURES
    for f in files:
        synthetic.assert_png(f)


def test_plot_command_on_the_example_runs(tmp_path):
    x1, x2 = synthetic.example_run("x1", tmp_path), synthetic.example_run("x2", tmp_path)
    files = plot(str(x2))  # its kept cases are all idle: no figure of forwards
    assert {f.name for f in files} == RUN_FIGURES - {"forward.png"}
    assert all(f.parent == x2 / "plots" for f in files)
    assert sum(f.stat().st_size for f in files) < 300_000
    both = plot(str(x1), str(x2), "--out", str(tmp_path / "out"))
    assert tmp_path / "out" / "world.png" in both  # 1 and 2 ranks, across the two runs
    assert {f.name for f in both if f.parent.name == x1.name} == RUN_FIGURES - {"skew.png"}
    with pytest.raises(UsageError, match="--out"):
        plot(str(x1), str(x2))
