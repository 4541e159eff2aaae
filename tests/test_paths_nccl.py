"""Every sync path under torchrun (tests/dist_workers/paths_worker.py), one process per GPU:
data, reads and GPU-wait accounting on every pass, the NCCL paths' device time, the side
stream's and the graph's recorded stream priority and capture, and the refusals of a
mismatched device or group.

The 2-rank run needs 2 GPUs (``-m nccl``), the 1-rank run one (``-m cuda``); both skip on a
machine without. The host paths (gloo_cpu, shm_cpu, hierarchical) run at 2 ranks on the CPU
everywhere.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from delayer_core.paths import PATHS

_launch_py = Path(__file__).resolve().parent / "dist_workers" / "launch.py"
_spec = importlib.util.spec_from_file_location("dist_launch", _launch_py)
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

WORKER = launch.WORKERS / "paths_worker.py"
ITERS = 40
OWN_STREAM = ("nccl_side_stream", "nccl_graph")


def run_paths(tmp_path, world: int, *, cpu_only: bool = False) -> list[dict]:
    if not cpu_only:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < world:
            pytest.skip(f"needs {world} CUDA device(s), found {gpus}")
    args = [str(tmp_path), str(ITERS)] + (["cpu"] if cpu_only else [])
    proc = launch.torchrun(world, WORKER, *args, env_extra={"NCCL_NVLS_ENABLE": "0"})
    assert proc.returncode == 0, launch.tail(proc)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for rank, report in enumerate(reports):
        assert (report["rank"], report["world"], report["iters"]) == (rank, world, ITERS)
    return reports


def _expected_keys(world: int, cpu_only: bool) -> set[str]:
    names = [n for n, p in PATHS.items() if not (cpu_only and p.cuda)]
    keys = set()
    for name in (n for n in names if n != "hierarchical" or world > 1):
        for shape in [f"{world}x1"] + ([f"1x{world}"] if world > 1 else []):
            for mode in ("idle", "busy") if PATHS[name].cuda else ("idle",):
                for prio in ("default", "high") if name in OWN_STREAM else ("",):
                    keys.add(f"{name}/{shape}/{mode}/{prio}")
    return keys


def check_reports(reports: list[dict], world: int, cpu_only: bool = False) -> None:
    for report in reports:
        results = report["results"]
        assert set(results) == _expected_keys(world, cpu_only)
        for key, res in results.items():
            info = PATHS[key.split("/")[0]]
            assert (res["gpu_ns"] > 0) == info.cuda, (key, res["gpu_ns"])
            if info.gpu_per_rank:  # device time of the collective was measured
                assert len(res["device_ns"]) == 3 and min(res["device_ns"]) > 0, key
            else:
                assert res["device_ns"] is None, key
        if cpu_only:
            continue
        least, greatest = report["priority_range"]
        for key, res in results.items():
            name, _, _, prio = key.split("/")
            if name not in OWN_STREAM:
                continue
            d = res["describe"]
            assert d["priority_asked"] == prio and d["priority_range"] == [least, greatest]
            assert d["stream_priority"] == (greatest if prio == "high" else 0), (key, d)
            assert d["priority_applied"] is (prio == "default" or greatest < least), (key, d)
            if name == "nccl_graph":  # captured, or replayed eagerly with the reason said
                assert d["captured"] == (d["capture_error"] is None), (key, d)
                assert d["captured"] == reports[0]["results"][key]["describe"]["captured"]
        assert len(report["rejections"]) == 6


@pytest.mark.nccl
def test_paths_two_ranks(tmp_path):
    check_reports(run_paths(tmp_path, 2), 2)


@pytest.mark.cuda
def test_paths_one_rank(tmp_path):
    check_reports(run_paths(tmp_path, 1), 1)


def test_host_paths_two_ranks_cpu_only(tmp_path):
    reports = run_paths(tmp_path, 2, cpu_only=True)
    check_reports(reports, 2, cpu_only=True)
    for report in reports:
        for key in ("shm_cpu/2x1/idle/", "hierarchical/1x2/idle/"):
            assert report["results"][key]["describe"]["spin_ns"] > 0
