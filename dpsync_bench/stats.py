"""The one quantile, the summaries and the cross-rank reductions (numpy; no torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The statistics every figure is summarized by, in this order.
QUANTILES = (("p5", 0.05), ("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
STAT_KEYS = ("n", "min", "p5", "p50", "p90", "p99", "max", "mean", "stdev")


def quantile(values, q: float) -> float:
    """numpy's default (linear interpolation between order statistics); the only one used."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("quantile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    return float(np.quantile(arr, q))


def summarize(values, scale: float = 1.0) -> dict:
    """n, min, p5, p50, p90, p99, max, mean, stdev of `values` times `scale` (ns -> us)."""
    arr = np.asarray(values, dtype=float).ravel() * scale
    if arr.size == 0:
        raise ValueError("no samples to summarize")
    if not np.isfinite(arr).all():
        raise ValueError("non-finite sample")
    qs = np.quantile(arr, [q for _, q in QUANTILES])
    out = {"n": int(arr.size), "min": float(arr.min())}
    out.update({name: float(v) for (name, _), v in zip(QUANTILES, qs, strict=True)})
    out.update(
        max=float(arr.max()),
        mean=float(arr.mean()),
        stdev=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
    )
    return out


def per_pass(per_rank, how: str = "max") -> np.ndarray:
    """Reduce (ranks, passes) to one figure per pass: the max over ranks (every rank waits
    for the slowest), the min (the shortest idle gap any rank had) or the spread."""
    arr = np.asarray(per_rank)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"expected (ranks, passes) samples, got shape {arr.shape}")
    if how == "max":
        return arr.max(axis=0)
    if how == "min":
        return arr.min(axis=0)
    if how == "spread":
        return arr.max(axis=0) - arr.min(axis=0)
    raise ValueError(f"unknown reduction {how!r}")


def argmax_counts(per_rank) -> list[int]:
    """How often each rank held the largest value of a pass (ties: the lowest rank)."""
    arr = np.asarray(per_rank)
    return np.bincount(arr.argmax(axis=0), minlength=arr.shape[0]).tolist()


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / mean; 0 when all are 0."""
    arr = np.asarray(values, dtype=float)
    mean = arr.mean()
    return 0.0 if mean == 0 else float((arr.max() - arr.min()) / mean)


def block_means(values, block: int) -> np.ndarray:
    """Means of consecutive blocks of `block` samples (a trailing partial block dropped)."""
    arr = np.asarray(values, dtype=float)
    n = arr.size // block * block
    return arr[:n].reshape(-1, block).mean(axis=1)


def median_and_error(values) -> tuple[float, float]:
    """The median and its standard error, from a robust spread (1.4826 x MAD, the normal
    sigma) and the median's efficiency (1.2533 sigma / sqrt(n))."""
    arr = np.asarray(values, dtype=float)
    med = float(np.median(arr))
    sigma = 1.4826 * float(np.median(np.abs(arr - med)))
    return med, 1.2533 * sigma / np.sqrt(arr.size)
