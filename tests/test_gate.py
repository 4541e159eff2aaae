"""The regression gate on copies of the real example runs: copies never flag, a copy made
20 % slower is flagged wherever its recorded noise can see 20 %, and "cannot tell"
elsewhere; short histories, other software stacks and other code are labelled as such."""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import run_copies as rc

from dpsync_bench import results
from dpsync_bench.cases import UsageError
from dpsync_bench.report import gate, noise
from dpsync_bench.report.compare import add_compare_args, cmd_compare
from dpsync_bench.results import ResultsError

pytestmark = rc.needs_examples


def compare(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_compare_args(parser)
    return cmd_compare(parser.parse_args([str(a) for a in argv]))


def by_stat(verdict: gate.Verdict) -> dict[str, gate.StatVerdict]:
    return {s.stat: s for s in verdict.stats}


@pytest.fixture(scope="module")
def slower(tmp_path_factory):
    """Five copies of the 2-rank example, then two copies with every sample x 1.2."""
    root = tmp_path_factory.mktemp("results")
    rc.history(rc.X2, root, 5)
    first, second = (rc.copy_run(rc.X2, root, minute) for minute in (10, 11))
    for run in (first, second):
        rc.scale_run(run, 1.2)
    return root, first, second


def test_scaled_copy_is_consistent_with_its_samples(slower):
    _, first, _ = slower
    original, scaled = results.load_run(rc.X2)["cases"], results.load_run(first)["cases"]
    for case_id, case in original.items():
        # The helper rebuilds the real summaries exactly from the real samples ...
        rebuilt = rc.rebuilt_stats(results.load_samples(rc.X2, case_id))
        assert rebuilt["pass_us"] == pytest.approx(case["stats"]["pass_us"])
        # ... so the scaled copy's statistics are the originals x 1.2 (to the ns).
        for stat in ("p50", "p99"):
            want = 1.2 * case["stats"]["pass_us"][stat]
            assert scaled[case_id]["stats"]["pass_us"][stat] == pytest.approx(want, abs=1e-3)  # ns


def test_the_two_examples_never_flag_each_other(tmp_path):
    for src in (rc.X1, rc.X2):
        rc.copy_run(src, tmp_path, 0)
    for run in tmp_path.iterdir():  # other machine kinds: no history, nothing fails
        verdicts = gate.gate_run(run)
        assert {v.status for v in verdicts} == {"cannot tell"}
        assert all(v.history == 0 and not v.fails for v in verdicts)


@pytest.mark.parametrize("src", [rc.X1, rc.X2], ids=["x1", "x2"])
def test_copies_of_a_run_never_flag(tmp_path, src, capsys):
    *_, newest = rc.history(src, tmp_path, 7)
    verdicts = gate.gate_run(newest, consecutive=1)
    assert {v.status for v in verdicts} == {"ok"}
    assert all(v.history == 6 for v in verdicts)
    assert compare(newest, "--consecutive", "1") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("0 failing regression(s)")


def test_slower_copy_is_flagged_where_its_noise_allows(slower):
    _, first, _ = slower
    verdicts = gate.gate_run(first)
    for v in verdicts:
        p50, p99 = by_stat(v)["p50"], by_stat(v)["p99"]
        assert p50.change == pytest.approx(0.2, abs=1e-3)
        assert p99.status == "ok"  # +20 % is under the p99's 25 % floor
        visible = p50.detectable < 0.2
        assert v.status == ("regression" if visible else "cannot tell"), v.line()
    flagged = [v for v in verdicts if v.status == "regression"]
    assert 20 <= len(flagged) < len(verdicts)  # the 60-pass idle cases mostly; not all
    # One slow run is a suspicion, not a failure (two in a row are).
    assert not any(v.fails for v in verdicts)
    assert all("1 of 2 consecutive runs" in v.line() for v in flagged)
    assert {v.case_id for v in gate.gate_run(first, consecutive=1) if v.fails} == {
        v.case_id for v in flagged
    }


def test_detectable_change_comes_from_the_recorded_noise(slower):
    root, first, _ = slower
    verdict = gate.gate_run(first)[0]
    ours = noise.within_run_se(first, verdict.case_id)["p50"]
    theirs = noise.within_run_se(rc.X2, verdict.case_id)["p50"]
    p50 = by_stat(verdict)["p50"]
    assert ours == pytest.approx(1.2 * theirs, rel=1e-3)  # the copies' MAD is 0
    assert p50.detectable == pytest.approx(max(0.1, gate.K * math.hypot(ours, theirs) / p50.before))


def test_second_slow_run_in_a_row_fails(slower, capsys):
    _, first, second = slower
    flagged = {v.case_id for v in gate.gate_run(first) if v.status == "regression"}
    verdicts = gate.gate_run(second)
    assert {v.case_id for v in verdicts if v.fails} == flagged
    assert compare(second) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if line.startswith("REGRESSION")]) == len(flagged)
    assert lines[-1].startswith(f"{len(flagged)} failing regression(s)")


def test_too_short_a_history_cannot_tell(tmp_path, capsys):
    rc.history(rc.X2, tmp_path, 2)
    run = rc.copy_run(rc.X2, tmp_path, 10)
    rc.scale_run(run, 1.5)
    verdicts = gate.gate_run(run, consecutive=1)
    assert {v.status for v in verdicts} == {"cannot tell"}
    assert any("failing needs 5 runs of history" in v.line() for v in verdicts)
    assert compare(run, "--consecutive", "1") == 0
    n = len(verdicts)
    assert f"0 failing regression(s), {n} cannot tell" in capsys.readouterr().out


def test_other_software_stack_is_labelled_and_does_not_fail(tmp_path):
    rc.history(rc.X1, tmp_path, 5, machine=rc.with_versions(rc.X1, torch="2.10.0+cu128"))
    run = rc.copy_run(rc.X1, tmp_path, 10)
    rc.scale_run(run, 1.5)
    verdicts = gate.gate_run(run, consecutive=1)
    regressed = [v for v in verdicts if v.status == "regression"]
    assert regressed and not any(v.fails for v in verdicts)
    assert all("torch 2.10.0+cu128 -> 2.11.0+cu130" in v.line() for v in verdicts)
    assert "not failing across software stacks" in regressed[0].line()
    strict = gate.gate_run(run, consecutive=1, fail_across_stack=True)
    assert {v.case_id for v in strict if v.fails} == {v.case_id for v in regressed}


def test_same_stack_history_is_preferred_once_long_enough(tmp_path):
    rc.history(rc.X1, tmp_path, 5, machine=rc.with_versions(rc.X1, nccl="2.27.3"))
    rc.history(rc.X1, tmp_path, 5, first_minute=5)
    run = rc.copy_run(rc.X1, tmp_path, 10)
    verdicts = gate.gate_run(run)
    assert all(v.history == 5 and not v.labels for v in verdicts)


def test_other_code_is_labelled_and_fails(tmp_path):
    old = {"commit": "0" * 40, "dirty": False, "source_sha256": "1111222233334444"}
    rc.history(rc.X1, tmp_path, 5, code=old)
    run = rc.copy_run(rc.X1, tmp_path, 10)
    rc.scale_run(run, 1.5)
    verdicts = gate.gate_run(run, consecutive=1)
    assert any(v.fails for v in verdicts)
    assert all(
        "code 000000000 (sources 1111222233334444) -> ccf4859e8" in v.line() for v in verdicts
    )


def test_faster_copy_is_improved_and_passes(tmp_path):
    rc.history(rc.X2, tmp_path, 5)
    run = rc.copy_run(rc.X2, tmp_path, 10)
    rc.scale_run(run, 0.5)
    statuses = {v.status for v in gate.gate_run(run, consecutive=1)}
    assert "improved" in statuses and statuses <= {"improved", "ok"}
    assert compare(run, "--consecutive", "1") == 0


def test_explicit_baselines(tmp_path):
    base = rc.history(rc.X1, tmp_path, 5)
    run = rc.copy_run(rc.X1, tmp_path / "elsewhere", 10)
    verdicts = gate.gate_run(run, baselines=base)
    assert {v.status for v in verdicts} == {"ok"} and verdicts[0].history == 5
    with pytest.raises(ResultsError, match="machine kind 'smoke-x2'"):
        gate.gate_run(run, baselines=[rc.X2])


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ResultsError, match="no such file"):
        gate.gate_run(tmp_path)
    for bad in ({"window": 0}, {"k": 0}, {"p50_floor": -0.1}, {"consecutive": 0}):
        with pytest.raises(UsageError):
            gate.gate_run(rc.X1, history_root=tmp_path, **bad)


def test_within_run_noise_sees_autocorrelation():
    rng = np.random.default_rng(7)
    shocks = rng.normal(size=4000)
    independent = 100 + shocks
    correlated = np.empty_like(shocks)  # AR(1), lag-1 correlation 0.8
    correlated[0] = shocks[0]
    for i in range(1, shocks.size):
        correlated[i] = 0.8 * correlated[i - 1] + math.sqrt(1 - 0.8**2) * shocks[i]
    correlated += 100
    assert noise.variance_inflation(independent) == pytest.approx(1.0, abs=0.5)
    # (1 + rho) / (1 - rho) = 9 for long blocks; 10 blocks of 400 passes come close.
    assert 5 < noise.variance_inflation(correlated) < 13
    # The p50's standard error: sigma * sqrt(pi / 2 / n) for independent normal draws.
    assert noise.quantile_se(independent, 0.5) == pytest.approx(math.sqrt(math.pi / 8000), rel=0.3)
    assert noise.quantile_se(correlated, 0.5) > 2 * noise.quantile_se(independent, 0.5)


def test_the_committed_reference_runs_never_flag_each_other(tmp_path):
    # Issue 11's bar on the runs a reader sees: two runs of the same code on one machine kind.
    committed = sorted((Path(__file__).parents[1] / "results").glob("nvidia-h200_*/run.json"))
    assert len(committed) >= 2
    for meta in committed:
        shutil.copytree(meta.parent, tmp_path / meta.parent.name)
    newest = sorted(tmp_path.iterdir())[-1]
    verdicts = gate.gate_run(newest)
    assert verdicts and not any(v.fails for v in verdicts)
    assert {v.status for v in verdicts} <= {"ok", "cannot tell", "improved"}
