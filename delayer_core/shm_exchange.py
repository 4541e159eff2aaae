"""A single-host shared-memory exchange: K slots, each a sequence number and a payload.

Each pass p, a slot's owner calls ``publish(slot, values, p)``; readers ``wait(slots, p,
timeout_s)`` until every listed slot's sequence is >= p, then read ``payload(slot, p)``.

Memory ordering (``shm_sync.c``): publish copies the payload with plain stores, then
release-stores the sequence; wait acquire-loads it, in one C call (``spin_ns`` of spinning
with a pause hint, then sched_yield / short naps to the deadline, checking the owners'
liveness every 2 ms). A reader that sees sequence >= p thus sees pass p's payload, on
x86-64 (TSO) and Arm64 (STLR/LDAR) alike.

Double buffering: pass p goes to buffer ``p & 1`` of its slot, so publishing p+1 cannot
disturb a reader of pass p; only p+2 reuses the buffer, and its writer first waited for a
pass >= p+1 publication from every reader of the slot, each made after that reader was
done with pass p (its release store orders its reads first; the writer's acquire load
orders the new stores after). ``shm_cpu``: everyone waits on everyone. ``hierarchical``:
the leader writes world p+2 after the locals' rows p+2 (published after they read world
p+1); a local writes row p+2 after world p+1 (published after the leader read rows p+1).
So a ``payload`` view is intact until its reader's next publish; copy it to keep it longer.

Lifetime: the creator makes the segment with ``memfd_create``, its token "pid:fd:size"
lets peers map ``/proc/<pid>/fd/<fd>`` while it lives (same pid namespace and user). No
name ever exists and the kernel frees the memory with its last fd or mapping: a SIGKILL at
any moment leaves nothing behind, in /dev/shm or elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .shm_build import ShmError, load_helper

MAGIC = 0x4450_5359_4E43_5348  # "DPSYNCSH"
VERSION = 1
LINE = 128  # slot alignment: no false sharing, even with adjacent-line prefetch
HEAD_WORDS = 8  # magic, version, K, size in bytes, 4 reserved; then K lens, K owners
DEFAULT_SPIN_NS = 20_000
_MEMFD_NAME = "dpsync-shm"


class ShmLayoutError(ShmError):
    """The segment's header does not match what the attaching rank expects."""


class PeerError(ShmError):
    """Slots (the first: ``slot``, owned by ``pid``) did not publish pass ``seq``."""

    def __init__(self, msg: str, slot: int, slots: Sequence[int], seq: int, pid: int) -> None:
        super().__init__(msg)
        self.slot, self.slots, self.seq, self.pid = slot, tuple(slots), seq, pid


class PeerTimeout(PeerError):
    """The deadline passed before ``slots`` published pass ``seq``."""


class PeerDied(PeerError):
    """The process owning ``slot`` (``pid``) is gone and it had not published pass ``seq``."""


class _Closed:
    """Replaces a closed exchange's helper, so no call reaches unmapped memory."""

    def __getattr__(self, name):
        raise ShmError("shm exchange is closed")


def _layout(lens: Sequence[int]) -> tuple[list[int], int]:
    """(byte offset of each slot, total size): header, then one LINE-aligned region per slot
    holding its sequence word followed by its two payload buffers."""
    up = lambda n: -(-n // LINE) * LINE  # noqa: E731
    ends = np.cumsum([up(8 * (HEAD_WORDS + 3 * len(lens)))] + [up(8 + 16 * n) for n in lens])
    return ends[:-1].tolist(), int(ends[-1])


class ShmExchange:
    """Use ``create`` (one rank per host) or ``attach`` (the others, with its ``token``)."""

    def __init__(self, mm: mmap.mmap, fd: Optional[int], token: str, lens, spin_ns: int):
        self._lib = load_helper()
        self._mm, self._fd, self.token = mm, fd, token
        self.payload_lens, self.spin_ns = tuple(lens), int(spin_ns)
        words = np.frombuffer(mm, dtype=np.int64)
        base, (offs, _), k = words.ctypes.data, _layout(self.payload_lens), len(self.payload_lens)
        self._owner_addr = [base + 8 * (HEAD_WORDS + k + 2 * s) for s in range(k)]
        self._seq_addr = [base + o for o in offs]
        self._wbufs, self._rbufs = [], []  # per slot (buffer 0, buffer 1): publish / payload
        for o, n in zip(offs, self.payload_lens, strict=True):
            pair = words[o // 8 + 1 : o // 8 + 1 + 2 * n].reshape(2, n)
            ro = pair.view()
            ro.flags.writeable = False
            self._wbufs.append(tuple(pair))
            self._rbufs.append(tuple(ro))
        self._waits: dict = {}  # slots tuple -> C arrays (kept alive) and their addresses
        self._stacked: dict = {}  # (count, parity) -> a view over the slots' payloads
        self._why = ctypes.c_int(0)
        self._why_addr = ctypes.addressof(self._why)

    @classmethod
    def create(cls, payload_lens: Sequence[int], spin_ns: int = DEFAULT_SPIN_NS) -> ShmExchange:
        lens = [int(n) for n in payload_lens]
        if not lens or min(lens) < 1:
            raise ValueError(f"payload_lens must be >= 1 each, got {list(payload_lens)}")
        load_helper()  # fail on a missing compiler before making anything
        offs, size = _layout(lens)
        fd = os.memfd_create(_MEMFD_NAME, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            raise
        w = np.frombuffer(mm, dtype=np.int64)
        w[1:4], w[HEAD_WORDS : HEAD_WORDS + len(lens)] = (VERSION, len(lens), size), lens
        w[[o // 8 for o in offs]] = -1  # no pass published yet
        w[0] = MAGIC  # the token is handed out after this, through the rendezvous store
        return cls(mm, fd, f"{os.getpid()}:{fd}:{size}", lens, spin_ns)

    @classmethod
    def attach(
        cls, token: str, payload_lens: Sequence[int], spin_ns: int = DEFAULT_SPIN_NS
    ) -> ShmExchange:
        try:
            pid, fd, size = (int(x) for x in token.split(":"))
        except ValueError:
            raise ShmError(f"bad shm token {token!r} (expected pid:fd:size)") from None
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if not os.readlink(path).startswith(f"/memfd:{_MEMFD_NAME}"):
                raise ShmError(f"shm token {token!r}: {path} is not a dpsync segment")
            mfd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise ShmError(f"cannot open shm segment {path} (creator gone?): {e}") from None
        try:
            if os.fstat(mfd).st_size != size:
                raise ShmLayoutError(f"shm segment {path} is not {size} bytes long")
            mm = mmap.mmap(mfd, size)
        finally:
            os.close(mfd)  # the mapping keeps the memory; the creator's fd keeps it attachable
        lens = [int(n) for n in payload_lens]
        head = np.frombuffer(mm, np.int64, min(size // 8, HEAD_WORDS + len(lens))).tolist()
        got = head[:4] + head[HEAD_WORDS:]
        want = [MAGIC, VERSION, len(lens), _layout(lens)[1], *lens]
        names = ["magic", "version", "slots", "size"] + [f"lens[{i}]" for i in range(len(lens))]
        bad = [f"{k} {g} != {w}" for k, g, w in zip(names, got, want, strict=False) if g != w]
        if bad or len(got) != len(want):
            mm.close()
            why = "; ".join(bad) if bad else "segment too small"
            raise ShmLayoutError(f"shm segment {token!r} does not match this layout: {why}")
        return cls(mm, None, token, lens, spin_ns)

    def claim(self, slot: int) -> None:
        """Record this process as ``slot``'s owner, so waiters notice if it dies."""
        me, addr = os.getpid(), self._owner_addr[slot]
        cur, start = self.owner(slot), self._lib.dps_load_acquire(addr + 8)
        if cur not in (0, me) and self._lib.dps_starttime(cur) == start:
            raise ShmError(f"shm slot {slot} is already owned by live pid {cur}")
        self._lib.dps_store_release(addr + 8, self._lib.dps_starttime(me))
        self._lib.dps_store_release(addr, me)

    def owner(self, slot: int) -> int:  # pid, 0: unclaimed
        return int(self._lib.dps_load_acquire(self._owner_addr[slot]))

    def seq(self, slot: int) -> int:  # the last pass published, -1: none yet
        return int(self._lib.dps_load_acquire(self._seq_addr[slot]))

    def publish(self, slot: int, values, seq: int) -> None:
        """Write pass ``seq``'s payload, then release-store ``seq`` (passes must grow)."""
        store = self._lib.dps_store_release  # first: raises once closed
        # Plain numpy stores; the release store after them orders every earlier store of this
        # thread, whoever made it (and the ctypes call is opaque to any compiler).
        self._wbufs[slot][seq & 1][:] = values
        store(self._seq_addr[slot], seq)

    def wait(self, slots: Sequence[int], seq: int, timeout_s: Optional[float]) -> None:
        """Return once every slot in ``slots`` published pass ``seq`` (or later); raise
        PeerDied / PeerTimeout naming the first missing slot otherwise (timeout None: none)."""
        wait = self._lib.dps_wait  # first: raises once closed
        key = slots if type(slots) is tuple else tuple(slots)
        w = self._waits.get(key)
        if w is None:  # first wait on these slots: the C arrays of their addresses
            seqs, owners, keep = self._addresses(key)
            w = self._waits[key] = (seqs, owners, len(key), key, keep)
        tns = -1 if timeout_s is None else int(timeout_s * 1e9)
        i = wait(w[0], w[1], w[2], seq, self.spin_ns, tns, self._why_addr)
        if i >= 0:
            self._fail(w[3], i, seq, timeout_s, self._why.value)

    def _addresses(self, slots: tuple) -> tuple:
        """(sequence-word array address, owner-word array address, C arrays to keep alive)."""
        arr = ctypes.c_void_p * len(slots)
        c = arr(*(self._seq_addr[s] for s in slots)), arr(*(self._owner_addr[s] for s in slots))
        return ctypes.addressof(c[0]), ctypes.addressof(c[1]), c

    def _fail(self, slots, i, seq, timeout_s, why: int):
        slot, pid = slots[i], self.owner(slots[i])
        if why == 2:
            msg = f"shm slot {slot} (pid {pid}) died before publishing pass {seq}"
            raise PeerDied(msg, slot, (slot,), seq, pid)
        missing = [s for s in slots if self.seq(s) < seq] or [slot]
        who = ", ".join(f"{s} (pid {self.owner(s)}, at {self.seq(s)})" for s in missing)
        msg = f"shm slots {who} did not publish pass {seq} within {timeout_s} s"
        raise PeerTimeout(msg, slot, missing, seq, pid)

    def payload(self, slot: int, seq: int) -> np.ndarray:
        """Read-only view of pass ``seq``'s payload of ``slot`` (after ``wait``); valid until
        this rank's next publish."""
        return self._rbufs[slot][seq & 1]

    def stacked(self, seq: int, count: Optional[int] = None) -> np.ndarray:
        """Read-only (count, n) view of pass ``seq``'s payloads of the first ``count`` slots
        (default: all), which must share one length n (their regions are then evenly
        spaced): one view for a reader of every row, made once per parity (as_strided is
        slow; a pass must not pay for it)."""
        key = (count or len(self.payload_lens), seq & 1)
        view = self._stacked.get(key)
        if view is None:
            lens = self.payload_lens[: key[0]]
            if len(set(lens)) != 1:
                raise ShmError("stacked() needs slots of one payload length")
            offs = _layout(self.payload_lens)[0]
            stride = offs[1] - offs[0] if len(lens) > 1 else 0
            first = self._rbufs[0][key[1]]
            view = np.lib.stride_tricks.as_strided(first, (len(lens), lens[0]), (stride, 8))
            view.flags.writeable = False
            self._stacked[key] = view
        return view

    def row_pass(self, slot: int, step: int, timeout_s: Optional[float]) -> RowPass:
        """``slot``'s owner's pass as one C call (see RowPass); every slot is waited on."""
        return RowPass(self, slot, step, timeout_s)

    def close(self) -> None:
        if isinstance(self._lib, _Closed):
            return
        self._lib, self._waits, self._wbufs, self._rbufs = _Closed(), {}, None, None
        self._stacked = {}
        if self._fd is not None:
            os.close(self._fd)
        with contextlib.suppress(BufferError):  # a caller holds a payload view: unmapped later
            self._mm.close()

    def __enter__(self) -> ShmExchange:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# RowPass's context words: shm_sync.c's P_* enum, in its order.
(P_SEQ, P_N, P_WIDTH, P_STEP, P_SPIN, P_TIMEOUT, P_MY_SEQ, P_MY_BUF, P_SEQS, P_OWNERS,
 P_FIRST_BUF, P_STRIDE, P_WHY, P_ROW) = range(14)  # fmt: skip


class RowPass:
    """A pass of a rank that reads every row, as one C call (``dps_row_pass``): publish this
    slot's row for the next pass, wait until every slot published it, then take the minimum
    and maximum of each column over the rows of slots 0, step, 2*step... (a ctypes call costs
    more than the gather itself, so one per pass). The protocol is publish() then wait()."""

    def __init__(self, ex: ShmExchange, slot: int, step: int, timeout_s: Optional[float]):
        n, width = len(ex.payload_lens), ex.payload_lens[slot]
        if set(ex.payload_lens) != {width} or not 1 <= step <= n:
            raise ShmError("a row pass needs slots of one payload length and 1 <= step <= slots")
        self._ex, self._slots, self._timeout_s = ex, tuple(range(n)), timeout_s
        self.ctx = ctx = np.zeros(P_ROW + 3 * width, dtype=np.int64)
        seqs, owners, self._keep = ex._addresses(self._slots)
        offs = _layout(ex.payload_lens)[0]
        ctx[:P_ROW] = (  # the pass last published (the call publishes the next), then setup
            *(max(ex.seq(slot), 0), n, width, step, ex.spin_ns),
            *(-1 if timeout_s is None else int(timeout_s * 1e9), ex._seq_addr[slot]),
            *(ex._wbufs[slot][0].ctypes.data, seqs, owners, ex._rbufs[0][0].ctypes.data),
            *(offs[1] - offs[0] if n > 1 else 0, 0),
        )
        self.row = ctx[P_ROW : P_ROW + width]  # the values the next run() publishes
        self._extrema = ctx[P_ROW + width :]
        self._ptr = ctypes.c_void_p(ctx.ctypes.data)

    @property
    def seq(self) -> int:
        return int(self.ctx[P_SEQ])

    def run(self, values) -> list[int]:
        """Publish ``values`` for the next pass and wait for it; the columns' minima, then
        their maxima (2 x width ints). Raises PeerDied / PeerTimeout as wait() does."""
        self.row[:] = values
        late = self._ex._lib.dps_row_pass(self._ptr)  # raises once the exchange is closed
        if late >= 0:
            self._ex._fail(self._slots, late, self.seq, self._timeout_s, int(self.ctx[P_WHY]))
        return self._extrema.tolist()
