"""The collective's device time, as nccl-tests measures it, in every case of a device path.

Ranks are aligned (a control barrier); a sleep kernel keeps the GPU busy while the host
queues one collective that absorbs what skew is left, a start event, `per_round` more
collectives and an end event, so the host's enqueue time stays out of the figure. The GPU
must still have been busy when the last one was queued (an event after the sleep not yet
reached); a round where it was not on some rank is discarded by every rank (agreed, so all
ranks queue the same collectives) and the sleep doubles for the next.
"""

from __future__ import annotations

import torch

ROUNDS = 10
PER_ROUND = 20
MAX_ATTEMPTS = 16
SLEEP_CYCLES = 2_000_000  # about 1 ms at H200 clocks


def collective_device_time(path, group, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict:
    """ns per collective of each valid round (this rank), and how the rounds went."""
    stream = path.issue_stream
    cycles, per_collective, discarded = SLEEP_CYCLES, [], 0
    for _ in range(MAX_ATTEMPTS):
        if len(per_collective) == rounds:
            break
        group.barrier()
        slept, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        with torch.cuda.stream(stream):
            torch.cuda._sleep(cycles)
            slept.record()
            path.enqueue_collective()  # lines the ranks up; outside the timed span
            start.record()
            for _ in range(per_round):
                path.enqueue_collective()
            end.record()
        busy_throughout = not slept.query()
        end.synchronize()
        if group.agree_max(0 if busy_throughout else 1):  # some rank's GPU went idle
            discarded += 1
            cycles *= 2
            continue
        per_collective.append(round(start.elapsed_time(end) * 1e6 / per_round))
    return {
        "ns": per_collective,
        "discarded_rounds": discarded,
        "sleep_cycles": cycles,
        "method": f"CUDA events around {per_round} back-to-back collectives queued while a "
        f"sleep kernel keeps the GPU busy (checked), ranks aligned, one collective before "
        f"the start event; {rounds} rounds on the path's issue stream, an otherwise idle GPU",
    }
