"""The regression gate: each case's run-level p50 and p99 against that case's own history on
the same machine kind and software stack. The unit is the run, not the pass: passes within a
run are autocorrelated, and whole runs differ far more than their passes say.

The rule, per case and statistic s (p50, p99 of pass_us):
  window      the last `window` earlier runs of the machine kind that hold the case; only
              those of the run's own software stack when there are `min_history` of them
  baseline    the median of s over the window
  noise       the larger of the window's robust spread (1.4826 MAD of s) and the within-run
              noise (standard errors of s in this run and in the window: noise.py)
  detectable  max(floor_s, k * noise / baseline): the smallest change the case can tell
  status      change > detectable: "regression", but "cannot tell" with fewer than
              `min_history` runs in the window; change < -detectable: "improved" (likewise);
              slower past the floor yet within the noise: "cannot tell"; else "ok".
A case takes the worst status of its two statistics. A regression fails (exit 1) once
`consecutive` runs in a row regressed on the case, each against the runs before it (PyTorch
HUD's rule; asv's step detection likewise ignores a one-run blip). A window of another
software stack (torch, CUDA, NCCL, driver) is compared and labelled, but fails only with
fail_across_stack; other project code is labelled and fails (that is what the gate is for).

Defaults, from 11 same-code smoke runs made for this (46 idle cases of 60 passes, 1 and 2
ranks, one H200 machine, back to back): between runs a case's p50 moves by 3 to 50 % (1.4826
MAD; median 18 %; p99 7 to 64 %), single runs up to +180 % over the median (p99 +1700 %),
while its within-run standard error is 1 to 10 % (median 4 %). So within-run noise alone
would flag most cases of most runs: nothing fails before `min_history` = 5 runs of history,
and `window` = 10 keeps the MAD stable. Each run judged against the others, k = 3 flags 41 of
488 (case, statistic) judgements, k = 4 29, k = 5 22: past 4, what is left are outlier runs
no single-run rule can tell from a regression. Each run judged against the runs before it
(3 had 5+ of them), consecutive = 1 failed all 3 (4 cases at k = 4, 7 at k = 3), consecutive
= 2 none (nor with min_history 3 or 4: 7 runs judged). Floors 10 % (p50) and 25 % (p99):
smaller changes are not worth a failed night, whatever the noise.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .. import results
from ..cases import UsageError
from ..results import ResultsError
from . import noise
from .history import RunInfo, code_id, earlier_runs, info_of, same_code, stack_changes

STATS = ("p50", "p99")
WINDOW = 10
MIN_HISTORY = 5
K = 4.0
CONSECUTIVE = 2
FLOORS = {"p50": 0.10, "p99": 0.25}
SEVERITY = ("ok", "improved", "cannot tell", "regression")  # a case shows its worst
LOOKBACK = 5  # read at most LOOKBACK * window earlier runs


@dataclass(frozen=True)
class Rule:
    window: int = WINDOW
    min_history: int = MIN_HISTORY
    k: float = K
    p50_floor: float = FLOORS["p50"]
    p99_floor: float = FLOORS["p99"]
    consecutive: int = CONSECUTIVE
    fail_across_stack: bool = False

    def __post_init__(self):
        if self.window < 1 or self.min_history < 1 or self.consecutive < 1:
            raise UsageError("window, min history and consecutive runs must be >= 1")
        if not (self.k > 0 and self.p50_floor >= 0 and self.p99_floor >= 0):
            raise UsageError("k must be > 0 and the floors >= 0")

    def floor(self, stat: str) -> float:
        return self.p50_floor if stat == "p50" else self.p99_floor


@dataclass(frozen=True)
class StatVerdict:
    stat: str
    before: float  # the window's median, us
    after: float
    detectable: float | None  # relative change; None: no noise estimate at all
    status: str

    @property
    def change(self) -> float:
        if self.before > 0:
            return self.after / self.before - 1
        return 0.0 if self.after == self.before else math.inf

    def text(self) -> str:
        tell = "noise unknown" if self.detectable is None else f"detectable {self.detectable:.0%}"
        return f"{self.stat} {self.change:+.1%} ({self.before:.1f} -> {self.after:.1f} us, {tell})"


@dataclass(frozen=True)
class Verdict:
    case_id: str
    status: str  # one of SEVERITY, from this run alone
    stats: tuple[StatVerdict, ...]
    history: int  # runs in the window
    labels: tuple[str, ...] = ()  # software stack and code changes against the window
    across_stack: bool = False
    note: str = ""  # why a change beyond the noise is "cannot tell"
    runs_over: int = 0  # this run and those just before it that regressed on the case
    consecutive: int = 1  # runs in a row a regression needs to fail
    fail_across_stack: bool = False

    @property
    def fails(self) -> bool:
        return (
            self.status == "regression"
            and self.runs_over >= self.consecutive
            and (self.fail_across_stack or not self.across_stack)
        )

    def line(self) -> str:
        label = "REGRESSION" if self.fails else self.status
        parts = [", ".join(s.text() for s in self.stats) or "no earlier run has this case"]
        parts.append(f"{self.history} run(s) of history")
        if self.status == "regression" and self.runs_over < self.consecutive:
            parts.append(
                f"{self.runs_over} of {self.consecutive} consecutive runs beyond the noise: "
                "fails if the next agrees"
            )
        if self.status == "regression" and self.across_stack and not self.fail_across_stack:
            parts.append("not failing across software stacks (--fail-across-stack)")
        parts += [p for p in (self.note, *self.labels) if p]
        return f"{label:<12} {self.case_id}: " + "; ".join(parts)


@dataclass
class _Run:
    info: RunInfo
    cases: dict


class _Judge:
    """Judges cases of runs against earlier runs; caches within-run noise per (run, case)."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self._se: dict[tuple[str, str], dict | None] = {}

    def within_se(self, run: _Run, case_id: str) -> dict | None:
        key = (str(run.info.dir), case_id)
        if key not in self._se:
            self._se[key] = noise.within_run_se(run.info.dir, case_id)
        return self._se[key]

    def window(self, run: _Run, case_id: str, earlier: Sequence[_Run]) -> list[_Run]:
        having = [r for r in earlier if case_id in r.cases]
        same = [r for r in having if r.info.stack == run.info.stack]
        chosen = same if len(same) >= self.rule.min_history else having
        return chosen[-self.rule.window :]

    def statistic(self, stat: str, run: _Run, case_id: str, window: list[_Run], enough: bool):
        rule = self.rule
        values = [r.cases[case_id]["stats"]["pass_us"][stat] for r in window]
        before, spread = noise.median_and_sigma(values)
        after = run.cases[case_id]["stats"]["pass_us"][stat]
        sources = [spread] if len(values) > 1 else []
        mine = self.within_se(run, case_id)
        if mine is not None:  # the window's own: their median, else assume alike
            theirs = [se[stat] for r in window if (se := self.within_se(r, case_id))]
            base = statistics.median(theirs) if theirs else mine[stat]
            sources.append(math.hypot(mine[stat], base))
        floor = rule.floor(stat)
        detectable = max(floor, rule.k * max(sources) / before) if sources and before > 0 else None
        verdict = StatVerdict(stat, before, after, detectable, "ok")
        change = verdict.change
        if enough and detectable is not None and abs(change) > detectable:
            return replace(verdict, status="regression" if change > 0 else "improved")
        # Slower past the floor, but within the noise or with too short a history to fail.
        return replace(verdict, status="cannot tell") if change > floor else verdict

    def case(self, run: _Run, case_id: str, earlier: Sequence[_Run]) -> Verdict:
        window = self.window(run, case_id, earlier)
        if not window:
            return Verdict(case_id, "cannot tell", (), 0)
        enough = len(window) >= self.rule.min_history
        stats = tuple(self.statistic(s, run, case_id, window, enough) for s in STATS)
        status = max((s.status for s in stats), key=SEVERITY.index)
        changes = sorted({c for r in window for c in stack_changes(r.info, run.info)})
        labels = [f"software stack differs: {', '.join(changes)}"] if changes else []
        if not same_code(window[-1].info, run.info):
            labels.append(f"code {code_id(window[-1].info.code)} -> {code_id(run.info.code)}")
        note = ""
        if not enough and any(s.detectable and s.change > s.detectable for s in stats):
            note = f"beyond the noise, but failing needs {self.rule.min_history} runs of history"
        return Verdict(
            case_id,
            status,
            stats,
            len(window),
            tuple(labels),
            bool(changes),
            note,
            fail_across_stack=self.rule.fail_across_stack,
        )

    def with_persistence(self, runs: Sequence[_Run], case_id: str) -> Verdict:
        """The newest run's verdict, counting the runs in a row (up to `consecutive`) that
        regressed on the case, each against the runs before it (PyTorch HUD's rule)."""
        verdict = self.case(runs[-1], case_id, runs[:-1])
        need = self.rule.consecutive
        over = int(verdict.status == "regression")
        if over and need > 1:
            having = [i for i, r in enumerate(runs[:-1]) if case_id in r.cases]
            for i in reversed(having[-(need - 1) :]):
                if self.case(runs[i], case_id, runs[:i]).status != "regression":
                    break
                over += 1
        return replace(verdict, runs_over=over, consecutive=need)


def _load(info: RunInfo) -> _Run | None:
    try:
        return _Run(info, results.load_run(info.dir)["cases"])
    except ResultsError as e:  # a bad night must not break every later comparison
        print(f"dpsync: skipping {info.name}: {e}", file=sys.stderr)
        return None


def history_of(run: RunInfo, history_root: Path | None, baselines: Sequence[Path], window: int):
    """Earlier runs to judge `run` against, oldest first: the baselines given, else the
    runs of its machine kind under history_root (default: the run's parent directory)."""
    if baselines:
        infos = sorted((info_of(Path(b)) for b in baselines), key=lambda r: r.order)
        for other in infos:
            if other.machine_kind != run.machine_kind:
                raise ResultsError(
                    f"{other.dir}: machine kind {other.machine_kind!r}, "
                    f"the run is {run.machine_kind!r}"
                )
    else:
        root = Path(history_root) if history_root is not None else run.dir.parent
        infos = earlier_runs(run, root)[-LOOKBACK * window :]
    return [r for r in map(_load, infos) if r is not None]


def gate_run(
    run_dir: Path,
    history_root: Path | None = None,
    baselines: Sequence[Path] = (),
    window: int = WINDOW,
    min_history: int = MIN_HISTORY,
    k: float = K,
    p50_floor: float = FLOORS["p50"],
    p99_floor: float = FLOORS["p99"],
    consecutive: int = CONSECUTIVE,
    fail_across_stack: bool = False,
) -> list[Verdict]:
    """One verdict per case of the run, in case order (see the module's doc for the rule)."""
    rule = Rule(window, min_history, k, p50_floor, p99_floor, consecutive, fail_across_stack)
    run = _Run(info_of(Path(run_dir)), results.load_run(Path(run_dir))["cases"])
    if not run.cases:
        raise ResultsError(f"{run_dir}: no finished cases")
    runs = [*history_of(run.info, history_root, baselines, window), run]
    judge = _Judge(rule)
    return [judge.with_persistence(runs, case_id) for case_id in sorted(run.cases)]
