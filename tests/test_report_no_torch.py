"""Reading results needs no torch: no module under dpsync_bench/report imports torch or the
measuring side, directly or through what it imports, and every reading command runs in a
Python where `import torch` fails."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "dpsync_bench" / "report"
FORBIDDEN = ("torch", "dpsync_bench.measure")
BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # `import torch` raises ImportError\n"


def _module_file(name: str) -> Path | None:
    """The repository file of a module (its __init__ for a package), or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Every module a file imports, anywhere in it (function-level imports count too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _closure(start: list[str]) -> dict[str, str]:
    """Module -> the module that imported it, over the repository's own modules."""
    seen = {m: "(start)" for m in start}
    todo = list(start)
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if path is None:
            continue
        for name in _imports(path, module):
            for step in _parents(name):
                if step not in seen and (_module_file(step) or step.split(".")[0] == "torch"):
                    seen[step] = module
                    todo.append(step)
    return seen


def test_report_modules_reach_neither_torch_nor_measure():
    modules = [f"dpsync_bench.report.{p.stem}" for p in sorted(REPORT.glob("*.py"))]
    assert "dpsync_bench.report.dashboard" in modules and len(modules) >= 10
    reached = _closure(modules)
    bad = {m: via for m, via in reached.items() if m.startswith(FORBIDDEN)}
    assert not bad, f"imported (module: by whom): {bad}"
    assert "delayer_core.paths" in reached  # the registry is read, torch-free


def test_the_graph_check_can_fail():
    """The walk sees a lazy import in a function and follows relative imports."""
    reached = _closure(["dpsync_bench.cli"])  # the command line imports measure/ lazily
    assert "dpsync_bench.measure.runner" in reached


def test_every_report_module_imports_without_torch():
    names = [f"dpsync_bench.report.{p.stem}" for p in sorted(REPORT.glob("*.py"))]
    code = BLOCK_TORCH + (
        "import importlib\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "loaded = [m for m in sys.modules if m.startswith(('torch.', 'dpsync_bench.measure'))]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# The reading commands: (module holding add_<name>_args and cmd_<name>, arguments).
COMMANDS = {
    "report": ("dpsync_bench.report.tables", ["{run}", "--plots"]),
    "plot": ("dpsync_bench.report.plots", ["{run}", "--out", "{tmp}/plots"]),
    "dashboard": ("dpsync_bench.report.dashboard", ["--results", "{root}"]),
    "simulate": ("dpsync_bench.report.simulate_cli", ["--run", "{run}", "--sweep"]),
    "recommend": ("dpsync_bench.report.recommend", ["{run}", "--dp-size", "1"]),
}
# `python -m dpsync_bench NAME ...` once cli.py routes NAME to the function here; until
# then the function itself, behind a parser of its own arguments.
_RUN_COMMAND = (
    BLOCK_TORCH
    + """import argparse, importlib, json, runpy
name, module, argv = json.loads(sys.argv[1])
handler = getattr(importlib.import_module(module), f"cmd_{name}")
from dpsync_bench import cli
if getattr(cli, "COMMANDS", {}).get(name, (None,))[0] is handler:
    sys.argv = ["dpsync_bench", name, *argv]
    runpy.run_module("dpsync_bench", run_name="__main__", alter_sys=True)
parser = argparse.ArgumentParser()
getattr(importlib.import_module(module), f"add_{name}_args")(parser)
sys.exit(handler(parser.parse_args(argv)))
"""
)


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    if (synthetic.EXAMPLES / synthetic.EXAMPLE_RUNS["x1"]).is_dir():
        return synthetic.example_run("x1", root)
    return synthetic.write_run(root, synthetic.sweep(("gloo_cpu", "shm_cpu"), ("1x1",)))


@pytest.mark.parametrize("name", COMMANDS)
def test_reading_commands_run_without_torch(name, results_root, tmp_path):
    module, argv = COMMANDS[name]
    where = {"run": results_root, "root": results_root.parent, "tmp": tmp_path}
    argv = [arg.format(**where) for arg in argv]
    done = subprocess.run(
        [sys.executable, "-c", _RUN_COMMAND, json.dumps([name, module, argv])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "the command printed nothing"
    if name in ("report", "plot"):
        assert "plot: " in done.stdout
