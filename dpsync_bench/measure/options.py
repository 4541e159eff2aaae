"""A sweep job's options, validated before any process starts (no torch: the command line
builds its parser from this without importing the measuring code)."""

from __future__ import annotations

import errno
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import results
from ..cases import Sweep, UsageError, parse_list
from .faults import parse_fault

DEFAULT_TIMEOUT_S = 60.0


@dataclass
class Options:
    sweep: Sweep = field(default_factory=Sweep)
    out: str | None = None  # results root: a new run directory under it
    resume: str | None = None  # an existing run directory to complete or extend
    machine_kind: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    # Recorded in run.json: run_bench.sh passes its own command line, else this argv.
    command: str = field(
        default_factory=lambda: os.environ.get("DPSYNC_COMMAND") or shlex.join(sys.argv)
    )
    resumed: dict | None = field(default=None, repr=False)  # set by validate()

    def validate(self) -> None:
        if not self.timeout_s > 0:
            raise UsageError(f"timeout must be > 0 seconds, got {self.timeout_s}")
        if self.out is not None and self.resume is not None:
            raise UsageError("give either an output root or --resume DIR, not both")
        parse_fault(os.environ.get("DPSYNC_FAULT"))
        if self.resume is not None:
            try:
                self.resumed = results.load_run(Path(self.resume))
                if not isinstance(self.resumed["meta"].get("jobs"), list):
                    raise results.ResultsError(f"{self.resume}/run.json: no list of jobs")
                with results.locked(Path(self.resume)):  # in use by a running job?
                    pass
            except (results.ResultsError, OSError) as e:
                raise UsageError(f"--resume: {e}") from None
        if self.out is not None:
            _check_writable(Path(self.out))


def _check_writable(root: Path) -> None:
    """Try what creating the results root needs: make (and remove) a uniquely named
    directory in its nearest existing ancestor (only trying tells; unique names keep the
    ranks, which all validate at once, out of each other's way)."""
    existing = root.absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.rmdir(tempfile.mkdtemp(prefix=".dpsync-probe-", dir=existing))
    except OSError as e:
        raise UsageError(f"results directory {root} is not writable ({e.strerror})") from None


# One table of options for every entry point (pytest's --dpsync-*, the CLI's --*).
OPTION_SPECS = (
    ("preset", str, "auto", "sweep preset: auto (gpu with CUDA, else cpu), cpu, gpu, smoke"),
    ("paths", str, None, "comma-separated sync paths (default: the preset's)"),
    ("shapes", str, None, "comma-separated DPxTP shapes covering the world (default: Nx1,1xN)"),
    ("forward-ms", str, None, "comma-separated forward durations in ms; 0 = idle GPU"),
    ("busy-forward-ms", str, None, "forwards also run back to back (busy cadence), in ms"),
    ("cadences", str, None, "comma-separated: isolated, streaming, busy"),
    ("variants", str, None, "on/off: no-barrier, fine-kernel, high-priority extras"),
    ("iters", int, None, "measured passes per idle case (default 1000)"),
    ("forward-iters", int, None, "measured passes per case with a forward (default 100)"),
    ("warmup", int, None, "warm-up passes per case (default 100)"),
    ("repeat", int, 1, "run the whole sweep this many times (stability check)"),
    ("out", str, None, "results root: a new run directory is created under it"),
    ("resume", str, None, "an existing run directory: complete or extend it"),
    ("machine-kind", str, None, "label for the machine (default: from the hardware)"),
    ("timeout", float, DEFAULT_TIMEOUT_S, "seconds before a collective gives up"),
)


def options_from(get) -> Options:
    """Build Options from a getter of option values (by name, '-' as in the table)."""
    variants = get("variants")
    if variants not in (None, "on", "off"):
        raise UsageError(f"variants must be on or off, got {variants!r}")
    sweep = Sweep(
        preset=get("preset"),
        paths=parse_list(get("paths")),
        shapes=parse_list(get("shapes")),
        forward_ms=parse_list(get("forward-ms"), float),
        busy_forward_ms=parse_list(get("busy-forward-ms"), float) or None,
        cadences=parse_list(get("cadences")),
        variants=None if variants is None else variants == "on",
        iters=get("iters"),
        forward_iters=get("forward-iters"),
        warmup=get("warmup"),
        repeat=get("repeat"),
    )
    return Options(
        sweep=sweep,
        out=get("out"),
        resume=get("resume"),
        machine_kind=get("machine-kind"),
        timeout_s=get("timeout"),
    )
