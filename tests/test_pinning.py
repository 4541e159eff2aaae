"""CPU pinning keeps a physical core's hardware threads together (fake sysfs topologies)."""

from __future__ import annotations

import pytest

from dpsync_bench.measure.machine import by_physical_core


def _sysfs(tmp_path, siblings: dict[int, str]) -> str:
    for cpu, text in siblings.items():
        d = tmp_path / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True)
        (d / "thread_siblings_list").write_text(text + "\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("siblings", "want"),
    [
        # threads of a core numbered N/2 apart (common on x86 hosts): pairs brought together
        ({c: f"{c % 4},{c % 4 + 4}" for c in range(8)}, [0, 4, 1, 5, 2, 6, 3, 7]),
        ({c: f"{c - c % 2}-{c - c % 2 + 1}" for c in range(8)}, list(range(8))),  # adjacent
        ({c: str(c) for c in range(8)}, list(range(8))),  # no SMT
    ],
)
def test_even_shares_are_whole_cores(tmp_path, siblings, want):
    assert by_physical_core(list(range(8)), _sysfs(tmp_path, siblings)) == want


def test_unknown_topology_keeps_the_order(tmp_path):
    assert by_physical_core([3, 1, 2], str(tmp_path / "none")) == [1, 2, 3]
