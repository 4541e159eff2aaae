"""What machine a figure came from: GPUs, driver, clocks, throttling, topology, versions."""

from __future__ import annotations

import os
import platform
import re
import subprocess

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
            "throttle_reasons": _throttle_names(
                pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)
            ),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": round(pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 1),
            "utilization_pct": pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
        }
    except Exception as e:  # a query the driver does not support: say so, don't invent
        return {"error": str(e)[:200]}


def _throttle_names(mask: int) -> list[str]:
    names = []
    for attr in dir(pynvml):
        if attr.startswith("nvmlClocksThrottleReason") and attr not in (
            "nvmlClocksThrottleReasonAll",
            "nvmlClocksThrottleReasonNone",
        ):
            bit = getattr(pynvml, attr)
            if isinstance(bit, int) and bit and mask & bit == bit:
                names.append(attr.removeprefix("nvmlClocksThrottleReason"))
    return sorted(set(names))


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


def default_machine_kind(info: dict, world_size: int | None = None) -> str:
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
