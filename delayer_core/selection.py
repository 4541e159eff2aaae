"""Which sync path upstream picks (PR #24768) and whether a delayer is built (PR #23588)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from .paths.base import SyncPath
from .paths.gloo_cpu import GlooCpu
from .paths.nccl_device import NcclDevice
from .shape import GatherShape

logger = logging.getLogger("delayer_core")

NCCL_FLAG = "SGLANG_NCCL_ALL_GATHER_IN_OVERLAP_SCHEDULER_SYNC_BATCH"
DISAGGREGATION_MODES = ("null", "prefill", "decode")
DECODE_IGNORED_MESSAGE = (
    "Ignoring --enable-prefill-delayer on decode engine "
    "(no prefill scheduling path; the delayer would be a no-op)."
)


@dataclass(frozen=True)
class ServerArgs:
    """The server flags the delayer reads (any object with these attributes will do)."""

    enable_prefill_delayer: bool = True
    disable_overlap_schedule: bool = False
    disaggregation_mode: str = "null"
    enable_dp_attention: bool = True
    dp_size: int = 1
    max_running_requests: int = 1 << 30
    prefill_delayer_max_delay_passes: int = 30
    prefill_delayer_token_usage_low_watermark: Optional[float] = None
    prefill_delayer_queue_min_ratio: Optional[float] = None
    prefill_delayer_max_delay_ms: float = 5000.0


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """Parse a boolean env var the way upstream's EnvBool does; anything else is an error."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in ("true", "1", "yes", "y"):
        return True
    if value in ("false", "0", "no", "n"):
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (true/1/yes/y or false/0/no/n)")


@dataclass(frozen=True)
class PathSelection:
    path: type[SyncPath]
    group: object
    device: object

    def build(self, shape: GatherShape) -> SyncPath:
        return self.path(self.group, shape, self.device)


def select_path(
    server_args, env: Optional[Mapping[str, str]], device_group, cpu_group, device
) -> PathSelection:
    """NCCL + the rank's device iff the overlap scheduler is off or the env flag says the
    scheduler already syncs with NCCL; otherwise gloo + "cpu". Buffer and local row always
    live on the chosen device, so a CPU/GPU mix cannot be built."""
    env = os.environ if env is None else env
    use_nccl = server_args.disable_overlap_schedule or env_bool(env, NCCL_FLAG)
    if not use_nccl:
        return PathSelection(GlooCpu, cpu_group, "cpu")
    if device_group is None:
        raise AssertionError(
            "device_group is required when using NCCL for the PrefillDelayer all-gather"
        )
    return PathSelection(NcclDevice, device_group, device)


def build_delayer(
    server_args,
    *,
    attn_tp_size: int,
    cpu_group,
    device_group=None,
    device="cpu",
    env: Optional[Mapping[str, str]] = None,
    **delayer_kwargs,
):
    """The delayer for this engine, or None: not enabled, or a decode engine (logged)."""
    from .delayer import PrefillDelayer  # delayer imports selection for the config

    mode = server_args.disaggregation_mode
    if mode not in DISAGGREGATION_MODES:
        raise ValueError(
            f"unknown disaggregation_mode {mode!r}; expected one of {DISAGGREGATION_MODES}"
        )
    if not server_args.enable_prefill_delayer:
        return None
    if mode == "decode":
        logger.info(DECODE_IGNORED_MESSAGE)
        return None
    selection = select_path(server_args, env, device_group, cpu_group, device)
    dp_rows = server_args.dp_size if server_args.enable_dp_attention else 1
    sync_path = selection.build(GatherShape(dp_rows, attn_tp_size))
    return PrefillDelayer.from_server_args(server_args, sync_path, **delayer_kwargs)
