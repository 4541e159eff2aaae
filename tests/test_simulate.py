"""The delayer simulation: PR #23588's structure and size, determinism, sensitivity, inputs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import synthetic

from dpsync_bench.report import scenarios as sc
from dpsync_bench.report import simulate as sim
from dpsync_bench.report import simulate_cli as cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The 1-rank example run (every path, a 5 ms forward), copied: reading never writes."""
    return synthetic.example_run("x1", tmp_path_factory.mktemp("run"))


FREE = sc.SyncModel.constant("free", 0.0)
CONFIG = sim.EngineConfig()


def run_cli(*argv: str) -> str:
    return synthetic.run_command(cli.add_simulate_args, cli.cmd_simulate, *argv)


@pytest.fixture(scope="module")
def gloo(run):
    return sc.load_sync_model(run, "gloo_cpu", 1)


def test_pr23588_two_prefill_rounds_become_one(gloo):
    c = sim.compare(sc.pr23588(1.0), gloo, CONFIG)
    assert [f[2] for f in c.off.forwards] == [(8192, 0, 0, 0), (0, 8192, 8192, 8192)]
    assert [f[2] for f in c.on.forwards] == [(8192,) * 4]
    assert (c.off.prefill_rounds, c.on.prefill_rounds) == (2, 1)


@pytest.mark.parametrize(
    "path", ["gloo_cpu", "nccl_device", "nccl_device_one_copy", "nccl_side_stream", "gloo_cuda"]
)
def test_pr23588_gain_within_10_percent_of_35_percent(path, run):
    c = sim.compare(sc.pr23588(1.0), sc.load_sync_model(run, path, 1), CONFIG)
    assert 0.9 * 0.35 <= c.gain <= 1.1 * 0.35, f"{path}: gain {c.gain:.3f}"


def test_same_seed_same_numbers_and_the_seed_matters(run):
    nccl = sc.load_sync_model(run, "nccl_device", 1)
    scenario = sc.poisson(3.0, 24, 4, 2048, 4, seed=1)
    config = replace(CONFIG, disaggregated_prefill=False)

    def numbers(seed):
        r = sim.simulate(scenario, nccl, config, seed)
        return r.sync_lost_s, r.passes, [(o.ttft_s, o.e2e_s) for o in r.requests]

    assert numbers(7) == numbers(7)
    assert numbers(7)[0] != numbers(8)[0]


def test_delayer_off_never_delays_nor_syncs(gloo):
    c = sim.compare(sc.pr23588(1.0), gloo, CONFIG)
    assert c.off.delayed_passes == 0 and c.off.sync_lost_s == 0.0
    assert all(o.delayed_passes == 0 and o.delayed_s == 0 for o in c.off.requests)
    # On: the first arrival waits for the last, which is never delayed itself.
    first, *_, last = c.on.requests
    assert first.delayed_passes == c.on.delayed_passes > 0 and first.delayed_s > 0.9e-3
    assert last.delayed_passes == 0 and c.on.sync_lost_s > 0


def test_zero_spread_is_one_round_either_way():
    c = sim.compare(sc.pr23588(0.0), FREE, CONFIG)
    assert c.off.prefill_rounds == c.on.prefill_rounds == 1
    assert abs(c.gain) < 1e-6


def test_huge_sync_cost_reduces_the_gain():
    usual = sim.compare(sc.pr23588(1.0), sc.SyncModel.constant("100us", 100.0), CONFIG)
    huge = sim.compare(sc.pr23588(1.0), sc.SyncModel.constant("huge", 50_000.0), CONFIG)
    assert usual.on.prefill_rounds == huge.on.prefill_rounds == 1
    assert huge.on.sync_lost_s >= 0.05
    assert huge.gain < usual.gain - 0.02


def test_a_free_pass_leaves_no_time_to_wait():
    """The delay budget counts passes: at no cost per pass it never waits for late ranks."""
    c = sim.compare(sc.pr23588(1.0), FREE, CONFIG)
    assert c.on.delayed_passes == 2 * (CONFIG.max_delay_passes - 1)  # both rounds time out
    assert c.on.prefill_rounds == 2 and abs(c.gain) < 1e-6
    slow = sim.compare(sc.pr23588(1.0), FREE, replace(CONFIG, pass_overhead_us=100.0))
    assert slow.on.prefill_rounds == 1 and slow.on.sync_lost_s == 0.0


def test_arrivals_beyond_the_delay_window_lose_the_gain():
    """30 passes of 100 us wait about 3 ms for late ranks; 10 ms is too long, unless more
    passes are allowed."""
    sync = sc.SyncModel.constant("100us", 100.0)
    assert sim.compare(sc.pr23588(1.0), sync, CONFIG).gain > 0.3
    late = sim.compare(sc.pr23588(10.0), sync, CONFIG)
    assert late.on.prefill_rounds == 2 and abs(late.gain) < 0.01
    patient = sim.compare(sc.pr23588(10.0), sync, replace(CONFIG, max_delay_passes=200))
    assert patient.on.prefill_rounds == 1 and patient.gain > 0.3


def test_only_the_overlap_scheduler_exposes_a_device_path():
    hidden = sc.SyncModel.constant("host", 100.0, exposed_us=0.0)
    device = sc.SyncModel.constant("device", 100.0, exposed_us=5_000.0)
    scenario = sc.poisson(2.0, 16, 4, 1024, 8, seed=3)
    colocated = replace(CONFIG, disaggregated_prefill=False)
    for config, exposed_matters in ((colocated, True), (replace(colocated, overlap=False), False)):
        lost = [sim.simulate(scenario, s, config, 0).sync_lost_s for s in (hidden, device)]
        assert bool(lost[1] > lost[0] + 0.05) == exposed_matters, (config, lost)


def test_colocated_decode_runs_its_steps_on_the_ranks():
    one = sc.Scenario("one", (sc.Request(0.0, 0, 1000, 3),), sc.deepseek_v3_on_h100(), True)
    r = sim.simulate(one, FREE, replace(CONFIG, disaggregated_prefill=False))
    (o,) = r.requests
    assert o.e2e_s == pytest.approx(o.ttft_s + 2 * one.forward.decode_step_us * 1e-6)
    assert len(r.forwards) == 3 and r.prefill_rounds == 1


def test_forward_model_from_the_cited_figures():
    at_4k = sc.deepseek_v3_on_h100(4096)
    # 8 GPUs at 50,302 tokens/s with a 16,384-token batch per GPU; 58 x (77 + 114) us.
    assert at_4k.ep_fixed_us == 58 * 191
    tokens = [16_384] * 8
    assert at_4k.prefill_s(tokens) == pytest.approx(16_384 * 8 / 50_302)
    assert at_4k.decode_step_us == pytest.approx(256 / 22_282 * 8 * 1e6)
    at_8k = sc.deepseek_v3_on_h100(8192)
    assert at_8k.prefill_us_per_token > at_4k.prefill_us_per_token  # attention grows
    assert 0.4 < at_8k.expert_share < 0.5
    # EP spreads the experts' work: one rank's prefill is cheaper than four ranks'.
    assert at_8k.prefill_s([8192, 0, 0, 0]) < at_8k.prefill_s([8192] * 4)


def test_load_sync_model_reads_the_current_files(run):
    stats = json.loads((run / "cases" / "gloo_cpu-1x1-idle-streaming-r0.json").read_text())
    gloo = sc.load_sync_model(run, "gloo_cpu", 1)
    assert np.median(gloo.idle_pass_us) == pytest.approx(stats["stats"]["pass_us"]["p50"])
    assert not gloo.exposed_us.any()  # gloo never waits for the forward
    nccl = sc.load_sync_model(run, "nccl_device", 1)
    # The measured exposed time of the passing (busy) 5 ms forward case, per pass.
    busy = json.loads(
        (run / "cases" / "nccl_device-1x1-fwd5ms-busy-barrier-coarse-r0.json").read_text()
    )
    assert np.median(nccl.exposed_us) == pytest.approx(busy["stats"]["exposed_us"]["p50"])
    assert 100 < np.median(nccl.exposed_us) < 1_000
    assert sc.measured_paths(run)["nccl_side_stream"] == [1]


def test_read_cases_takes_the_max_over_ranks_per_pass(tmp_path):
    two_ranks = synthetic.sweep(("nccl_device",), ("2x1",), forward_ms=(5.0,), variants=False)
    run_dir = synthetic.write_run(tmp_path, two_ranks)
    by_id = {f"{c.path}-{c.forward_ms:g}-{c.cadence}": c for c in sc.read_cases(run_dir)}
    raw = two_ranks[2].samples  # the 5 ms isolated case
    case = by_id["nccl_device-5-isolated"]
    assert np.array_equal(case.pass_us, raw["pass"].max(axis=0) * 1e-3)
    assert np.array_equal(case.exposed_us, raw["exposed"].max(axis=0) * 1e-3)
    assert not by_id["nccl_device-0-streaming"].exposed_us.any() and case.upstream_like


def test_load_sync_model_bad_input(run, tmp_path):
    with pytest.raises(ValueError, match="no passing hierarchical case"):
        sc.load_sync_model(run, "hierarchical", 1)
    with pytest.raises(ValueError, match="at 4 rank"):
        sc.load_sync_model(run, "gloo_cpu", 4)
    with pytest.raises(ValueError, match="not a run directory"):
        sc.load_sync_model(tmp_path / "missing", "gloo_cpu", 1)
    for samples in ([], [1.0, -2.0], [np.nan]):
        with pytest.raises(ValueError, match="finite samples"):
            sc.SyncModel("bad", np.array(samples), np.array([0.0]))


def test_trace_file(tmp_path):
    good = tmp_path / "trace.csv"
    good.write_text("arrival_ms,input_tokens,output_tokens,rank\n0,512,4,\n1.5,256,2,3\n2,64,1,\n")
    reqs = sc.trace(good, 4).requests
    assert [(r.arrival_s, r.rank) for r in reqs] == [(0.0, 0), (0.0015, 3), (0.002, 2)]
    assert sim.simulate(sc.trace(good, 4), FREE, CONFIG).prefill_rounds >= 1
    for body, message in (
        ("arrival_ms,input_tokens\n0,5\n", "trace.csv:2"),
        ("arrival_ms,input_tokens,output_tokens,rank\n0,5,1,9\n", "rank"),
        ("arrival_ms,input_tokens,output_tokens\n", "no requests"),
    ):
        good.write_text(body)
        with pytest.raises(ValueError, match=message):
            sc.trace(good, 4)


def test_cli_without_a_run_uses_upstreams_gloo_figure():
    out = run_cli("--scenario", "pr23588")
    assert "sync gloo_cpu (synthetic 160 us" in out and "gain: 35." in out


def test_cli_pr23588_prints_both_times_the_gain_and_plots(run, tmp_path):
    out = run_cli("--run", str(run), "--sweep", "--plots", str(tmp_path))
    line = next(x for x in out.splitlines() if "end to end (makespan" in x)
    off_s, on_s = (float(v) for v in line.split()[-2:])
    assert off_s > 1.5 * on_s
    assert "gain: 35." in out and "PR #23588: 3.023 s -> 1.957 s" in out
    for table in ("by sync path", "by max_delay_passes", "by arrival spread"):
        assert f"gain {table}" in out or f"gain % {table}" in out
    for png in ("simulate_timeline.png", "simulate_gain_vs_spread.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "trace"], "needs --trace"),
        (["--max-delay-passes", "0"], "max_delay_passes"),
        (["--arrival-spread-ms", "-1"], "spread"),
        (["--dp-size", "0"], "dp size"),
        (["--run", "/nonexistent/run"], "not a run directory"),
        (["--run", "{run}", "--path", "hierarchical"], "no passing idle case of hierarchical"),
        (["--path", "nccl_device"], "needs --run"),
        (["--scenario", "poisson", "--rate", "0"], "rate > 0"),
    ],
)
def test_cli_bad_input_raises_one_line(argv, message, run):
    with pytest.raises(ValueError, match=message) as info:
        run_cli(*(arg.format(run=run) for arg in argv))
    assert "\n" not in str(info.value)


def test_only_simulate_needs_simpy():
    """A GPU box without network has no SimPy: measuring still runs, simulate says why."""
    import subprocess
    import sys

    blocked = (
        "import sys, runpy; sys.modules['simpy'] = None; sys.argv[0] = 'dpsync_bench'; "
        "runpy.run_module('dpsync_bench', run_name='__main__')"
    )

    def cli_without_simpy(*args):
        cmd = [sys.executable, "-c", blocked, *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    check = cli_without_simpy("check", "--nproc", "2", "--paths", "shm_cpu")
    assert check.returncode == 0 and check.stdout.strip().endswith("cases"), check.stderr
    simulate = cli_without_simpy("simulate")
    assert simulate.returncode == 2 and simulate.stdout == ""
    assert simulate.stderr.count("\n") == 1 and "simulate needs SimPy" in simulate.stderr
