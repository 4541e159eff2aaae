"""Listing runs, their software identity, retention (prune) and publishing, on copies of the
real example runs in temp dirs."""

from __future__ import annotations

import argparse
import json

import pytest
import run_copies as rc

from dpsync_bench import results
from dpsync_bench.cases import UsageError
from dpsync_bench.report import gate, history, publish
from dpsync_bench.results import ResultsError

pytestmark = rc.needs_examples


def run_cli(add_args, cmd, *argv) -> int:
    parser = argparse.ArgumentParser()
    add_args(parser)
    return cmd(parser.parse_args([str(a) for a in argv]))


@pytest.fixture
def root(tmp_path):
    """Three x1 runs (the oldest a reference), two x2 runs, and things that are not runs."""
    rc.copy_run(rc.X1, tmp_path, 0, reference=True)
    rc.history(rc.X1, tmp_path, 2, first_minute=1)
    rc.history(rc.X2, tmp_path, 2, first_minute=3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "run.json").write_text("{}")  # no schema: not a run
    (tmp_path / "README.md").write_text("results")
    return tmp_path


def test_runs_listed_per_machine_kind_with_their_identity(root, capsys):
    runs = history.runs_under(root)
    assert [r.name for r in runs] == sorted(p.name for p in root.glob("smoke-*"))
    x1, x2 = runs[0], runs[-1]
    assert (x1.machine_kind, x1.world_sizes, x1.reference) == ("smoke-x1", (1,), True)
    assert (x2.machine_kind, x2.world_sizes, x2.reference) == ("smoke-x2", (2,), False)
    assert x1.stack == {
        "torch": "2.11.0+cu130",
        "cuda": "13.0",
        "nccl": "2.28.9",
        "driver": "580.159.04",
    }
    entry = history.index_entry(x2)
    assert entry["cases"] == len(results.load_run(rc.X2)["cases"])
    assert entry["code"]["source_sha256"] == "04ea433d8e08672e"
    assert history.earlier_runs(runs[2], root) == runs[:2]
    assert run_cli(history.add_runs_args, history.cmd_runs, "--results", root) == 0
    out = capsys.readouterr().out
    assert "smoke-x1, world size 1: 3 run(s)" in out and "smoke-x2, world size 2: 2 run(s)" in out
    assert out.count("[reference]") == 1
    run_cli(history.add_runs_args, history.cmd_runs, "--results", root, "--json")
    assert len(json.loads(capsys.readouterr().out)) == 5


def test_stack_and_code_identity(tmp_path):
    a = history.info_of(rc.X1)
    b = history.info_of(
        rc.copy_run(rc.X1, tmp_path, 0, machine=rc.with_versions(rc.X1, driver="590.1"))
    )
    assert history.stack_changes(a, b) == ["driver 580.159.04 -> 590.1"]
    assert (
        history.same_code(a, b)
        and history.code_id(a.code) == "ccf4859e8 (sources 04ea433d8e08672e)"
    )
    assert history.machine_label(a.meta).startswith("smoke-x1: 1x NVIDIA H200; torch 2.11.0+cu130")


def test_prune_keeps_the_newest_and_references(root, capsys):
    before = sorted(p.name for p in root.iterdir())
    assert len(publish.prune(root, keep=1, dry_run=True)) == 2
    assert sorted(p.name for p in root.iterdir()) == before  # a dry run removes nothing
    assert run_cli(publish.add_prune_args, publish.cmd_prune, root, "--keep", "1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "removed 2 run(s)" and len(out) == 2 + 3  # the dry run's 2 lines first
    left = sorted(p.name for p in root.iterdir())
    kept = [f"smoke-x1_{rc.stamp(0)}", f"smoke-x1_{rc.stamp(2)}", f"smoke-x2_{rc.stamp(4)}"]
    assert left == ["README.md", "notes", *kept]


def test_prune_leaves_alone_what_is_no_run(root, capsys):
    stranger = root / f"smoke-x2_{rc.stamp(3)}" / "my-notes.txt"
    stranger.write_text("mine")
    publish.prune(root, keep=1)
    assert stranger.is_file()
    assert "holds 'my-notes.txt', which is no part of a run" in capsys.readouterr().out
    with pytest.raises(UsageError):
        publish.prune(root, keep=0)


def test_publish_keeps_everything_that_fits(tmp_path):
    dest, total, done = publish.publish(rc.X1, tmp_path / "site", reference=True)
    assert total <= publish.MAX_BYTES
    assert done["cases_without_samples"] == [] and done["pytest_benchmark_round_data"] == "kept"
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) == total
    meta = results.load_meta(dest)
    assert meta["reference"] is True and meta["published"]["from_run"] == rc.X1.name
    assert results.load_run(dest)["cases"] == results.load_run(rc.X1)["cases"]
    with pytest.raises(ResultsError, match="published once"):
        publish.publish(rc.X1, tmp_path / "site")


def test_publish_drops_round_data_then_the_largest_samples(tmp_path):
    # The 2-rank run fits 1 MB whole once compacted.
    _, whole, done = publish.publish(rc.X2, tmp_path / "whole")
    assert whole <= 1_000_000 and done["pytest_benchmark_round_data"] == "kept"
    # A little less room: pytest-benchmark's round data (a copy of the samples) go first.
    dest, total, done = publish.publish(rc.X2, tmp_path / "a", max_bytes=whole - 10_000)
    assert total < whole and done["pytest_benchmark_round_data"] == "dropped"
    assert done["cases_without_samples"] == []
    stats = json.loads((dest / "pytest-benchmark-w2.json").read_text())["benchmarks"][0]["stats"]
    assert "data" not in stats and "median" in stats
    # Less again: the largest samples go too, and the run says which.
    limit = total - 30_000
    dest, total, done = publish.publish(rc.X2, tmp_path / "b", max_bytes=limit)
    dropped = done["cases_without_samples"]
    assert total <= limit and dropped
    sizes = {p.stem: p.stat().st_size for p in (rc.X2 / "samples").glob("*.npz")}
    assert min(sizes[c] for c in dropped) >= max(s for c, s in sizes.items() if c not in dropped)
    assert sorted(p.stem for p in (dest / "samples").glob("*.npz")) == sorted(
        set(sizes) - set(dropped)
    )
    assert results.load_meta(dest)["published"]["cases_without_samples"] == dropped
    # Without samples, the gate still judges the case from its history.
    verdicts = gate.gate_run(dest, baselines=[rc.X2] * 5)
    assert {v.status for v in verdicts} == {"ok"}


def test_publish_refuses_what_cannot_fit(tmp_path, capsys):
    with pytest.raises(ResultsError, match="summaries alone take"):
        publish.publish(rc.X2, tmp_path, max_bytes=100_000)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    args = (rc.X1, "--to", tmp_path / "site", "--reference")
    assert run_cli(publish.add_publish_args, publish.cmd_publish, *args) == 0
    assert "reference; raw samples dropped for 0 case(s)" in capsys.readouterr().out
