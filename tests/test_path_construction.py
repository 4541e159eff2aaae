"""Path construction checks (no silent CPU/GPU mix) and PD gating (PR #23588) on a real
1-rank gloo group, created once for the module."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from delayer_core.decision import DelayerConfig, GatherSummary
from delayer_core.delayer import NOT_PREFILLABLE, LocalInfo, PassExecutor, PrefillDelayer
from delayer_core.paths.gloo_cpu import GlooCpu, GlooCuda
from delayer_core.paths.nccl_device import NcclDevice, NcclDeviceOneCopy
from delayer_core.paths.nccl_graph import NcclGraph
from delayer_core.paths.nccl_side_stream import NcclSideStream
from delayer_core.selection import (
    DECODE_IGNORED_MESSAGE,
    ServerArgs,
    build_delayer,
)
from delayer_core.shape import GatherShape


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gloo_group():
    """A real 1-rank gloo process group (the default group)."""
    if dist.is_initialized():
        pytest.skip("a default process group already exists in this process")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{free_port()}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=30),
    )
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


# --- path construction: no silent CPU/GPU mix ------------------------------------------------

ONE = GatherShape(1, 1)


@pytest.mark.parametrize("device", ["cuda:0", "cuda", torch.device("cuda", 1)])
def test_gloo_cpu_rejects_cuda_device(gloo_group, device):
    with pytest.raises(ValueError, match=r"gloo_cpu runs on the CPU, got device cuda"):
        GlooCpu(gloo_group, ONE, device)


@pytest.mark.parametrize(
    "cls", [NcclDevice, NcclDeviceOneCopy, NcclSideStream, NcclGraph, GlooCuda]
)
def test_cuda_paths_reject_cpu_device(gloo_group, cls):
    with pytest.raises(ValueError, match=rf"{cls.name} runs on a CUDA device, got device cpu"):
        cls(gloo_group, ONE, "cpu")


@pytest.mark.parametrize("cls", [NcclDevice, NcclDeviceOneCopy, NcclSideStream, NcclGraph])
def test_nccl_paths_reject_gloo_group(gloo_group, cls):
    if not torch.cuda.is_available():
        pytest.skip("the device check comes first: needs a CUDA device to reach the group check")
    with pytest.raises(ValueError, match=rf"{cls.name} needs a nccl group, got gloo"):
        cls(gloo_group, ONE, "cuda:0")


@pytest.mark.parametrize("shape", [GatherShape(2, 1), GatherShape(1, 2), GatherShape(2, 2)])
def test_path_rejects_shape_of_other_world_size(gloo_group, shape):
    with pytest.raises(ValueError, match=rf"shape {shape} needs {shape.world_size} ranks"):
        GlooCpu(gloo_group, shape)


def test_gloo_cpu_gathers_on_one_rank(gloo_group):
    path = GlooCpu(gloo_group, ONE)
    assert path.device == torch.device("cpu")
    assert path.buffer.shape == (1, 1, 5) and path.buffer.dtype == torch.int64
    for i in range(3):
        row = [1, 0, i, 2 * i, 3 * i]
        summary = path.gather(row)  # upstream's lazy reads: all prefillable, none forced
        assert summary == GatherSummary(1, None, 0, i, 2 * i, 3 * i)
        assert path.snapshot().tolist() == [[row]]
        assert path.host_rows([path.snapshot()]).shape == (1, 1, 1, 5)
    assert path.gpu_ns == 0 and path.describe() == {} and not path.leaves_work_queued
    with pytest.raises(NotImplementedError, match="gloo_cpu runs no device collective"):
        path.enqueue_collective()


# --- build_delayer: PD gating -----------------------------------------------------------------


def _build(gloo_group, **args):
    return build_delayer(
        ServerArgs(**args), attn_tp_size=1, cpu_group=gloo_group, device_group=None, env={}
    )


def _delayer_records(caplog):
    return [r for r in caplog.records if r.name == "delayer_core"]


def test_decode_does_not_build_and_logs_once(gloo_group, caplog):
    caplog.set_level(logging.DEBUG, logger="delayer_core")
    assert _build(gloo_group, disaggregation_mode="decode") is None
    records = _delayer_records(caplog)
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert records[0].getMessage() == DECODE_IGNORED_MESSAGE
    assert "decode" in records[0].getMessage()


def test_decode_needs_no_group(caplog):
    # the gate comes before any path is built
    caplog.set_level(logging.INFO, logger="delayer_core")
    args = ServerArgs(disaggregation_mode="decode", disable_overlap_schedule=True)
    assert build_delayer(args, attn_tp_size=1, cpu_group=None, device_group=None, env={}) is None
    assert len(_delayer_records(caplog)) == 1


@pytest.mark.parametrize("mode", ["prefill", "null"])
def test_prefill_and_null_build_a_delayer(gloo_group, caplog, mode):
    caplog.set_level(logging.DEBUG, logger="delayer_core")
    delayer = _build(gloo_group, disaggregation_mode=mode)
    assert isinstance(delayer, PrefillDelayer)
    assert isinstance(delayer.sync_path, GlooCpu)
    assert delayer.sync_path.group is gloo_group
    assert delayer.sync_path.shape == ONE
    assert _delayer_records(caplog) == []


@pytest.mark.parametrize("mode", ["null", "prefill", "decode"])
def test_disabled_builds_nothing(gloo_group, caplog, mode):
    caplog.set_level(logging.DEBUG, logger="delayer_core")
    assert _build(gloo_group, enable_prefill_delayer=False, disaggregation_mode=mode) is None
    assert _delayer_records(caplog) == []


@pytest.mark.parametrize("mode", ["encode", "Decode", "", None])
def test_unknown_disaggregation_mode(gloo_group, mode):
    with pytest.raises(ValueError, match="unknown disaggregation_mode"):
        _build(gloo_group, disaggregation_mode=mode)


def test_build_delayer_nccl_without_device_group_asserts(gloo_group):
    with pytest.raises(AssertionError, match="device_group is required"):
        _build(gloo_group, disable_overlap_schedule=True)


def test_build_delayer_nccl_on_cpu_device_is_rejected(gloo_group):
    # NCCL was asked for but the caller handed the CPU device: no silent CPU/GPU mix.
    args = ServerArgs(disable_overlap_schedule=True)
    with pytest.raises(ValueError, match="nccl_device runs on a CUDA device"):
        build_delayer(
            args, attn_tp_size=1, cpu_group=gloo_group, device_group=gloo_group, device="cpu"
        )


def test_build_delayer_shape_follows_dp_attention(gloo_group):
    # without DP attention the buffer has one DP row, so dp_size=2 fits a 1-rank group
    delayer = _build(gloo_group, enable_dp_attention=False, dp_size=2, max_running_requests=7)
    assert delayer.sync_path.shape == ONE
    assert delayer.config.max_running == 4
    # with DP attention dp_size=2 needs 2 ranks
    with pytest.raises(ValueError, match="needs 2 ranks"):
        _build(gloo_group, enable_dp_attention=True, dp_size=2)


def test_build_delayer_maps_server_args_to_config(gloo_group):
    delayer = _build(
        gloo_group,
        max_running_requests=64,
        prefill_delayer_max_delay_passes=7,
        prefill_delayer_token_usage_low_watermark=0.25,
        prefill_delayer_queue_min_ratio=0.5,
        prefill_delayer_max_delay_ms=123.0,
    )
    assert delayer.config == DelayerConfig(
        max_delay_passes=7,
        max_running_requests=64,
        dp_size=1,
        enable_dp_attention=True,
        queue_min_ratio=0.5,
        max_delay_ms=123.0,
        token_usage_low_watermark=0.25,
    )


# --- the delayer object on one rank ------------------------------------------------------------


def test_local_info_row():
    assert NOT_PREFILLABLE.row(0.5) == (0, 0, 0, 0, 0)
    info = LocalInfo(True, token_usage=0.3, running_batch=2, max_prefill_bs=4, waiting_queue_len=9)
    assert info.row(None) == (1, 0, 2, 4, 9)
    assert info.row(0.3) == (1, 0, 2, 4, 9)  # strictly below the watermark
    assert info.row(0.31) == (1, 1, 2, 4, 9)
    assert LocalInfo(False, token_usage=0.0).row(0.5) == (0, 0, 0, 0, 0)


def test_pass_executor_one_gather_per_pass(gloo_group):
    delayer = PrefillDelayer(DelayerConfig(max_delay_passes=3), GlooCpu(gloo_group, ONE))
    with delayer.begin_pass() as p:
        out = p.negotiate(LocalInfo(True))
    assert (out.allow, out.reason, out.status) == (True, "no_wait", "all")
    assert delayer.gathers == 1
    with delayer.begin_pass():  # no negotiate: finalize gathers "not prefillable"
        pass
    assert delayer.gathers == 2
    p = delayer.begin_pass()
    assert p.finalize().status == "none"
    assert delayer.gathers == 3
    assert sum(delayer.metrics.outcomes.values()) == 3
    assert delayer.metrics.outcomes[("none", True, "", False)] == 2


def test_pass_executor_misuse(gloo_group):
    delayer = PrefillDelayer(DelayerConfig(), GlooCpu(gloo_group, ONE))
    p = delayer.begin_pass()
    p.negotiate(LocalInfo(True))
    with pytest.raises(RuntimeError, match="twice"):
        p.negotiate(LocalInfo(True))
    p.finalize(actually_prefilled=True)
    with pytest.raises(RuntimeError, match="twice"):
        p.finalize()
    q = PassExecutor(delayer)
    q.finalize()
    # finalize() already gathered "not prefillable": a later negotiate() must not gather again
    # (the message says "called twice": the "after finalize()" branch is unreachable)
    with pytest.raises(RuntimeError, match=r"negotiate\(\)"):
        q.negotiate(LocalInfo(True))
    assert delayer.gathers == 2
    assert delayer.metrics.outcomes[("all", True, "no_wait", True)] == 1
