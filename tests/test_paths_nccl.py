"""The CUDA sync paths (nccl_device, nccl_device_one_copy, nccl_side_stream, gloo_cuda) and
gloo_cpu, under torchrun with one process per GPU.

Needs CUDA: the 2-rank run needs 2 GPUs (``-m nccl``); a 1-rank run (``-m cuda``) checks the
same paths on a single GPU. Both skip cleanly on a CPU-only machine.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_delayer_dist import REPO, torchrun

WORKER = REPO / "tests" / "dist_workers" / "paths_worker.py"
ITERS = 50
CUDA_PATHS = ("nccl_device", "nccl_device_one_copy", "nccl_side_stream", "gloo_cuda")
NCCL_PATHS = ("nccl_device", "nccl_device_one_copy", "nccl_side_stream")


def run_paths(tmp_path, world):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < world:
        pytest.skip(f"needs {world} CUDA device(s), found {gpus}")
    proc = torchrun(world, WORKER, str(tmp_path), str(ITERS), env_extra={"NCCL_NVLS_ENABLE": "0"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for rank, report in enumerate(reports):
        assert report["rank"] == rank and report["world"] == world
        results = report["results"]
        shapes = [f"{world}x1"] + ([f"1x{world}"] if world > 1 else [])
        for name in ("gloo_cpu", *CUDA_PATHS):
            for shape in shapes:
                for mode in ("untimed", "timed"):
                    res = results[f"{name}/{shape}/{mode}"]
                    if name in CUDA_PATHS:
                        assert res["stall_ns"] > 0, (name, shape, mode)
                    else:
                        assert res["stall_ns"] == 0, (name, shape, mode)
                    times = res["device_times_ms"]
                    if mode == "timed":
                        assert len(times) == ITERS
                        assert all(isinstance(t, float) and t > 0 for t in times)
                    else:
                        assert times == []
    return reports


@pytest.mark.nccl
def test_paths_two_ranks(tmp_path):
    run_paths(tmp_path, 2)


@pytest.mark.cuda
def test_paths_one_rank(tmp_path):
    run_paths(tmp_path, 1)
