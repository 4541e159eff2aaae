"""Shared-memory paths: the whole gather in one host's memory, or per host with leaders.

``shm_cpu``: every rank publishes its row and the pass number into one segment of its host
(``delayer_core.shm_exchange``: release/acquire ordering in a tiny C helper) and waits
until every rank has published the pass; no TCP, no GPU. One host only.

``hierarchical``: the same inside each host; each host's leader (its lowest rank) waits for
its host's rows, all-gathers the hosts' blocks with the other leaders over gloo, and
publishes the whole buffer back through its segment.

Both reduce the gathered rows on the host as every host-side read does (shm_cpu in its C
helper, on the shared rows: one C call per pass publishes, waits and reduces).
"""

from __future__ import annotations

import numpy as np
import torch

from ..decision import GatherSummary
from ..shm_exchange import DEFAULT_SPIN_NS, PeerError, ShmExchange
from .base import SyncPath, all_gather


class _Segment:
    """This host's exchange: the lowest rank creates it and names it in the job's store."""

    def __init__(self, env, ranks: list[int], payload_lens: list[int], spin_ns: int) -> None:
        key = f"{env.segment_key()}/{ranks[0]}"
        if env.rank == ranks[0]:
            self.ex = ShmExchange.create(payload_lens, spin_ns=spin_ns)
            env.store.set(key, self.ex.token)
        else:
            token = env.store.get(key).decode()  # waits up to the job's timeout
            self.ex = ShmExchange.attach(token, payload_lens, spin_ns=spin_ns)
        self.ranks = ranks
        self.timeout_s = env.timeout_s

    def wait(self, slots: tuple[int, ...], seq: int) -> None:
        try:
            self.ex.wait(slots, seq, self.timeout_s)
        except PeerError as e:
            raise self.named(e) from None

    def named(self, e: PeerError) -> RuntimeError:
        """The error naming the rank, not the slot."""
        who = self.ranks[e.slot] if e.slot < len(self.ranks) else f"leader {self.ranks[0]}"
        return RuntimeError(f"rank {who}: {e}")


class _ShmPath(SyncPath):
    """What both shared-memory paths share: built from the job, the row as it is."""

    seg: _Segment

    @classmethod
    def build(cls, env, shape, **options) -> SyncPath:
        return cls(env, shape, **options)

    def prepare(self, row):
        return row

    def snapshot(self):
        return self._rows().copy()

    def read(self):
        return self._from_host(self._rows())

    def close(self) -> None:
        self.seg.ex.close()


class ShmCpu(_ShmPath):
    name = "shm_cpu"

    def __init__(self, env, shape, *, spin_ns: int = DEFAULT_SPIN_NS) -> None:
        super().__init__(None, shape, "cpu")
        if not env.same_host:
            raise ValueError("shm_cpu needs every rank on one host (use hierarchical)")
        ranks = list(range(env.world_size))
        self.seg = _Segment(env, ranks, [self.buffer.shape[-1]] * len(ranks), spin_ns)
        self.seg.ex.claim(env.rank)
        # publish, wait and the TP0 rows' column extrema in one C call per pass
        self._pass = self.seg.ex.row_pass(env.rank, shape.attn_tp_size, env.timeout_s)
        self._extrema: list[int] = []
        # the rows of even and odd passes, as views made once: a snapshot is one small copy
        self._views = [self.seg.ex.stacked(parity).reshape(shape.dims) for parity in (0, 1)]
        env.barrier()  # every rank attached and claimed before the first pass

    def exchange(self, local) -> None:
        try:
            self._extrema = self._pass.run(local)
        except PeerError as e:
            raise self.seg.named(e) from None

    def read(self):
        """The same reductions of the same TP0 rows as every host-side read, made by the C
        helper on the shared rows themselves (no copy into Python)."""
        half = len(self._extrema) // 2
        return GatherSummary.from_extrema(self._extrema[:half], self._extrema[half:])

    def _rows(self):
        return self._views[self._pass.seq & 1]

    def close(self) -> None:
        self._views = []  # views would keep the mapping alive past close
        super().close()

    def describe(self) -> dict:
        return {"spin_ns": self.seg.ex.spin_ns, "segment": "memfd, one per host"}


class Hierarchical(_ShmPath):
    name = "hierarchical"

    def __init__(self, env, shape, *, spin_ns: int = DEFAULT_SPIN_NS) -> None:
        super().__init__(None, shape, "cpu")
        hosts = env.host_ranks()
        if len({len(h) for h in hosts}) != 1:
            raise ValueError("hierarchical needs the same number of ranks on every host")
        mine = next(h for h in hosts if env.rank in h)
        width = self.buffer.shape[-1]
        lens = [width] * len(mine) + [width * env.world_size]  # local rows, then the world
        self.seg = _Segment(env, mine, lens, spin_ns)
        self._local = mine.index(env.rank)
        self._world_slot = len(mine)
        self.seg.ex.claim(self._local)
        self.leader = self._local == 0
        leaders = [h[0] for h in hosts]
        self._leaders = env.subgroup(leaders)  # every rank takes part in creating it
        if self.leader:
            self.seg.ex.claim(self._world_slot)
            self._block = torch.zeros(len(mine), width, dtype=torch.int64)
            self._blocks = torch.zeros(len(hosts), len(mine), width, dtype=torch.int64)
            # the leaders' blocks arrive host by host; the buffer is in rank order
            self._order = np.argsort(np.concatenate(hosts))
        self._local_slots = tuple(range(len(mine)))
        self._seq = 0
        env.barrier()

    def exchange(self, local) -> None:
        self._seq += 1
        ex, seq = self.seg.ex, self._seq
        ex.publish(self._local, local, seq)
        if self.leader:
            self.seg.wait(self._local_slots, seq)
            self._block.numpy()[:] = ex.stacked(seq, len(self._local_slots))
            all_gather(self._blocks.view(-1), self._block.view(-1), group=self._leaders)
            world = self._blocks.numpy().reshape(-1, self._block.shape[1])[self._order]
            ex.publish(self._world_slot, world.ravel(), seq)
        else:
            self.seg.wait((self._world_slot,), seq)

    def _rows(self) -> np.ndarray:
        return self.seg.ex.payload(self._world_slot, self._seq).reshape(self.shape.dims)

    def describe(self) -> dict:
        return {"spin_ns": self.seg.ex.spin_ns, "leaders_over": "gloo"}
