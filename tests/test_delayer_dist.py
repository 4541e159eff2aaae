"""Real multi-process runs: PrefillDelayer over GlooCpu under torchrun, 2 and 4 ranks on CPU.

The worker (tests/dist_workers/delayer_worker.py) drives scripted per-rank inputs through
several passes; here we check that every rank reached the same outcome on every pass, the
expected reasons, and exactly one gather per pass (also on passes where a rank only
finalized).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_launch_py = Path(__file__).resolve().parent / "dist_workers" / "launch.py"
_spec = importlib.util.spec_from_file_location("dist_launch", _launch_py)
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

WORKER = launch.WORKERS / "delayer_worker.py"


# (reason, status, passes_waited) per pass; allow is reason not in the delay reasons.
EXPECTED_MAIN = [
    ("delay", "mixed", None),
    ("wait_success", "all", 1),
    ("delay", "mixed", None),
    ("delay", "mixed", None),
    ("wait_timeout", "mixed", 2),
    ("", "none", None),
    ("", "none", None),
    ("delay", "mixed", None),
    ("", "none", 1),
    ("no_wait", "all", None),  # slot condition, skip_first_delayer consumed
    ("delay_slots", "all", None),
    ("wait_success", "all", 1),
    ("no_wait", "all", None),
]


def expected_watermark(world):
    return [
        ("delay", "mixed", None),
        ("token_watermark", "mixed", 1),
        ("token_watermark", "all", None),
        ("", "none", None),
        ("delay", "mixed", None),
        ("delay", "mixed", None),
        # ranks 0 and 1 prefillable: "all" with 2 ranks
        ("token_watermark", "all" if world == 2 else "mixed", 2),
        ("", "none", None),
        ("token_watermark", "mixed", None),
    ]


DELAYS = ("delay", "delay_slots", "delay_queue")


@pytest.fixture(scope="module")
def worker_module():
    return launch.load_module(WORKER, "delayer_worker")


@pytest.mark.parametrize("world", [2, 4])
def test_delayer_over_gloo(tmp_path, worker_module, world):
    proc = launch.torchrun(world, WORKER, str(tmp_path))
    assert proc.returncode == 0, launch.tail(proc)

    per_rank = {}
    for rank in range(world):
        lines = (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()
        per_rank[rank] = [json.loads(line) for line in lines]

    scripts = {
        "main": (worker_module.MAIN, EXPECTED_MAIN, None),
        "watermark": (worker_module.WATERMARK, expected_watermark(world), 0.5),
    }
    for name, (script, expected, watermark) in scripts.items():
        assert len(script) == len(expected)
        records = {
            rank: [r for r in recs if r["delayer"] == name and not r.get("final")]
            for rank, recs in per_rank.items()
        }
        finals = [
            next(r for r in recs if r["delayer"] == name and r.get("final"))
            for recs in per_rank.values()
        ]
        for index, (reason, status, passes_waited) in enumerate(expected):
            got = [records[rank][index] for rank in range(world)]
            # every rank decided the same thing on every pass
            keys = ("allow", "reason", "status", "delayed_count", "passes_waited", "rows")
            first = {k: got[0][k] for k in keys}
            for rec in got[1:]:
                assert {k: rec[k] for k in keys} == first, (name, index, rec["rank"])
            where = f"{name} pass {index} (world {world})"
            assert first["reason"] == reason, where
            assert first["status"] == status, where
            assert first["allow"] == (reason not in DELAYS), where
            assert first["passes_waited"] == passes_waited, where
            # exactly one gather per pass on every rank, negotiated or not
            assert [rec["gathers"] for rec in got] == [index + 1] * world, where
            assert [rec["pass"] for rec in got] == [index] * world
            # the gathered buffer holds each rank's row; a rank that only finalized
            # reported "not prefillable" (all zeros)
            infos = [script[index](rank, world) for rank in range(world)]
            rows = [[list(info.row(watermark)) if info else [0] * 5] for info in infos]
            assert first["rows"] == rows, where
            assert [rec["negotiated"] for rec in got] == [info is not None for info in infos]
        assert any(not rec["negotiated"] for recs in records.values() for rec in recs)
        for final in finals:
            assert final["gathers"] == final["passes"] == len(expected)
            assert final["outcomes"] == len(expected)  # finalize recorded every pass
            ended = [pw for _, _, pw in expected if pw is not None]
            assert final["episodes"] == len(ended)
            assert final["passes_waited_sum"] == sum(ended)
