"""shm_cpu in one process (a one-rank job, a stub store): what it reads, what it snapshots,
what close() releases; and a row pass whose peer never publishes."""

from __future__ import annotations

import time

import pytest

from delayer_core.decision import GatherSummary
from delayer_core.paths.shm import ShmCpu
from delayer_core.shape import GatherShape
from delayer_core.shm_exchange import PeerTimeout, ShmExchange
from dpsync_bench.measure.checks import local_row


class _Store(dict):
    def set(self, key, value):
        self[key] = value.encode()

    def get(self, key):
        return self[key]


class _OneRank:
    rank, world_size, same_host, timeout_s = 0, 1, True, 5.0
    store = _Store()

    def segment_key(self) -> str:
        return "test"

    def barrier(self) -> None:
        pass


def test_one_rank_reads_snapshots_and_closes():
    path = ShmCpu(_OneRank(), GatherShape(1, 1))
    for i in range(5):  # both buffer parities, twice
        row = local_row(0, i)
        path.exchange(path.prepare(row))
        assert path.read() == GatherSummary.from_rows([row])
        assert path.snapshot().tolist() == [[row]]
    mapping = path.seg.ex._mm
    path.close()
    assert mapping.closed  # nothing (a cached view) keeps the segment mapped


def test_row_pass_times_out_naming_the_silent_slot():
    with ShmExchange.create([5, 5]) as ex:
        ex.claim(0)
        ex.claim(1)  # alive (this process) but never publishing
        rp = ex.row_pass(0, 1, timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout, match="slots 1 .* did not publish pass 1 within 0.2 s"):
            rp.run([1, 0, 0, 0, 0])
        assert 0.2 <= time.monotonic() - t0 < 1.0
