"""Where the nightly runs live between nights (nightly.py): a directory, or a git branch.

DirStore: a path the CI keeps between runs (created when missing).

BranchStore: a branch of its own (e.g. `dpsync-history`) in a git repository (default: the
one of the current directory), checked out detached in a temporary worktree outside that
repository, so that no branch is checked out and the repository's HEAD, index and files stay
as they were: the results never land on the source branch. The branch's tip comes from
REMOTE when one is given and has it (fetched), else from the local branch, else it is a new
root commit with no files. save() commits the worktree, moves the local branch to that
commit and pushes it to REMOTE. Commits skip hooks and signing; without a configured git
identity they are made as "dpsync-bench nightly".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .cases import UsageError
from .results import write_atomic

README = """# dpsync-bench history

The nightly runs of dpsync-bench, one directory per run as `python -m dpsync_bench publish`
writes it, committed by `python -m dpsync_bench nightly`. Read them with
`python -m dpsync_bench runs --results .` and `dashboard --results .`.
"""
IDENTITY = {"name": "dpsync-bench nightly", "email": "dpsync-bench-nightly@localhost"}


class DirStore:
    """A results root on disk."""

    def __init__(self, path: Path):
        self.root = Path(path).absolute()

    def describe(self) -> str:
        return f"directory {self.root}"

    def __enter__(self) -> DirStore:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"history store {self.root}: {e.strerror}") from None
        return self

    def __exit__(self, *exc) -> None:
        pass

    def save(self, message: str) -> str:
        return f"stored under {self.root}"


class BranchStore:
    """A git branch, checked out in a temporary worktree while the store is open."""

    def __init__(self, branch: str, repo: Path | None = None, remote: str | None = None):
        self.branch, self.remote = branch, remote
        self.repo = Path(repo or ".").absolute()
        self.root: Path | None = None
        self._tmp: str | None = None
        self._env = dict(os.environ)

    def describe(self) -> str:
        where = f" of {self.remote}" if self.remote else f" in {self.repo}"
        return f"git branch {self.branch}{where}"

    def git(self, *args: str, cwd: Path | None = None, check: bool = True, stdin: str = ""):
        """git's stdout, stripped; a failure is bad setup: UsageError with git's last line."""
        done = subprocess.run(
            ["git", "-C", str(cwd or self.repo), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self._env,
        )
        if check and done.returncode != 0:
            lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
            said = [line for line in lines if line.startswith(("fatal:", "error:"))]
            why = (said or lines or [f"exit {done.returncode}"])[0]
            raise UsageError(f"history branch {self.branch}: git {args[0]}: {why}")
        return done.stdout.strip() if done.returncode == 0 else None

    def __enter__(self) -> BranchStore:
        if shutil.which("git") is None:
            raise UsageError("a history branch needs git, which is not on PATH")
        self.git("rev-parse", "--git-dir")  # a repository at all
        self.git("check-ref-format", "--branch", self.branch)
        for key in IDENTITY:  # keep a configured identity; else a stated one
            if not self.git("config", f"user.{key}", check=False):
                for who in ("AUTHOR", "COMMITTER"):
                    self._env.setdefault(f"GIT_{who}_{key.upper()}", IDENTITY[key])
        ref = f"refs/heads/{self.branch}"
        listed = self.git("worktree", "list", "--porcelain")
        if f"branch {ref}" in listed.splitlines():
            raise UsageError(f"{self.branch} is checked out in a worktree: it must not be")
        base = self._tip(ref)
        self._tmp = tempfile.mkdtemp(prefix="dpsync-history-")
        self.root = Path(self._tmp) / self.branch.replace("/", "_")
        self.git("worktree", "add", "-q", "--detach", str(self.root), base)
        return self

    def _tip(self, ref: str) -> str:
        if self.remote and self.git("ls-remote", "--heads", self.remote, ref):
            self.git("fetch", "-q", "--no-tags", self.remote, ref)
            return self.git("rev-parse", "--verify", "FETCH_HEAD^{commit}")
        local = self.git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
        if local:
            return local
        empty = self.git("mktree", stdin="")
        return self.git("commit-tree", empty, "-m", f"dpsync-bench history ({self.branch})")

    def save(self, message: str) -> str:
        """Commit the worktree, move the branch there, push it; what was done, in words."""
        readme = self.root / "README.md"
        if not readme.exists():
            write_atomic(readme, lambda f: f.write(README.encode()))
        self.git("add", "-A", cwd=self.root)
        if self.git("diff", "--cached", "--quiet", cwd=self.root, check=False) is not None:
            return f"nothing new for {self.describe()}"
        options = ("-c", "commit.gpgsign=false")
        self.git(*options, "commit", "-q", "--no-verify", "-m", message, cwd=self.root)
        new = self.git("rev-parse", "HEAD", cwd=self.root)
        self.git("update-ref", "-m", message, f"refs/heads/{self.branch}", new)
        done = f"committed {new[:9]} to {self.branch}"
        if self.remote:
            self.git("push", "-q", self.remote, f"{new}:refs/heads/{self.branch}")
            done += f", pushed to {self.remote}"
        return done

    def __exit__(self, *exc) -> None:
        if self.root is not None:
            self.git("worktree", "remove", "--force", str(self.root), check=False)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self.git("worktree", "prune", check=False)
