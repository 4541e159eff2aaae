"""How much a case's run-level statistic (its p50, its p99) moves by chance: within one run
(from its raw samples) and across runs (from the history's spread).

Within a run, passes are autocorrelated (lag-1 up to 0.8 in the smoke runs), so n passes
carry less information than n independent draws. Block means measure how much less: with
the passes cut into BLOCKS consecutive blocks of m, m * var(block means) / var(passes) is the
variance inflation (1 for independent passes). The standard error of a quantile is then the
half-width of its distribution-free one-sigma interval, read between the order statistics
at q -/+ sqrt(inflation * q (1 - q) / n). The same rule serves the p50 and the p99; for the
p99 of 20 to 60 passes it is the gap to the largest passes, which is what such a p99 is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import numpy as np

from .. import results, stats
from ..results import ResultsError

BLOCKS = 10
US = 1e-3  # the samples are ns, the summaries us
QUANTILE_OF = {"p50": 0.50, "p99": 0.99}
MAD_TO_SIGMA = 1.4826  # a normal distribution's sigma per median absolute deviation


def per_pass_us(samples: dict, figure: str = "pass") -> np.ndarray:
    """One value per pass, as the case's summary reduces the ranks (measure/summary.py):
    pass and stall times take the slowest rank, since every rank waits for it."""
    return stats.per_pass(samples[figure], "max") * US


def pass_times_us(run_dir, case_id: str) -> np.ndarray | None:
    """The per-pass figure the case's pass_us summarizes, or None when the run kept no
    samples for the case (a published run may drop them)."""
    if not results.samples_path(run_dir, case_id).is_file():
        return None
    try:
        samples = results.load_samples(run_dir, case_id)
    except ResultsError as e:  # judge without them rather than not at all
        print(f"dpsync: ignoring samples: {e}", file=sys.stderr)
        return None
    return per_pass_us(samples) if "pass" in samples else None


def variance_inflation(values: np.ndarray, blocks: int = BLOCKS) -> float:
    """m * var(block means) / var(values), at least 1 (what autocorrelation costs)."""
    m = values.size // blocks
    if m < 2:  # blocks of one pass: nothing to learn about their correlation
        return 1.0
    spread = float(np.var(values, ddof=1))
    if spread == 0:
        return 1.0
    means = stats.block_means(values, m)
    return max(1.0, m * float(np.var(means, ddof=1)) / spread)


def quantile_se(values, q: float, blocks: int = BLOCKS) -> float:
    """Standard error of the q-quantile of autocorrelated samples (see the module's doc)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return math.inf
    half = math.sqrt(variance_inflation(arr, blocks) * q * (1 - q) / arr.size)
    low, high = np.quantile(arr, [max(0.0, q - half), min(1.0, q + half)])
    return float(high - low) / 2


def within_run_se(run_dir, case_id: str) -> dict[str, float] | None:
    """{"p50": se, "p99": se} of one case of one run, in us; None without samples."""
    passes = pass_times_us(run_dir, case_id)
    if passes is None or passes.size < 2:
        return None
    return {stat: quantile_se(passes, q) for stat, q in QUANTILE_OF.items()}


def median_and_sigma(values: Sequence[float]) -> tuple[float, float]:
    """The median of run-level values and the robust sigma of their spread (1.4826 MAD):
    one odd run moves neither."""
    arr = np.asarray(values, dtype=float)
    centre = float(np.median(arr))
    return centre, MAD_TO_SIGMA * float(np.median(np.abs(arr - centre)))
