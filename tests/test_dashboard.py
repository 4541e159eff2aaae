"""The static dashboard: self-contained, a section per machine kind and world size with its
recommendation, trends from summaries alone, small; and every image loads in a real
browser opened from disk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import synthetic

from dpsync_bench.cases import UsageError
from dpsync_bench.report import dashboard
from dpsync_bench.results import ResultsError, load_run

CPU_KIND = "synth-cpu-2c"
FEW = dict(paths=("gloo_cpu", "nccl_device"), shapes=("2x1",), iters=60)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def build(*argv: str) -> str:
    return synthetic.run_command(dashboard.add_dashboard_args, dashboard.cmd_dashboard, *argv)


def write_root(root: Path) -> Path:
    """A GPU kind with three runs (a new driver on the third, 1 and 2 ranks in the last)
    and a CPU kind with two runs of 2 ranks."""
    for i in range(3):
        driver = "580.159.04" if i < 2 else "590.1"
        cases = synthetic.sweep(seed=i, **FEW)
        if i == 2:
            cases += synthetic.sweep(("gloo_cpu",), ("1x1",), forward_ms=(), iters=60)
        started = synthetic.T0 + i * synthetic.DAY
        synthetic.write_run(root, cases, started, meta_machine=synthetic.machine(driver=driver))
    cpu = synthetic.machine(gpus=0, cuda=None, nccl=None, driver=None)
    for i in range(2):
        cases = synthetic.sweep(("gloo_cpu", "shm_cpu"), ("2x1",), forward_ms=(), iters=60)
        started = synthetic.T0 + i * synthetic.DAY + 60
        synthetic.write_run(root, cases, started, machine_kind=CPU_KIND, meta_machine=cpu)
    return root


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = write_root(tmp_path_factory.mktemp("results"))
    assert build("--results", str(root)).strip() == f"dashboard: {root}/dashboard/index.html"
    return root / "dashboard" / "index.html"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href")]


def test_page_is_self_contained_and_small(page):
    parsed = _Refs()
    parsed.feed(page.read_text())
    assert "link" not in parsed.tags  # no stylesheet, font or icon fetched
    images = [v for tag, k, v in parsed.refs if tag == "img"]
    assert len(images) >= 10
    for tag, attr, ref in parsed.refs:
        assert tag != "script", "scripts are inline"
        assert not re.match(r"^([a-z]+:|/)", ref), f"{tag} {attr}={ref} is not relative"
        synthetic.assert_png(page.parent / ref)
    assert not re.search(r"url\(|@import|https?:", page.read_text())
    size = sum(f.stat().st_size for f in page.parent.rglob("*") if f.is_file())
    assert size < 1_500_000, f"{size} bytes for 3 sections"


def test_a_section_per_kind_and_world_with_advice_and_stack(page):
    text = page.read_text()
    kinds = re.findall(r'<h2 id="([^"]+)">', text)
    assert kinds == [CPU_KIND, synthetic.KIND]  # sorted by kind
    worlds = re.findall(r"<h3>([^<]+)</h3>", text)
    assert worlds == [
        f"{CPU_KIND} · 2 ranks",
        f"{synthetic.KIND} · 1 rank",
        f"{synthetic.KIND} · 2 ranks",
    ]
    cpu, gpu = text.split('<h2 id="')[1:]
    assert "no GPU (CPU: Synthetic CPU) · torch 2.11.0+cu130 · NCCL n/a" in cpu
    assert "NVIDIA H200 x2 · torch 2.11.0+cu130 · NCCL 2.28.9 · CUDA 13.0 · driver 590.1" in gpu
    assert "driver 580.159.04" in gpu  # the runs table keeps each run's stack
    # The advice: upstream's rule and the best measured path, overlap on and off.
    assert "use shm_cpu" in cpu and "upstream picks gloo_cpu" in cpu
    assert "deployment: dp 2 on 1 host(s), overlap scheduler off" in gpu
    assert "upstream picks nccl_device" in gpu or "use nccl_device" in gpu
    assert "fwd 5 ms (measured 5.00)" in gpu and 'class="fail"' not in text


def test_trends_only_where_a_series_has_two_runs(page):
    text = page.read_text()
    one_rank, two_ranks = text.split("<h3>")[2:]
    assert "one run so far: no trend yet" in one_rank
    assert 'src="synth-h200-x2/w2/trend.png"' in two_ranks
    assert "Trend over the last 3 run(s)" in two_ranks


def test_trends_need_no_samples(tmp_path):
    """History is summaries: with every run's samples gone the page still builds, and the
    latest run's figures fall back to its summaries."""
    root = write_root(tmp_path / "results")
    for samples in root.glob("*/samples"):
        shutil.rmtree(samples)
    build("--results", str(root), "--out", str(tmp_path / "page"), "--history", "2")
    text = (tmp_path / "page" / "index.html").read_text()
    assert "Trend over the last 2 run(s)" in text
    for ref in re.findall(r'src="([^"]+)"', text):
        synthetic.assert_png(tmp_path / "page" / ref)


def test_the_example_runs(tmp_path):
    runs = [synthetic.example_run(name, tmp_path) for name in ("x1", "x2")]
    build("--results", str(tmp_path))
    text = (tmp_path / "dashboard" / "index.html").read_text()
    assert re.findall(r"<h3>([^<]+)</h3>", text) == ["smoke-x1 · 1 rank", "smoke-x2 · 2 ranks"]
    failed = [c for r in runs for c in load_run(r)["cases"].values() if c["check"]["failures"]]
    assert text.count('class="fail"') == len(failed) > 0  # forwards measured over 5 % short
    assert "code ccf4859" in text and "python 3.12.3" in text


def test_nothing_to_show_and_bad_history(tmp_path):
    with pytest.raises(ResultsError, match="no runs with finished cases"):
        build("--results", str(tmp_path))
    with pytest.raises(ResultsError, match="no results directory"):
        build("--results", str(tmp_path / "none"))
    with pytest.raises(UsageError, match="--history"):
        build("--results", str(tmp_path), "--history", "0")


# ---- a real browser --------------------------------------------------------------------
def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"chromium is required in CI ({CHROMIUM} not found)")
        pytest.skip("chromium not installed")
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _loaded_body(tmp_path: Path, page: Path) -> str:
    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    match = re.search(r"<body[^>]*>", done.stdout)
    assert match, f"no DOM from chromium: {done.stderr[-2000:]}"
    assert 'data-loaded="1"' in match.group(0), "the page's load handler never ran"
    return match.group(0)


def test_browser_loads_every_image_and_notices_a_missing_one(page, tmp_path):
    assert 'data-broken-images="0"' in _loaded_body(tmp_path, page)
    copy = tmp_path / "copy"
    shutil.copytree(page.parent, copy)
    next(copy.glob("*/w2/latest/cdf.png")).unlink()
    assert 'data-broken-images="1"' in _loaded_body(tmp_path, copy / "index.html")


def test_browser_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    synthetic.assert_png(shot)
