"""What every pass must have gathered, read and decided; checked after the case.

Rows are a deterministic function of (rank, pass) in which every field changes, so a stale,
misplaced or half-written element shows. Checked per pass: the buffer the host decided
from, element by element; what the host read (every reduction, or upstream's lazy subset);
the decision, against ``decide`` on the expected rows.
"""

from __future__ import annotations

import numpy as np

from delayer_core.decision import GatherSummary, decide
from delayer_core.shape import GatherShape

from .loop import CaseLoop


def local_row(rank: int, iteration: int) -> list[int]:
    """A legal row whose every field changes with rank and iteration, so a stale or
    misplaced element is caught by the check."""
    return [
        (iteration + rank) % 2,
        int(iteration % 7 == rank % 7),
        iteration,
        rank + 1,
        iteration * 4096 + rank,
    ]


def expected_buffer(shape: GatherShape, iteration: int) -> np.ndarray:
    ranks = range(shape.world_size)
    return np.array([local_row(r, iteration) for r in ranks]).reshape(shape.dims)


def expected_summary(tp0: np.ndarray, lazily: bool) -> GatherSummary:
    """What a path must have read: every reduction, or upstream's lazy subset."""
    full = GatherSummary.from_rows(tp0.tolist())
    if not lazily:
        return full
    low, force = full.prefillable_min, full.force_allow_max
    rest = (
        (full.running_batch_max, full.max_prefill_bs_max, full.waiting_queue_max)
        if low > 0 and force == 0
        else (None, None, None)
    )
    return GatherSummary(low, None if low > 0 else full.prefillable_max, force, *rest)


def check(loop: CaseLoop, path, corrupt: bool) -> dict:
    """Every pass run (warm-up included): the buffer element by element, what the host
    read, and the decision, against what the rows must have given."""
    snaps = path.host_rows([c[5] for c in loop.checks])
    if corrupt:
        snaps.reshape(len(snaps), -1)[:, -1] += 1
    lazily = getattr(path, "upstream_reads", False)
    wrong_elements = wrong_reads = wrong_decisions = 0
    for (i, before, now_s, summary, outcome, _), got in zip(loop.checks, snaps, strict=True):
        want = expected_buffer(path.shape, i)
        wrong_elements += int((got != want).sum())
        want_summary = expected_summary(want[:, 0, :], lazily)
        wrong_reads += summary != want_summary
        if decide(before, want_summary, loop.config, now_s) != outcome:
            wrong_decisions += 1
    return {
        "wrong_elements": wrong_elements,
        "wrong_reads": int(wrong_reads),
        "wrong_decisions": wrong_decisions,
        "passes_checked": len(loop.checks),
    }
