"""The regression gate: Mann-Whitney U against scipy, and `compare` on synthetic histories."""

from __future__ import annotations

import json
import random
import re

import pytest
import synthetic
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from dpsync_bench import compare
from dpsync_bench.cli import main

# ---- Mann-Whitney U --------------------------------------------------------------------
SCIPY_ALTERNATIVE = {"two-sided": "two-sided", "slower": "greater"}


def _check_against_scipy(after, before, alternative):
    u, p = compare.mann_whitney_u(after, before, alternative)
    ref = mannwhitneyu(
        after,
        before,
        alternative=SCIPY_ALTERNATIVE[alternative],
        method="asymptotic",
        use_continuity=True,
    )
    assert u == pytest.approx(ref.statistic, abs=1e-9)
    assert p == pytest.approx(ref.pvalue, abs=1e-6)


@pytest.mark.parametrize("alternative", compare.ALTERNATIVES)
@pytest.mark.parametrize("seed", range(6))
def test_mann_whitney_matches_scipy_on_random_samples(seed, alternative):
    rng = random.Random(seed)
    n1, n2 = rng.randint(5, 400), rng.randint(5, 400)
    shift = rng.choice([0.0, 0.05, 0.3])
    rounding = rng.choice([None, 0, 1])  # rounded samples have many ties
    after = [rng.lognormvariate(shift, 0.3) * 100 for _ in range(n1)]
    before = [rng.lognormvariate(0, 0.3) * 100 for _ in range(n2)]
    if rounding is not None:
        after, before = ([round(v, rounding) for v in xs] for xs in (after, before))
    _check_against_scipy(after, before, alternative)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=60),
    st.lists(st.integers(0, 30), min_size=2, max_size=60),
    st.sampled_from(compare.ALTERNATIVES),
)
def test_mann_whitney_matches_scipy_with_heavy_ties(after, before, alternative):
    if len(set(after + before)) > 1:  # all equal: scipy answers nan, we answer 1
        _check_against_scipy(after, before, alternative)


def test_mann_whitney_all_equal_and_direction():
    assert compare.mann_whitney_u([1.0] * 5, [1.0] * 7)[1] == 1.0
    slow, fast = [float(v) for v in range(100, 200)], [float(v) for v in range(100)]
    assert compare.mann_whitney_u(slow, fast, "slower")[1] < 1e-20
    assert compare.mann_whitney_u(fast, slow, "slower")[1] > 0.99


# ---- the gate --------------------------------------------------------------------------
FEW = dict(paths=("gloo_cpu", "nccl_device"), shapes=("2x1",), forward_ms=(5.0,))


def _gate(capsys, *args):
    try:
        rc = main(["compare", *map(str, args)])
    except SystemExit as e:  # argparse's errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _history(root, last_scale=1.0, runs=4, **kw):
    return synthetic.write_history(root, runs, last_scale, **{**FEW, **kw})


def test_unchanged_passes(tmp_path, capsys):
    run = _history(tmp_path)[-1]
    rc, out, err = _gate(capsys, run)
    assert rc == 0, out + err
    assert f"0 regression(s) in {len(list(run.glob('cases/*.json')))} cases" in out
    assert "REGRESSION" not in out and err == ""


def test_a_30_percent_slowdown_fails_with_one_line_per_case(tmp_path, capsys):
    run = _history(tmp_path, last_scale=1.3)[-1]
    rc, out, _ = _gate(capsys, run)
    assert rc == 1
    lines = [line for line in out.splitlines() if line.startswith("REGRESSION")]
    # Every case but the one whose pass is mostly a 4.5 ms stall behind the forward.
    hidden = "nccl_device-2x1-fwd5ms-isolated-barrier-coarse-r0"
    assert len(lines) == len(list(run.glob("cases/*.json"))) - 1
    assert not any(hidden in line for line in lines)
    idle = next(line for line in lines if "gloo_cpu-2x1-idle-isolated" in line)
    before, after, ratio = re.search(r"p50 ([\d.]+) -> ([\d.]+) us \(([\d.]+)x\)", idle).groups()
    assert float(after) / float(before) == pytest.approx(float(ratio), abs=0.01)
    assert 1.2 < float(ratio) < 1.4


def test_noise_alone_does_not_fail(tmp_path):
    """Rare 8x outliers push p99 far over its threshold, but the bulk is unchanged: the
    significance test keeps the gate quiet."""
    dirs = _history(tmp_path)
    noisy = synthetic.sweep(tail=0.03, seed=99, started=synthetic.T0 + 9 * synthetic.DAY, **FEW)
    run = synthetic.write_run(tmp_path, noisy, started=synthetic.T0 + 9 * synthetic.DAY)
    verdicts, _ = compare.gate_run(run)
    assert any(v.over_threshold for v in verdicts)
    assert not any(v.regressed for v in verdicts)
    assert all(v.baseline_runs == len(dirs) for v in verdicts)


def test_small_significant_change_is_under_the_threshold(tmp_path):
    run = _history(tmp_path, last_scale=1.05, noise=0.02)[-1]
    verdicts, _ = compare.gate_run(run)
    assert all(v.significant for v in verdicts)
    assert not any(v.regressed for v in verdicts)


def test_thresholds_are_configurable(tmp_path, capsys):
    run = _history(tmp_path, last_scale=1.05, noise=0.02)[-1]
    assert _gate(capsys, run, "--p50-threshold", "2%")[0] == 1
    assert _gate(capsys, run, "--p50-threshold", "0.02", "--alpha", "1e-300")[0] == 0


def test_baseline_is_the_last_n_earlier_runs(tmp_path, capsys):
    dirs = _history(tmp_path, runs=6)
    # A newer run exists, and the oldest ones are out of the window: neither counts.
    verdicts, notes = compare.gate_run(dirs[3], history=2)
    assert {v.baseline_runs for v in verdicts} == {2}
    assert "up to 2 earlier" in notes[0]
    assert _gate(capsys, dirs[0])[0] == 2  # nothing older


def test_explicit_baselines(tmp_path, capsys):
    a, b = _history(tmp_path / "old", runs=2)
    slow = synthetic.write_run(
        tmp_path / "new", synthetic.sweep(scale=1.4, seed=5, **FEW), synthetic.T0 + 50 * 86400
    )
    rc, out, _ = _gate(capsys, slow, "--baseline", a, b)
    assert rc == 1 and "2 baseline run(s)" in out


def test_a_corrupt_history_run_is_skipped(tmp_path, capsys):
    dirs = _history(tmp_path, last_scale=1.3)
    (dirs[1] / "cases" / "gloo_cpu-2x1-idle-isolated-r0.json").write_text("{not json")
    rc, out, err = _gate(capsys, dirs[-1])
    assert rc == 1
    assert "skipping" in err and dirs[1].name in err


def test_history_is_read_from_the_run_directories(tmp_path, capsys):
    """A corrupt index, or runs copied in without it, change nothing."""
    run = _history(tmp_path, last_scale=1.3)[-1]
    (tmp_path / "index.json").write_text("[")
    assert _gate(capsys, run)[0] == 1


@pytest.mark.parametrize(
    "problem",
    [
        "missing run",
        "corrupt case",
        "corrupt run.json",
        "machine mismatch",
        "no common cases",
        "no history",
        "bad threshold",
        "bad history",
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, problem):
    dirs = _history(tmp_path / "r", runs=2)
    run, args = dirs[-1], []
    if problem == "missing run":
        run = tmp_path / "nowhere"
    elif problem == "corrupt case":
        (run / "cases" / "gloo_cpu-2x1-idle-isolated-r0.json").write_text('{"schema": 1')
    elif problem == "corrupt run.json":
        (dirs[0] / "run.json").write_text("")
        args = ["--baseline", dirs[0]]
    elif problem == "machine mismatch":
        other = synthetic.write_run(tmp_path / "o", synthetic.sweep(**FEW), machine_kind="x")
        args = ["--baseline", other]
    elif problem == "no common cases":
        other = synthetic.write_run(tmp_path / "o", [synthetic.case_result(shape="1x2")])
        args = ["--baseline", other]
    elif problem == "no history":
        run = dirs[0]
    elif problem == "bad threshold":
        args = ["--p99-threshold", "lots"]
    else:
        args = ["--history", "0"]
    rc, out, err = _gate(capsys, run, *args)
    assert rc == 2, out + err
    assert err.startswith("dpsync: ") and err.count("\n") == 1, err


def test_compare_reads_results_as_the_harness_writes_them(tmp_path):
    """Stats and raw samples agree: the gate's p50 is the case file's p50."""
    run = _history(tmp_path, runs=2)[-1]
    verdicts, _ = compare.gate_run(run)
    case = json.loads((run / "cases" / "nccl_device-2x1-idle-isolated-r0.json").read_text())
    v = next(v for v in verdicts if v.case_id == case["case_id"])
    assert v.after_p50 == case["stats"]["pass_us"]["p50"]
    ordered = sorted(compare.samples(case))
    assert ordered[len(ordered) // 2] == pytest.approx(case["stats"]["pass_us"]["p50"], rel=0.05)
