"""torchrun worker: a PrefillDelayer over a GlooCpu path, driven through scripted passes.

    torchrun --nproc-per-node N tests/dist_workers/delayer_worker.py OUT_DIR

Each rank writes ``OUT_DIR/rank<R>.jsonl``: one JSON object per pass (delayer name, pass index,
allow, reason, status, delayed_count, passes_waited, the delayer's gather count after the pass
and the gathered buffer). The expected outcomes live in tests/test_delayer_dist.py.

In every scripted pass a rank either negotiates with a LocalInfo or skips negotiate() and
only finalizes (then it gathers "not prefillable"), so each pass is one gather on every rank.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

import torch.distributed as dist

from delayer_core.decision import DelayerConfig
from delayer_core.delayer import LocalInfo, PrefillDelayer
from delayer_core.paths.gloo_cpu import GlooCpu
from delayer_core.shape import GatherShape

SKIP = None  # this rank does not negotiate, it only finalizes
FULL = 0.9  # token usage above the watermark
LOW = 0.1  # token usage below the watermark


def P(**kw):  # noqa: N802 - a prefillable rank
    kw.setdefault("token_usage", FULL)
    return LocalInfo(prefillable=True, **kw)


N = LocalInfo(prefillable=False)  # negotiates, nothing to prefill


def only(rank_set, info, other=SKIP):
    """A pass where the ranks in rank_set send ``info`` and the others ``other``."""
    return lambda rank, world: info if rank % world in {r % world for r in rank_set} else other


def every(info):
    return lambda rank, world: info


# max_delay_passes=3, max_running_requests=8: at most 2 delays, release on the 3rd pass.
MAIN = [
    only({0}, P()),  # 0 mixed -> delay
    every(P()),  # 1 all -> wait_success
    lambda r, w: P() if r == 0 else (N if r == 1 else SKIP),  # 2 mixed -> delay
    only({-1}, P()),  # 3 mixed (the last rank) -> delay
    only({0}, P(), other=N),  # 4 mixed -> wait_timeout
    every(SKIP),  # 5 none -> ""
    every(N),  # 6 none -> ""
    only({0}, P()),  # 7 mixed -> delay
    every(SKIP),  # 8 none -> "" (ends the episode)
    # 9/10: all prefillable; the last rank runs 6 of 8 slots, rank 0 wants a batch of 4:
    # 2 free slots < 4 -> the slot condition; skipped once (no_wait), then delay_slots.
    lambda r, w: P(running_batch=6 if r == w - 1 else 0, max_prefill_bs=4 if r == 0 else 1),
    lambda r, w: P(running_batch=6 if r == w - 1 else 0, max_prefill_bs=4 if r == 0 else 1),
    every(P(running_batch=4, max_prefill_bs=4)),  # 11 4 free == 4 -> wait_success
    every(P()),  # 12 all -> no_wait
]

# the same, with token_usage_low_watermark=0.5
WATERMARK = [
    only({0}, P()),  # 0 mixed -> delay
    only({1}, P(token_usage=LOW)),  # 1 mixed + watermark -> token_watermark
    lambda r, w: P(token_usage=LOW if r == w - 1 else FULL),  # 2 all + watermark
    every(SKIP),  # 3 none -> ""
    only({0}, P()),  # 4 mixed -> delay
    only({0}, P(), other=N),  # 5 mixed -> delay
    only({0, 1}, P(token_usage=LOW)),  # 6 mixed + watermark, would have timed out
    every(LocalInfo(prefillable=False, token_usage=0.0)),  # 7 none: watermark ignored
    only({0}, P(token_usage=LOW), other=N),  # 8 mixed + watermark, no episode
]


def run(name, delayer, script, rank, world, out):
    for index, step in enumerate(script):
        info = step(rank, world)
        with delayer.begin_pass() as p:
            if info is not SKIP:
                p.negotiate(info)
            outcome = p.finalize(actually_prefilled=info is not SKIP and info.prefillable)
        record = {
            "delayer": name,
            "pass": index,
            "rank": rank,
            "negotiated": info is not SKIP,
            "allow": outcome.allow,
            "reason": outcome.reason,
            "status": outcome.status,
            "delayed_count": outcome.delayed_count,
            "passes_waited": outcome.passes_waited,
            "gathers": delayer.gathers,
            "rows": delayer.sync_path.snapshot().tolist(),  # the buffer the host decided on
        }
        out.write(json.dumps(record) + "\n")
    summary = {
        "delayer": name,
        "final": True,
        "rank": rank,
        "gathers": delayer.gathers,
        "passes": len(script),
        "outcomes": sum(delayer.metrics.outcomes.values()),
        "episodes": delayer.metrics.passes_waited.count,
        "passes_waited_sum": delayer.metrics.passes_waited.sum,
    }
    out.write(json.dumps(summary) + "\n")


def main() -> None:
    out_dir = sys.argv[1]
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world >= 2, "the scripts need at least 2 ranks"
    assert int(os.environ["LOCAL_RANK"]) == rank
    path = GlooCpu(dist.group.WORLD, GatherShape(world, 1))
    main_delayer = PrefillDelayer(
        DelayerConfig(max_delay_passes=3, dp_size=world, max_running_requests=8), path
    )
    wm_delayer = PrefillDelayer(
        DelayerConfig(max_delay_passes=3, dp_size=world, token_usage_low_watermark=0.5), path
    )
    with open(os.path.join(out_dir, f"rank{rank}.jsonl"), "w") as out:
        run("main", main_delayer, MAIN, rank, world, out)
        run("watermark", wm_delayer, WATERMARK, rank, world, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
