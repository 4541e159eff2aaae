"""One line on the real console, and leaving at once: how a rank reports and fails (no
torch, so pytest's start-up can wire it cheaply)."""

from __future__ import annotations

import contextlib
import os
import sys

from ..exit_codes import EXIT_FAILED


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# Where console lines go around a test runner's output capture (conftest.py sets it to
# pytest's "capture disabled" context; plain scripts write straight through).
console_unlocked = contextlib.nullcontext


def console(line: str) -> None:
    """A line on the real stderr, even inside a pytest test."""
    with console_unlocked():
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def fail(message: str, code: int = EXIT_FAILED):
    """One line on stderr, then leave at once: no teardown that could wait on dead peers."""
    console(f"dpsync: {message}")
    sys.stdout.flush()
    os._exit(code)
