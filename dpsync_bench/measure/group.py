"""The job's ranks: process groups, shared clocks, hosts, CPU pinning and fail-fast.

Every collective runs on a group created with the job's timeout. A rank whose collective
fails prints one line naming itself and the case and leaves with EXIT_FAILED; torchrun then
takes the other ranks down (they would otherwise wait for their own timeouts).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from .console import fail, first_line
from .options import DEFAULT_TIMEOUT_S

now_ns = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: shared by processes of one host


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"dpsync: {name}={raw!r} is not an integer") from None


def host_id() -> str:
    """What makes two ranks share memory: the hostname, unless DPSYNC_HOST_ID names it (the
    loopback multi-node tests give each node of one machine its own)."""
    return os.environ.get("DPSYNC_HOST_ID") or socket.gethostname()


@dataclass
class RankGroup:
    """This rank's view of the job; what the sync paths are built from."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    timeout_s: float
    device: torch.device | None  # this rank's CUDA device, None without CUDA
    control: object  # gloo group over all ranks (control traffic, result collection)
    hosts: list[str]  # host id of every rank
    clock_offset_ns: int = 0  # this rank's monotonic clock minus rank 0's
    cpus: list[int] = field(default_factory=list)  # the cores this rank is pinned to
    current_case: str = "setup"
    _groups: dict = field(default_factory=dict)
    _store: object = None
    _segments: int = 0

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def same_host(self) -> bool:
        return len(set(self.hosts)) == 1

    def host_ranks(self) -> list[list[int]]:
        """The ranks of each host, hosts in order of their lowest rank."""
        by_host: dict[str, list[int]] = {}
        for rank, host in enumerate(self.hosts):
            by_host.setdefault(host, []).append(rank)
        return list(by_host.values())

    def group(self, backend: str, tag: str = ""):
        """A cached group over all ranks; every rank must ask in the same order. A tag gives
        a path a communicator of its own (a CUDA graph's must not mix with eager use)."""
        key = (backend, tag)
        if key not in self._groups:
            with self.guard(f"creating a {backend} group"):
                timeout = datetime.timedelta(seconds=self.timeout_s)
                self._groups[key] = tdist.new_group(backend=backend, timeout=timeout)
        return self._groups[key]

    def subgroup(self, ranks: list[int], backend: str = "gloo"):
        """A group of some ranks (every rank must call this, in the same order)."""
        with self.guard("creating a subgroup"):
            timeout = datetime.timedelta(seconds=self.timeout_s)
            return tdist.new_group(ranks=ranks, backend=backend, timeout=timeout)

    @property
    def store(self):
        """A client of the job's rendezvous store (torchrun's, or the one init made)."""
        if self._store is None:
            with self.guard("connecting to the rendezvous store"):
                client = tdist.TCPStore(
                    os.environ["MASTER_ADDR"],
                    int(os.environ["MASTER_PORT"]),
                    is_master=False,
                    timeout=datetime.timedelta(seconds=self.timeout_s),
                )
            self._store = tdist.PrefixStore("dpsync/", client)
        return self._store

    def segment_key(self) -> str:
        """A store key unique to the next shared segment of this job (same on every rank,
        since every rank builds the same paths in the same order)."""
        self._segments += 1
        return f"shm/{self._segments}"

    # ---- collectives on the control group, each one guarded -------------------------
    def all_gather_object(self, obj) -> list:
        out = [None] * self.world_size
        with self.guard("collecting results"):
            tdist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast_object(self, obj, src: int = 0):
        box = [obj]
        with self.guard("agreeing on a value"):
            tdist.broadcast_object_list(box, src=src, group=self.control)
        return box[0]

    def agree_max(self, value: int) -> int:
        """The largest of every rank's integer (one small gloo all-reduce)."""
        t = torch.tensor([value], dtype=torch.int64)
        with self.guard("agreeing on a value"):
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.control)
        return int(t.item())

    def barrier(self) -> None:
        self.agree_max(0)

    @contextlib.contextmanager
    def guard(self, what: str):
        try:
            yield
        except (RuntimeError, tdist.DistError) as e:
            fail(f"rank {self.rank}: case {self.current_case}: {what} failed: {first_line(e)}")


def pin_near_gpu(device: torch.device | None, local_rank: int, local_world: int) -> list[int]:
    """Pin this rank to its share of the cores NVML says are near its GPU (all cores without
    one), at least two each where there are enough (gloo's threads need a second), whole
    physical cores where it can (sibling threads kept together). Returns the cores it may
    run on."""
    from .machine import by_physical_core, cores_near

    cores = sorted(os.sched_getaffinity(0))
    if device is not None:
        near = [c for c in cores_near(device.index) if c in cores]
        cores = near or cores
    cores = by_physical_core(cores)
    share = max(1, len(cores) // max(1, local_world))
    mine = cores[local_rank * share : (local_rank + 1) * share] if share >= 2 else cores
    if mine and mine != cores:
        os.sched_setaffinity(0, mine)
    return sorted(os.sched_getaffinity(0))


def init(timeout_s: float = DEFAULT_TIMEOUT_S, want_cuda: bool = False) -> RankGroup:
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
        if not tdist.is_initialized():
            tdist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    except (RuntimeError, tdist.DistError, ValueError) as e:
        fail(f"rank {rank}: joining the job failed: {first_line(e)}")
    cpus = pin_near_gpu(device, local_rank, local_world)
    g = RankGroup(rank, world, local_rank, local_world, timeout_s, device, tdist.group.WORLD, [])
    g.cpus = cpus
    g.hosts = g.all_gather_object(host_id())
    # Ranks of one host share a clock; DPSYNC_ESTIMATE_CLOCK_OFFSETS=1 estimates anyway
    # (tests of the multi-host path on one machine).
    if not g.same_host or os.environ.get("DPSYNC_ESTIMATE_CLOCK_OFFSETS") == "1":
        g.clock_offset_ns = estimate_clock_offset(g)
    return g


def estimate_clock_offset(g: RankGroup, rounds: int = 32) -> int:
    """This rank's clock minus rank 0's, NTP style: keep the round trip with the least delay."""
    best_rtt, best_offset = None, 0
    for peer in range(1, g.world_size):
        for _ in range(rounds):
            stamp = torch.zeros(2, dtype=torch.int64)
            with g.guard("estimating clock offsets"):
                if g.rank == 0:
                    t0 = now_ns()
                    tdist.send(stamp, dst=peer, group=g.control)
                    tdist.recv(stamp, src=peer, group=g.control)
                    stamp[0], stamp[1] = t0, now_ns()
                    tdist.send(stamp, dst=peer, group=g.control)
                elif g.rank == peer:
                    tdist.recv(stamp, src=0, group=g.control)
                    t_peer = now_ns()
                    tdist.send(stamp, dst=0, group=g.control)
                    tdist.recv(stamp, src=0, group=g.control)
                    t0, t3 = int(stamp[0]), int(stamp[1])
                    if best_rtt is None or t3 - t0 < best_rtt:
                        best_rtt, best_offset = t3 - t0, t_peer - (t0 + (t3 - t0) // 2)
    return best_offset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
