"""The static dashboard: self-contained, names every machine, marks regressions, and every
image loads in a real browser opened from disk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import synthetic

from dpsync_bench.cli import main

CPU_KIND = "synth-cpu-2c"
FEW = dict(paths=("gloo_cpu", "nccl_device"), shapes=("2x1",), forward_ms=(5.0,))
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


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two machine kinds; the GPU one got a new driver, then a 30 % slower night."""
    root = tmp_path_factory.mktemp("results")
    for i in range(4):
        started = synthetic.T0 + i * synthetic.DAY
        driver = "580.159.04" if i < 2 else "590.1"
        cases = synthetic.sweep(scale=1.3 if i == 3 else 1.0, seed=i, started=started, **FEW)
        synthetic.write_run(root, cases, started, meta_machine=synthetic.machine(driver=driver))
    cpu = synthetic.machine(gpus=0, cuda=None, nccl=None, driver=None)
    for i in range(2):
        started = synthetic.T0 + i * synthetic.DAY + 60
        cases = synthetic.sweep(("gloo_cpu",), ("2x1",), forward_ms=(), seed=i, started=started)
        synthetic.write_run(root, cases, started, machine_kind=CPU_KIND, meta_machine=cpu)
    return root


@pytest.fixture(scope="module")
def page(root):
    assert main(["dashboard", "--results", str(root)]) == 0
    return root / "dashboard" / "index.html"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href")]


def _refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text())
    return parser


def test_page_is_self_contained(page):
    parsed = _refs(page)
    assert "link" not in parsed.tags  # no stylesheet, font or icon fetched
    images = [v for tag, k, v in parsed.refs if tag == "img"]
    assert len(images) >= 8
    for tag, attr, ref in parsed.refs:
        assert tag != "script", "scripts are inline"
        assert not re.match(r"^([a-z]+:|/)", ref), f"{tag} {attr}={ref} is not relative"
        assert (page.parent / ref).is_file(), f"{ref} missing"
    for ref in images:
        synthetic.assert_png(page.parent / ref)
    assert not re.search(r"url\(|@import|https?:", page.read_text())


def test_page_names_machines_cadence_and_the_regression(page):
    text = page.read_text()
    head, cpu, gpu = re.split(r'<section id="[^"]+">', text)  # sections sorted by kind
    assert "NVIDIA H200 x2 · driver 590.1 · torch 2.11.0+cu130 · NCCL 2.28.9" in gpu
    assert "no GPU (CPU: Synthetic CPU) · driver n/a" in cpu
    assert "isolated = " in head and "streaming = " in head
    assert 'class="regression"' in gpu and "REGRESSION" in gpu
    assert "REGRESSION" not in cpu and "0 regression(s)" in cpu
    for trend in ("trend-gloo_cpu.png", "trend-nccl_device.png"):
        assert trend in gpu
    assert gpu.count("<tr>") - 1 >= 4  # history table: every run


def test_trend_window_and_baseline_count(tmp_path, capsys):
    synthetic.write_history(tmp_path, 5, 1.3, paths=("gloo_cpu",), shapes=("2x1",), forward_ms=())
    out = tmp_path / "page"
    assert main(["dashboard", "--results", str(tmp_path), "--out", str(out), "--history", "3"]) == 0
    text = (out / "index.html").read_text()
    assert "Trends over the last 3 runs" in text and "REGRESSION" in text
    assert str(out / "index.html") in capsys.readouterr().out


def test_dashboard_of_nothing_exits_2(tmp_path, capsys):
    assert main(["dashboard", "--results", str(tmp_path)]) == 2
    assert main(["dashboard", "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("dpsync: ") for line in err)


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


def _loaded_dom(tmp_path: Path, page: Path) -> str:
    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    match = re.search(r"<body[^>]*>", done.stdout)
    assert match, f"no DOM from chromium: {done.stderr[-2000:]}"
    assert 'data-loaded="1"' in match.group(0), "the page's load handler never ran"
    return match.group(0)


def test_browser_loads_every_image(page, tmp_path):
    assert 'data-broken-images="0"' in _loaded_dom(tmp_path, page)


def test_browser_notices_a_missing_image(page, tmp_path):
    """The check above can fail: with one figure gone, the page reports it."""
    copy = tmp_path / "copy"
    shutil.copytree(page.parent, copy)
    next(copy.glob("*/latest/cdf.png")).unlink()
    assert 'data-broken-images="1"' in _loaded_dom(tmp_path, copy / "index.html")


def test_browser_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    synthetic.assert_png(shot)
