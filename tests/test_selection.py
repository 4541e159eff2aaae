"""Path selection (PR #24768), env parsing, the gather shape and the path registry."""

from __future__ import annotations

import pytest

from delayer_core.paths import PATHS, path_class, path_info, path_names
from delayer_core.paths.gloo_cpu import GlooCpu
from delayer_core.paths.nccl_device import NcclDevice
from delayer_core.selection import (
    NCCL_FLAG,
    ServerArgs,
    env_bool,
    select_path,
)
from delayer_core.shape import GatherShape

CPU_GROUP = object()  # select_path only passes groups through
DEVICE_GROUP = object()


# --- env_bool -----------------------------------------------------------------------------

FLAG = "SOME_FLAG"


@pytest.mark.parametrize("raw", ["true", "1", "yes", "y", "TRUE", "True", "YES", "Y", "yEs"])
def test_env_bool_true(raw):
    assert env_bool({FLAG: raw}, FLAG) is True
    assert env_bool({FLAG: raw}, FLAG, default=False) is True


@pytest.mark.parametrize("raw", ["false", "0", "no", "n", "FALSE", "False", "NO", "N", "nO"])
def test_env_bool_false(raw):
    assert env_bool({FLAG: raw}, FLAG) is False
    assert env_bool({FLAG: raw}, FLAG, default=True) is False


@pytest.mark.parametrize("default", [False, True])
def test_env_bool_unset_gives_default(default):
    assert env_bool({}, FLAG, default=default) is default
    assert env_bool({"OTHER": "1"}, FLAG, default=default) is default


def test_env_bool_default_default_is_false():
    assert env_bool({}, FLAG) is False


@pytest.mark.parametrize("raw", ["", " ", "2", "on", "off", "t", "f", "truee", " true", "1 ", "-1"])
def test_env_bool_malformed_raises_with_name(raw):
    with pytest.raises(ValueError, match=FLAG) as info:
        env_bool({FLAG: raw}, FLAG)
    assert repr(raw) in str(info.value)


def test_env_bool_malformed_raises_even_with_true_default():
    with pytest.raises(ValueError, match=FLAG):
        env_bool({FLAG: ""}, FLAG, default=True)


# --- select_path --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "disable_overlap, env, nccl",
    [
        (False, {}, False),
        (False, {NCCL_FLAG: "0"}, False),
        (False, {NCCL_FLAG: "false"}, False),
        (False, {NCCL_FLAG: "1"}, True),
        (False, {NCCL_FLAG: "true"}, True),
        (False, {NCCL_FLAG: "YES"}, True),
        (True, {}, True),
        (True, {NCCL_FLAG: "0"}, True),  # overlap off always uses NCCL
        (True, {NCCL_FLAG: "1"}, True),
    ],
)
def test_select_path_rule(disable_overlap, env, nccl):
    args = ServerArgs(disable_overlap_schedule=disable_overlap)
    sel = select_path(args, env, DEVICE_GROUP, CPU_GROUP, "cuda:1")
    if nccl:
        assert sel.path is NcclDevice
        assert sel.group is DEVICE_GROUP
        assert sel.device == "cuda:1"
    else:
        assert sel.path is GlooCpu
        assert sel.group is CPU_GROUP
        assert sel.device == "cpu"


def test_select_path_reads_os_environ_when_env_is_none(monkeypatch):
    args = ServerArgs()
    monkeypatch.delenv(NCCL_FLAG, raising=False)
    assert select_path(args, None, DEVICE_GROUP, CPU_GROUP, "cuda:0").path is GlooCpu
    monkeypatch.setenv(NCCL_FLAG, "true")
    assert select_path(args, None, DEVICE_GROUP, CPU_GROUP, "cuda:0").path is NcclDevice
    # an explicit mapping wins over os.environ
    assert select_path(args, {}, DEVICE_GROUP, CPU_GROUP, "cuda:0").path is GlooCpu


@pytest.mark.parametrize(
    "disable_overlap, env", [(True, {}), (False, {NCCL_FLAG: "1"}), (True, {NCCL_FLAG: "1"})]
)
def test_select_path_nccl_without_device_group_asserts(disable_overlap, env):
    args = ServerArgs(disable_overlap_schedule=disable_overlap)
    with pytest.raises(AssertionError, match="device_group is required"):
        select_path(args, env, None, CPU_GROUP, "cuda:0")


def test_select_path_gloo_needs_no_device_group():
    sel = select_path(ServerArgs(), {}, None, CPU_GROUP, "cuda:0")
    assert (sel.path, sel.group, sel.device) == (GlooCpu, CPU_GROUP, "cpu")


@pytest.mark.parametrize("raw", ["", "maybe", "2"])
def test_select_path_malformed_env_raises(raw):
    with pytest.raises(ValueError, match=NCCL_FLAG):
        select_path(ServerArgs(), {NCCL_FLAG: raw}, DEVICE_GROUP, CPU_GROUP, "cuda:0")


# --- GatherShape / path registry ------------------------------------------------------------


def test_gather_shape():
    shape = GatherShape(4, 2)
    assert shape.world_size == 8
    assert shape.dims == (4, 2, 5)
    assert str(shape) == "4x2"
    assert GatherShape.parse("4x2") == shape
    assert GatherShape.parse("4X2") == shape


@pytest.mark.parametrize("dp, tp", [(0, 1), (1, 0), (-1, 2)])
def test_gather_shape_must_be_positive(dp, tp):
    with pytest.raises(ValueError, match="must be positive"):
        GatherShape(dp, tp)


@pytest.mark.parametrize("text", ["2", "2x", "x2", "2x1x1", "axb", ""])
def test_gather_shape_parse_errors(text):
    with pytest.raises(ValueError, match="DPxTP"):
        GatherShape.parse(text)


def test_path_registry():
    assert list(PATHS) == [
        "gloo_cpu",
        "nccl_device",
        "nccl_device_one_copy",
        "nccl_side_stream",
        "nccl_graph",
        "gloo_cuda",
        "shm_cpu",
        "hierarchical",
    ]
    for name, info in PATHS.items():
        cls = path_class(name)
        assert cls.name == name and cls.info() is info is path_info(name)
    assert path_names(group="gloo") == ["gloo_cpu", "gloo_cuda", "hierarchical"]
    assert path_names(cuda=False) == ["gloo_cpu", "shm_cpu", "hierarchical"]
    assert path_names(one_host=True) == ["shm_cpu"]
    assert path_names(upstream=True) == ["gloo_cpu", "nccl_device"]
    assert {n for n in PATHS if path_class(n).upstream_reads} == {"gloo_cpu", "nccl_device"}
    with pytest.raises(ValueError, match="unknown sync path 'nope'"):
        path_class("nope")


def test_registry_is_torch_free():
    """The reading side lists paths without importing torch."""
    import subprocess
    import sys

    code = "import sys, delayer_core.paths; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
