"""The shared-memory exchange's C helper (shm_sync.c): built at first use with the system C
compiler, cached per source, flags and machine; loaded once per process."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Optional

_SRC = Path(__file__).with_name("shm_sync.c")
_CFLAGS = ["-O2", "-shared", "-fPIC"]


class ShmError(RuntimeError):
    """The exchange cannot be set up or used."""


class ShmBuildError(ShmError):
    """The C helper could not be built (no compiler, compile error, unwritable cache)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dpsync-bench"


def build_helper(cache: Optional[Path] = None) -> Path:
    """The compiled helper, built unless cached (keyed by source, flags and machine). Ranks
    may build at once: each writes a temporary file, then renames it into place atomically."""
    src = _SRC.read_bytes()
    machine = platform.machine() or "unknown"
    key = hashlib.sha256(src + repr((_CFLAGS, machine)).encode()).hexdigest()[:16]
    cache = cache or cache_dir()
    out = cache / f"shm_sync-{machine}-{key}.so"
    if out.exists():
        return out
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc")]
    if cc[0] is None:
        raise ShmBuildError("cannot build the shm helper: no C compiler (cc or gcc; or set CC)")
    tmp = f"{out}.{os.getpid()}-{os.urandom(4).hex()}.tmp"  # unique per builder
    try:
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [*cc, *_CFLAGS, "-o", tmp, str(_SRC)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode == 0:
            os.replace(tmp, out)  # atomic; racing builders replace it with the same bytes
            return out
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        err = next((ln for ln in lines if "error" in ln), lines[0])
        err = f"{cc[0]} exited with {proc.returncode}: {err}"
    except (OSError, subprocess.SubprocessError) as e:
        err = str(e)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    raise ShmBuildError(f"cannot build the shm helper ({_SRC.name}): {err}")


_lib: Optional[ctypes.CDLL] = None


def load_helper() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        path = build_helper()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise ShmBuildError(f"cannot load the shm helper {path}: {e}") from None
        i64, vp = ctypes.c_int64, ctypes.c_void_p
        for name, res, args in (
            ("dps_store_release", None, [vp, i64]),
            ("dps_load_acquire", i64, [vp]),
            ("dps_starttime", i64, [i64]),
            ("dps_wait", ctypes.c_int, [vp, vp, ctypes.c_int, i64, i64, i64, vp]),
            ("dps_row_pass", ctypes.c_int, [vp]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib
