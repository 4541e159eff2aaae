"""The nightly job (dpsync_bench/nightly.py, ci/nightly.sh, .github/workflows/nightly.yml).

Three nights on the CPU (slow, about 45 s): ci/nightly.sh runs the real sweep (run_bench.sh,
2 gloo ranks, the smoke preset's 2 streaming cases at 200 passes) three times against a git
history branch of a temporary source repository, pushed to a bare "remote". Night 3 runs
with the injected slowdown DPSYNC_FAULT=slow@1:0 (rank 1's every exchange of the first case
starts 20 ms late: that case's pass p50 goes from about 0.5 to 20 ms). The gate gets a short
history (--min-history 2 --consecutive 1) and floors of +400 % (p50) and +5000 % (p99): on
2 CPU cores shared with other jobs a case's p50 moved up to 3x between runs, its p99 (a
scheduler hiccup) by more, so only the injected slowdown can fail. Nights 1 and 2 exit 0,
night 3 exits 1 naming that case, and only it; the dashboard lists all three nights; the
source branch's HEAD, its files and `git status` are unchanged. Night 3 runs without the
local history branch (as a fresh CI checkout would): it fetches the remote's.

Fast: the `--run` route into a directory store (synthetic runs, the last one 2x slower),
bad setup (exit 2, one line, before any sweep), the `slow` fault, the workflow's YAML
against the script, and the nightly's imports (no torch).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synthetic
from fault_helpers import REPO, BenchProcess, smoke_case_ids

from dpsync_bench import cli, results
from dpsync_bench import nightly as nightly_module
from dpsync_bench.cases import UsageError
from dpsync_bench.measure import faults

SCRIPT = REPO / "ci" / "nightly.sh"
WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
# Streaming only: on 2 shared cores the isolated cadence's p50 moved 5x between runs (slots,
# sleeping ranks), the streaming one's by 20 to 50 %.
SWEEP = ["--preset", "smoke", "--cadences", "streaming", "--iters", "200", "--warmup", "5"]
SWEEP += ["--timeout", "10", "--no-report"]
SHORT = "--min-history 2 --consecutive 1"  # a short history may fail
GATE = f"{SHORT} --p50-floor 400% --p99-floor 5000%"
BRANCH = "dpsync-history"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def source_repo(tmp: Path) -> Path:
    """A source repository on branch main with one commit, and an untracked file."""
    src = tmp / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    (src / "code.py").write_text("print('the source')\n")
    git(src, "add", "code.py")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "source")
    (src / "notes.txt").write_text("untracked, stays untracked\n")
    return src


def repo_state(src: Path) -> tuple[str, ...]:
    return (
        git(src, "rev-parse", "HEAD"),
        git(src, "symbolic-ref", "HEAD"),
        git(src, "status", "--porcelain", "--untracked-files=all"),
        git(src, "worktree", "list", "--porcelain"),
        (src / "code.py").read_text(),
    )


@pytest.mark.slow
def test_three_nights_on_a_git_history_branch(tmp_path):
    src, remote, work = source_repo(tmp_path), tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    before = repo_state(src)
    summary = tmp_path / "summary.md"
    env = dict(
        DPSYNC_HISTORY_REPO=str(src),
        DPSYNC_HISTORY_REMOTE=str(remote),
        DPSYNC_WORK=str(work),
        DPSYNC_GATE=GATE,
        DPSYNC_SUMMARY=str(summary),
    )
    slowed_case = smoke_case_ids(2, cadences=["streaming"])[0]  # the case of ordinal 0
    t0, nights = time.monotonic(), []
    for fault in ("", "", "slow@1:0"):
        if fault:  # as a fresh CI checkout: night 3 finds the history on the remote alone
            git(src, "branch", "-D", BRANCH)
        nights.append(BenchProcess([SCRIPT, *SWEEP], {**env, "DPSYNC_FAULT": fault}).wait(120))
    wall = time.monotonic() - t0
    assert [n.rc for n in nights] == [0, 0, 1], "\n\n".join(n.describe() for n in nights)
    assert wall < 150, wall

    # Night 3 fails naming the slowed case, and only it; the gate's report says so too.
    failing = nights[2].lines_starting("REGRESSION")
    assert failing and all(line.split()[1] == f"{slowed_case}:" for line in failing), failing
    assert nights[2].last_line.startswith("ci/nightly.sh: exit 1"), nights[2].describe()
    assert "REGRESSION in 1 case(s)" in nights[2].stderr
    for night in nights[:2]:
        assert not night.lines_starting("REGRESSION") and "no regression" in night.stderr
    gate_txt = (work / "site" / "gate.txt").read_text()
    assert re.search(rf"^REGRESSION +{re.escape(slowed_case)}: p50 \+", gate_txt, re.M)

    # The history: three runs on the branch, pushed; the local branch is the remote's.
    tip = git(remote, "rev-parse", BRANCH)
    assert git(src, "rev-parse", BRANCH) == tip
    assert git(remote, "rev-list", "--count", BRANCH) == "4"  # a root commit, three nights
    stored = sorted(git(remote, "ls-tree", "--name-only", BRANCH).splitlines())
    full_runs = sorted(p.name for p in (work / "runs").iterdir() if (p / "run.json").is_file())
    assert len(full_runs) == 3 and stored == sorted([*full_runs, "README.md"])
    for run in full_runs:
        meta = json.loads(git(remote, "show", f"{BRANCH}:{run}/run.json"))
        assert meta["published"]["from_run"] == run and meta["published"]["max_bytes"] == 10**6

    # The source branch is untouched: HEAD, files, status, no worktree left behind.
    assert repo_state(src) == before

    # The dashboard shows all three nights; the job summary has one section a night.
    page = (work / "site" / "index.html").read_text()
    assert all(run in page for run in full_runs)
    assert list((work / "site").rglob("trend*.png")), "no trend figure over the nights"
    sections = summary.read_text().split("### dpsync-bench nightly: ")[1:]
    assert [s.split("\n")[0] for s in sections] == [
        "no regression",
        "no regression",
        "REGRESSION in 1 case(s)",
    ]
    assert f"- `REGRESSION   {slowed_case}:" in sections[2]


def nightly(*argv) -> int:
    """`python -m dpsync_bench nightly ...` in this process: its exit code."""
    try:
        return cli.main(["nightly", *map(str, argv)])
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_made_runs_into_a_directory_store(tmp_path, capsys):
    """--run: three synthetic nights, the last 2x slower: exit 0, 0, 1; a run already in the
    store is not copied again."""
    made = synthetic.write_history(tmp_path / "made", 3, last_scale=2.0, paths=("gloo_cpu",))
    store, site = tmp_path / "store", tmp_path / "site"
    codes = []
    for run in made:
        codes.append(nightly("--store", store, "--run", run, "--site", site, "--gate", SHORT))
    out, err = capsys.readouterr()
    assert codes == [0, 0, 1], out + err
    failing = [line for line in err.splitlines() if line.startswith("REGRESSION")]
    assert len(failing) == len(results.load_run(made[2])["cases"]) > 0
    assert sorted(p.name for p in store.iterdir() if p.is_dir()) == sorted(p.name for p in made)
    assert all(run.name in (site / "index.html").read_text() for run in made)
    assert nightly("--store", tmp_path / "made", "--run", made[0], "--site", site) == 0
    assert f"stored {made[0].name}" not in capsys.readouterr().out  # it is there already


def fake_run_bench(tmp_path: Path, monkeypatch, rc: int, run: Path | None) -> None:
    """A stand-in run_bench.sh: keeps its arguments, names `run`, fails with `rc`."""
    fake = tmp_path / "run_bench.sh"
    named = f'echo "run_bench: results in {run}" >&2\n' if run else ""
    fake.write_text(
        f'#!/usr/bin/env bash\necho "$*" > {tmp_path}/args\n{named}'
        f'echo "run_bench: job failed (torchrun exit {rc}): rank 1 died" >&2\nexit {rc}\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(nightly_module, "RUN_BENCH", fake)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("rc", [7, 2])
def test_a_failed_sweep_is_stored_and_fails_the_night(tmp_path, monkeypatch, capsys, rc):
    """run_bench.sh gets --out (absolute) and the options after --; a sweep that failed after
    finishing cases is stored, gated and shown, then exit 1 with its line; one that refused
    its options (exit 2) is bad setup."""
    (run,) = synthetic.write_history(tmp_path / "runs", 1, paths=("gloo_cpu",))
    fake_run_bench(tmp_path, monkeypatch, rc, run)
    summary = tmp_path / "summary.md"
    code = nightly("--store", "store", "--out", "runs", "--summary", summary, "--", "--iters", 9)
    err = capsys.readouterr().err
    passed = ["--out", str(tmp_path / "runs"), "--iters", "9"]
    assert (tmp_path / "args").read_text().split() == passed
    if rc == 2:
        assert code == 2 and err.splitlines()[-1].startswith("dpsync: the sweep refused")
        assert not list((tmp_path / "store").iterdir())
        return
    assert code == 1 and (tmp_path / "store" / run.name / "run.json").is_file()
    assert err.splitlines()[-1].endswith(
        "sweep failed (run_bench: job failed (torchrun exit 7): rank 1 died); no regression"
    )
    assert "sweep failed" in summary.read_text() and (tmp_path / "runs" / "dashboard").is_dir()


def test_a_sweep_that_finished_no_case_fails_the_night(tmp_path, monkeypatch, capsys):
    fake_run_bench(tmp_path, monkeypatch, 7, None)
    assert nightly("--store", "store", "--summary", tmp_path / "summary.md") == 1
    said = "nightly: no case finished (run_bench: job failed (torchrun exit 7): rank 1 died)"
    assert capsys.readouterr().err.splitlines()[-1] == said
    assert said in (tmp_path / "summary.md").read_text()
    assert not list((tmp_path / "store").iterdir())


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "give a history store"),
        (["--store", "S", "--store-branch", "b"], "not allowed with"),
        (["--store", "S", "--store-remote", "origin"], "go with --store-branch"),
        (["--store", "S", "--run", "nowhere"], "nowhere"),
        (["--store", "S", "--gate", "--min-history 0"], "must be >= 1"),
        (["--store", "S", "--gate", "--baseline x"], "is the baseline"),
        (["--store", "S", "--gate=--no-such-option"], "--gate: unrecognized"),
        (["--store-branch", "two..dots", "--store-repo", "src"], "check-ref-format"),
        (["--store-branch", BRANCH, "--store-repo", "."], "git rev-parse"),  # not a repository
        (["--store-branch", BRANCH, "--store-repo", "src", "--store-remote", "nowhere"], "git"),
    ],
)
def test_bad_setup_exits_2_with_one_line_before_any_sweep(
    tmp_path, monkeypatch, capsys, argv, says
):
    source_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    assert nightly(*argv, "--out", tmp_path / "runs", "--", *SWEEP) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "runs").exists() and time.monotonic() - started < 10


def test_slow_fault_delays_every_exchange_of_its_case(monkeypatch):
    assert faults.parse_fault("slow@1:0") == ("slow", 1, 0)
    monkeypatch.setenv(faults.FAULT_ENV, "slow@1:3")
    assert faults.inject_fault(1, 3) == "slow"
    assert faults.inject_fault(0, 3) is None and faults.inject_fault(1, 2) is None
    monkeypatch.setenv(faults.FAULT_ENV, "corrupt@0:1")
    assert faults.inject_fault(0, 1) == "corrupt"

    class Path_:
        def exchange(self, local):
            return local * 2

    path = faults.slowed(Path_(), delay_s=0.02)
    t0 = time.monotonic()
    assert [path.exchange(i) for i in range(3)] == [0, 2, 4]
    assert time.monotonic() - t0 >= 0.06


def test_the_workflow_runs_the_script_and_names_its_steps():
    text = WORKFLOW.read_text()
    script = SCRIPT.read_text()
    assert SCRIPT.stat().st_mode & 0o111, "ci/nightly.sh must be executable"
    assert "export NCCL_NVLS_ENABLE=0" in script
    # Every option the script gives (it gives options to the nightly alone) is the nightly's.
    parser = cli._Parser()
    nightly_module.add_nightly_args(parser)
    known = {s for action in parser._actions for s in action.option_strings}
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert "-m dpsync_bench nightly" in code
    given = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", code))
    assert given and given <= known, given - known
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(text)
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "workflow_dispatch" in triggers and triggers["schedule"][0]["cron"]
    assert data["concurrency"]["cancel-in-progress"] is False and data["concurrency"]["group"]
    assert data["env"]["NCCL_NVLS_ENABLE"] == "0"
    assert data["permissions"] == {"contents": "write", "pages": "write", "id-token": "write"}
    job = data["jobs"]["nightly"]
    assert "self-hosted" in job["runs-on"]
    (step,) = [s for s in job["steps"] if shlex.split(s.get("run", "x"))[0] == "ci/nightly.sh"]
    steps = re.findall(r"^#   \d\. (\w+(?: \w+)?)  ", script, re.M)
    assert steps == ["sweep", "store", "gate", "dashboard", "job summary"]
    assert all(name in step["name"].lower() for name in steps), step["name"]
    uses = {s.get("uses", "").split("@")[0] for s in job["steps"] + data["jobs"]["pages"]["steps"]}
    assert {"actions/upload-artifact", "actions/upload-pages-artifact"} <= uses
    assert "actions/deploy-pages" in uses


def test_the_nightly_needs_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dpsync_bench.nightly, dpsync_bench.history_store\n"
        "from dpsync_bench import cli; cli.main(['nightly', '--help'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and "--store-branch" in done.stdout, done.stderr[-2000:]


def test_usage_error_is_what_the_store_raises(tmp_path):
    from dpsync_bench.history_store import BranchStore

    with pytest.raises(UsageError, match="git rev-parse"), BranchStore(BRANCH, tmp_path):
        pass
