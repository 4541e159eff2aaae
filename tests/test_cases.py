"""Cases and sweeps (dpsync_bench/cases.py): what each preset runs where, ids, repeats,
validation with one-line errors, the environment check and the cross-rank fingerprint."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from fault_helpers import REPO

from delayer_core.paths import PATHS, path_names
from dpsync_bench.cases import (
    Case,
    Sweep,
    UsageError,
    check_environment,
    default_shapes,
    parse_list,
    sweep_fingerprint,
    validate_case,
)

HOST_PATHS = ("gloo_cpu", "shm_cpu", "hierarchical")


def _ids(cases):
    return [c.case_id for c in cases]


def test_cpu_preset_at_two_ranks_runs_the_host_paths_idle():
    cases = Sweep(preset="cpu").cases(2, 0, 2)
    got = {(c.path, c.shape, c.cadence, c.forward_ms) for c in cases}
    assert got == {
        (p, shape, cadence, 0.0)
        for p in HOST_PATHS
        for shape in ("2x1", "1x2")
        for cadence in ("isolated", "streaming")
    }
    assert all(c.iters == 500 and c.warmup == 100 and c.repeat == 0 for c in cases)
    assert len(set(_ids(cases))) == len(cases) == 12
    assert not any(c.needs_cuda for c in cases)


def test_hierarchical_needs_two_ranks():
    assert {c.path for c in Sweep(preset="cpu").cases(1, 0, 1)} == {"gloo_cpu", "shm_cpu"}


def test_auto_preset_follows_the_gpus():
    assert _ids(Sweep(preset="auto").cases(2, 0)) == _ids(Sweep(preset="cpu").cases(2, 0))
    assert _ids(Sweep(preset="auto").cases(2, 2)) == _ids(Sweep(preset="gpu").cases(2, 2))


def test_smoke_preset_is_short():
    cases = Sweep(preset="smoke").cases(2, 0)
    assert _ids(cases) == [
        f"gloo_cpu-{s}-idle-{c}-r0" for s in ("2x1", "1x2") for c in ("isolated", "streaming")
    ]
    assert all(c.iters <= 100 for c in cases)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_gpu_preset_has_forward_busy_and_variant_cases(world):
    cases = Sweep(preset="gpu").cases(world, world, world)
    ids = _ids(cases)
    assert len(set(ids)) == len(ids)
    want_paths = {p for p in PATHS if p != "hierarchical" or world > 1}
    assert {c.path for c in cases} == want_paths
    assert {c.shape for c in cases} == set(default_shapes(world))
    fwd = [c for c in cases if c.forward_ms > 0]
    assert {c.forward_ms for c in fwd} == {1.0, 5.0, 20.0}
    assert all(c.shape == f"{world}x1" and c.cadence in ("isolated", "busy") for c in fwd)
    assert not any(c.cadence == "busy" and not c.forward_ms for c in cases)
    variants = [
        c for c in fwd if not c.barrier or c.granularity == "fine" or c.priority != "default"
    ]
    assert {c.path for c in variants} == set(path_names(group="nccl"))
    assert {c.path for c in variants if c.priority == "high"} == {"nccl_side_stream", "nccl_graph"}
    for c in cases:
        assert validate_case(c) is c


def test_nccl_paths_need_a_gpu_per_rank():
    cases = Sweep(preset="gpu").cases(2, 1, 2)
    assert not {c.path for c in cases} & set(path_names(gpu_per_rank=True))
    assert "gloo_cuda" in {c.path for c in cases}


def test_repeat_doubles_the_sweep():
    one = Sweep(preset="cpu").cases(2, 0)
    two = Sweep(preset="cpu", repeat=2).cases(2, 0)
    assert len(two) == 2 * len(one)
    assert _ids(two)[: len(one)] == _ids(one)
    assert all(i.endswith("-r1") for i in _ids(two)[len(one) :])
    assert [c.group_key for c in two[: len(one)]] == [c.group_key for c in two[len(one) :]]


@pytest.mark.parametrize("repeat", [0, -1])
def test_repeat_must_be_positive(repeat):
    with pytest.raises(UsageError, match="repeat"):
        Sweep(preset="cpu", repeat=repeat).cases(2, 0)


def test_explicit_options_override_the_preset():
    sweep = Sweep(preset="cpu", paths=["shm_cpu"], shapes=["2x1"], cadences=["streaming"])
    cases = Sweep(**{**sweep.__dict__, "iters": 7, "warmup": 2}).cases(2, 0)
    assert _ids(cases) == ["shm_cpu-2x1-idle-streaming-r0"]
    assert (cases[0].iters, cases[0].warmup) == (7, 2)


@pytest.mark.parametrize(
    "sweep, match",
    [
        (dict(preset="huge"), "preset"),
        (dict(shapes=["2x1", "2x1"]), "twice"),
        (dict(forward_ms=[-1.0]), "forward"),
        (dict(cadences=["bursty"]), "bursty"),
    ],
)
def test_bad_sweeps_are_refused(sweep, match):
    with pytest.raises(UsageError, match=match):
        Sweep(**{"preset": "cpu", **sweep}).cases(2, 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(path="tcp"), "path"),
        (dict(shape="2y1"), "2y1"),
        (dict(shape="0x2"), "0x2"),
        (dict(cadence="bursty"), "cadence"),
        (dict(cadence="busy"), "busy"),
        (dict(cadence="streaming", forward_ms=5.0), "streaming"),
        (dict(granularity="medium"), "granularity"),
        (dict(priority="urgent"), "priority"),
        (dict(priority="high"), "priority"),  # gloo_cpu has no stream of its own
        (dict(phase="1.5"), "phase"),
        (dict(phase="late"), "phase"),
        (dict(iters=0), "iterations"),
        (dict(iters=1.5), "iterations"),
        (dict(warmup=-1), "warmup"),
        (dict(forward_ms=-1.0), "forward"),
        (dict(forward_ms=10_000.0), "forward"),
        (dict(forward_ms=math.nan), "forward"),
    ],
)
def test_validate_case_errors(bad, match):
    with pytest.raises(UsageError, match=match) as err:
        validate_case(Case(**{"path": "gloo_cpu", "shape": "2x1", **bad}))
    assert "\n" not in str(err.value)


def test_case_ids_name_what_differs():
    assert Case("nccl_graph", "2x1", 5.0, "busy", phase="0.5", priority="high").case_id == (
        "nccl_graph-2x1-fwd5ms-busy-barrier-coarse-phase0.5-prio-high-r0"
    )
    assert Case("shm_cpu", "1x2", repeat=3).group_key == "shm_cpu-1x2-idle-isolated"


def test_case_from_dict_refuses_unknown_fields():
    d = Case("gloo_cpu", "2x1").to_dict()
    assert Case.from_dict(dict(d)) == Case("gloo_cpu", "2x1")
    with pytest.raises(UsageError, match="unknown"):
        Case.from_dict({**d, "colour": "red"})


def test_check_environment():
    cpu = Sweep(preset="cpu").cases(2, 0)
    check_environment(cpu, 2, 2, 0)
    with pytest.raises(UsageError, match="3 ranks"):
        check_environment(Sweep(preset="cpu", shapes=["3x1"]).cases(2, 0), 2, 2, 0)
    nccl = Sweep(preset="cpu", paths=["nccl_device"]).cases(2, 0)
    with pytest.raises(UsageError, match="CUDA"):
        check_environment(nccl, 2, 2, 0)
    with pytest.raises(UsageError, match="one GPU per rank"):
        check_environment(nccl, 2, 2, 1)
    check_environment(nccl, 2, 2, 2)
    check_environment(nccl, 2, 1, 1)  # one rank per node on two nodes
    fwd = Sweep(preset="cpu", forward_ms=[5.0]).cases(2, 0)
    with pytest.raises(UsageError, match="CUDA"):
        check_environment(fwd, 2, 2, 0)


def test_sweep_fingerprint_stable_and_sensitive():
    a = Sweep(preset="gpu").cases(2, 2)
    assert sweep_fingerprint(a) == sweep_fingerprint(Sweep(preset="gpu").cases(2, 2))
    assert len(sweep_fingerprint(a)) == 16
    assert sweep_fingerprint(a) != sweep_fingerprint(a[::-1])
    assert sweep_fingerprint(a) != sweep_fingerprint(Sweep(preset="gpu", iters=999).cases(2, 2))
    assert sweep_fingerprint(a) != sweep_fingerprint(a[:-1])


def test_sweep_fingerprint_same_in_another_process():
    """Ranks are separate processes (hash seeds differ): the fingerprint must not care."""
    code = (
        "from dpsync_bench.cases import Sweep, sweep_fingerprint;"
        "print(sweep_fingerprint(Sweep(preset='gpu').cases(2, 2)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sweep_fingerprint(Sweep(preset="gpu").cases(2, 2))


def test_parse_list():
    assert parse_list(None) == [] and parse_list("  ") == []
    assert parse_list("a, b ,c") == ["a", "b", "c"]
    assert parse_list("0,1.5", float) == [0.0, 1.5]
    with pytest.raises(UsageError, match="x"):
        parse_list("1,x", float)
