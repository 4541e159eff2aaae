"""Order statistics and the cross-rank reduction. Pure Python: no torch, no numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence

QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(values: Sequence[float]) -> dict:
    """p50/p90/p99/max/min/mean/stdev and the sample count."""
    if not values:
        raise ValueError("no samples to summarize")
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"non-finite sample {v!r}")
    ordered = sorted(values)
    n = len(ordered)
    mean = math.fsum(ordered) / n
    var = math.fsum((v - mean) ** 2 for v in ordered) / (n - 1) if n > 1 else 0.0
    out = {name: quantile(ordered, q) for name, q in QUANTILES}
    out.update(max=ordered[-1], min=ordered[0], mean=mean, stdev=math.sqrt(var), n=n)
    return out


def reduce_max(per_rank: Sequence[Sequence[float]]) -> list[float]:
    """Per-iteration max across ranks: every rank waits for the slowest one."""
    _check_aligned(per_rank)
    return [max(column) for column in zip(*per_rank, strict=True)]


def reduce_spread(per_rank: Sequence[Sequence[float]]) -> list[float]:
    """Per-iteration max minus min across ranks (alignment skew of start instants)."""
    _check_aligned(per_rank)
    return [max(column) - min(column) for column in zip(*per_rank, strict=True)]


def slowest_rank_counts(per_rank: Sequence[Sequence[float]]) -> list[int]:
    """How often each rank was the slowest (arrived last) over the iterations."""
    _check_aligned(per_rank)
    counts = [0] * len(per_rank)
    for column in zip(*per_rank, strict=True):
        counts[max(range(len(column)), key=column.__getitem__)] += 1
    return counts


def relative_spread(a: float, b: float) -> float:
    """|a - b| over their mean; 0 when both are 0."""
    mean = (a + b) / 2
    return 0.0 if mean == 0 else abs(a - b) / mean


def _check_aligned(per_rank: Sequence[Sequence[float]]) -> None:
    if not per_rank:
        raise ValueError("no ranks")
    lengths = {len(r) for r in per_rank}
    if len(lengths) != 1:
        raise ValueError(f"ranks recorded different iteration counts: {sorted(lengths)}")
    if 0 in lengths:
        raise ValueError("ranks recorded no iterations")
