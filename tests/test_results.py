"""The results on disk (dpsync_bench/results.py, schema 2), with real files in temp dirs:
atomic writes, run directories and their lock, case summaries with their samples, what
--resume counts as finished, one-line refusals of old, foreign and broken files; and a fuzz
of the loaders (ResultsError with one line, or a result that keeps validate_case's word)."""

from __future__ import annotations

import copy
import json
import math
import threading

import numpy as np
import pytest
from fault_helpers import make_case_result, run_dirs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dpsync_bench import results
from dpsync_bench.cases import Case, UsageError

SUMMARY, SAMPLES = make_case_result(iters=6)
STREAMING = make_case_result(Case("gloo_cpu", "1x2", cadence="streaming", iters=20), iters=20)


def _run(root, kind="test-box", cases=()):
    run = results.create_run_dir(root, kind)
    meta = {"schema": results.RUN_SCHEMA, "machine_kind": kind, "status": "x"}
    results.atomic_write_json(run / "run.json", meta)
    for summary, samples in cases:
        results.write_case(run, summary, samples)
    return run


# ---- atomic writes -------------------------------------------------------------------------
def test_atomic_write_json_roundtrip(tmp_path):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"x": [1, 2.5, "y"]})
    results.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, unlike mkstemp's


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": math.nan}, {"x": math.inf}, {1j: 2}])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, bad):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"old": True})
    with pytest.raises((TypeError, ValueError)):
        results.atomic_write_json(path, bad)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    results.atomic_write_json(path, {"old": True})

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        results.atomic_write_json(path, {"new": True})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# ---- run directories -----------------------------------------------------------------------
def test_create_run_dir_from_many_threads_never_hands_one_out_twice(tmp_path):
    got, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(8)

    def worker():
        start.wait()
        for _ in range(25):
            try:
                d = results.create_run_dir(tmp_path, "race-box")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            with lock:
                got.append(d)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len({p.resolve() for p in got}) == len(got) == 200
    assert all((p / "cases").is_dir() and (p / "samples").is_dir() for p in got)
    assert len(run_dirs(tmp_path)) == 200


@pytest.mark.parametrize("kind", ["", "a/b", "../x", "a b", "x\n"])
def test_create_run_dir_refuses_unsafe_machine_kind(tmp_path, kind):
    with pytest.raises(results.ResultsError):
        results.create_run_dir(tmp_path, kind)
    assert list(tmp_path.iterdir()) == []


def test_locked_refuses_a_second_holder_until_released(tmp_path):
    run = results.create_run_dir(tmp_path, "lock-box")
    with results.locked(run):
        for _ in range(2):
            with pytest.raises(results.ResultsError, match="in use"), results.locked(run):
                pass
    with results.locked(run):
        pass


# ---- cases and samples ---------------------------------------------------------------------
def test_write_case_then_load_it_and_its_samples(tmp_path):
    run = _run(tmp_path)
    path = results.write_case(run, SUMMARY, SAMPLES)
    assert path == run / "cases" / f"{SUMMARY['case_id']}.json"
    assert results.load_case(path) == json.loads(json.dumps(SUMMARY))
    back = results.load_samples(run, SUMMARY["case_id"])
    assert set(back) == set(SAMPLES)
    for name, arr in SAMPLES.items():
        assert back[name].dtype == np.int64 and (back[name] == arr).all()
    assert results.finished_case_ids(run) == {SUMMARY["case_id"]}
    assert set(results.load_run(run)["cases"]) == {SUMMARY["case_id"]}


def test_write_case_refuses_an_invalid_summary_and_writes_nothing(tmp_path):
    run = _run(tmp_path)
    bad = {k: v for k, v in SUMMARY.items() if k != "stats"}
    with pytest.raises(results.ResultsError):
        results.write_case(run, bad, SAMPLES)
    assert list((run / "cases").iterdir()) == list((run / "samples").iterdir()) == []


def test_finished_means_valid_passing_and_with_samples(tmp_path):
    failed = copy.deepcopy(STREAMING[0])
    failed["check"].update(wrong_elements=1, failures=["1 wrong elements"])
    run = _run(tmp_path, cases=[(SUMMARY, SAMPLES), (failed, STREAMING[1])])
    no_samples = _run(tmp_path / "b", cases=[(SUMMARY, SAMPLES)])
    results.samples_path(no_samples, SUMMARY["case_id"]).unlink()
    (run / "cases" / "broken.json").write_text('{"schema": "dpsync-bench/case/2", "ca')
    (run / "cases" / f".{SUMMARY['case_id']}.json.abc.tmp").write_text("{")
    assert results.finished_case_ids(run) == {SUMMARY["case_id"]}
    assert results.finished_case_ids(no_samples) == set()
    with pytest.raises(results.ResultsError, match="no raw samples"):
        results.load_samples(no_samples, SUMMARY["case_id"])


def test_load_run_refuses_a_case_from_another_machine(tmp_path):
    run = _run(tmp_path, "test-box", [(SUMMARY, SAMPLES)])
    other, _ = make_case_result(Case("gloo_cpu", "1x2", iters=6), iters=6, machine_kind="x-box")
    results.atomic_write_json(results.case_path(run, other["case_id"]), other)
    with pytest.raises(results.ResultsError, match="x-box"):
        results.load_run(run)


@pytest.mark.parametrize("schema", ["dpsync-bench/case/1", "dpsync-bench/run/1"])
def test_schema_1_files_are_refused_in_one_line(tmp_path, schema):
    run = _run(tmp_path)
    target = run / ("run.json" if "run" in schema else "cases/old.json")
    data = dict(SUMMARY) if "case" in schema else {"machine_kind": "test-box"}
    target.write_text(json.dumps({**data, "schema": schema}))
    with pytest.raises(results.ResultsError, match="before the measurement fixes") as err:
        results.load_run(run)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "meta",
    [None, [], {"schema": "someone/run/1", "machine_kind": "b"}, {"machine_kind": "b"},
     {"schema": results.RUN_SCHEMA}, {"schema": results.RUN_SCHEMA, "machine_kind": 3}],
)  # fmt: skip
def test_load_run_refuses_a_foreign_run_json(tmp_path, meta):
    run = results.create_run_dir(tmp_path, "test-box")
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(results.ResultsError):
        results.load_run(run)


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(results.ResultsError):
        results.load_run(tmp_path / "nope")
    (tmp_path / "file").write_text("{}")
    with pytest.raises(results.ResultsError):
        results.load_run(tmp_path / "file")
    with pytest.raises(results.ResultsError, match="no such file"):
        results.load_run(results.create_run_dir(tmp_path, "test-box"))


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x\n"])
def test_case_path_refuses_unsafe_ids(tmp_path, bad):
    with pytest.raises(results.ResultsError):
        results.case_path(tmp_path, bad)


def test_list_runs_reads_the_directories_oldest_first(tmp_path):
    a, b = _run(tmp_path, "a-box"), _run(tmp_path, "b-box")
    for run, stamp in ((a, "20260102T000000Z"), (b, "20260101T000000Z")):
        meta = results.load_meta(run)
        results.atomic_write_json(run / "run.json", {**meta, "started_utc": stamp})
    (tmp_path / "junk").mkdir()
    assert [p for p, _ in results.list_runs(tmp_path)] == [b, a]


# ---- fuzz: the loaders ---------------------------------------------------------------------
def _paths(obj, prefix=()):
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj:
        for i in sorted({0, len(obj) - 1}):
            yield from _paths(obj[i], (*prefix, i))


PATHS = sorted(set(_paths(SUMMARY)) | set(_paths(STREAMING[0])), key=repr)
WRONG = [None, True, 0, -1, 2.5, "x", "", [], {}, {"a": 1}, math.nan, math.inf, [[math.nan]]]
edit = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), st.sampled_from(WRONG)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.9999)),
    st.tuples(st.just("flip"), st.floats(0.0, 0.9999), st.integers(1, 255)),
)


def _apply(base, edits) -> bytes:
    obj, text_ops = copy.deepcopy(base), []
    for e in edits:
        if e[0] in ("set", "delete"):
            parent = obj
            try:
                for step in e[1][:-1]:
                    parent = parent[step]
                if isinstance(parent, dict) and not isinstance(e[1][-1], str):
                    continue  # a list index into what an earlier edit made a dict
                if e[0] == "set":
                    parent[e[1][-1]] = copy.deepcopy(e[2])
                else:
                    del parent[e[1][-1]]
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit removed or replaced the path
        else:
            text_ops.append(e)
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    for e in text_ops:
        i = int(e[1] * len(data))
        if e[0] == "truncate":
            data = data[:i]
        elif data:
            data = data[:i] + bytes([data[i] ^ e[2]]) + data[i + 1 :]
    return data


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
COUNTS = ("wrong_elements", "wrong_reads", "wrong_decisions", "passes_checked")


@FUZZ
@given(base=st.sampled_from([SUMMARY, STREAMING[0]]), edits=st.lists(edit, max_size=3))
def test_fuzz_load_case_raises_one_line_or_keeps_its_promises(tmp_path_factory, base, edits):
    path = tmp_path_factory.getbasetemp() / "fuzz-case.json"
    path.write_bytes(_apply(base, edits))
    try:
        got = results.load_case(path)
    except results.ResultsError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert results.validate_case(got, "again") is got
    assert "pass_us" in got["stats"]
    for block in got["stats"].values():
        assert type(block["n"]) is int and block["n"] >= 1
        assert block["min"] <= block["p5"] <= block["p50"] <= block["p99"] <= block["max"]
        assert all(math.isfinite(v) for v in block.values())
    assert all(type(got["check"][k]) is int and got["check"][k] >= 0 for k in COUNTS)
    assert isinstance(got["check"]["failures"], list)


META = {
    "schema": results.RUN_SCHEMA,
    "machine_kind": "test-box",
    "status": "incomplete",
    "started_utc": "20260101T000000Z",
    "jobs": [{"cases_planned": [SUMMARY["case_id"]]}],
    "resumed_utc": ["20260101T000100Z"],
}
meta_edit = st.one_of(
    st.tuples(
        st.just("set"), st.sampled_from(sorted(_paths(META), key=repr)), st.sampled_from(WRONG)
    ),
    st.tuples(st.just("delete"), st.sampled_from(sorted(_paths(META), key=repr))),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.9999)),
    st.tuples(st.just("flip"), st.floats(0.0, 0.9999), st.integers(1, 255)),
)


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("fuzzrun"), cases=[(SUMMARY, SAMPLES)])


@FUZZ
@given(edits=st.lists(meta_edit, max_size=3))
def test_fuzz_run_json_either_loads_or_resume_refuses_it(fuzz_run, edits):
    from dpsync_bench.measure.runner import Options

    (fuzz_run / "run.json").write_bytes(_apply(META, edits))
    try:
        loaded = results.load_run(fuzz_run)
    except results.ResultsError as e:
        assert "\n" not in str(e)
        with pytest.raises(UsageError, match="--resume"):
            Options(resume=str(fuzz_run)).validate()
        return
    assert loaded["meta"]["schema"] == results.RUN_SCHEMA
    assert set(loaded["cases"]) == {SUMMARY["case_id"]}
    if not isinstance(loaded["meta"].get("jobs"), list):  # readable, but nothing to extend
        with pytest.raises(UsageError, match="no list of jobs"):
            Options(resume=str(fuzz_run)).validate()
        return
    Options(resume=str(fuzz_run)).validate()
