"""Made-up but schema-2 results for the reporting tests, and the real example runs.

Samples follow the physics of the paths: a pass is row + collective + stall + decide; behind
a forward a path that queues on the forward's stream stalls for what is left of it and pays
the rest of its pass after it (exposed), a path on its own stream stalls a little, a host
path not at all. `scale` multiplies every sample (p50 moves by exactly that factor); the
same seed gives the same samples. Summaries are built with dpsync_bench.stats, the way a
run builds them, and written with results.write_case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from matplotlib.image import imread

from delayer_core.paths import PATHS
from dpsync_bench import results, stats
from dpsync_bench.cases import Case, validate_case
from dpsync_bench.report.runs import SUMMARY_OF
from dpsync_bench.results import PARTS

KIND = "synth-h200-x2"
T0 = 1_790_000_000.0  # a fixed UTC instant: run names and order are reproducible
DAY = 86_400.0
BASE_US = {"gloo_cpu": 160.0, "nccl_device": 180.0, "shm_cpu": 6.0, "hierarchical": 40.0}
QUEUES_ON_FORWARD = {"nccl_device", "nccl_device_one_copy", "gloo_cuda"}
EXAMPLES = Path(os.environ.get("DPSYNC_EXAMPLES", Path(__file__).parent / "data"))
EXAMPLE_RUNS = {"x1": "smoke-x1_20261130T065359Z", "x2": "smoke-x2_20261130T065455Z"}


class Measured(NamedTuple):
    summary: dict
    samples: dict[str, np.ndarray]


def machine(gpus: int = 2, **versions) -> dict:
    v = {"torch": "2.11.0+cu130", "cuda": "13.0", "nccl": "2.28.9", "driver": "580.159.04"}
    v.update(versions)
    return {
        "cpu": "Synthetic CPU",
        "cpu_count": 16,
        "versions": v,
        "gpus": [{"index": i, "name": "NVIDIA H200"} for i in range(gpus)],
    }


def _samples(case: Case, ranks: int, scale: float, rng: np.random.Generator) -> dict:
    """Per-rank, per-pass figures in ns: the parts add up to the pass exactly."""
    n = case.iters
    base = BASE_US.get(case.path, 150.0) * scale * 1e3
    slower = 1 + 0.05 * np.arange(ranks)[:, None]  # higher ranks a little slower
    noise = rng.lognormal(0.0, 0.15, (ranks, n)) * slower
    row, collective, decide = 0.05 * base * noise, 0.6 * base * noise, 0.2 * base * noise
    stall = 0.15 * base * noise if PATHS[case.path].cuda else np.zeros((ranks, n))
    out = {}
    if case.forward_ms:
        forward = case.forward_ms * 1e6 * rng.uniform(0.99, 1.01, (ranks, n))
        remaining = np.repeat(rng.uniform(0.05, 0.95, (1, n)), ranks, 0) * forward
        if case.path in QUEUES_ON_FORWARD and case.barrier:
            stall = remaining + stall  # waits for the forward, then pays the rest after it
            out["exposed"] = collective + decide
        else:  # its own stream, or the host: at most a little of the forward
            stall = np.minimum(remaining, 0.1 * forward) if PATHS[case.path].cuda else stall
            out["exposed"] = np.zeros((ranks, n))
        out.update(forward=forward, remaining=remaining, phase=forward - remaining)
    period = 0 if case.cadence == "streaming" else 2_000_000 + case.forward_ms * 1e6
    start = np.arange(n) * period + rng.uniform(0, 20_000, (ranks, n))
    out.update(row=row, collective=collective, stall=stall, decide=decide)
    out.update(start=start, arrive=start + row + 0.5 * collective)
    if case.cadence == "isolated":
        out["idle_gap"] = rng.uniform(500_000, 1_500_000, (ranks, n))
    if PATHS[case.path].cuda:
        out["device"] = rng.uniform(5_500, 6_000, (ranks, 10))
    out = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
    out["pass"] = sum(out[part] for part in PARTS)  # after rounding: they add up exactly
    return out


def case_result(
    path: str = "gloo_cpu",
    shape: str = "2x1",
    forward_ms: float = 0.0,
    cadence: str = "isolated",
    *,
    scale: float = 1.0,
    iters: int = 200,
    seed: int = 0,
    machine_kind: str = KIND,
    failures: tuple[str, ...] = (),
    **variant,
) -> Measured:
    case = validate_case(Case(path, shape, forward_ms, cadence, iters=iters, warmup=0, **variant))
    ranks = math.prod(int(x) for x in shape.split("x"))
    rng = np.random.default_rng(zlib.crc32(f"{seed}/{case.case_id}".encode()))
    samples = _samples(case, ranks, scale, rng)
    figures = {
        name: stats.summarize(stats.per_pass(samples[f], how), 1e-3)
        for f, (how, name) in SUMMARY_OF.items()
        if f in samples
    }
    summary = {
        "schema": results.CASE_SCHEMA,
        "case_id": case.case_id,
        "group_key": case.group_key,
        "case": case.to_dict(),
        "machine_kind": machine_kind,
        "world_size": ranks,
        "stats": figures,
        "per_rank": {
            "pass_us": [stats.summarize(r, 1e-3) for r in samples["pass"]],
            "slowest_pass_counts": stats.argmax_counts(samples["pass"]),
            "last_arrival_counts": stats.argmax_counts(samples["arrive"]),
        },
        "cadence_detail": {
            "cadence": cadence,
            "late_fraction": 0.0 if cadence == "isolated" else None,
        },
        "path_state": {},
        "check": {
            "wrong_elements": 0,
            "wrong_reads": 0,
            "wrong_decisions": 0,
            "passes_checked": iters,
            "failures": list(failures),
        },
    }
    if forward_ms:
        figures["forward_ms"] = stats.summarize(samples["forward"], 1e-6)
        summary["forward"] = {"requested_ms": forward_ms, "measured_ms": figures["forward_ms"]}
    if "device" in samples:
        figures["device_us"] = stats.summarize(samples["device"].max(axis=0), 1e-3)
    if cadence == "streaming":
        mean = figures["pass_us"]["mean"]
        summary["raw_loop"] = {
            "mean_us": mean / 1.02,
            "harness_mean_us": mean,
            "overhead": 0.02,
            "within_limit": True,
        }
    return Measured(summary, samples)


def sweep(
    paths=("gloo_cpu", "nccl_device", "nccl_side_stream"),
    shapes=("2x1", "1x2"),
    forward_ms=(5.0,),
    variants: bool = True,
    **kw,
) -> list[Measured]:
    """Like the gpu preset: idle cases per shape and cadence, forwards (isolated and busy)
    at the first shape, a no-barrier variant behind the first forward for NCCL paths."""
    out = []
    for path in paths:
        for shape in shapes:
            out += [
                case_result(path, shape, 0.0, cadence, **kw)
                for cadence in ("isolated", "streaming")
            ]
        for ms in forward_ms:
            out += [
                case_result(path, shapes[0], ms, cadence, **kw) for cadence in ("isolated", "busy")
            ]
        if variants and forward_ms and PATHS[path].group == "nccl":
            out.append(case_result(path, shapes[0], forward_ms[0], barrier=False, **kw))
    return out


def write_run(
    root: Path,
    measured: list[Measured],
    started: float = T0,
    machine_kind: str = KIND,
    meta_machine: dict | None = None,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
) -> Path:
    """A run directory as a real run leaves it: run.json, cases/, samples/."""
    stamp = results.utc_stamp(started)
    run_dir = Path(root) / f"{machine_kind}_{stamp}"
    (run_dir / "cases").mkdir(parents=True)
    worlds = sorted({m.summary["world_size"] for m in measured})
    meta = {
        "schema": results.RUN_SCHEMA,
        "machine_kind": machine_kind,
        "started_utc": stamp,
        "status": "complete",
        "command": "synthetic",
        "code": {"commit": commit, "dirty": False},
        "jobs": [{"world_size": w} for w in worlds],
        "machine": meta_machine or machine(),
    }
    results.atomic_write_json(run_dir / "run.json", meta)
    for m in measured:
        results.write_case(run_dir, {**m.summary, "machine_kind": machine_kind}, m.samples)
    return run_dir


def write_history(
    root: Path, runs: int, last_scale: float = 1.0, machine_kind: str = KIND, **kw
) -> list[Path]:
    """`runs` nightly runs, the same samples each night but the last scaled by `last_scale`."""
    dirs = []
    for i in range(runs):
        scale = last_scale if i == runs - 1 else 1.0
        started = T0 + i * DAY
        cases = sweep(scale=scale, machine_kind=machine_kind, **kw)
        dirs.append(write_run(root, cases, started, machine_kind))
    return dirs


def example_run(name: str, dest: Path) -> Path:
    """A copy of a real schema-2 run (`x1`: 1 rank, `x2`: 2 ranks) under dest; the test is
    skipped where the examples are not on this machine (DPSYNC_EXAMPLES names them)."""
    source = EXAMPLES / EXAMPLE_RUNS[name]
    if not (source / "run.json").is_file():
        pytest.skip(f"example run {source} not here")
    return Path(shutil.copytree(source, Path(dest) / source.name))


# ---- checks shared by the tests ------------------------------------------------------
def run_command(add_args, cmd, *argv) -> str:
    """A command's stdout, parsed with its own add_*_args; it must return 0."""
    parser = argparse.ArgumentParser()
    add_args(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cmd(parser.parse_args([str(a) for a in argv])) == 0
    return out.getvalue()


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path}: not a PNG"
    assert len(data) > min_bytes, f"{path}: only {len(data)} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.var(pixels[..., :3])) > 1e-4, f"{path}: a flat image"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_gab(data) -> None:
    """customSmallerIsBetter: a list of {name, unit, value, range?, extra?}."""
    assert isinstance(data, list) and data
    for entry in data:
        assert isinstance(entry, dict)
        assert set(entry) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(entry["name"], str) and entry["name"]
        assert isinstance(entry["unit"], str) and entry["unit"]
        assert _number(entry["value"])
        for optional in ("range", "extra"):
            assert isinstance(entry.get(optional, ""), str)
    names = [e["name"] for e in data]
    assert len(set(names)) == len(names), "names identify series: they must be unique"


def validate_bmf(data) -> None:
    """BMF: {benchmark: {measure: {value, lower_value?, upper_value?}}}, all numbers."""
    assert isinstance(data, dict) and data
    for benchmark, measures in data.items():
        assert isinstance(benchmark, str) and 0 < len(benchmark) <= 1024
        assert isinstance(measures, dict) and measures
        for slug, metric in measures.items():
            assert isinstance(slug, str) and 0 < len(slug) <= 64
            assert isinstance(metric, dict) and "value" in metric
            assert set(metric) <= {"value", "lower_value", "upper_value"}
            assert all(_number(v) for v in metric.values())
            assert metric["lower_value"] <= metric["value"] <= metric["upper_value"]
