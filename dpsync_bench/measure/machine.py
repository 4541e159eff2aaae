"""What machine a figure came from: GPUs, driver, clocks, throttling, topology, versions."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

try:  # nvidia-ml-py; absent or failing on machines without an NVIDIA driver
    import pynvml
except ImportError:  # pragma: no cover
    pynvml = None

_nvml_ready: bool | None = None


def _nvml() -> bool:
    global _nvml_ready
    if _nvml_ready is None:
        try:
            pynvml.nvmlInit()
            _nvml_ready = True
        except Exception:
            _nvml_ready = False
    return _nvml_ready


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


def gpu_snapshot(index: int) -> dict | None:
    """Clocks, throttle reasons, temperature and power of one GPU right now (NVML)."""
    if pynvml is None or not _nvml():
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "clock_event_reasons": _reason_names(_clock_event_mask(h)),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": round(pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1),
            "utilization_pct": pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
        }
    except Exception as e:  # a query the driver does not support: say so, don't invent
        return {"error": str(e)[:200]}


def _clock_event_mask(h) -> int:
    """Why the clocks are what they are (NVML's current name; the "throttle" one before)."""
    query = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    return (query or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons)(h)


def _reason_names(mask: int) -> list[str]:
    names = set()
    for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
        for attr in dir(pynvml):
            if attr.startswith(prefix) and not attr.endswith(("All", "None")):
                bit = getattr(pynvml, attr)
                if isinstance(bit, int) and bit and mask & bit == bit:
                    names.add(attr.removeprefix(prefix))
    return sorted(names)


def cores_near(index: int) -> list[int]:
    """The CPU cores NVML says are near a GPU (empty when it can't tell)."""
    if pynvml is None or not _nvml():
        return []
    try:
        words = pynvml.nvmlDeviceGetCpuAffinity(pynvml.nvmlDeviceGetHandleByIndex(index), 64)
    except Exception:
        return []
    return [64 * w + b for w, word in enumerate(words) for b in range(64) if word >> b & 1]


def by_physical_core(cpus: list[int], sys_cpu: str = "/sys/devices/system/cpu") -> list[int]:
    """``cpus`` with the hardware threads of one physical core next to each other (the
    kernel often numbers them N/2 apart), so an even share of the list is whole cores: two
    spinning ranks on sibling threads would slow each other down. Unknown topology: as is."""

    def core(cpu: int) -> int:
        try:
            with open(f"{sys_cpu}/cpu{cpu}/topology/thread_siblings_list") as f:
                first = f.read().strip().split(",")[0].split("-")[0]
            return int(first)
        except (OSError, ValueError):
            return cpu

    return sorted(cpus, key=lambda c: (core(c), c))


def code_identity() -> dict:
    """Which code measured: the git commit and whether the tree was dirty (from git, or from
    DPSYNC_CODE_COMMIT / DPSYNC_CODE_DIRTY where the tree has no .git, as on a lent GPU
    machine), and a hash of the measuring sources themselves, which needs no git."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    files = [root / "conftest.py"] + [
        p
        for d in ("delayer_core", "dpsync_bench", "benchmarks")
        for p in sorted((root / d).rglob("*"))
        if p.suffix in (".py", ".c")
    ]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    commit = os.environ.get("DPSYNC_CODE_COMMIT") or _git(root, "rev-parse", "HEAD")
    dirty = os.environ.get("DPSYNC_CODE_DIRTY")
    if dirty is None:
        status = _git(root, "status", "--porcelain", "--", *(str(p) for p in files))
        dirty = None if status is None else str(bool(status))
    return {
        "commit": commit,
        "dirty": None if dirty is None else dirty.lower() in ("1", "true"),
        "source_sha256": digest.hexdigest()[:16],
    }


def _git(root: Path, *args) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _gpu_static(index: int) -> dict:
    info = {"index": index, "name": torch.cuda.get_device_name(index)}
    props = torch.cuda.get_device_properties(index)
    info.update(sm_count=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30))
    if pynvml is not None and _nvml():
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            info["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
            info["pci_bus_id"] = _decode(pynvml.nvmlDeviceGetPciInfo(h).busId)
        except Exception as e:
            info["nvml_error"] = str(e)[:200]
    return info


def _topology() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _p2p_matrix(n: int) -> list[list[bool]]:
    return [[i == j or torch.cuda.can_device_access_peer(i, j) for j in range(n)] for i in range(n)]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            if m:
                return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    nccl = None
    if torch.cuda.is_available():
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:
            nccl = None
    driver = None
    if pynvml is not None and _nvml():
        try:
            driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": nccl,
        "gloo": "bundled with torch " + torch.__version__.split("+")[0],
        "driver": driver,
    }


def machine_info() -> dict:
    """Everything static about this host, for run.json and pytest-benchmark's machine_info."""
    info = {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "versions": versions(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("NCCL_", "TORCH_"))},
        "gpus": [],
    }
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        info["gpus"] = [_gpu_static(i) for i in range(n)]
        info["p2p"] = _p2p_matrix(n)
        info["topology"] = _topology()
    return info


def default_machine_kind(info: dict) -> str:
    """A short label for dashboards when the user names none: GPU model x count, or CPU."""
    gpus = info.get("gpus") or []
    if gpus:
        name = re.sub(r"[^a-z0-9]+", "-", gpus[0]["name"].lower().replace("nvidia", "")).strip("-")
        return f"nvidia-{name}-x{len(gpus)}"
    return f"cpu-{info.get('cpu_count') or 0}c"


def host_gpu_floor(device, samples: int = 300) -> dict | None:
    """The VM's host<->GPU round trip right now: an empty kernel launched and waited for,
    and a one-element device-to-host read (p50/p90, us). Every figure of a launch- or
    sync-bound path moves with these, so they are recorded at the start and end of a run."""
    if device is None:
        return None
    import time

    x = torch.zeros(1, device=device)

    def timed(fn):
        for _ in range(30):
            fn()
        out = []
        for _ in range(samples):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1000.0)
        out.sort()
        return {"p50": round(out[len(out) // 2], 2), "p90": round(out[int(len(out) * 0.9)], 2)}

    def launch_sync():
        x.add_(1)
        torch.cuda.synchronize(device)

    return {"launch_sync_us": timed(launch_sync), "item_us": timed(x.item)}
