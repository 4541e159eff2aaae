"""The README's two commands are the ones that run: .ci/run executes the test command
verbatim, and the main-job command names files that exist."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> dict[str, str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("<!-- commands -->")
    block = lines[start + 1 : lines.index("<!-- /commands -->")]
    out, label = {}, None
    for line in block:
        if line.startswith("# "):
            label = line[2:].split(":")[0].strip()
        elif line.strip() and not line.startswith("```") and label:
            out[label] = line.strip()
    return out


def test_ci_runs_the_readme_test_command():
    ci_last = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    assert _readme_commands()["tests"] == ci_last


def test_main_job_command_installs_and_runs_run_bench():
    main = _readme_commands()["main job"]
    assert 'pip install -q "torch==2.13.0"' in main
    assert main.endswith("./run_bench.sh")
    assert (ROOT / "run_bench.sh").stat().st_mode & 0o111, "run_bench.sh must be executable"
