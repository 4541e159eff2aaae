"""Launch a worker under torchrun (``python -m torch.distributed.run``) for the tests.

Loaded by file path from the test modules, so it works whatever pytest's import mode is.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent
TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchrun(nproc: int, worker: Path, *args: str, env_extra=None, attempts: int = 2):
    """Run ``worker`` on ``nproc`` local ranks; return the last attempt's CompletedProcess.

    The repo root goes on PYTHONPATH; the whole launch is bounded by TIMEOUT_S (the workers
    also set a 30 s collective timeout), so a desync fails instead of hanging.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    proc = None
    for _ in range(attempts):
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
        # the probed port can be taken before torchrun binds it: retry on that alone
        if (
            proc.returncode == 0
            or "address already in use" not in (proc.stdout + proc.stderr).lower()
        ):
            break
    return proc


def tail(proc, chars: int = 6000) -> str:
    out, err = proc.stdout[-chars:], proc.stderr[-chars:]
    return f"rc={proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
