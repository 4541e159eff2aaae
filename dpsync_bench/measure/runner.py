"""A sweep job from start to finish on every rank: validate, join, agree, run, write.

Bad input is refused before any process group exists (UsageError -> one line, exit 2).
Every rank computes the same case list and proves it (a fingerprint compared across ranks);
rank 0 alone writes files, each finished case before the next starts. A run directory
holds a whole sweep: the first job makes it (`--out ROOT`), later jobs of the sweep (other
world sizes) and resumed jobs add to it (`--resume RUN`), skipping finished cases.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from .. import results
from ..cases import Case, UsageError, check_environment, sweep_fingerprint
from ..exit_codes import EXIT_USAGE
from .console import console, fail, first_line
from .faults import inject_fault
from .group import env_int
from .options import OPTION_SPECS, Options, options_from

__all__ = ["OPTION_SPECS", "Options", "SweepRunner", "options_from", "plan"]


def plan(options: Options) -> list[Case]:
    """The case list for this job, checked against this node; raises UsageError."""
    import torch

    options.validate()
    world = env_int("WORLD_SIZE", 1)
    local_world = env_int("LOCAL_WORLD_SIZE", 1)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cases = options.sweep.cases(world, gpus, local_world)
    check_environment(cases, world, local_world, gpus)
    if options.resumed is not None:  # the same id must mean the same case
        for case in cases:
            old = options.resumed["cases"].get(case.case_id)
            if old is not None and old["case"] != case.to_dict():
                raise UsageError(
                    f"--resume {options.resume}: case {case.case_id} was run with other "
                    "options there (give that run's sweep options)"
                )
    return cases


class SweepRunner:
    def __init__(self, options: Options) -> None:
        self.options = options
        try:
            self.cases = plan(options)
        except UsageError as e:
            fail(str(e), EXIT_USAGE)
        self.group = self.harness = self.run_dir = self.machine = self._lock = None
        self.machine_kind = ""
        self.done: set[str] = set()
        self.results: dict[str, dict] = {}
        self._t0 = time.monotonic()
        self._ran = 0

    # ---- start ------------------------------------------------------------------------
    def start(self) -> SweepRunner:
        from delayer_core.paths import PATHS

        from .group import init
        from .harness import Harness
        from .machine import code_identity, default_machine_kind, host_gpu_floor, machine_info

        g = self.group = init(self.options.timeout_s, any(c.needs_cuda for c in self.cases))
        if len(set(g.all_gather_object(sweep_fingerprint(self.cases)))) != 1:
            fail(f"rank {g.rank}: ranks planned different sweeps (GPU counts differ?)", EXIT_USAGE)
        one_host = sorted({c.path for c in self.cases if PATHS[c.path].one_host})
        if one_host and not g.same_host:
            fail(f"{', '.join(one_host)} needs every rank on one host; the job spans "
                 f"{len(set(g.hosts))} (use hierarchical)", EXIT_USAGE)  # fmt: skip
        info = machine_info() if g.is_leader else None
        job = {
            "world_size": g.world_size,
            "nnodes": env_int("GROUP_WORLD_SIZE", len(set(g.hosts))),
            "sweep": asdict(self.options.sweep),
            "cases_planned": [c.case_id for c in self.cases],
            "fingerprint": sweep_fingerprint(self.cases),
            "started_utc": results.utc_stamp(),
            "ranks": g.all_gather_object({"host": g.hosts[g.rank], "cpus": g.cpus}),
            "clock_offsets_ns": g.all_gather_object(g.clock_offset_ns),
            "host_gpu_floor": g.all_gather_object(host_gpu_floor(g.device)),
        }
        kind = self.options.machine_kind or (default_machine_kind(info) if info else None)
        self.machine_kind = g.broadcast_object(kind)
        self.harness, self.machine = Harness(g), info
        opened = None
        if g.is_leader:
            try:
                opened = self._open_run_dir(info, job, code_identity())
            except (results.ResultsError, OSError) as e:
                opened = str(e)
        opened = g.broadcast_object(opened)
        if isinstance(opened, str):
            fail(opened, EXIT_USAGE)
        run_dir, done = opened if opened else (None, [])
        self.run_dir, self.done = (Path(run_dir) if run_dir else None), set(done)
        self._todo = sum(c.case_id not in self.done for c in self.cases)
        note = os.environ.get("DPSYNC_RUN_DIR_FILE")  # run_bench.sh learns the directory here
        if note and g.is_leader and self.run_dir is not None:
            Path(note).write_text(f"{self.run_dir}\n")
        return self

    def _open_run_dir(self, info: dict, job: dict, code: dict):
        opts = self.options
        if opts.resume:
            run_dir, meta = Path(opts.resume), opts.resumed["meta"]
            if meta["machine_kind"] != self.machine_kind:
                raise results.ResultsError(
                    f"--resume {run_dir}: recorded on {meta['machine_kind']!r}, this is "
                    f"{self.machine_kind!r}"
                )
            if meta.get("code", {}).get("source_sha256") != code["source_sha256"]:
                meta.setdefault("code_changes", []).append(code)  # said, not hidden
            meta["resumed_utc"] = meta.get("resumed_utc", []) + [results.utc_stamp()]
        elif opts.out:
            run_dir = results.create_run_dir(Path(opts.out), self.machine_kind)
            meta = {
                "schema": results.RUN_SCHEMA,
                "machine_kind": self.machine_kind,
                "started_utc": results.utc_stamp(),
                "command": opts.command,
                "code": code,
                "machine": info,
                "timeout_s": opts.timeout_s,
                "jobs": [],
            }
        else:
            return None
        self._lock = results.locked(run_dir)
        self._lock.__enter__()
        meta["jobs"].append(job)
        meta["status"] = "running"
        self.meta = meta
        results.atomic_write_json(run_dir / "run.json", meta)
        return str(run_dir), sorted(results.finished_case_ids(run_dir))

    # ---- cases ------------------------------------------------------------------------
    def should_run(self, case: Case) -> bool:
        return case.case_id not in self.done

    def run(self, case: Case):
        """Run a case on every rank; (its summary, its per-pass latency in ns)."""
        from ..stats import per_pass
        from .summary import build_result

        # A rank that raised and went on would pair its next collectives with the other
        # ranks' current case: any failure here ends the whole job, with one line.
        g = self.group
        try:
            if g.is_leader and self.run_dir is not None:  # names the case if we die
                (self.run_dir / "current_case").write_text(case.case_id + "\n")
            fault = inject_fault(g.rank, self._ran)
            started = time.time()
            record = self.harness.run_case(case, corrupt=fault == "corrupt", slow=fault == "slow")
            records = g.all_gather_object(record)
            summary, samples = build_result(case, records, self.machine_kind, started)
            if g.is_leader and self.run_dir is not None:
                results.write_case(self.run_dir, summary, samples)
        except Exception as e:
            fail(f"rank {g.rank}: case {case.case_id}: {first_line(e)}")
        self.results[case.case_id] = summary
        self._ran += 1
        self._progress(case, summary)
        return summary, per_pass(samples["pass"])

    def _progress(self, case: Case, summary: dict) -> None:
        if not self.group.is_leader:
            return
        k, elapsed = self._ran, time.monotonic() - self._t0
        eta = elapsed / k * (self._todo - k)
        s = summary["stats"]
        console(
            f"[dpsync] case {k}/{self._todo} {case.case_id}: pass p50 {s['pass_us']['p50']:.1f} "
            f"p99 {s['pass_us']['p99']:.1f} us, stall p50 {s['stall_us']['p50']:.1f} us "
            f"(elapsed {elapsed:.0f}s, ETA {eta:.0f}s)"
        )

    # ---- end --------------------------------------------------------------------------
    def finish(self, ok: bool = True) -> None:
        if self.group is None:
            return
        if self.group.is_leader and self.run_dir is not None:
            from .machine import host_gpu_floor

            (self.run_dir / "current_case").unlink(missing_ok=True)
            finished = results.finished_case_ids(self.run_dir)
            job = self.meta["jobs"][-1]
            job["finished_utc"] = results.utc_stamp()
            job["status"] = (
                "complete" if ok and finished >= set(job["cases_planned"]) else ("incomplete")
            )
            job["host_gpu_floor_end_rank0"] = host_gpu_floor(self.group.device)
            planned = {c for j in self.meta["jobs"] for c in j["cases_planned"]}
            self.meta["status"] = "complete" if finished >= planned else "incomplete"
            self.meta["cases_done"] = len(finished)
            results.atomic_write_json(self.run_dir / "run.json", self.meta)
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
