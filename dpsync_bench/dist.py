"""Process groups, shared clocks and fail-fast for a torchrun job.

Every collective runs on a group created with a timeout. A rank whose collective fails
prints one line naming itself and the case and leaves with exit code 3; torchrun then takes
the other ranks down (they would otherwise wait for their own timeouts).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .exit_codes import EXIT_FAILED

DEFAULT_TIMEOUT_S = 60.0

now_ns = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: shared by processes of one host


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"dpsync: {name}={raw!r} is not an integer") from None


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    timeout_s: float
    device: torch.device | None  # this rank's CUDA device, None without CUDA
    control: object  # gloo group over all ranks (control traffic, result collection)
    clock_offset_ns: int = 0  # this rank's monotonic clock minus rank 0's
    same_host: bool = True
    _groups: dict = field(default_factory=dict)
    current_case: str = "setup"

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def group(self, backend: str, high_priority: bool = False):
        """A cached group over all ranks; every rank must ask in the same order."""
        key = (backend, high_priority)
        if key not in self._groups:
            with self.guard("creating a process group"):
                kwargs = {}
                if backend == "nccl" and high_priority:
                    opts = dist.ProcessGroupNCCL.Options()
                    opts.is_high_priority_stream = True
                    kwargs["pg_options"] = opts
                timeout = datetime.timedelta(seconds=self.timeout_s)
                self._groups[key] = dist.new_group(backend=backend, timeout=timeout, **kwargs)
        return self._groups[key]

    # ---- collectives on the control group, each one guarded -------------------------
    def all_gather_object(self, obj) -> list:
        out = [None] * self.world_size
        with self.guard("collecting results"):
            dist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast_object(self, obj, src: int = 0):
        box = [obj]
        with self.guard("agreeing on a value"):
            dist.broadcast_object_list(box, src=src, group=self.control)
        return box[0]

    @contextlib.contextmanager
    def guard(self, what: str):
        try:
            yield
        except (RuntimeError, dist.DistError) as e:
            fail(f"rank {self.rank}: case {self.current_case}: {what} failed: {first_line(e)}")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# Where console lines go around a test runner's output capture (conftest.py sets it to
# pytest's "capture disabled" context; plain scripts write straight through).
console_unlocked = contextlib.nullcontext


def console(line: str) -> None:
    """A line on the real stderr, even inside a pytest test."""
    with console_unlocked():
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def fail(message: str, code: int = EXIT_FAILED):
    """One line on stderr, then leave at once: no teardown that could wait on dead peers."""
    console(f"dpsync: {message}")
    sys.stdout.flush()
    os._exit(code)


def init(timeout_s: float = DEFAULT_TIMEOUT_S, want_cuda: bool = False) -> DistContext:
    """Join the torchrun job (or a single process without torchrun)."""
    rank = env_int("RANK", 0)
    world = env_int("WORLD_SIZE", 1)
    local_rank = env_int("LOCAL_RANK", 0)
    local_world = env_int("LOCAL_WORLD_SIZE", 1)
    if "MASTER_ADDR" not in os.environ:  # a plain single process
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    device = None
    if want_cuda and torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    try:
        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    except (RuntimeError, dist.DistError, ValueError) as e:
        fail(f"rank {rank}: joining the job failed: {first_line(e)}")
    ctx = DistContext(rank, world, local_rank, local_world, timeout_s, device, dist.group.WORLD)
    ctx.same_host = len(set(ctx.all_gather_object(socket.gethostname()))) == 1
    # Ranks of one host share a clock; DPSYNC_ESTIMATE_CLOCK_OFFSETS=1 estimates anyway
    # (tests of the multi-host path on one machine).
    if not ctx.same_host or os.environ.get("DPSYNC_ESTIMATE_CLOCK_OFFSETS") == "1":
        ctx.clock_offset_ns = estimate_clock_offset(ctx)
    return ctx


def estimate_clock_offset(ctx: DistContext, rounds: int = 32) -> int:
    """This rank's clock minus rank 0's, NTP style: keep the round trip with the least delay.

    Ranks of one host share CLOCK_MONOTONIC and skip this (offset 0)."""
    best_rtt, best_offset = None, 0
    for peer in range(1, ctx.world_size):
        for _ in range(rounds):
            stamp = torch.zeros(2, dtype=torch.int64)
            with ctx.guard("estimating clock offsets"):
                if ctx.rank == 0:
                    t0 = now_ns()
                    dist.send(stamp, dst=peer, group=ctx.control)
                    dist.recv(stamp, src=peer, group=ctx.control)
                    t3 = now_ns()
                    stamp[0], stamp[1] = t0, t3
                    dist.send(stamp, dst=peer, group=ctx.control)
                elif ctx.rank == peer:
                    dist.recv(stamp, src=0, group=ctx.control)
                    t_peer = now_ns()
                    dist.send(stamp, dst=0, group=ctx.control)
                    dist.recv(stamp, src=0, group=ctx.control)
                    t0, t3 = int(stamp[0]), int(stamp[1])
                    rtt = t3 - t0
                    if best_rtt is None or rtt < best_rtt:
                        best_rtt, best_offset = rtt, t_peer - (t0 + rtt // 2)
    return best_offset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spin_until(deadline_ns: int) -> int:
    """Busy-wait (no sleep jitter) until the local clock reaches deadline; returns now."""
    t = now_ns()
    while t < deadline_ns:
        t = now_ns()
    return t
