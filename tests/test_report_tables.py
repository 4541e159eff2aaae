"""The tables of `report`: a line per case, the README pivot, agreement across runs and the
harness-overhead lines; on synthetic schema-2 runs and on the real example runs."""

from __future__ import annotations

import pytest
import synthetic

from dpsync_bench.report import tables
from dpsync_bench.report.runs import SUMMARY_OF, per_pass_us
from dpsync_bench.results import ResultsError, load_run
from dpsync_bench.stats import summarize


def report(*argv: str) -> str:
    return synthetic.run_command(tables.add_report_args, tables.cmd_report, *argv)


def rows_of(text: str) -> dict[str, dict[str, str]]:
    """A plain-text table as case -> column -> cell (headers are two words, cells one)."""
    head, *body = text.splitlines()
    names = [h.strip() for h in head.split("  ") if h.strip()]
    out = {}
    for line in body:
        cells = line.split()
        state = cells[1:-12]  # the GPU column is the one with spaces in it
        out[cells[0]] = dict(zip(names, [cells[0], " ".join(state), *cells[-12:]], strict=True))
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    failing = synthetic.case_result("shm_cpu", "2x1", failures=("1 wrong decisions",))
    run_dir = synthetic.write_run(tmp_path_factory.mktemp("r"), [*synthetic.sweep(), failing])
    return load_run(run_dir)


def test_summary_line_per_case_with_parts_exposed_and_idle_gap(synth):
    rows = rows_of(tables.summary_table(synth["cases"].values()))
    assert set(rows) == set(synth["cases"])
    for case_id, row in rows.items():
        s = synth["cases"][case_id]["stats"]
        assert row["pass p50"] == tables.fmt_us(s["pass_us"]["p50"])
        assert row["coll p50"] == tables.fmt_us(s["collective_us"]["p50"])
        assert row["exposed p50"] == (
            tables.fmt_us(s["exposed_us"]["p50"]) if "fwd" in case_id else "-"
        )
        assert row["idle gap p5"] == (
            "-" if "idle_gap_us" not in s else tables.fmt_us(s["idle_gap_us"]["p5"])
        )
        assert (row["device p50"] != "-") == case_id.startswith("nccl")
    fwd = rows["nccl_device-2x1-fwd5ms-isolated-barrier-coarse-r0"]
    measured = synth["cases"]["nccl_device-2x1-fwd5ms-isolated-barrier-coarse-r0"]["forward"]
    assert fwd["GPU"] == f"fwd 5 ms (measured {measured['measured_ms']['p50']:.2f})"
    assert rows["gloo_cpu-2x1-idle-streaming-r0"]["late %"] == "-"
    assert rows["gloo_cpu-2x1-idle-isolated-r0"]["late %"] == "0.0"
    assert rows["shm_cpu-2x1-idle-isolated-r0"]["check"] == "FAIL"
    assert tables.failure_lines(synth["cases"].values()) == [
        "  FAIL shm_cpu-2x1-idle-isolated-r0: 1 wrong decisions"
    ]


def test_summary_reads_down_by_path_shape_state(synth):
    text = tables.summary_table(synth["cases"].values())
    order = [line.split()[0] for line in text.splitlines()[1:]]
    assert order[:7] == [
        "gloo_cpu-2x1-idle-isolated-r0",
        "gloo_cpu-2x1-idle-streaming-r0",
        "gloo_cpu-2x1-fwd5ms-isolated-barrier-coarse-r0",
        "gloo_cpu-2x1-fwd5ms-busy-barrier-coarse-r0",
        "gloo_cpu-1x2-idle-isolated-r0",
        "gloo_cpu-1x2-idle-streaming-r0",
        "nccl_device-2x1-idle-isolated-r0",
    ]
    assert order.index("nccl_device-2x1-fwd5ms-isolated-nobarrier-coarse-r0") == 10  # variant last


def test_markdown_summary(synth):
    lines = tables.summary_table(synth["cases"].values(), markdown=True).splitlines()
    assert lines[0].startswith("| case | GPU | pass p50 |") and set(lines[1]) == {"|", "-"}
    assert len(lines) == 2 + len(synth["cases"])


def test_pivot_row_per_path_and_shape_column_per_state(synth):
    lines = tables.pivot_table(synth["cases"].values()).splitlines()
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    assert head == [
        "path · shape",
        "idle · isolated",
        "idle · streaming",
        "fwd 5 ms · isolated",
        "fwd 5 ms · busy",
    ]
    rows = {
        r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in lines[2:]
    }
    assert list(rows)[:3] == [
        "gloo_cpu · 2x1 (2 ranks)",
        "gloo_cpu · 1x2 (2 ranks)",
        "nccl_device · 2x1 (2 ranks)",
    ]
    s = synth["cases"]["nccl_device-2x1-fwd5ms-isolated-barrier-coarse-r0"]["stats"]["pass_us"]
    assert (
        rows["nccl_device · 2x1 (2 ranks)"][2]
        == f"{tables.fmt_us(s['p50'])} / {tables.fmt_us(s['p99'])}"
    )
    assert rows["gloo_cpu · 1x2 (2 ranks)"][2] == "-"  # forwards run at the DP shape only


def test_stability_across_two_runs(tmp_path):
    """The same samples, one run 30 % slower: every case about 26 % apart; 5 % agrees."""
    few = dict(paths=("gloo_cpu",), shapes=("2x1",), forward_ms=())
    cases = [[m.summary for m in synthetic.sweep(scale=s, **few)] for s in (1.0, 1.05, 1.3)]
    close = tables.stability(cases[0] + cases[1], overhead=False)
    assert close[0] == "stability: 2/2 cases agree on p50 within 10%"
    far = tables.stability(cases[0] + cases[2], overhead=False)
    assert far[0] == "stability: 0/2 cases agree on p50 within 10%"
    assert all(line.split()[-2:] == ["26.1", "UNSTABLE"] for line in far[2:])
    assert tables.stability(cases[0]) == tables.overhead_lines(cases[0])  # nothing repeated


def test_overhead_lines_name_cases_over_the_limit():
    ok = synthetic.case_result("gloo_cpu", cadence="streaming").summary
    over = {
        **ok,
        "case_id": "x-r0",
        "raw_loop": {**ok["raw_loop"], "overhead": 0.4, "within_limit": False},
    }
    lines = tables.overhead_lines([ok, over])
    assert lines[0] == "harness overhead: 1/2 within its limit (1 over)"
    assert lines[1].endswith("+2.0%") and lines[2].endswith("+40.0%  OVER")
    noisy = {**ok, "raw_loop": {**ok["raw_loop"], "overhead": 0.08, "error": 0.05}}
    noisy["raw_loop"].update(within_limit=False, verdict="cannot tell")
    lines = tables.overhead_lines([noisy])
    assert lines[0] == "harness overhead: 0/1 within its limit (1 cannot tell)"
    assert lines[1].endswith("+8.0% ± 5.0%  cannot tell")


def test_report_on_the_example_runs(tmp_path):
    x1, x2 = synthetic.example_run("x1", tmp_path), synthetic.example_run("x2", tmp_path)
    out = report(str(x1), str(x2))
    assert "# smoke-x2_20261130T065455Z: smoke-x2: NVIDIA H200 x2 · torch 2.11.0+cu130" in out
    assert "code ccf4859 · started 2026-11-30 06:54 UTC" in out
    line = next(
        x for x in out.splitlines() if x.startswith("nccl_device-1x1-fwd5ms-isolated-barrier")
    )
    assert "fwd 5 ms (measured 4.59)" in line and line.split()[-1] == "FAIL"
    assert (
        "  FAIL nccl_device-1x1-fwd5ms-isolated-barrier-coarse-r0: forward measured 4.59 ms" in out
    )
    assert "harness overhead: " in out and "  OVER" in out
    assert out.rstrip().endswith("# the same cases across 2 runs\nno case in two runs")


def test_report_pivot_and_two_copies_of_one_run(tmp_path):
    x1 = synthetic.example_run("x1", tmp_path)
    pivot = report(str(x1), "--pivot")
    assert "| shm_cpu · 1x1 (1 rank) | " in pivot and "| path · shape |" in pivot
    twin = tmp_path / "twin"
    twin.mkdir()
    copy = synthetic.example_run("x1", twin)
    out = report(str(x1), str(copy))
    assert "stability: 40/40 cases agree on p50 within 10%" in out


def test_report_refuses_a_corrupt_run(tmp_path):
    run = synthetic.write_run(tmp_path, [synthetic.case_result()])
    (run / "cases" / "broken.json").write_text("{")
    with pytest.raises(ResultsError, match="corrupt JSON"):
        report(str(run))


def test_samples_reduce_to_their_summaries_in_the_example_runs(tmp_path):
    """runs.SUMMARY_OF, the reduction the figures use, is the one the real runs were
    summarized with: every figure of every case gives back its summary."""
    run = load_run(synthetic.example_run("x2", tmp_path))
    checked = 0
    for case_id, case in run["cases"].items():
        for figure, (_, name) in SUMMARY_OF.items():
            values = per_pass_us(run["dir"], case_id, figure)
            if values is None:
                assert name not in case["stats"], (case_id, figure)
                continue
            assert summarize(values) == pytest.approx(case["stats"][name], rel=1e-9), (
                case_id,
                name,
            )
            checked += 1
    assert checked >= 6 * len(run["cases"])  # pass, its four parts, start skew: and more
