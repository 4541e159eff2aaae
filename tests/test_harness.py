"""The pure parts of the harness, the calibration helpers, the pytest-benchmark bridge, the
case/sweep module and the results module (no process group, no GPU)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import REPO, make_case_result, make_record

from delayer_core.paths import GatherShape
from dpsync_bench import results
from dpsync_bench.cases import (
    CADENCES,
    NCCL_PATHS,
    PATH_NAMES,
    Case,
    Sweep,
    UsageError,
    check_environment,
    default_shapes,
    parse_list,
    sweep_fingerprint,
    validate_case,
)
from dpsync_bench.forward import Calibration, agree, pick_size
from dpsync_bench.harness import build_result, count_wrong, expected_buffer, local_row
from dpsync_bench.pytest_bridge import EXTRA_KEYS, VirtualClock, feed
from dpsync_bench.stats import reduce_max, summarize

SHAPES = ["1x1", "2x1", "1x2", "4x1", "2x2", "1x4", "3x2"]


# ---- the gathered buffer and its check ------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_expected_buffer_layout(shape):
    s = GatherShape.parse(shape)
    buf = expected_buffer(s, 17)
    assert len(buf) == s.dp_rows
    assert all(len(plane) == s.attn_tp_size for plane in buf)
    ranks = [row[3] - 1 for plane in buf for row in plane]  # field 3 is rank + 1
    assert ranks == list(range(s.world_size))  # row-major: rank = dp * tp_size + tp
    for plane in buf:
        for row in plane:
            assert row == local_row(row[3] - 1, 17)
    assert count_wrong(buf, expected_buffer(s, 17)) == 0


def test_local_row_changes_with_rank_and_iteration():
    rows = {(r, i): tuple(local_row(r, i)) for r in range(8) for i in range(50)}
    assert len(set(rows.values())) == len(rows)  # no two (rank, iteration) share a row
    for r in range(8):
        for i in range(49):
            # the iteration fields and the packed field change every iteration
            assert local_row(r, i)[2] != local_row(r, i + 1)[2]
            assert local_row(r, i)[4] != local_row(r, i + 1)[4]


@pytest.mark.parametrize("shape", SHAPES)
def test_count_wrong_catches_a_corrupted_element(shape):
    s = GatherShape.parse(shape)
    want = expected_buffer(s, 5)
    for d in range(s.dp_rows):
        for t in range(s.attn_tp_size):
            for f in range(5):
                got = expected_buffer(s, 5)
                got[d][t][f] += 1
                assert count_wrong(got, want) == 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("iteration", [1, 6, 7, 100])
def test_count_wrong_catches_a_stale_buffer(shape, iteration):
    """A buffer left over from the previous pass: every row must show up as wrong."""
    s = GatherShape.parse(shape)
    want = expected_buffer(s, iteration)
    stale = expected_buffer(s, iteration - 1)
    assert count_wrong(stale, want) >= s.world_size
    # one stale row among fresh ones is caught too
    for d in range(s.dp_rows):
        for t in range(s.attn_tp_size):
            got = expected_buffer(s, iteration)
            got[d][t] = list(stale[d][t])
            assert count_wrong(got, want) >= 1


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "1x1"])
def test_count_wrong_catches_a_misplaced_row(shape):
    s = GatherShape.parse(shape)
    want = expected_buffer(s, 9)
    flat = [(d, t) for d in range(s.dp_rows) for t in range(s.attn_tp_size)]
    a, b = flat[0], flat[-1]
    got = expected_buffer(s, 9)
    got[a[0]][a[1]], got[b[0]][b[1]] = got[b[0]][b[1]], got[a[0]][a[1]]
    assert count_wrong(got, want) >= 2


def test_count_wrong_counts_a_wrong_size_as_all_wrong():
    s = GatherShape.parse("2x1")
    want = expected_buffer(s, 3)
    assert count_wrong(want[:1], want) == 10
    assert count_wrong(want + want, want) == 20
    assert count_wrong([], want) == 10


# ---- build_result -------------------------------------------------------------------------
def _records(iters=25, ranks=2, **kw):
    return [
        make_record(
            [100_000 + 7_000 * ((i * (r + 3)) % 11) for i in range(iters)],
            stall_ns=[1_000 * ((i + r) % 4) for i in range(iters)],
            start_ns=[2_000_000 * i + 1_000 * r * (i % 3) for i in range(iters)],
            **kw,
        )
        for r in range(ranks)
    ]


@pytest.mark.parametrize("cadence", CADENCES)
def test_build_result_is_valid_and_reduces_with_the_max(cadence):
    case = Case("gloo_cpu", "2x1", cadence=cadence, iters=25, warmup=5)
    period = 2_000_000 if cadence == "isolated" else None
    records = _records(period_ns=period)
    result = build_result(case, records, "test-box", 1_700_000_000.0, None)
    assert results.validate_case_result(result, "built") is result
    json.dumps(result, allow_nan=False)  # what atomic_write_json needs
    assert result["case_id"] == case.case_id
    assert result["world_size"] == 2
    assert result["machine_kind"] == "test-box"
    assert Case.from_dict(result["case"]) == case
    pass_us = [[v * 1e-3 for v in r.pass_ns] for r in records]
    assert result["raw"]["pass_us"] == pass_us
    want = summarize(reduce_max(pass_us))
    for key, value in want.items():
        assert result["stats"]["pass_us"][key] == pytest.approx(value)
    assert result["stats"]["pass_us"]["n"] == 25
    assert len(result["per_rank"]["pass_us"]) == 2
    assert sum(result["per_rank"]["slowest_rank_counts"]) == 25
    assert result["check"]["wrong_elements"] == 0
    assert result["check"]["wrong_decisions"] == 0
    assert result["stats"]["start_skew_us"]["min"] >= 0
    detail = result["cadence_detail"]
    if cadence == "isolated":
        assert detail["alignment"] != "none"
        assert detail["period_us"] == pytest.approx(2_000.0)
    else:
        assert detail["alignment"] == "none"
        assert detail["period_us"] is None


def test_build_result_sums_check_failures_over_ranks():
    case = Case("gloo_cpu", "2x1", cadence="streaming", iters=10, warmup=0)
    records = _records(iters=10)
    records[0].wrong_elements = 3
    records[1].wrong_elements = 4
    records[1].wrong_decisions = 1
    result = build_result(case, records, "test-box", 1_700_000_000.0, None)
    assert result["check"]["wrong_elements"] == 7
    assert result["check"]["wrong_decisions"] == 1
    results.validate_case_result(result, "built")  # a failed check is still a valid record


def test_build_result_raw_loop_on_streaming_cases():
    case = Case("gloo_cpu", "1x2", cadence="streaming", iters=40, warmup=5)
    records = _records(iters=40, raw_block_median_ns=90_000.0)
    result = build_result(case, records, "test-box", 1_700_000_000.0, None)
    raw = result["raw_loop"]
    for key in ("mean_us", "harness_mean_us", "overhead", "within_limit"):
        assert key in raw
    assert raw["mean_us"] == pytest.approx(90.0)
    assert raw["overhead"] == pytest.approx((raw["harness_mean_us"] - 90.0) / 90.0)
    assert raw["within_limit"] == (raw["overhead"] <= 0.05)
    results.validate_case_result(result, "built")


def test_build_result_rejects_ragged_ranks():
    case = Case("gloo_cpu", "2x1", iters=10, warmup=0)
    records = [make_record([1000] * 10), make_record([1000] * 9)]
    with pytest.raises(ValueError):
        build_result(case, records, "test-box", 1_700_000_000.0, None)


def test_make_case_result_helper_is_valid():
    results.validate_case_result(make_case_result(), "helper")


# ---- forward calibration ----------------------------------------------------------------------
def test_pick_size_closest_on_log_scale():
    timings = {512: 0.1, 1024: 0.8, 2048: 6.0, 4096: 48.0}
    assert pick_size(timings, 1.0) == 1024
    assert pick_size(timings, 0.15) == 512
    assert pick_size(timings, 5.0) == 2048
    assert pick_size(timings, 1000.0) == 4096
    # log scale: 0.3 is ~1.1 (log) from 0.1 but ~0.98 from 0.8 -> 1024
    assert pick_size(timings, 0.3) == 1024


def test_pick_size_rejects_bad_input():
    with pytest.raises(ValueError):
        pick_size({}, 1.0)
    with pytest.raises(ValueError):
        pick_size({512: 0.1}, 0.0)
    with pytest.raises(ValueError):
        pick_size({512: 0.1}, -1.0)


def test_agree_takes_leader_size_and_slowest_time():
    cal = agree(2048, [0.9, 1.25, 1.0])
    assert cal == Calibration(2048, 1.25)
    assert cal.kernels_for(5.0) == 4
    assert cal.kernels_for(0.01) == 1  # at least one kernel
    assert cal.kernels_for(20.0) == 16


@pytest.mark.parametrize("timings", [[], [0.0, 1.0], [1.0, -0.5]])
def test_agree_rejects_bad_timings(timings):
    with pytest.raises(ValueError):
        agree(1024, timings)


def test_every_rank_agrees_on_one_calibration():
    per_rank = [[1.1, 0.95], [1.0, 1.2], [0.7]]
    cals = {agree(4096, [t for ts in per_rank for t in ts]) for _ in range(3)}
    assert cals == {Calibration(4096, 1.2)}


# ---- pytest-benchmark bridge ----------------------------------------------------------------
def test_virtual_clock_advances_by_samples():
    clock = VirtualClock([1e-6, 2.5e-6, 4e-6])
    assert clock() == 0.0
    t = [clock()]
    for _ in range(3):
        clock.advance()
        t.append(clock())
    assert [b - a for a, b in zip(t, t[1:], strict=False)] == pytest.approx([1e-6, 2.5e-6, 4e-6])
    with pytest.raises(StopIteration):
        clock.advance()


class _FakeBenchmark:
    """What feed() uses of pytest-benchmark's fixture: _timer, extra_info, pedantic."""

    def __init__(self):
        self.extra_info = {}
        self._timer = None
        self.durations = []

    def pedantic(self, target, rounds, iterations=1, warmup_rounds=0):
        assert iterations == 1 and warmup_rounds == 0
        for _ in range(rounds):
            t0 = self._timer()
            target()
            self.durations.append(self._timer() - t0)


def test_feed_hands_per_iteration_max_to_pytest_benchmark():
    result = make_case_result(iters=30)
    bench = _FakeBenchmark()
    feed(bench, result)
    want_s = [v * 1e-6 for v in reduce_max(result["raw"]["pass_us"])]
    assert bench.durations == pytest.approx(want_s, rel=1e-9, abs=1e-15)
    assert set(bench.extra_info) <= set(EXTRA_KEYS)
    for key in ("stats", "per_rank", "raw", "cadence_detail", "case_id", "check"):
        assert bench.extra_info[key] == result[key]


# ---- cases and sweeps ---------------------------------------------------------------------
def _ids(cases):
    return [c.case_id for c in cases]


def test_cpu_preset_world_2():
    cases = Sweep(preset="cpu").cases(2, False)
    got = {(c.path, c.shape, c.cadence, c.forward_ms) for c in cases}
    assert got == {
        ("gloo_cpu", shape, cadence, 0.0) for shape in ("2x1", "1x2") for cadence in CADENCES
    }
    assert len(cases) == 4
    assert all(c.iters == 1000 and c.warmup == 100 and c.repeat == 0 for c in cases)
    assert len(set(_ids(cases))) == 4
    assert not any(c.needs_cuda for c in cases)


def test_auto_preset_follows_cuda():
    assert _ids(Sweep(preset="auto").cases(2, False)) == _ids(Sweep(preset="cpu").cases(2, False))
    assert _ids(Sweep(preset="auto").cases(2, True)) == _ids(Sweep(preset="gpu").cases(2, True))


def test_smoke_preset_is_short():
    cases = Sweep(preset="smoke").cases(2, False)
    assert len(cases) == 4
    assert all(c.iters <= 100 for c in cases)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_gpu_preset_has_forward_and_variant_cases(world):
    cases = Sweep(preset="gpu").cases(world, True)
    ids = _ids(cases)
    assert len(set(ids)) == len(ids), "case ids must be unique"
    assert {c.path for c in cases} == set(PATH_NAMES)
    assert {c.shape for c in cases} == set(default_shapes(world))
    fwd = [c for c in cases if c.forward_ms > 0]
    resolved = Sweep(preset="gpu").resolved(world, True)
    assert {c.forward_ms for c in fwd} == {m for m in resolved.forward_ms if m > 0} != set()
    assert all(c.shape == f"{world}x1" and c.cadence == "isolated" for c in fwd)
    # variants: behind a forward, NCCL paths only
    variants = [c for c in fwd if not c.barrier or c.granularity == "fine" or c.priority == "high"]
    assert variants and {c.path for c in variants} <= NCCL_PATHS
    assert any(not c.barrier for c in variants)
    assert any(c.granularity == "fine" for c in variants)
    assert any(c.priority == "high" and c.path == "nccl_side_stream" for c in variants)
    for c in cases:
        assert validate_case(c) is c


def test_repeat_doubles_the_sweep():
    one = Sweep(preset="cpu").cases(2, False)
    two = Sweep(preset="cpu", repeat=2).cases(2, False)
    assert len(two) == 2 * len(one)
    assert _ids(two)[: len(one)] == _ids(one)
    assert all(i.endswith("-r0") for i in _ids(two)[: len(one)])
    assert all(i.endswith("-r1") for i in _ids(two)[len(one) :])
    assert [c.group_key for c in two[: len(one)]] == [c.group_key for c in two[len(one) :]]
    assert len(set(_ids(two))) == len(two)


@pytest.mark.parametrize("repeat", [0, -1])
def test_repeat_must_be_positive(repeat):
    with pytest.raises(UsageError):
        Sweep(preset="cpu", repeat=repeat).cases(2, False)


def test_explicit_options_override_the_preset():
    cases = Sweep(preset="cpu", shapes=["2x1"], cadences=["streaming"], iters=7, warmup=2).cases(
        2, False
    )
    assert _ids(cases) == ["gloo_cpu-2x1-idle-streaming-r0"]
    assert cases[0].iters == 7 and cases[0].warmup == 2


def test_unknown_preset():
    with pytest.raises(UsageError, match="preset"):
        Sweep(preset="huge").cases(2, False)


def test_duplicate_case_refused():
    with pytest.raises(UsageError, match="twice"):
        Sweep(preset="cpu", shapes=["2x1", "2x1"]).cases(2, False)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(path="tcp"), "path"),
        (dict(shape="2y1"), "2y1"),
        (dict(shape="0x2"), "0x2"),
        (dict(cadence="bursty"), "cadence"),
        (dict(granularity="medium"), "granularity"),
        (dict(priority="urgent"), "priority"),
        (dict(iters=0), "iterations"),
        (dict(iters=-5), "iterations"),
        (dict(iters=1.5), "iterations"),
        (dict(warmup=-1), "warmup"),
        (dict(forward_ms=-1.0), "forward"),
        (dict(forward_ms=10_000.0), "forward"),
        (dict(forward_ms=math.nan), "forward"),
    ],
)
def test_validate_case_errors(bad, match):
    fields = dict(path="gloo_cpu", shape="2x1")
    fields.update(bad)
    with pytest.raises(UsageError, match=match) as err:
        validate_case(Case(**fields))
    assert "\n" not in str(err.value)


def test_case_from_dict_refuses_unknown_fields():
    d = Case("gloo_cpu", "2x1").to_dict()
    assert Case.from_dict(dict(d)) == Case("gloo_cpu", "2x1")
    with pytest.raises(UsageError, match="unknown"):
        Case.from_dict({**d, "colour": "red"})


def test_negative_forward_duration_in_a_sweep_is_refused():
    with pytest.raises(UsageError, match="forward"):
        Sweep(preset="cpu", forward_ms=[-1.0]).cases(2, False)


def test_check_environment():
    cpu = Sweep(preset="cpu").cases(2, False)
    check_environment(cpu, 2, 2, 0)
    with pytest.raises(UsageError, match="3 ranks"):
        check_environment(Sweep(preset="cpu", shapes=["3x1"]).cases(2, False), 2, 2, 0)
    with pytest.raises(UsageError, match="ranks"):
        check_environment(Sweep(preset="cpu", shapes=["2x2"]).cases(2, False), 2, 2, 0)
    nccl = Sweep(preset="cpu", paths=["nccl_device"]).cases(2, False)
    with pytest.raises(UsageError, match="CUDA"):
        check_environment(nccl, 2, 2, 0)
    with pytest.raises(UsageError, match="one GPU per rank"):
        check_environment(nccl, 2, 2, 1)
    check_environment(nccl, 2, 2, 2)
    check_environment(nccl, 2, 1, 1)  # one rank per node on two nodes
    fwd = Sweep(preset="cpu", forward_ms=[5.0]).cases(2, False)
    with pytest.raises(UsageError, match="CUDA"):
        check_environment(fwd, 2, 2, 0)


def test_sweep_fingerprint_stable():
    a = Sweep(preset="gpu").cases(2, True)
    b = Sweep(preset="gpu").cases(2, True)
    assert sweep_fingerprint(a) == sweep_fingerprint(b)
    assert len(sweep_fingerprint(a)) == 16
    assert sweep_fingerprint(a) != sweep_fingerprint(a[::-1])
    assert sweep_fingerprint(a) != sweep_fingerprint(Sweep(preset="gpu", iters=999).cases(2, True))
    assert sweep_fingerprint(a) != sweep_fingerprint(a[:-1])


def test_sweep_fingerprint_same_in_another_process():
    """Ranks are separate processes (hash seeds differ): the fingerprint must not care."""
    code = (
        "from dpsync_bench.cases import Sweep, sweep_fingerprint;"
        "print(sweep_fingerprint(Sweep(preset='gpu').cases(2, True)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sweep_fingerprint(Sweep(preset="gpu").cases(2, True))


def test_parse_list():
    assert parse_list(None) == []
    assert parse_list("  ") == []
    assert parse_list("a, b ,c") == ["a", "b", "c"]
    assert parse_list("0,1.5", float) == [0.0, 1.5]
    with pytest.raises(UsageError, match="x"):
        parse_list("1,x", float)


# ---- results module ----------------------------------------------------------------------
def test_atomic_write_json_roundtrip(tmp_path):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"x": [1, 2.5, "y"]})
    assert json.loads(path.read_text()) == {"x": [1, 2.5, "y"]}
    results.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize(
    "bad",
    [{"x": object()}, {"x": math.nan}, {"x": math.inf}, {1j: 2}],
    ids=["object", "nan", "inf", "complex-key"],
)
def test_atomic_write_json_failure_leaves_old_file_and_no_temp(tmp_path, bad):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"old": True})
    with pytest.raises((TypeError, ValueError)):
        results.atomic_write_json(path, bad)
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_json_crash_mid_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"old": True})

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        results.atomic_write_json(path, {"new": True})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_json_to_missing_directory(tmp_path):
    with pytest.raises(OSError):
        results.atomic_write_json(tmp_path / "nope" / "a.json", {})
    assert list(tmp_path.iterdir()) == []


def _write_run(tmp_path: Path, kind="test-box", cases=()):
    run = results.create_run_dir(tmp_path, kind)
    results.atomic_write_json(
        run / "run.json", {"schema": results.RUN_SCHEMA, "machine_kind": kind, "status": "x"}
    )
    for c in cases:
        results.write_case(run, c)
    return run


def test_write_and_load_case(tmp_path):
    run = _write_run(tmp_path)
    result = make_case_result()
    path = results.write_case(run, result)
    assert path == run / "cases" / f"{result['case_id']}.json"
    assert results.load_case(path) == json.loads(json.dumps(result))
    assert results.finished_case_ids(run) == {result["case_id"]}


def test_write_case_refuses_an_invalid_result(tmp_path):
    run = _write_run(tmp_path)
    bad = make_case_result()
    del bad["stats"]
    with pytest.raises(results.ResultsError):
        results.write_case(run, bad)
    assert list((run / "cases").iterdir()) == []


def test_load_run_and_machine_mismatch(tmp_path):
    good = make_case_result(machine_kind="test-box")
    run = _write_run(tmp_path, "test-box", [good])
    loaded = results.load_run(run)
    assert set(loaded["cases"]) == {good["case_id"]}
    assert loaded["meta"]["machine_kind"] == "test-box"
    other = make_case_result(
        case=Case("gloo_cpu", "1x2", cadence="streaming", iters=20), machine_kind="other-box"
    )
    results.atomic_write_json(results.case_path(run, other["case_id"]), other)
    with pytest.raises(results.ResultsError, match="other-box"):
        results.load_run(run)


@pytest.mark.parametrize(
    "meta",
    [
        None,
        [],
        {"schema": "someone-else/run/1", "machine_kind": "test-box"},
        {"machine_kind": "test-box"},
        {"schema": results.RUN_SCHEMA},
        {"schema": results.RUN_SCHEMA, "machine_kind": 3},
    ],
)
def test_load_run_rejects_foreign_run_json(tmp_path, meta):
    run = results.create_run_dir(tmp_path, "test-box")
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(results.ResultsError):
        results.load_run(run)


def test_load_run_rejects_missing_and_not_a_dir(tmp_path):
    with pytest.raises(results.ResultsError):
        results.load_run(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("{}")
    with pytest.raises(results.ResultsError):
        results.load_run(f)
    run = results.create_run_dir(tmp_path, "test-box")
    with pytest.raises(results.ResultsError, match="no such file"):
        results.load_run(run)


def test_finished_case_ids_skips_bad_files_and_temps(tmp_path):
    good = make_case_result()
    run = _write_run(tmp_path, cases=[good])
    (run / "cases" / "broken.json").write_text('{"schema": "dpsync-bench/case/1", "ca')
    (run / "cases" / f".{good['case_id']}.json.abc.tmp").write_text("{")
    assert results.finished_case_ids(run) == {good["case_id"]}


@pytest.mark.parametrize("kind", ["", "a/b", "../x", "a b", "x\n"])
def test_create_run_dir_refuses_unsafe_machine_kind(tmp_path, kind):
    with pytest.raises(results.ResultsError):
        results.create_run_dir(tmp_path, kind)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x\n"])
def test_case_path_refuses_unsafe_ids(tmp_path, bad):
    with pytest.raises(results.ResultsError):
        results.case_path(tmp_path, bad)


def test_update_index_rebuilds_a_corrupt_index(tmp_path):
    run = _write_run(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    meta = {"machine_kind": "test-box", "started_utc": "20260101T000000Z", "status": "complete"}
    results.update_index(tmp_path, run, meta, 4)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["schema"] == results.INDEX_SCHEMA
    assert [r["dir"] for r in index["runs"]] == [run.name]
    results.update_index(tmp_path, run, {**meta, "status": "incomplete"}, 3)
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["runs"]) == 1 and index["runs"][0]["cases"] == 3
