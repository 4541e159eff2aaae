"""What every pass must have gathered, read and decided (measure/checks.py): the rows, the
expected buffer, upstream's lazy reads, and `check` over a loop's passes catching a
damaged element, a stale or misplaced row, a wrong read and a wrong decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_fakes import FakeClock, FakePath, make_loop

from delayer_core.decision import GatherSummary
from delayer_core.paths.base import read_back_upstream
from delayer_core.shape import GatherShape
from dpsync_bench.measure.checks import check, expected_buffer, expected_summary, local_row

SHAPES = ["1x1", "2x1", "1x2", "4x1", "2x2", "1x4", "3x2"]


# ---- rows and the expected buffer ------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_expected_buffer_layout(shape):
    s = GatherShape.parse(shape)
    buf = expected_buffer(s, 17)
    assert buf.shape == s.dims
    ranks = buf[..., 3].ravel() - 1  # field 3 is rank + 1
    assert ranks.tolist() == list(range(s.world_size))  # row-major: rank = dp * tp + tp_index
    for rank, row in enumerate(buf.reshape(-1, 5)):
        assert row.tolist() == local_row(rank, 17)


def test_local_row_changes_with_rank_and_iteration():
    rows = {(r, i): tuple(local_row(r, i)) for r in range(8) for i in range(50)}
    assert len(set(rows.values())) == len(rows)  # no two (rank, pass) share a row
    for r in range(8):
        for i in range(49):
            a, b = local_row(r, i), local_row(r, i + 1)
            assert a[0] != b[0] and a[2] != b[2] and a[4] != b[4]
            assert a[0] in (0, 1) and a[1] in (0, 1)  # prefillable and force are flags


def _statuses(shape: str, passes: int = 28) -> set[tuple[str, bool]]:
    s = GatherShape.parse(shape)
    out = set()
    for i in range(passes):
        x = GatherSummary.from_rows(expected_buffer(s, i)[:, 0, :].tolist())
        out.add((x.status, bool(x.force_allow_max)))
    return out


def test_which_decision_branches_the_rows_reach():
    """Neighbouring ranks alternate prefillable, so an Nx1 shape (one row per rank) is
    always "mixed", forcing now and then; where the TP0 rows are every other rank (1xN, 2x2)
    they alternate "all" and "none". So the all-prefillable branch and the lazy reads of the
    last three fields are checked on those shapes only, never on Nx1."""
    every = {(status, force) for status in ("all", "none") for force in (False, True)}
    for shape in ("2x1", "4x1"):
        assert _statuses(shape) == {("mixed", False), ("mixed", True)}
    for shape in ("1x1", "1x4", "2x2", "3x2"):
        assert _statuses(shape) == every


# ---- upstream's lazy reads -------------------------------------------------------------------
flag = st.integers(0, 1)
rows = st.lists(st.tuples(flag, flag, *[st.integers(0, 10**6)] * 3), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(rows=rows)
def test_expected_lazy_summary_is_what_upstreams_reads_give(rows):
    tp0 = np.array(rows, dtype=np.int64)
    reads = read_back_upstream(torch.from_numpy(tp0), lambda t: int(t.item()))
    assert expected_summary(tp0, lazily=True) == reads
    assert expected_summary(tp0, lazily=False) == GatherSummary.from_rows(rows)


def test_lazy_summary_reads_only_what_the_decision_needs():
    full = np.array([[1, 0, 5, 6, 7], [1, 0, 8, 2, 1]])
    assert expected_summary(full, True) == GatherSummary(1, None, 0, 8, 6, 7)
    one_not = np.array([[1, 0, 5, 6, 7], [0, 0, 8, 2, 1]])
    assert expected_summary(one_not, True) == GatherSummary(0, 1, 0, None, None, None)
    forced = np.array([[1, 1, 5, 6, 7], [1, 0, 8, 2, 1]])
    assert expected_summary(forced, True) == GatherSummary(1, None, 1, None, None, None)


# ---- check() over a loop ---------------------------------------------------------------------
def _run(passes=12, shape="2x1", path_cls=FakePath, damage=None):
    clock = FakeClock()
    path = path_cls(clock, GatherShape.parse(shape))
    path.damage = damage or {}
    loop = make_loop(clock, path)
    loop.streaming(0, passes)
    return loop, path


@pytest.mark.parametrize("shape", SHAPES)
def test_a_clean_run_checks_every_pass(shape):
    loop, path = _run(shape=shape)
    assert check(loop, path, corrupt=False) == {
        "wrong_elements": 0,
        "wrong_reads": 0,
        "wrong_decisions": 0,
        "passes_checked": 12,
    }


def test_a_damaged_element_is_counted_once():
    loop, path = _run(damage={5: "element"})
    assert check(loop, path, False)["wrong_elements"] == 1


def test_corrupt_damages_one_element_of_every_pass_and_nothing_else():
    loop, path = _run()
    got = check(loop, path, corrupt=True)
    assert got["wrong_elements"] == 12 and got["wrong_reads"] == got["wrong_decisions"] == 0


class Stale(FakePath):
    """A buffer left from the previous pass on pass 6; rows swapped on pass 8."""

    def _buffer(self):
        if self.iteration == 6:
            return expected_buffer(self.shape, 5)
        buf = expected_buffer(self.shape, self.iteration)
        if self.iteration == 8:
            flat = buf.reshape(-1, 5)
            flat[[0, -1]] = flat[[-1, 0]]
        return buf


@pytest.mark.parametrize("shape", ["2x1", "1x2", "2x2", "3x2"])
def test_a_stale_buffer_and_a_misplaced_row_are_caught(shape):
    loop, path = _run(shape=shape, path_cls=Stale)
    world = GatherShape.parse(shape).world_size
    assert check(loop, path, False)["wrong_elements"] >= world + 2


def test_a_wrong_read_is_counted():
    loop, path = _run(damage={3: "read", 7: "read"})
    got = check(loop, path, False)
    assert got["wrong_reads"] == 2 and got["wrong_elements"] == 0


class ReadsEverything(FakePath):
    upstream_reads = True  # claims upstream's lazy reads, reads every reduction

    def read(self):
        self._step("read")
        return expected_summary(self._buffer()[:, 0, :], lazily=False)


def test_reading_more_than_upstream_counts_as_a_wrong_read():
    loop, path = _run(passes=20, shape="4x1", path_cls=ReadsEverything)
    lazy = [i for i in range(20) if None in tuple(expected_summary(
        expected_buffer(path.shape, i)[:, 0, :], True))]  # fmt: skip
    assert lazy and check(loop, path, False)["wrong_reads"] == len(lazy)


def test_a_wrong_decision_is_counted():
    loop, path = _run()
    i, before, now, summary, outcome, snap = loop.checks[4]
    flipped = outcome._replace(allow=not outcome.allow)
    loop.checks[4] = (i, before, now, summary, flipped, snap)
    got = check(loop, path, False)
    assert got["wrong_decisions"] == 1 and got["wrong_reads"] == 0
