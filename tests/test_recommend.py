"""Path recommendations per deployment, from made-up summaries and from the committed run."""

from __future__ import annotations

import json
import shutil

import pytest
import synthetic

from dpsync_bench.report import recommend as rec


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return synthetic.example_run("x1", tmp_path_factory.mktemp("run"))


def case(path, forward_ms=0.0, p50=100.0, *, world=2, cadence="isolated", stall=0.0, **kw):
    summary = {
        "path": path,
        "world_size": world,
        "forward_ms": forward_ms,
        "cadence": cadence,
        "pass_us": {"p50": p50, "p99": 3 * p50},
        "stall_us": {"p50": stall},
        "check_ok": kw.pop("check_ok", True),
    }
    if "exposed" in kw:
        summary["exposed_us"] = {"p50": kw.pop("exposed")}
    return summary


def measured(path, idle_us, exposed_us, *, world=2):
    """An idle pass (isolated and back to back) and one behind a 20 ms forward."""
    return [
        case(path, 0.0, idle_us, world=world),
        case(path, 0.0, 0.8 * idle_us, world=world, cadence="streaming"),
        case(path, 20.0, 20_000.0 + exposed_us, world=world, exposed=exposed_us),
    ]


# gloo never waits for a forward; nccl_device waits for it; one copy reads back once.
CASES = (
    measured("gloo_cpu", 160.0, 0.0)
    + measured("nccl_device", 180.0, 150.0)
    + measured("nccl_device_one_copy", 70.0, 60.0)
)


def advice(cases=CASES, **deployment):
    return rec.recommend(cases, rec.Deployment(**{"dp_size": 2, **deployment}))


def test_overlap_on_keeps_upstreams_gloo():
    r = advice()
    assert r.path == r.upstream.path == "gloo_cpu" and r.saving_us == 0
    assert "already picks the cheapest" in "\n".join(r.lines())


def test_overlap_off_upstream_takes_nccl_and_one_copy_saves():
    r = advice(overlap=False)
    assert (r.upstream.path, r.path) == ("nccl_device", "nccl_device_one_copy")
    assert r.saving_us == pytest.approx(110.0)
    text = "\n".join(r.lines())
    assert "upstream picks nccl_device" in text and "saves 110.0 us" in text
    # A faster pass shortens the 29-delay window: 29 x 144 us needs 29 x 144 / 56 passes.
    assert "--prefill-delayer-max-delay-passes 76" in text


def test_env_flag_makes_upstream_take_nccl_behind_forwards():
    r = advice(nccl_in_overlap_env=True)
    assert r.upstream.path == "nccl_device" and r.upstream.exposed_us == 150.0
    assert r.path == "gloo_cpu" and r.saving_us == pytest.approx(150.0)


def test_decode_engine_builds_no_delayer():
    r = advice(disaggregation_mode="decode")
    assert r.path is None and r.best is None
    assert "decode engine builds no delayer" in r.lines()[-1]


def test_shared_memory_on_one_host_only():
    cases = CASES + measured("shm_cpu", 5.0, 0.0) + measured("hierarchical", 20.0, 0.0)
    one_host = advice(cases)
    assert one_host.path == "shm_cpu"
    assert "burns one core" in "\n".join(one_host.lines())
    two_hosts = advice(cases, hosts=2, dp_size=16)
    assert two_hosts.path == "hierarchical"
    assert "network round trip" in "\n".join(two_hosts.lines())


def test_anti_pattern_and_failed_cases_are_never_advised():
    cheap_but_wrong = measured("gloo_cuda", 1.0, 0.0)
    failed = [dict(c, check_ok=False) for c in measured("nccl_graph", 1.0, 0.0)]
    assert advice(CASES + cheap_but_wrong + failed).path == "gloo_cpu"


def test_paths_are_compared_at_one_world_size():
    """A 4-rank figure of one path must not be weighed against 2-rank figures of others."""
    lone = measured("nccl_device_one_copy", 1.0, 0.0, world=4)
    r = advice(CASES + lone, dp_size=4)
    assert r.best.world_size == 2 and r.path == "gloo_cpu"
    assert "measured at 2 rank(s), deployment has 4" in "\n".join(r.lines())


def test_the_forward_length_picks_the_nearest_measured_forward():
    short = case("nccl_device", 1.0, 1_100.0, stall=950.0, exposed=140.0)
    cost = rec.path_cost(CASES + [short], "nccl_device", rec.Deployment(2, forward_ms=(1.5,)), 2)
    assert (cost.exposed_us, cost.stall_us) == (140.0, 950.0)  # the 1 ms case, not the 20 ms
    cost = rec.path_cost(CASES + [short], "nccl_device", rec.Deployment(2, forward_ms=(15,)), 2)
    assert cost.exposed_us == 150.0


@pytest.mark.parametrize(
    "deployment, message",
    [
        ({"dp_size": 0}, ">= 1"),
        ({"forward_ms": (5.0, -1.0)}, "> 0 ms"),
        ({"disaggregation_mode": "both"}, "disaggregation mode"),
        ({"hosts": 0}, ">= 1"),
    ],
)
def test_bad_deployment_raises(deployment, message):
    with pytest.raises(ValueError, match=message):
        rec.Deployment(**{"dp_size": 2, **deployment})


def test_no_usable_case_raises():
    with pytest.raises(ValueError, match="no passing idle-GPU case"):
        advice([])
    with pytest.raises(ValueError, match="can use"):
        advice(measured("shm_cpu", 5.0, 0.0), hosts=2)


def test_summaries_read_the_current_files(run):
    summaries = rec.load_case_summaries(run)
    stats = json.loads(
        (run / "cases" / "nccl_device-1x1-fwd5ms-busy-barrier-coarse-r0.json").read_text()
    )["stats"]
    (busy,) = [s for s in summaries if s["path"] == "nccl_device" and s["cadence"] == "busy"]
    assert busy["pass_us"] == {q: stats["pass_us"][q] for q in ("p50", "p99")}
    assert busy["exposed_us"]["p50"] == stats["exposed_us"]["p50"] and busy["check_ok"]
    # The isolated 5 ms forward ran 4.59 ms: labelled wrong, so not used.
    (isolated,) = [
        s
        for s in summaries
        if s["path"] == "nccl_device" and s["forward_ms"] and s["cadence"] == "isolated"
    ]
    assert not isolated["check_ok"]
    # Variants (no barrier, fine kernels, high priority) are studies, not deployments.
    assert len([s for s in summaries if s["path"] == "nccl_device"]) == 4


def test_summaries_need_no_samples(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(copy / "samples")
    assert rec.load_case_summaries(copy) == rec.load_case_summaries(run)


def run_cli(*argv, run):
    return synthetic.run_command(rec.add_recommend_args, rec.cmd_recommend, run, *argv)


def test_cli_on_the_example_run(run):
    """One rank, one host: shared memory is the cheapest; it never waits for a forward, and
    with the overlap scheduler off it beats upstream's NCCL pass."""
    out = run_cli("--dp-size", "1", "--forward-ms", "5", run=run)
    assert "use shm_cpu" in out and "upstream picks gloo_cpu" in out
    out = run_cli("--dp-size", "1", "--disable-overlap-schedule", run=run)
    assert "upstream picks nccl_device" in out and "use shm_cpu" in out
    decode = run_cli("--dp-size", "4", "--disaggregation-mode", "decode", run=run)
    assert "builds no delayer" in decode


def test_cli_bad_input_raises_one_line(run):
    with pytest.raises(ValueError, match=">= 1"):
        run_cli("--dp-size", "0", run=run)
    with pytest.raises(ValueError, match="--forward-ms"):
        run_cli("--dp-size", "2", "--forward-ms", "5,abc", run=run)
    with pytest.raises(ValueError, match="not a run directory"):
        run_cli("--dp-size", "2", run="/nonexistent")
