"""ShmExchange across real processes (spawned: nothing inherited but the token).

Rank 0 creates the segment and hands the token to the others through a queue (the job's
rendezvous store in real use); every rank owns one slot, publishes a row that is a function
of (rank, pass), waits for every slot and copies every row, checked against the same
function at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import threading
import time
from multiprocessing import connection

import numpy as np
import pytest

from delayer_core import shm_build
from delayer_core import shm_exchange as sx
from delayer_core.shm_build import ShmBuildError, ShmError
from delayer_core.shm_exchange import PeerDied, PeerTimeout, ShmExchange, ShmLayoutError

ROW = 5
CTX = mp.get_context("spawn")
START_S = 30.0  # pass 0 also waits for the slowest rank to start up


def _table(n: int, passes: int) -> np.ndarray:
    """rows[p, rank]: distinct per (rank, pass) in every field, so a stale or torn row shows."""
    p = np.arange(passes, dtype=np.int64)[:, None]
    r = np.arange(n, dtype=np.int64)[None, :]
    return np.stack([r + 0 * p, p + 0 * r, p * 1_000_003 + r, (p << 8) ^ r, -(p * n + r)], -1)


def _jitter(rng: random.Random, slow: float) -> None:
    x = rng.random()
    if x < slow:  # a slow rank this pass: a few hundred us
        time.sleep(rng.uniform(100e-6, 500e-6))
    elif x < 0.1:  # a few us of busy work
        end = time.perf_counter_ns() + rng.randrange(20_000)
        while time.perf_counter_ns() < end:
            pass


def _rank_main(rank, n, mode, kw, out, tokq):
    lens = [ROW] * n
    if rank == 0:
        ex = ShmExchange.create(lens, spin_ns=kw.get("spin_ns", sx.DEFAULT_SPIN_NS))
        for _ in range(n - 1):
            tokq.put(ex.token)
    else:
        ex = ShmExchange.attach(
            tokq.get(timeout=START_S), lens, spin_ns=kw.get("spin_ns", sx.DEFAULT_SPIN_NS)
        )
    ex.claim(rank)
    slots, passes, timeout = tuple(range(n)), kw["passes"], kw.get("timeout", 10.0)
    rng = random.Random(kw.get("seed", 0) * 1000 + rank)
    slow = 0.01 if mode == "hammer" else 0.0
    table = _table(n, passes)
    if kw.get("row_pass"):  # one C call per pass: publish, wait, column extrema
        return _row_pass_main(ex, rank, kw["row_pass"], table, rng, slow, out, kw)
    got, times = np.zeros_like(table), np.zeros(passes, np.int64)
    for p in range(passes):
        if rank == kw.get("victim") and p == kw.get("stop"):
            if mode == "stall":  # alive, but publishes nothing more
                time.sleep(timeout + 1.0)
                return "stalled"
            out.send(("at", p))  # mode "kill": the parent SIGKILLs us, we carry on
        if slow:
            _jitter(rng, slow)
        t0 = time.perf_counter_ns()
        ex.publish(rank, table[p, rank], p)
        try:
            ex.wait(slots, p, timeout if p else START_S)
        except (PeerDied, PeerTimeout) as e:
            return type(e).__name__, e.slot, e.slots, (time.perf_counter_ns() - t0) / 1e9
        for s in slots:
            if slow:  # a slow reader while faster ranks publish the next pass
                _jitter(rng, slow)
            got[p, s] = ex.payload(s, p)
        times[p] = time.perf_counter_ns() - t0
    ex.close()
    wrong = int((got != table).any(axis=2).sum())
    return {"wrong": wrong, "p50_us": float(np.median(times[passes // 10 :])) / 1e3}


def _row_pass_main(ex, rank, step, table, rng, slow, out, kw):
    """The row pass's extrema every pass, against the table's rows 0, step, 2*step..."""
    rp, wrong = ex.row_pass(rank, step, kw.get("timeout", 10.0)), 0
    for p in range(len(table)):
        if rank == kw.get("victim") and p == kw.get("stop"):
            out.send(("at", p))
        if slow:
            _jitter(rng, slow)
        t0 = time.perf_counter_ns()
        try:
            got = rp.run(table[p, rank])
        except (PeerDied, PeerTimeout) as e:
            return type(e).__name__, e.slot, e.slots, (time.perf_counter_ns() - t0) / 1e9
        rows = table[p, ::step]
        wrong += got != [*rows.min(0).tolist(), *rows.max(0).tolist()] or rp.seq != p + 1
    ex.close()
    return {"wrong": wrong}


def _worker(rank, n, mode, kw, out, tokq):
    try:
        out.send(("result", _rank_main(rank, n, mode, kw, out, tokq)))
    except BaseException as e:
        out.send(("result", f"{type(e).__name__}: {e}"))


def _run(mode: str, n: int, **kw) -> dict:
    """Run n ranks; {rank: what it returned}. A rank that reports "at" is SIGKILLed, and
    reaped only after the others reported, so it is an unreaped zombie meanwhile. One pipe
    per rank: a rank killed while holding a shared queue's lock would block the others."""
    tokq, pipes = CTX.Queue(), [CTX.Pipe(duplex=False) for _ in range(n)]
    procs = [
        CTX.Process(target=_worker, args=(r, n, mode, kw, pipes[r][1], tokq)) for r in range(n)
    ]
    for proc, (_, w) in zip(procs, pipes, strict=True):
        proc.start()
        w.close()  # the rank holds the only write end: its exit reads as EOF here
    readers = {r: rank for rank, (r, _) in enumerate(pipes)}
    results, deadline = {}, time.monotonic() + 30
    try:
        while readers:
            ready = connection.wait(list(readers), max(0.0, deadline - time.monotonic()))
            assert ready, f"ranks {sorted(readers.values())} sent nothing in time"
            for conn in ready:
                rank = readers[conn]
                try:
                    kind, value = conn.recv()
                except EOFError:  # exited (the SIGKILLed one) or crashed without a word
                    results.setdefault(rank, "exited")
                    del readers[conn]
                    continue
                if kind == "at":
                    os.kill(procs[rank].pid, signal.SIGKILL)
                    results[rank] = "killed"
                else:
                    results[rank] = value
                    del readers[conn]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return results


@pytest.mark.parametrize("n", [2, 3, 4])
def test_hammer_every_row_of_every_pass(n):
    results = _run("hammer", n, passes=3000, seed=n)
    assert sorted(results) == list(range(n)), results
    for rank, res in results.items():
        assert isinstance(res, dict) and res["wrong"] == 0, (rank, res)


@pytest.mark.parametrize(("n", "step"), [(2, 1), (4, 2), (3, 3)])
def test_row_pass_extrema_every_pass(n, step):
    results = _run("hammer", n, passes=3000, seed=n, row_pass=step)
    assert sorted(results) == list(range(n)), results
    for rank, res in results.items():
        assert isinstance(res, dict) and res["wrong"] == 0, (rank, res)


def test_row_pass_names_a_killed_peer():
    results = _run("kill", 3, passes=50_000, victim=1, stop=500, timeout=5.0, row_pass=1)
    assert results[1] == "killed", results
    for rank in (0, 2):
        kind, slot, _, waited = results[rank]
        assert (kind, slot) == ("PeerDied", 1) and waited < 1.0, results[rank]


def test_stalled_peer_times_out_naming_its_slot():
    timeout = 0.5
    results = _run("stall", 3, passes=200, victim=2, stop=50, timeout=timeout)
    assert results[2] == "stalled"
    for rank in (0, 1):
        kind, slot, slots, waited = results[rank]
        assert (kind, slot, slots) == ("PeerTimeout", 2, (2,)), results[rank]
        assert timeout <= waited < timeout + 0.5, waited


def test_killed_peer_is_named_fast_and_nothing_leaks():
    before = set(os.listdir("/dev/shm"))
    # The victim is rank 0, the segment's creator: the others' mappings outlive it.
    results = _run("kill", 3, passes=50_000, victim=0, stop=500, timeout=5.0)
    assert results[0] == "killed", results
    for rank in (1, 2):
        kind, slot, _, waited = results[rank]
        assert (kind, slot) == ("PeerDied", 0), results[rank]
        assert waited < 1.0, waited  # liveness is checked every 2 ms, not at the 5 s timeout
    assert set(os.listdir("/dev/shm")) == before


def test_latency_two_processes(capsys):
    results = _run("latency", 2, passes=20_000)
    assert all(isinstance(r, dict) and r["wrong"] == 0 for r in results.values()), results
    with capsys.disabled():
        p50 = ", ".join(f"rank {r}: {results[r]['p50_us']:.2f}" for r in sorted(results))
        print(f"\nshm exchange, 2 processes, publish+wait+read per pass, p50 us: {p50}")


def test_header_and_token_are_validated():
    with ShmExchange.create([ROW, ROW, 2 * ROW]) as ex:
        with ShmExchange.attach(ex.token, [ROW, ROW, 2 * ROW]) as peer:
            assert peer.seq(2) == -1 and peer.payload_lens == (ROW, ROW, 2 * ROW)
        with pytest.raises(ShmLayoutError, match=r"lens\[2\] 10 != 5"):
            ShmExchange.attach(ex.token, [ROW] * 3)
        with pytest.raises(ShmLayoutError, match="slots 3 != 2"):
            ShmExchange.attach(ex.token, [ROW] * 2)
        pid, fd, size = ex.token.split(":")
        with pytest.raises(ShmError, match="not a dpsync segment|cannot open"):
            ShmExchange.attach(f"{pid}:0:{size}", [ROW, ROW, 2 * ROW])
        with pytest.raises(ShmError, match="bad shm token"):
            ShmExchange.attach("nonsense", [ROW])
        words = np.frombuffer(ex._mm, np.int64)
        words[0] ^= 1  # a segment whose magic is wrong
        del words
        with pytest.raises(ShmLayoutError, match="magic"):
            ShmExchange.attach(ex.token, [ROW, ROW, 2 * ROW])
    with pytest.raises(ShmError, match="closed"):
        ex.publish(0, [0] * ROW, 0)


def test_claim_refuses_a_live_owner():
    with ShmExchange.create([ROW]) as ex:
        ex.claim(0)
        ex.claim(0)  # idempotent for the owner
        assert ex.owner(0) == os.getpid()
        with ShmExchange.attach(ex.token, [ROW]) as peer:
            other, addr = os.getppid(), peer._owner_addr[0]  # a live process, not this one
            peer._lib.dps_store_release(addr + 8, peer._lib.dps_starttime(other))
            peer._lib.dps_store_release(addr, other)
            with pytest.raises(ShmError, match="already owned"):
                ex.claim(0)


def test_an_exited_owner_ends_the_wait():
    gone = subprocess.Popen(["true"])
    gone.wait()  # exited and reaped: no such pid any more
    with ShmExchange.create([ROW, ROW]) as ex:
        ex.claim(0)  # alive (this process), and slot 0 unpublished too: slot 1 is still found
        ex._lib.dps_store_release(ex._owner_addr[1], gone.pid)
        t0 = time.monotonic()
        with pytest.raises(PeerDied, match=f"slot 1 \\(pid {gone.pid}\\) died") as e:
            ex.wait((0, 1), 0, 5.0)
        assert (e.value.slot, e.value.pid) == (1, gone.pid) and time.monotonic() - t0 < 1.0


def test_build_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shm_build.cache_dir() == tmp_path / "xdg" / "dpsync-bench"
    built = shm_build.build_helper()
    stamp = built.stat().st_mtime_ns
    monkeypatch.setenv("CC", "false")  # any compile from here on fails
    assert shm_build.build_helper() == built and built.stat().st_mtime_ns == stamp
    with pytest.raises(ShmBuildError, match="cannot build the shm helper") as e:
        shm_build.build_helper(tmp_path / "fresh")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(ShmBuildError):
        shm_build.build_helper(tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []  # no temporary left behind


def test_concurrent_builds_agree(tmp_path):
    out: list = []
    threads = [
        threading.Thread(target=lambda: out.append(shm_build.build_helper(tmp_path))) for _ in "abc"
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 1 and len(out) == 3
    assert [p.name for p in tmp_path.iterdir()] == [out[0].name]
