"""Exit codes of every entry point (no imports: read by code that must start fast)."""

EXIT_USAGE = 2  # bad input, one line on stderr
EXIT_FAILED = 3  # a rank's own fail(): one line on stderr, then out
