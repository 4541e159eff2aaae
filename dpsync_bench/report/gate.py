"""Runs against their history: loading results, baselines, the significance test, the gate.

A case regressed only when two things agree: its p50 or p99 grew past a ratio threshold
over the baseline (the median of the last N runs of the same machine kind), and its raw
samples are significantly slower (Mann-Whitney U). The ratio alone fails on noise; the
test alone fails on differences too small to matter.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import results
from ..cases import UsageError
from ..results import ResultsError
from ..stats import per_pass


def reduce_max(values):  # interim: the gate is rewritten for the run-level statistics
    return per_pass(values).tolist()


DEFAULT_HISTORY = 5
LOOKBACK = 10  # look back at most LOOKBACK * N runs for a case's N baselines


# ---- loading ---------------------------------------------------------------------------
def samples(case: dict, metric: str = "pass_us") -> list[float]:
    """Per-iteration max across ranks of a case's raw samples: what its stats summarize."""
    try:
        return reduce_max(case["raw"][metric])
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"case {case.get('case_id')}: raw.{metric} unusable ({e})") from None


def group_key(case: dict) -> str:
    return case.get("group_key") or case["case_id"].rsplit("-r", 1)[0]


def load_results(paths: Iterable[str | Path]) -> dict:
    """Run directories and case files as one run ({"dir", "meta", "cases"}).

    A case file takes its machine from its run's run.json when there is one. Inputs must
    come from one machine (a figure names one) and name each case once."""
    merged = None
    for path in map(Path, paths):
        if path.is_dir():
            run = results.load_run(path)
        else:
            case = results.load_case(path)
            run_dir = path.parent.parent
            meta = _run_meta(run_dir) or {"machine_kind": case["machine_kind"]}
            run = {"dir": str(run_dir), "meta": meta, "cases": {case["case_id"]: case}}
        if merged is None:
            merged = {**run, "cases": dict(run["cases"])}
            continue
        if machine_of(run["meta"]) != machine_of(merged["meta"]):
            raise ResultsError(
                f"{path}: from another machine ({run['meta']['machine_kind']}) than "
                f"{merged['dir']} ({merged['meta']['machine_kind']}); give one machine's results"
            )
        for case_id, case in run["cases"].items():
            if merged["cases"].setdefault(case_id, case) is not case:
                raise ResultsError(f"{path}: case {case_id} is given twice")
    if merged is None:
        raise ResultsError("no results given")
    if not merged["cases"]:
        raise ResultsError(f"{merged['dir']}: no finished cases")
    return merged


def _run_meta(run_dir: Path) -> dict | None:
    try:
        meta = results.load_json(run_dir / "run.json")
    except ResultsError:
        return None
    return meta if isinstance(meta, dict) and meta.get("schema") == results.RUN_SCHEMA else None


def machine_of(meta: dict) -> tuple:
    """What must match for two runs to be comparable: kind, GPUs and software versions."""
    machine = meta.get("machine") or {}
    versions = machine.get("versions") or {}
    gpus = tuple(g.get("name") for g in machine.get("gpus") or [])
    return (
        meta.get("machine_kind"),
        gpus,
        tuple(versions.get(k) for k in ("torch", "cuda", "nccl", "driver")),
    )


# ---- history ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunEntry:
    dir: Path
    machine_kind: str
    started_utc: str
    world_size: int = 0  # a 1-GPU box's default run is two jobs: 1 rank and 2 ranks

    @property
    def order(self) -> tuple[str, str]:  # runs started the same second: -1, -2 suffixes
        return (self.started_utc, self.dir.name)


def list_runs(root: Path) -> list[RunEntry]:
    """Runs under a results root, oldest first. Read from the run directories themselves
    rather than index.json, so a run copied in or missing from the index still counts."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: no results directory")
    entries = []
    for meta_path in root.glob("*/run.json"):
        meta = _run_meta(meta_path.parent)
        if meta is not None:
            entries.append(_entry(meta_path.parent, meta))
    return sorted(entries, key=lambda e: e.order)


def _entry(run_dir: Path, meta: dict) -> RunEntry:
    world = meta.get("world_size")
    return RunEntry(
        Path(run_dir),
        str(meta.get("machine_kind")),
        str(meta.get("started_utc")),
        world if isinstance(world, int) and not isinstance(world, bool) else 0,
    )


def entry_of(run: dict) -> RunEntry:
    return _entry(Path(run["dir"]), run["meta"])


def load_history(entries: Iterable[RunEntry]) -> Iterable[dict]:
    """Load runs in the order given; one that is corrupt is skipped with a warning (a bad
    night must not break every later comparison)."""
    for entry in entries:
        try:
            yield results.load_run(entry.dir)
        except ResultsError as e:
            print(f"dpsync: skipping {entry.dir.name}: {e}", file=sys.stderr)


def earlier_runs(run: dict, root: Path) -> list[RunEntry]:
    """Runs of the same machine kind under root that started before `run`, newest first."""
    me = entry_of(run)
    same = [
        e
        for e in list_runs(root)
        if e.machine_kind == me.machine_kind
        and e.order < me.order
        and e.dir.resolve() != me.dir.resolve()
    ]
    return same[::-1]


def baselines(
    case_ids: Iterable[str], runs_newest_first: Iterable[dict], n: int
) -> dict[str, list[dict]]:
    """For each case, its results in the last `n` runs that have it."""
    wanted = set(case_ids)
    found: dict[str, list[dict]] = {c: [] for c in wanted}
    for looked, run in enumerate(runs_newest_first, 1):
        for case_id in wanted & run["cases"].keys():
            if len(found[case_id]) < n:
                found[case_id].append(run["cases"][case_id])
        if all(len(v) >= n for v in found.values()) or looked >= LOOKBACK * n:
            break
    return {c: v for c, v in found.items() if v}


# ---- the test --------------------------------------------------------------------------
ALTERNATIVES = ("two-sided", "slower")


def mann_whitney_u(after: Sequence[float], before: Sequence[float], alternative="two-sided"):
    """U statistic of `after` and its p-value: normal approximation with tie and
    continuity corrections (scipy's method='asymptotic', use_continuity=True). 'slower'
    asks whether `after` is stochastically greater than `before`."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    n1, n2 = len(after), len(before)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs samples on both sides")
    pooled = sorted([(v, 0) for v in after] + [(v, 1) for v in before])
    n = n1 + n2
    rank_sum_after = 0.0
    tie_term = 0.0
    i = 0
    while i < n:  # average ranks over runs of equal values
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        rank_sum_after += rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    u1 = rank_sum_after - n1 * (n1 + 1) / 2
    u, sides = (u1, 1) if alternative == "slower" else (max(u1, n1 * n2 - u1), 2)
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:  # every sample equal: nothing can be told apart
        return u1, 1.0
    z = (u - n1 * n2 / 2 - 0.5) / sigma
    return u1, min(1.0, sides * 0.5 * math.erfc(z / math.sqrt(2)))


# ---- the gate --------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    p50: float = 0.10  # allowed growth of p50 over the baseline
    p99: float = 0.25
    alpha: float = 0.01
    alternative: str = "slower"

    def __post_init__(self):
        if not (self.p50 >= 0 and self.p99 >= 0):
            raise UsageError("thresholds must be >= 0")
        if not 0 < self.alpha < 1:
            raise UsageError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.alternative not in ALTERNATIVES:
            raise UsageError(f"alternative must be one of {', '.join(ALTERNATIVES)}")


@dataclass(frozen=True)
class Verdict:
    case_id: str
    before_p50: float
    after_p50: float
    before_p99: float
    after_p99: float
    p_value: float
    baseline_runs: int
    over_threshold: bool
    significant: bool

    @property
    def regressed(self) -> bool:
        return self.over_threshold and self.significant

    def line(self) -> str:
        label = "REGRESSION" if self.regressed else "ok"
        return (
            f"{label:10} {self.case_id}: p50 {self.before_p50:.1f} -> {self.after_p50:.1f} us "
            f"({ratio(self.after_p50, self.before_p50):.2f}x), p99 {self.before_p99:.1f} -> "
            f"{self.after_p99:.1f} us ({ratio(self.after_p99, self.before_p99):.2f}x), "
            f"Mann-Whitney p={self.p_value:.2g} (baseline: {self.baseline_runs} run(s))"
        )


def ratio(after: float, before: float) -> float:
    if before > 0:
        return after / before
    return 1.0 if after == before else math.inf


def judge(case: dict, baseline: list[dict], gate: Gate) -> Verdict:
    """One case against its baseline results (median p50/p99, pooled raw samples)."""
    before_p50 = statistics.median(b["stats"]["pass_us"]["p50"] for b in baseline)
    before_p99 = statistics.median(b["stats"]["pass_us"]["p99"] for b in baseline)
    after_p50 = case["stats"]["pass_us"]["p50"]
    after_p99 = case["stats"]["pass_us"]["p99"]
    pooled = [v for b in baseline for v in samples(b)]
    _, p = mann_whitney_u(samples(case), pooled, gate.alternative)
    over = (
        ratio(after_p50, before_p50) > 1 + gate.p50 or ratio(after_p99, before_p99) > 1 + gate.p99
    )
    return Verdict(
        case["case_id"],
        before_p50,
        after_p50,
        before_p99,
        after_p99,
        p,
        len(baseline),
        over,
        p < gate.alpha,
    )


def compare(run: dict, found: dict[str, list[dict]], gate: Gate) -> list[Verdict]:
    """Every case of `run` that has a baseline, in case order."""
    return [judge(run["cases"][c], found[c], gate) for c in sorted(found) if c in run["cases"]]


def gate_run(
    run_dir: Path,
    baseline_dirs: Sequence[Path] = (),
    history: int = DEFAULT_HISTORY,
    root: Path | None = None,
    gate: Gate | None = None,
) -> tuple[list[Verdict], list[str]]:
    """Verdicts for a run against explicit baseline runs or its history, and notes."""
    gate = gate or Gate()
    if history < 1:
        raise UsageError(f"history must be >= 1 run, got {history}")
    run = results.load_run(Path(run_dir))
    if not run["cases"]:
        raise ResultsError(f"{run_dir}: no finished cases")
    kind = run["meta"]["machine_kind"]
    if baseline_dirs:
        runs = [results.load_run(Path(d)) for d in baseline_dirs]
        for other in runs:
            if other["meta"]["machine_kind"] != kind:
                raise ResultsError(
                    f"{other['dir']}: machine {other['meta']['machine_kind']!r} does not match "
                    f"{run_dir} ({kind!r})"
                )
        found = baselines(run["cases"], runs, len(runs))
        source = f"{len(runs)} baseline run(s)"
    else:
        root = Path(root) if root is not None else Path(run_dir).parent
        earlier = earlier_runs(run, root)
        if not earlier:
            raise ResultsError(f"no earlier {kind} runs under {root} to compare against")
        found = baselines(run["cases"], load_history(earlier), history)
        source = f"the median of up to {history} earlier {kind} run(s) under {root}"
    if not found:
        raise ResultsError(f"{run_dir}: no cases in common with {source}")
    notes = [f"compared {len(found)} of {len(run['cases'])} cases against {source}"]
    missing = sorted(set(run["cases"]) - set(found))
    if missing:
        notes.append(f"no baseline for {len(missing)} case(s): {', '.join(missing)}")
    return compare(run, found, gate), notes
