"""The sync paths under torchrun, one process per GPU: nccl_device, nccl_device_one_copy,
nccl_side_stream and gloo_cuda (and gloo_cpu beside them).

The 2-rank run needs 2 GPUs (``-m nccl``); a 1-rank run (``-m cuda``) checks the same paths
on one GPU; both skip cleanly on a CPU-only machine. A CPU-only 2-rank run of the same
worker checks gloo_cpu with both buffer shapes (DPx1 and 1xTP) everywhere.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

_launch_py = Path(__file__).resolve().parent / "dist_workers" / "launch.py"
_spec = importlib.util.spec_from_file_location("dist_launch", _launch_py)
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

WORKER = launch.WORKERS / "paths_worker.py"
ITERS = 50
NCCL_PATHS = ("nccl_device", "nccl_device_one_copy", "nccl_side_stream")
CUDA_PATHS = (*NCCL_PATHS, "gloo_cuda")


def run_paths(tmp_path, world, *, cpu_only=False):
    if not cpu_only:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < world:
            pytest.skip(f"needs {world} CUDA device(s), found {gpus}")
    args = [str(tmp_path), str(ITERS)] + (["cpu"] if cpu_only else [])
    proc = launch.torchrun(world, WORKER, *args, env_extra={"NCCL_NVLS_ENABLE": "0"})
    assert proc.returncode == 0, launch.tail(proc)
    paths = ("gloo_cpu",) if cpu_only else ("gloo_cpu", *CUDA_PATHS)
    shapes = [f"{world}x1"] + ([f"1x{world}"] if world > 1 else [])
    for rank in range(world):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert (report["rank"], report["world"], report["iters"]) == (rank, world, ITERS)
        results = report["results"]
        assert len(results) == len(paths) * len(shapes) * 2
        for name in paths:
            for shape in shapes:
                for mode in ("untimed", "timed"):
                    res = results[f"{name}/{shape}/{mode}"]
                    where = (rank, name, shape, mode)
                    # host time blocked in GPU<->CPU syncs: only the CUDA paths have any
                    if name in CUDA_PATHS:
                        assert res["stall_ns"] > 0, where
                    else:
                        assert res["stall_ns"] == 0, where
                    times = res["device_times_ms"]
                    if mode == "timed" and name in NCCL_PATHS:
                        assert times, where  # device time of the collective was measured
                        assert all(isinstance(t, float) and t > 0 for t in times), where
                    elif mode == "untimed" or name == "gloo_cpu":
                        assert times is None, where


@pytest.mark.nccl
def test_paths_two_ranks(tmp_path):
    run_paths(tmp_path, 2)


@pytest.mark.cuda
def test_paths_one_rank(tmp_path):
    run_paths(tmp_path, 1)


def test_gloo_cpu_path_two_ranks_cpu_only(tmp_path):
    run_paths(tmp_path, 2, cpu_only=True)
