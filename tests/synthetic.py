"""Made-up but schema-valid results for the reporting tests.

Case results come from the harness's own build_result fed with invented per-rank samples
(lognormal around a base latency; `scale` shifts every sample, so p50 moves by exactly
that factor; `tail` adds rare 8x outliers that move p99 but not the bulk). Run
directories are laid out as a real run writes them, index included.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from dpsync_bench import results
from dpsync_bench.cases import NCCL_PATHS, Case, validate_case
from dpsync_bench.harness import RankRecord, build_result

KIND = "synth-h200-x2"
T0 = 1_790_000_000.0  # a fixed UTC instant: run names and order are reproducible
DAY = 86_400.0
BASE_US = {"gloo_cpu": 160.0, "nccl_device": 180.0, "nccl_side_stream": 140.0}


def machine(gpus: int = 2, **versions) -> dict:
    v = {"torch": "2.11.0+cu130", "cuda": "13.0", "nccl": "2.28.9", "driver": "580.159.04"}
    v.update(versions)
    return {
        "cpu": "Synthetic CPU",
        "cpu_count": 16,
        "versions": v,
        "gpus": [{"index": i, "name": "NVIDIA H200"} for i in range(gpus)],
    }


def case_result(
    path: str = "gloo_cpu",
    shape: str = "2x1",
    forward_ms: float = 0.0,
    cadence: str = "isolated",
    *,
    scale: float = 1.0,
    noise: float = 0.15,
    tail: float = 0.0,
    iters: int = 200,
    seed: int = 0,
    machine_kind: str = KIND,
    started: float = T0,
    **variant,
) -> dict:
    case = validate_case(Case(path, shape, forward_ms, cadence, iters=iters, warmup=0, **variant))
    rng = random.Random(f"{seed}/{case.case_id}")
    ranks = int(np.prod([int(x) for x in shape.split("x")]))
    # Paths that queue behind the forward stall for most of it; the others don't.
    waits = path in NCCL_PATHS and path != "nccl_side_stream" and variant.get("barrier", True)
    stall_us = 0.9 * forward_ms * 1000 if waits else 0.0
    base = BASE_US.get(path, 150.0) * scale
    period = 0 if cadence == "streaming" else 2_000_000
    records = []
    for r in range(ranks):
        pass_ns, stall_ns = [], []
        for _ in range(iters):
            stall = stall_us * rng.uniform(0.97, 1.0)
            v = base * rng.lognormvariate(0, noise) * (1 + 0.05 * r)
            if rng.random() < tail:
                v *= 8
            pass_ns.append(int((v + stall) * 1000))
            stall_ns.append(int(stall * 1000))
        start_ns = [i * period + rng.randint(0, 30_000) for i in range(iters)]
        records.append(
            RankRecord(
                pass_ns=pass_ns,
                stall_ns=stall_ns,
                start_ns=start_ns,
                device_us=None,
                forward_ms=None,
                wrong_elements=0,
                wrong_decisions=0,
                checked=iters,
                late_starts=0,
                raw_block_median_ns=None,
                period_ns=period or None,
                gpu_before=None,
                gpu_after=None,
            )
        )
    result = build_result(case, records, machine_kind, started, None)
    return results.validate_case_result(result, case.case_id)


def sweep(
    paths=("gloo_cpu", "nccl_device", "nccl_side_stream"),
    shapes=("2x1", "1x2"),
    forward_ms=(1.0, 5.0),
    variants: bool = True,
    **kw,
) -> list[dict]:
    """Like the gpu preset: idle cases per shape and cadence, forwards at the first shape,
    a few variants behind the middle forward."""
    out = []
    for path in paths:
        for shape in shapes:
            for cadence in ("isolated", "streaming"):
                out.append(case_result(path, shape, 0.0, cadence, **kw))
        out += [case_result(path, shapes[0], ms, **kw) for ms in forward_ms]
        if variants and forward_ms and path in NCCL_PATHS:
            ms = forward_ms[len(forward_ms) // 2]
            out.append(case_result(path, shapes[0], ms, barrier=False, **kw))
            if path == "nccl_side_stream":
                out.append(case_result(path, shapes[0], ms, priority="high", **kw))
    return out


def write_run(
    root: Path,
    cases: list[dict],
    started: float = T0,
    machine_kind: str = KIND,
    meta_machine: dict | None = None,
) -> Path:
    """A run directory as a real run leaves it (run.json, cases/, index entry)."""
    stamp = results.utc_stamp(started)
    run_dir = Path(root) / f"{machine_kind}_{stamp}"
    (run_dir / "cases").mkdir(parents=True)
    meta = {
        "schema": results.RUN_SCHEMA,
        "machine_kind": machine_kind,
        "started_utc": stamp,
        "finished_utc": stamp,
        "status": "complete",
        "command": "synthetic",
        "world_size": max(c["world_size"] for c in cases),
        "sweep": {},
        "machine": meta_machine or machine(),
    }
    results.atomic_write_json(run_dir / "run.json", meta)
    for case in cases:
        results.write_case(run_dir, {**case, "machine_kind": machine_kind})
    results.update_index(Path(root), run_dir, meta, len(cases))
    return run_dir


def write_history(
    root: Path, runs: int, last_scale: float = 1.0, machine_kind: str = KIND, **kw
) -> list[Path]:
    """`runs` nightly runs; the last one's samples scaled by `last_scale`."""
    dirs = []
    for i in range(runs):
        scale = last_scale if i == runs - 1 else 1.0
        started = T0 + i * DAY
        cases = sweep(scale=scale, seed=i, started=started, machine_kind=machine_kind, **kw)
        dirs.append(write_run(root, cases, started, machine_kind))
    return dirs


# ---- checks shared by the tests ------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = Path(path).read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path}: not a PNG"
    assert len(data) > min_bytes, f"{path}: only {len(data)} bytes"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.var(pixels[..., :3])) > 1e-4, f"{path}: a flat image"


def assert_svg(path: Path, *must_say: str) -> str:
    """A non-trivial SVG; matplotlib keeps each text as a comment beside its glyphs."""
    import xml.etree.ElementTree as ET

    text = Path(path).read_text()
    assert ET.fromstring(text).tag.endswith("svg"), f"{path}: not SVG"
    assert len(text) > 5_000, f"{path}: only {len(text)} characters"
    for words in must_say:
        assert words in text, f"{path} does not say {words!r}"
    return text


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
