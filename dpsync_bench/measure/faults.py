"""Faults on purpose, for the fault-matrix tests: DPSYNC_FAULT=KIND@RANK:CASE.

No torch: it fires at pytest's start-up too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from ..cases import UsageError

# Testing only: "KIND@RANK:CASE", CASE a case ordinal or "start" (pytest start-up, before any
# case). exit0 leaves with code 0 mid-job, as a rank that returns early would; slow makes the
# case measurably slower (the nightly test's injected regression): every exchange of its
# path on that rank starts SLOW_S late, inside the timed pass (20 ms: many times any path's
# pass, even on CPU cores shared with a busy neighbour).
FAULT_ENV = "DPSYNC_FAULT"
FAULT_KINDS = ("kill", "raise", "sleep", "exit", "exit0", "corrupt", "slow")
AT_START_UP = -1
SLOW_S = 0.02


def parse_fault(spec: str | None) -> tuple[str, int, int] | None:
    """DPSYNC_FAULT's KIND@RANK:CASE, checked before anything starts (UsageError)."""
    if not spec:
        return None
    try:
        kind, where = spec.split("@")
        rank_text, case_text = where.split(":")
        at_rank = int(rank_text)
        at_case = AT_START_UP if case_text == "start" else int(case_text)
    except ValueError:
        raise UsageError(f"{FAULT_ENV}={spec!r} is not KIND@RANK:CASE") from None
    if kind not in FAULT_KINDS or at_rank < 0 or at_case < AT_START_UP:
        raise UsageError(
            f"{FAULT_ENV}={spec!r}: kind is one of {', '.join(FAULT_KINDS)}, "
            "rank is non-negative, case is a non-negative ordinal or 'start'"
        )
    return kind, at_rank, at_case


def inject_fault(rank: int, ordinal: int) -> str | None:
    """Fail on purpose where DPSYNC_FAULT says (the fault-matrix tests use this); returns
    what the case itself must do: "corrupt" (damage the gathered buffer), "slow" (slowed())
    or None."""
    fault = parse_fault(os.environ.get(FAULT_ENV))
    if fault is None or fault[1:] != (rank, ordinal):
        return None
    kind = fault[0]
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "raise":
        where = "at start-up" if ordinal == AT_START_UP else f"in case {ordinal}"
        raise RuntimeError(f"injected fault {where} on rank {rank}")
    elif kind == "sleep":
        time.sleep(3600)
    elif kind in ("exit", "exit0"):
        os._exit(0 if kind == "exit0" else 7)
    return kind if kind in ("corrupt", "slow") else None


def slowed(path, delay_s: float = SLOW_S):
    """Fault `slow`: the path, its every exchange starting `delay_s` late on this rank."""
    exchange = path.exchange

    def slow_exchange(local):
        time.sleep(delay_s)
        return exchange(local)

    path.exchange = slow_exchange
    return path


def fault_at_start_up(rank: int) -> None:
    """DPSYNC_FAULT=KIND@RANK:start fires here, as pytest configures, before any case."""
    with contextlib.suppress(UsageError):  # a bad spec is refused later, with one line
        inject_fault(rank, AT_START_UP)
