"""Forwards held at their label while a case runs: a GPU that slows as it heats up (seen on
an H200: a 20 ms forward tuned at 20.16 ms ran 21.6 ms by the end of its case) is corrected
forward by forward, in bounded steps."""

from __future__ import annotations

import numpy as np
import pytest

from dpsync_bench.measure.forward import HOLD_STEP, next_rows


def test_a_drifting_gpu_is_held_within_two_percent():
    rows, target, durations = 160_000, 20.0, []
    for i in range(300):  # 8 % slower by the end, as the H200 ran
        ms_per_row = 20.0 / 160_000 * (1 + 0.08 * i / 300)
        durations.append(rows * ms_per_row)
        rows = next_rows(rows, durations[-1], target)
    assert abs(np.median(durations) / target - 1) < 0.02
    assert abs(durations[-1] / target - 1) < 0.01
    unheld = 160_000 * 20.0 / 160_000 * 1.08
    assert unheld / target - 1 > 0.05  # what the case would have measured without holding


@pytest.mark.parametrize("measured", [1.0, 100.0, 19.0, 21.0])
def test_one_step_is_bounded_and_goes_the_right_way(measured):
    rows = next_rows(10_000, measured, 20.0)
    assert abs(rows / 10_000 - 1) <= HOLD_STEP + 1e-4
    assert (rows > 10_000) == (measured < 20.0)


def test_nothing_measured_changes_nothing():
    assert next_rows(123, 0.0, 5.0) == 123
    assert next_rows(1, 50.0, 5.0) == 1  # never below one row
