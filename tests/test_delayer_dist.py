"""Real multi-process runs: PrefillDelayer over GlooCpu under torchrun, 2 and 4 ranks on CPU.

The worker (tests/dist_workers/delayer_worker.py) drives scripted per-rank inputs through
several passes; here we check that every rank reached the same outcome on every pass, the
expected reasons, and exactly one gather per pass (also on passes where a rank only
finalized).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "dist_workers" / "delayer_worker.py"
TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, worker: Path, *args: str, env_extra=None, attempts: int = 2):
    """Launch ``worker`` under torchrun; return the CompletedProcess of the last attempt."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    for attempt in range(attempts):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            str(worker),
            *args,
        ]
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        output = proc.stdout + proc.stderr
        # the free port can be taken between probing and binding: retry once
        if proc.returncode == 0 or "address already in use" not in output.lower():
            break
        assert attempt + 1 < attempts, output
    return proc


def load_worker():
    spec = importlib.util.spec_from_file_location("delayer_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    return load_worker()


@pytest.mark.parametrize("world", [2, 4])
def test_delayer_over_gloo(tmp_path, worker_module, world):
    proc = torchrun(world, WORKER, str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

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
